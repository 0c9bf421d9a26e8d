//! Schema evolution: can records stored under one version of a kind's
//! message still be read under the next?
//!
//! A declared kind's records are stored as protobuf bytes, so a new schema
//! is acceptable only if every stored record still decodes to what it
//! meant. At start the service compares each kind's current message with the
//! schema its records were written with and refuses to start on the first
//! incompatibility, naming the field, rather than serve misread settings.
//!
//! Fields are matched by **number** (what the wire carries), recursively
//! through nested message types. The rules are deliberately strict: a
//! change protobuf would tolerate on the wire but that changes what a value
//! means (say `int32` to `uint32`, where `-1` becomes 4294967295), or how it
//! renders in JSON, is refused.
//!
//! | Change (same field number)                                   | Allowed | Why |
//! |--------------------------------------------------------------|---------|-----|
//! | field added                                                  | yes     | absent in stored records: reads as its default |
//! | field renamed                                                | yes     | the wire carries numbers, not names |
//! | field removed, number reserved in the new message            | yes     | stored values become unknown fields; nothing can reuse the number |
//! | field removed, number not reserved                           | **no**  | a later field could reuse the number and misread stored values |
//! | a new field uses a number the old message reserved           | **no**  | stored records may still hold the removed field's values under it |
//! | a reserved number no longer reserved (dropped or narrowed)   | **no**  | the next schema could then reuse it: each start compares only with the last |
//! | scalar type changed (`int64` to `string`, `int32` to `int64`, ...) | **no** | different encoding or meaning |
//! | `enum` to `int32`, `int32` to `enum`, one enum to another    | yes     | both are `int32` varints |
//! | proto3 `optional` added or removed                           | yes     | same encoding; only presence tracking changes |
//! | singular to `repeated`, or `repeated` to singular            | **no**  | a stored list would be cut to one value, or a value read as a list |
//! | `repeated` scalar stays `repeated` (packed or not)           | yes     | parsers accept both packed and unpacked encodings |
//! | `map` to non-map, or non-map to `map`                        | **no**  | different shape (even where the wire allows it) |
//! | `map` key or value type changed                              | by the rules above | key types must be identical |
//! | message type changed to another message                      | by these rules, field by field | only the structure is stored, not the type's name |
//! | group to message or message to group                         | **no**  | different wire types |
//! | the kind's top-level message renamed                         | by these rules | a rename is a structure check like any other |
//!
//! Not checked: `oneof` membership, default values (proto2), enum values
//! (stored numbers an enum no longer names read back as numbers) and
//! options.
//!
//! Field paths in reports are dotted from the kind's message, by the new
//! schema's names where the field still exists (`tiers.limit` for the
//! `limit` of a `repeated Tier tiers`; a map's value fields are reported
//! under the map field, as `tiers_by_name.limit`).

use std::collections::HashSet;
use std::fmt;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// Why records stored under the old schema cannot be read under the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// The kind whose schema changed.
    pub kind: String,
    /// The field's dotted path from the kind's message, e.g. `tiers.limit`.
    pub field: String,
    /// The field's number (in the innermost message).
    pub number: u32,
    /// What changed and why that breaks stored records.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kind {}: field {} (number {}): {}",
            self.kind, self.field, self.number, self.reason
        )
    }
}

impl std::error::Error for Incompatibility {}

/// Checks that records of `kind` written with `old` can be read with `new`,
/// by the rules in the [module docs](self).
///
/// # Errors
/// The first [`Incompatibility`] found, naming the field by its dotted path.
pub fn check(
    kind: &str,
    old: &MessageDescriptor,
    new: &MessageDescriptor,
) -> Result<(), Incompatibility> {
    Checker {
        kind,
        visited: HashSet::new(),
    }
    .messages("", old, new)
}

struct Checker<'a> {
    kind: &'a str,
    /// (old, new) message pairs already checked or being checked, so that
    /// recursive types (`message Node { Node child = 1; }`) terminate.
    visited: HashSet<(String, String)>,
}

impl Checker<'_> {
    fn messages(
        &mut self,
        prefix: &str,
        old: &MessageDescriptor,
        new: &MessageDescriptor,
    ) -> Result<(), Incompatibility> {
        let pair = (old.full_name().to_owned(), new.full_name().to_owned());
        if !self.visited.insert(pair) {
            return Ok(());
        }
        for old_field in old.fields() {
            let number = old_field.number();
            match new.get_field(number) {
                Some(new_field) => {
                    self.field(&join(prefix, new_field.name()), &old_field, &new_field)?;
                }
                None if is_reserved(new, number) => {}
                None => {
                    return Err(self.incompatible(
                        join(prefix, old_field.name()),
                        number,
                        format!(
                            "{} {} was removed without reserving its number: \
                             add `reserved {number};` so that no later field reuses it",
                            describe(&old_field),
                            old_field.name()
                        ),
                    ));
                }
            }
        }
        // A reservation stays: dropped, the number would look free to the
        // next schema, whose new field on it would misread the removed
        // field's values that stored records still carry (the check only
        // ever compares with the last recorded schema).
        let kept: Vec<_> = new.reserved_ranges().collect();
        for range in old.reserved_ranges() {
            if let Some(number) = uncovered(range, &kept) {
                if new.get_field(number).is_none() {
                    return Err(self.incompatible(
                        join(prefix, &format!("(reserved {number})")),
                        number,
                        format!(
                            "number {number} was reserved and no longer is: stored records may \
                             hold a removed field's values under it; keep `reserved {number};`"
                        ),
                    ));
                }
            }
        }
        for new_field in new.fields() {
            let number = new_field.number();
            if old.get_field(number).is_none() && is_reserved(old, number) {
                return Err(self.incompatible(
                    join(prefix, new_field.name()),
                    number,
                    "uses a number the stored schema reserved: \
                     stored records may hold a removed field's values under it"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn field(
        &mut self,
        path: &str,
        old: &FieldDescriptor,
        new: &FieldDescriptor,
    ) -> Result<(), Incompatibility> {
        let kind = self.kind;
        let mismatch = || Incompatibility {
            kind: kind.to_owned(),
            field: path.to_owned(),
            number: new.number(),
            reason: format!(
                "was {}, now {}: not wire-compatible with stored records",
                describe(old),
                describe(new)
            ),
        };
        if old.is_map() != new.is_map()
            || old.is_list() != new.is_list()
            || old.is_group() != new.is_group()
        {
            return Err(mismatch());
        }
        match (old.kind(), new.kind()) {
            (Kind::Message(old_message), Kind::Message(new_message)) if old.is_map() => {
                let (old_key, new_key) = (
                    old_message.map_entry_key_field(),
                    new_message.map_entry_key_field(),
                );
                let (old_value, new_value) = (
                    old_message.map_entry_value_field(),
                    new_message.map_entry_value_field(),
                );
                if !same_scalar(&old_key.kind(), &new_key.kind()) {
                    return Err(mismatch());
                }
                match (old_value.kind(), new_value.kind()) {
                    (Kind::Message(old_value), Kind::Message(new_value)) => {
                        self.messages(path, &old_value, &new_value)
                    }
                    (old_value, new_value) if same_scalar(&old_value, &new_value) => Ok(()),
                    _ => Err(mismatch()),
                }
            }
            (Kind::Message(old_message), Kind::Message(new_message)) => {
                self.messages(path, &old_message, &new_message)
            }
            (old_kind, new_kind) if same_scalar(&old_kind, &new_kind) => Ok(()),
            _ => Err(mismatch()),
        }
    }

    fn incompatible(&self, field: String, number: u32, reason: String) -> Incompatibility {
        Incompatibility {
            kind: self.kind.to_owned(),
            field,
            number,
            reason,
        }
    }
}

/// Whether a stored value of kind `old` reads back as the same value of
/// kind `new`: the same scalar type, or `int32` and enums in any mix.
fn same_scalar(old: &Kind, new: &Kind) -> bool {
    match (old, new) {
        (Kind::Message(_), _) | (_, Kind::Message(_)) => false,
        (Kind::Enum(_) | Kind::Int32, Kind::Enum(_) | Kind::Int32) => true,
        (old, new) => std::mem::discriminant(old) == std::mem::discriminant(new),
    }
}

/// The first number of `range` that none of `ranges` holds.
fn uncovered(range: std::ops::Range<u32>, ranges: &[std::ops::Range<u32>]) -> Option<u32> {
    let mut at = range.start;
    while at < range.end {
        match ranges.iter().find(|r| r.contains(&at)) {
            Some(covering) => at = covering.end,
            None => return Some(at),
        }
    }
    None
}

fn is_reserved(message: &MessageDescriptor, number: u32) -> bool {
    message
        .reserved_ranges()
        .any(|range| range.contains(&number))
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A field's type as a `.proto` file spells it: `int64`, `repeated string`,
/// `map<string, int64>`, `message acme.billing.v1.Tier`.
fn describe(field: &FieldDescriptor) -> String {
    if field.is_map() {
        if let Kind::Message(entry) = field.kind() {
            return format!(
                "map<{}, {}>",
                kind_name(&entry.map_entry_key_field().kind(), false),
                kind_name(&entry.map_entry_value_field().kind(), false)
            );
        }
    }
    let name = kind_name(&field.kind(), field.is_group());
    if field.is_list() {
        format!("repeated {name}")
    } else {
        name
    }
}

fn kind_name(kind: &Kind, group: bool) -> String {
    match kind {
        Kind::Double => "double".to_owned(),
        Kind::Float => "float".to_owned(),
        Kind::Int32 => "int32".to_owned(),
        Kind::Int64 => "int64".to_owned(),
        Kind::Uint32 => "uint32".to_owned(),
        Kind::Uint64 => "uint64".to_owned(),
        Kind::Sint32 => "sint32".to_owned(),
        Kind::Sint64 => "sint64".to_owned(),
        Kind::Fixed32 => "fixed32".to_owned(),
        Kind::Fixed64 => "fixed64".to_owned(),
        Kind::Sfixed32 => "sfixed32".to_owned(),
        Kind::Sfixed64 => "sfixed64".to_owned(),
        Kind::Bool => "bool".to_owned(),
        Kind::String => "string".to_owned(),
        Kind::Bytes => "bytes".to_owned(),
        Kind::Message(message) if group => format!("group {}", message.full_name()),
        Kind::Message(message) => format!("message {}", message.full_name()),
        Kind::Enum(enumeration) => format!("enum {}", enumeration.full_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;
    use std::fs;

    /// Compiles `source` as a proto3 file in package `t` and returns `t.M`.
    fn schema(source: &str) -> MessageDescriptor {
        schema_named(source, "t.M", "proto3")
    }

    fn schema_named(source: &str, message: &str, syntax: &str) -> MessageDescriptor {
        let dir = tempfile::TempDir::new().unwrap();
        fs::write(
            dir.path().join("t.proto"),
            format!("syntax = \"{syntax}\";\npackage t;\n{source}"),
        )
        .unwrap();
        let set = protox::compile(["t.proto"], [dir.path()]).unwrap();
        DescriptorPool::from_file_descriptor_set(set)
            .unwrap()
            .get_message_by_name(message)
            .unwrap()
    }

    fn change(old: &str, new: &str) -> Result<(), Incompatibility> {
        check("k", &schema(old), &schema(new))
    }

    /// Asserts the change is refused on `field` and returns the reason.
    fn refused(old: &str, new: &str, field: &str) -> String {
        let err = change(old, new).unwrap_err();
        assert_eq!(err.kind, "k");
        assert_eq!(err.field, field, "{err}");
        err.reason
    }

    const TIER: &str = "message Tier { string name = 1; int64 limit = 2; }";

    #[test]
    fn an_unchanged_schema_is_compatible() {
        let source = format!(
            "message M {{ string a = 1; repeated Tier tiers = 2; map<string, Tier> by_name = 3; }} {TIER}"
        );
        assert_eq!(change(&source, &source), Ok(()));
    }

    #[test]
    fn adding_a_field_is_compatible() {
        assert_eq!(
            change(
                "message M { string a = 1; }",
                "message M { string a = 1; int64 b = 2; repeated string c = 3; }"
            ),
            Ok(())
        );
    }

    #[test]
    fn renaming_a_field_is_compatible() {
        assert_eq!(
            change("message M { string a = 1; }", "message M { string b = 1; }"),
            Ok(())
        );
    }

    #[test]
    fn removing_a_field_with_its_number_reserved_is_compatible() {
        let old = "message M { string a = 1; int64 b = 2; bool c = 7; }";
        assert_eq!(
            change(old, "message M { string a = 1; reserved 2, 7; }"),
            Ok(())
        );
        assert_eq!(
            change(old, "message M { string a = 1; reserved 2 to 10; }"),
            Ok(())
        );
        assert_eq!(
            change(old, "message M { string a = 1; reserved 2 to max; }"),
            Ok(())
        );
    }

    #[test]
    fn removing_a_field_without_reserving_its_number_is_refused() {
        let reason = refused(
            "message M { string a = 1; int64 b = 2; }",
            "message M { string a = 1; }",
            "b",
        );
        assert!(
            reason.contains("int64 b was removed without reserving its number"),
            "{reason}"
        );
        assert!(reason.contains("reserved 2;"), "{reason}");
    }

    #[test]
    fn reserving_only_the_removed_fields_name_is_refused() {
        refused(
            "message M { string a = 1; int64 b = 2; }",
            "message M { string a = 1; reserved \"b\"; }",
            "b",
        );
    }

    #[test]
    fn dropping_a_reservation_is_refused_and_narrowing_one_too() {
        let reason = refused(
            "message M { string a = 1; reserved 5; }",
            "message M { string a = 1; }",
            "(reserved 5)",
        );
        assert!(reason.contains("keep `reserved 5;`"), "{reason}");
        refused(
            "message M { string a = 1; reserved 5 to 9; }",
            "message M { string a = 1; reserved 5 to 7; }",
            "(reserved 8)",
        );
        assert_eq!(
            change(
                "message M { string a = 1; reserved 5 to 9; }",
                "message M { string a = 1; reserved 5, 6 to 8, 9 to 20; }"
            ),
            Ok(()),
            "the same numbers, reserved otherwise"
        );
    }

    #[test]
    fn reusing_a_reserved_number_is_refused() {
        let reason = refused(
            "message M { string a = 1; reserved 2; }",
            "message M { string a = 1; string c = 2; }",
            "c",
        );
        assert!(reason.contains("reserved"), "{reason}");
    }

    #[test]
    fn changing_a_scalar_type_is_refused_with_both_types() {
        let err = change(
            "message M { int64 limit = 3; }",
            "message M { string limit = 3; }",
        )
        .unwrap_err();

        assert_eq!(
            err.to_string(),
            "kind k: field limit (number 3): was int64, now string: \
             not wire-compatible with stored records"
        );
    }

    #[test]
    fn changing_between_integer_types_is_refused() {
        for (old, new) in [
            ("int32", "int64"),
            ("int64", "uint64"),
            ("int32", "sint32"),
            ("uint32", "fixed32"),
            ("int64", "sfixed64"),
            ("bool", "int32"),
            ("float", "double"),
            ("string", "bytes"),
        ] {
            let reason = refused(
                &format!("message M {{ {old} a = 1; }}"),
                &format!("message M {{ {new} a = 1; }}"),
                "a",
            );
            assert!(
                reason.contains(&format!("was {old}, now {new}")),
                "{reason}"
            );
        }
    }

    #[test]
    fn enum_and_int32_are_interchangeable() {
        let with_enum = "message M { E a = 1; } enum E { E_UNSPECIFIED = 0; E_ONE = 1; }";
        let with_int = "message M { int32 a = 1; }";
        let other_enum = "message M { F a = 1; } enum F { F_UNSPECIFIED = 0; }";

        assert_eq!(change(with_enum, with_int), Ok(()));
        assert_eq!(change(with_int, with_enum), Ok(()));
        assert_eq!(change(with_enum, other_enum), Ok(()));
        let reason = refused(with_enum, "message M { int64 a = 1; }", "a");
        assert!(reason.contains("was enum t.E, now int64"), "{reason}");
    }

    #[test]
    fn adding_or_removing_proto3_optional_is_compatible() {
        let plain = "message M { int32 a = 1; string b = 2; }";
        let optional = "message M { optional int32 a = 1; optional string b = 2; }";

        assert_eq!(change(plain, optional), Ok(()));
        assert_eq!(change(optional, plain), Ok(()));
    }

    #[test]
    fn changing_between_singular_and_repeated_is_refused() {
        let reason = refused(
            "message M { string a = 1; }",
            "message M { repeated string a = 1; }",
            "a",
        );
        assert!(
            reason.contains("was string, now repeated string"),
            "{reason}"
        );
        refused(
            "message M { repeated int32 a = 1; }",
            "message M { int32 a = 1; }",
            "a",
        );
        refused(
            &format!("message M {{ Tier a = 1; }} {TIER}"),
            &format!("message M {{ repeated Tier a = 1; }} {TIER}"),
            "a",
        );
    }

    #[test]
    fn a_repeated_scalar_that_stays_repeated_is_compatible_packed_or_not() {
        assert_eq!(
            change(
                "message M { repeated int64 a = 1; }",
                "message M { repeated int64 a = 1 [packed = false]; }"
            ),
            Ok(())
        );
    }

    #[test]
    fn changing_between_map_and_non_map_is_refused() {
        let map = "message M { map<string, int64> quotas = 1; }";
        // Wire-identical to the map, and still refused.
        let entries = "message M { repeated E quotas = 1; } \
                       message E { string key = 1; int64 value = 2; }";

        let reason = refused(map, entries, "quotas");
        assert!(
            reason.contains("was map<string, int64>, now repeated message t.E"),
            "{reason}"
        );
        refused(entries, map, "quotas");
        refused(map, "message M { int64 quotas = 1; }", "quotas");
    }

    #[test]
    fn changing_a_maps_key_or_value_type_is_refused() {
        let map = "message M { map<string, int64> quotas = 1; }";

        let reason = refused(map, "message M { map<int32, int64> quotas = 1; }", "quotas");
        assert!(
            reason.contains("was map<string, int64>, now map<int32, int64>"),
            "{reason}"
        );
        refused(
            map,
            "message M { map<string, string> quotas = 1; }",
            "quotas",
        );
        refused(
            map,
            "message M { map<string, int32> quotas = 1; }",
            "quotas",
        );
    }

    #[test]
    fn a_maps_enum_value_may_become_int32() {
        assert_eq!(
            change(
                "message M { map<string, E> a = 1; } enum E { E_UNSPECIFIED = 0; }",
                "message M { map<string, int32> a = 1; }"
            ),
            Ok(())
        );
    }

    #[test]
    fn a_maps_message_values_are_checked_field_by_field() {
        let old = format!("message M {{ map<string, Tier> by_name = 1; }} {TIER}");

        let renamed = "message M { map<string, Tier> by_name = 1; } \
                       message Tier { string label = 1; int64 limit = 2; bool extra = 3; }";
        assert_eq!(change(&old, renamed), Ok(()));
        let reason = refused(
            &old,
            "message M { map<string, Tier> by_name = 1; } \
             message Tier { string name = 1; string limit = 2; }",
            "by_name.limit",
        );
        assert!(reason.contains("was int64, now string"), "{reason}");
    }

    #[test]
    fn nested_fields_are_reported_by_dotted_path() {
        let old = format!("message M {{ Tier default_tier = 5; repeated Tier tiers = 6; }} {TIER}");

        let err = change(
            &old,
            "message M { Tier default_tier = 5; repeated Tier tiers = 6; } \
             message Tier { string name = 1; string limit = 2; }",
        )
        .unwrap_err();

        assert_eq!(err.field, "default_tier.limit");
        assert_eq!(err.number, 2);
        let reason = refused(
            &format!("message M {{ repeated Tier tiers = 6; }} {TIER}"),
            "message M { repeated Tier tiers = 6; } message Tier { string name = 1; }",
            "tiers.limit",
        );
        assert!(reason.contains("removed without reserving"), "{reason}");
    }

    #[test]
    fn a_field_may_change_to_a_structurally_compatible_message_type() {
        let old = format!("message M {{ Tier t = 1; }} {TIER}");

        assert_eq!(
            change(
                &old,
                "message M { Level t = 1; } \
                 message Level { string title = 1; int64 limit = 2; int32 rank = 3; }"
            ),
            Ok(())
        );
        let reason = refused(
            &old,
            "message M { Level t = 1; } message Level { string title = 1; bool limit = 2; }",
            "t.limit",
        );
        assert!(reason.contains("was int64, now bool"), "{reason}");
    }

    #[test]
    fn a_message_field_may_not_become_a_scalar() {
        let reason = refused(
            &format!("message M {{ Tier t = 1; }} {TIER}"),
            "message M { bytes t = 1; }",
            "t",
        );
        assert!(reason.contains("was message t.Tier, now bytes"), "{reason}");
    }

    #[test]
    fn recursive_types_are_checked_once_and_terminate() {
        let old = "message M { Node root = 1; } \
                   message Node { string v = 1; Node child = 2; repeated Node kids = 3; }";

        assert_eq!(change(old, old), Ok(()));
        let reason = refused(
            old,
            "message M { Node root = 1; } \
             message Node { int32 v = 1; Node child = 2; repeated Node kids = 3; }",
            "root.v",
        );
        assert!(reason.contains("was string, now int32"), "{reason}");
    }

    #[test]
    fn mutually_recursive_types_terminate() {
        let source =
            "message M { A a = 1; } message A { B b = 1; } message B { A a = 1; int64 n = 2; }";
        assert_eq!(change(source, source), Ok(()));
        refused(
            source,
            "message M { A a = 1; } message A { B b = 1; } message B { A a = 1; }",
            "a.b.n",
        );
    }

    #[test]
    fn renaming_the_kinds_message_is_checked_structurally() {
        let old = schema("message M { string a = 1; int64 b = 2; }");
        let renamed = schema_named(
            "message Renamed { string a = 1; int64 b = 2; }",
            "t.Renamed",
            "proto3",
        );
        let broken = schema_named("message Renamed { string a = 1; }", "t.Renamed", "proto3");

        assert_eq!(check("k", &old, &renamed), Ok(()));
        assert_eq!(check("k", &old, &broken).unwrap_err().field, "b");
    }

    #[test]
    fn a_group_may_not_become_a_message() {
        let old = schema_named(
            "message M { optional group G = 1 { optional int32 x = 2; } }",
            "t.M",
            "proto2",
        );
        let new = schema_named(
            "message M { optional G g = 1; } message G { optional int32 x = 2; }",
            "t.M",
            "proto2",
        );

        let err = check("k", &old, &new).unwrap_err();

        assert_eq!(err.field, "g");
        assert!(
            err.reason.contains("was group t.M.G, now message t.G"),
            "{err}"
        );
    }
}
