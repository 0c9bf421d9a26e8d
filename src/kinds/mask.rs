//! AIP-134 update semantics for declared kinds' records, held as
//! [`DynamicMessage`]s.
//!
//! - Without an update mask (or with an empty one, which protobuf cannot
//!   tell apart from none), every field populated in the update is written:
//!   singular nested messages are merged field by field, `repeated` and
//!   `map` fields are replaced whole, and unpopulated fields keep their
//!   stored value. So without a mask a field can be set but never cleared.
//! - With a mask, exactly the named fields are written: set from the update
//!   if it has them, cleared otherwise. A path names a message field as a
//!   whole (it is replaced, not merged); a dotted path reaches into singular
//!   nested messages. `*` alone replaces the whole record.
//!
//! "Populated" is [`DynamicMessage::has_field`]: present for fields with
//! presence (messages, proto3 `optional`), non-default for plain proto3
//! scalars, non-empty for `repeated` and `map` fields.
//!
//! Paths use proto field names (`default_tier.limit`), and also accept JSON
//! names (`defaultTier.limit`) since HTTP clients send those in
//! `?updateMask=`. Every path is resolved before anything is written, so an
//! invalid mask leaves the stored record untouched.

use std::borrow::Cow;
use std::fmt;

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

/// The path that replaces the whole record.
const WILDCARD: &str = "*";

/// An update mask path that does not resolve against the kind's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskError {
    /// The path as given.
    pub path: String,
    /// What is wrong with it, e.g. `no field "b" in acme.billing.v1.Tier`.
    pub reason: String,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "update_mask path {:?}: {}", self.path, self.reason)
    }
}

impl std::error::Error for MaskError {}

/// Splits an HTTP `updateMask` query value (`a,b.c`) into paths: split on
/// commas, trimmed, empty entries dropped. The value must already be
/// percent-decoded. Names are not checked here: [`validate`] and [`apply`]
/// accept proto and JSON names alike.
pub fn parse_query(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|path| !path.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Checks that every path resolves against `message`, without applying
/// anything, so a caller can reject a request before touching the store.
///
/// # Errors
/// A [`MaskError`] for the first path that does not resolve: an unknown
/// field, an empty segment, a segment before the last that is not a
/// singular message field, or `*` combined with other paths.
pub fn validate(message: &MessageDescriptor, paths: &[String]) -> Result<(), MaskError> {
    resolve_all(message, paths).map(|_| ())
}

/// Applies `update` to `stored` by AIP-134 rules (see the [module docs](self)).
///
/// # Errors
/// A [`MaskError`] if a path does not resolve (see [`validate`]) or if
/// `update` is not the same message type as `stored`; `stored` is then
/// unchanged.
pub fn apply(
    stored: &mut DynamicMessage,
    update: &DynamicMessage,
    mask: Option<&[String]>,
) -> Result<(), MaskError> {
    if stored.descriptor() != update.descriptor() {
        return Err(MaskError {
            path: String::new(),
            reason: format!(
                "the update is a {}, the stored record a {}",
                update.descriptor().full_name(),
                stored.descriptor().full_name()
            ),
        });
    }
    let paths = match mask {
        None | Some([]) => {
            merge(stored, update);
            return Ok(());
        }
        Some(paths) => paths,
    };
    match resolve_all(&stored.descriptor(), paths)? {
        Resolved::Everything => *stored = update.clone(),
        Resolved::Fields(resolved) => {
            for (path, fields) in paths.iter().zip(&resolved) {
                apply_path(stored, update, path, fields)?;
            }
        }
    }
    Ok(())
}

/// What a mask names once resolved.
enum Resolved {
    /// `*`: the whole record.
    Everything,
    /// One field chain per path, from the root message.
    Fields(Vec<Vec<FieldDescriptor>>),
}

fn resolve_all(message: &MessageDescriptor, paths: &[String]) -> Result<Resolved, MaskError> {
    if paths.iter().any(|path| path == WILDCARD) {
        return match paths.iter().find(|path| *path != WILDCARD) {
            None => Ok(Resolved::Everything),
            Some(_) => Err(MaskError {
                path: WILDCARD.to_owned(),
                reason: "\"*\" replaces the whole record and cannot be combined with other paths"
                    .to_owned(),
            }),
        };
    }
    paths
        .iter()
        .map(|path| resolve(message, path))
        .collect::<Result<_, _>>()
        .map(Resolved::Fields)
}

/// The fields `path` names, from `message` down: every segment but the
/// last a singular message field.
fn resolve(message: &MessageDescriptor, path: &str) -> Result<Vec<FieldDescriptor>, MaskError> {
    let error = |reason: String| MaskError {
        path: path.to_owned(),
        reason,
    };
    let segments: Vec<&str> = path.split('.').collect();
    let mut fields = Vec::with_capacity(segments.len());
    let mut current = message.clone();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err(error("empty field name".to_owned()));
        }
        let field = current
            .get_field_by_name(segment)
            .or_else(|| current.get_field_by_json_name(segment))
            .ok_or_else(|| error(format!("no field {segment:?} in {}", current.full_name())))?;
        let is_last = i + 1 == segments.len();
        if !is_last {
            let shape = if field.is_map() {
                Some("a map")
            } else if field.is_list() {
                Some("repeated")
            } else {
                None
            };
            if let Some(shape) = shape {
                return Err(error(format!(
                    "field {:?} is {shape}: a path may only end at a map or repeated field",
                    field.name()
                )));
            }
            match field.kind() {
                Kind::Message(next) => current = next,
                _ => {
                    return Err(error(format!(
                        "field {:?} is not a message, so it has no field {:?}",
                        field.name(),
                        segments[i + 1]
                    )))
                }
            }
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Writes the field `fields` leads to: the update's value if it has one,
/// else the field is cleared. A missing stored parent is created to set a
/// field, not to clear one (clearing inside an absent message is a no-op).
fn apply_path(
    stored: &mut DynamicMessage,
    update: &DynamicMessage,
    path: &str,
    fields: &[FieldDescriptor],
) -> Result<(), MaskError> {
    let Some((last, parents)) = fields.split_last() else {
        return Ok(());
    };
    let mut source = Some(update);
    for parent in parents {
        source = source.and_then(|message| populated(message, parent)?.as_message());
    }
    let value = source.and_then(|message| populated(message, last).cloned());

    let mut target = stored;
    for parent in parents {
        if value.is_none() && !target.has_field(parent) {
            return Ok(());
        }
        target = target
            .get_field_mut(parent)
            .as_message_mut()
            .ok_or_else(|| not_a_message(path, parent))?;
    }
    match value {
        Some(value) => target.try_set_field(last, value).map_err(|err| MaskError {
            path: path.to_owned(),
            reason: err.to_string(),
        }),
        None => {
            target.clear_field(last);
            Ok(())
        }
    }
}

/// Merges every populated field of `update` into `stored`: singular
/// messages recursively, everything else (repeated and map fields included)
/// replaced.
fn merge(stored: &mut DynamicMessage, update: &DynamicMessage) {
    for (field, value) in update.fields() {
        let singular_message = !field.is_list() && !field.is_map();
        match value.as_message() {
            Some(nested) if singular_message && stored.has_field(&field) => {
                if let Some(target) = stored.get_field_mut(&field).as_message_mut() {
                    merge(target, nested);
                }
            }
            _ => stored.set_field(&field, value.clone()),
        }
    }
}

/// `field`'s value in `message`, if populated.
fn populated<'a>(message: &'a DynamicMessage, field: &FieldDescriptor) -> Option<&'a Value> {
    if !message.has_field(field) {
        return None;
    }
    match message.get_field(field) {
        Cow::Borrowed(value) => Some(value),
        Cow::Owned(_) => None,
    }
}

fn not_a_message(path: &str, field: &FieldDescriptor) -> MaskError {
    MaskError {
        path: path.to_owned(),
        reason: format!("field {:?} is not a message", field.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;
    use serde_json::json;
    use std::sync::OnceLock;

    const LIMITS: &str = r#"
syntax = "proto3";
package acme.billing.v1;
message BillingLimits {
  string display_name = 1;
  int64 monthly_cap_cents = 2;
  optional int32 grace_days = 3;
  Plan plan = 4;
  Tier default_tier = 5;
  repeated Tier tiers = 6;
  map<string, int64> quotas = 7;
  repeated string tags = 8;
  bool enforced = 9;
}
enum Plan { PLAN_UNSPECIFIED = 0; PLAN_FREE = 1; PLAN_PRO = 2; }
message Tier { string name = 1; int64 limit = 2; }
"#;

    fn limits() -> MessageDescriptor {
        static POOL: OnceLock<DescriptorPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let dir = tempfile::TempDir::new().unwrap();
            std::fs::write(dir.path().join("limits.proto"), LIMITS).unwrap();
            let set = protox::compile(["limits.proto"], [dir.path()]).unwrap();
            DescriptorPool::from_file_descriptor_set(set).unwrap()
        })
        .get_message_by_name("acme.billing.v1.BillingLimits")
        .unwrap()
    }

    /// A record from its proto3 JSON.
    fn record(value: serde_json::Value) -> DynamicMessage {
        DynamicMessage::deserialize(limits(), value).unwrap()
    }

    fn to_json(message: &DynamicMessage) -> serde_json::Value {
        serde_json::to_value(message).unwrap()
    }

    fn paths(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|path| (*path).to_owned()).collect()
    }

    /// A `BillingLimits` with every field populated (the API tests' too).
    fn full() -> DynamicMessage {
        record(
            serde_json::from_str(include_str!("../../tests/kinds/billing_limits_full.json"))
                .unwrap(),
        )
    }

    #[test]
    fn without_a_mask_populated_fields_are_set_and_the_rest_kept() {
        let mut stored = full();
        let update = record(json!({"displayName": "Acme 2", "plan": "PLAN_FREE"}));

        apply(&mut stored, &update, None).unwrap();

        let mut expected = to_json(&full());
        expected["displayName"] = json!("Acme 2");
        expected["plan"] = json!("PLAN_FREE");
        assert_eq!(to_json(&stored), expected);
    }

    #[test]
    fn without_a_mask_nested_messages_are_merged() {
        let mut stored = full();
        let update = record(json!({"defaultTier": {"limit": "99"}}));

        apply(&mut stored, &update, None).unwrap();

        assert_eq!(
            to_json(&stored)["defaultTier"],
            json!({"name": "base", "limit": "99"})
        );
    }

    #[test]
    fn without_a_mask_repeated_and_map_fields_are_replaced() {
        let mut stored = full();
        let update = record(json!({
            "tiers": [{"name": "c"}],
            "quotas": {"seats": "7"},
            "tags": ["z"]
        }));

        apply(&mut stored, &update, None).unwrap();

        let stored = to_json(&stored);
        assert_eq!(stored["tiers"], json!([{"name": "c"}]));
        assert_eq!(stored["quotas"], json!({"seats": "7"}));
        assert_eq!(stored["tags"], json!(["z"]));
    }

    #[test]
    fn without_a_mask_nothing_is_cleared_but_an_explicit_optional_zero_is_set() {
        let mut stored = full();
        let update = record(json!({"graceDays": 0, "enforced": false, "tags": []}));

        apply(&mut stored, &update, None).unwrap();

        let mut expected = to_json(&full());
        expected["graceDays"] = json!(0);
        assert_eq!(to_json(&stored), expected);
    }

    #[test]
    fn an_empty_mask_behaves_like_no_mask() {
        let mut with_empty = full();
        let mut with_none = full();
        let update = record(json!({"defaultTier": {"limit": "1"}, "tags": ["q"]}));

        apply(&mut with_empty, &update, Some(&[])).unwrap();
        apply(&mut with_none, &update, None).unwrap();

        assert_eq!(to_json(&with_empty), to_json(&with_none));
    }

    #[test]
    fn a_mask_sets_only_the_fields_it_names() {
        let mut stored = full();
        let update = record(json!({"displayName": "ignored", "plan": "PLAN_FREE"}));

        apply(&mut stored, &update, Some(&paths(&["plan"]))).unwrap();

        let mut expected = to_json(&full());
        expected["plan"] = json!("PLAN_FREE");
        assert_eq!(to_json(&stored), expected);
    }

    #[test]
    fn a_mask_clears_named_fields_the_update_lacks() {
        let mut stored = full();
        let update = record(json!({}));

        apply(
            &mut stored,
            &update,
            Some(&paths(&[
                "display_name",
                "tags",
                "quotas",
                "grace_days",
                "default_tier",
            ])),
        )
        .unwrap();

        let stored = to_json(&stored);
        for cleared in ["displayName", "tags", "quotas", "graceDays", "defaultTier"] {
            assert!(stored.get(cleared).is_none(), "{cleared} in {stored}");
        }
        assert_eq!(stored["plan"], json!("PLAN_PRO"));
    }

    #[test]
    fn a_mask_naming_a_message_field_replaces_it_whole() {
        let mut stored = full();
        let update = record(json!({"defaultTier": {"limit": "99"}}));

        apply(&mut stored, &update, Some(&paths(&["default_tier"]))).unwrap();

        assert_eq!(to_json(&stored)["defaultTier"], json!({"limit": "99"}));
    }

    #[test]
    fn a_mask_may_end_at_repeated_and_map_fields() {
        let mut stored = full();
        let update = record(json!({"tiers": [{"name": "c"}], "quotas": {"seats": "7"}}));

        apply(&mut stored, &update, Some(&paths(&["tiers", "quotas"]))).unwrap();

        let stored = to_json(&stored);
        assert_eq!(stored["tiers"], json!([{"name": "c"}]));
        assert_eq!(stored["quotas"], json!({"seats": "7"}));
    }

    #[test]
    fn a_nested_path_sets_one_subfield_and_keeps_its_siblings() {
        let mut stored = full();
        let update = record(json!({"defaultTier": {"name": "ignored", "limit": "42"}}));

        apply(&mut stored, &update, Some(&paths(&["default_tier.limit"]))).unwrap();

        assert_eq!(
            to_json(&stored)["defaultTier"],
            json!({"name": "base", "limit": "42"})
        );
    }

    #[test]
    fn a_nested_path_creates_the_stored_parent() {
        let mut stored = record(json!({"displayName": "Acme"}));
        let update = record(json!({"defaultTier": {"limit": "7"}}));

        apply(&mut stored, &update, Some(&paths(&["default_tier.limit"]))).unwrap();

        assert_eq!(
            to_json(&stored),
            json!({"displayName": "Acme", "defaultTier": {"limit": "7"}})
        );
    }

    #[test]
    fn a_nested_path_the_update_lacks_clears_the_subfield() {
        let mut stored = full();
        let update = record(json!({}));

        apply(&mut stored, &update, Some(&paths(&["default_tier.limit"]))).unwrap();

        assert_eq!(to_json(&stored)["defaultTier"], json!({"name": "base"}));
    }

    #[test]
    fn clearing_inside_an_absent_parent_does_not_create_it() {
        let mut stored = record(json!({"displayName": "Acme"}));
        let update = record(json!({}));

        apply(&mut stored, &update, Some(&paths(&["default_tier.limit"]))).unwrap();

        assert!(!stored.has_field_by_name("default_tier"));
    }

    #[test]
    fn a_wildcard_replaces_the_whole_record() {
        let mut stored = full();
        let update = record(json!({"tags": ["only"]}));

        apply(&mut stored, &update, Some(&paths(&["*"]))).unwrap();
        assert_eq!(to_json(&stored), json!({"tags": ["only"]}));

        let mut stored = full();
        apply(&mut stored, &update, Some(&paths(&["*", "*"]))).unwrap();
        assert_eq!(to_json(&stored), json!({"tags": ["only"]}));
    }

    #[test]
    fn a_wildcard_with_other_paths_is_refused() {
        let mut stored = full();

        let err = apply(
            &mut stored,
            &record(json!({})),
            Some(&paths(&["plan", "*"])),
        )
        .unwrap_err();

        assert_eq!(err.path, "*");
        assert!(err.reason.contains("cannot be combined"), "{err}");
        assert_eq!(to_json(&stored), to_json(&full()));
    }

    #[test]
    fn an_unknown_field_is_refused_naming_the_path_and_message() {
        let err = validate(&limits(), &paths(&["default_tier.nope"])).unwrap_err();

        assert_eq!(
            err,
            MaskError {
                path: "default_tier.nope".to_owned(),
                reason: "no field \"nope\" in acme.billing.v1.Tier".to_owned(),
            }
        );
        assert_eq!(
            err.to_string(),
            "update_mask path \"default_tier.nope\": no field \"nope\" in acme.billing.v1.Tier"
        );
    }

    #[test]
    fn an_invalid_path_leaves_the_stored_record_untouched() {
        let mut stored = full();
        let update = record(json!({"displayName": "changed"}));

        let err = apply(
            &mut stored,
            &update,
            Some(&paths(&["display_name", "bogus"])),
        )
        .unwrap_err();

        assert_eq!(err.path, "bogus");
        assert_eq!(to_json(&stored), to_json(&full()));
    }

    #[test]
    fn a_path_through_a_repeated_map_or_scalar_field_is_refused() {
        for (path, says) in [
            ("tiers.name", "field \"tiers\" is repeated"),
            ("quotas.calls", "field \"quotas\" is a map"),
            ("display_name.x", "field \"display_name\" is not a message"),
            ("default_tier.limit.x", "field \"limit\" is not a message"),
        ] {
            let err = validate(&limits(), &paths(&[path])).unwrap_err();

            assert_eq!(err.path, path);
            assert!(err.reason.contains(says), "{err}");
        }
    }

    #[test]
    fn an_empty_path_or_segment_is_refused() {
        for path in ["", "default_tier.", ".plan", "default_tier..limit"] {
            let err = validate(&limits(), &paths(&[path])).unwrap_err();

            assert_eq!(err.path, path);
            assert_eq!(err.reason, "empty field name");
        }
    }

    #[test]
    fn json_names_are_accepted_as_well_as_proto_names() {
        let mut stored = full();
        let update = record(json!({"displayName": "J", "defaultTier": {"limit": "3"}}));

        assert_eq!(
            validate(
                &limits(),
                &paths(&["displayName", "defaultTier.limit", "grace_days"])
            ),
            Ok(())
        );
        apply(
            &mut stored,
            &update,
            Some(&paths(&["displayName", "defaultTier.limit"])),
        )
        .unwrap();

        let stored = to_json(&stored);
        assert_eq!(stored["displayName"], json!("J"));
        assert_eq!(stored["defaultTier"], json!({"name": "base", "limit": "3"}));
    }

    #[test]
    fn duplicate_paths_are_fine() {
        let mut stored = full();
        let update = record(json!({"plan": "PLAN_FREE"}));

        apply(&mut stored, &update, Some(&paths(&["plan", "plan"]))).unwrap();

        assert_eq!(to_json(&stored)["plan"], json!("PLAN_FREE"));
    }

    #[test]
    fn an_update_of_another_message_type_is_refused() {
        let mut stored = full();
        let tier = limits()
            .parent_pool()
            .get_message_by_name("acme.billing.v1.Tier")
            .unwrap();

        let err = apply(&mut stored, &DynamicMessage::new(tier), None).unwrap_err();

        assert!(err.reason.contains("acme.billing.v1.Tier"), "{err}");
        assert_eq!(to_json(&stored), to_json(&full()));
    }

    #[test]
    fn a_query_value_is_split_on_commas_and_trimmed() {
        assert_eq!(
            parse_query(" display_name, defaultTier.limit ,,tags,"),
            ["display_name", "defaultTier.limit", "tags"]
        );
        assert!(parse_query("").is_empty());
        assert!(parse_query(" , ").is_empty());
    }
}
