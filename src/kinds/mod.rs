//! Declared settings kinds: any protobuf message, named in a kinds file,
//! becomes a settings kind next to the built-in ones.
//!
//! `settingsd serve --kinds FILE` reads a TOML file such as
//!
//! ```toml
//! proto_path = ["schemas"]                  # import roots, relative to this file's directory
//! files = ["acme/billing/v1/limits.proto"]  # compiled at start with protox (no protoc)
//!
//! [[kinds]]
//! name = "billing_limits"                   # [a-z][a-z0-9_]{0,62}, unique, not a built-in name
//! message = "acme.billing.v1.BillingLimits" # a message in the compiled files
//! ```
//!
//! and [`DeclaredKinds::load`] turns it into descriptors the service can
//! decode, encode and render records with. The files are compiled in the
//! process (protox) so that a deployment needs no `protoc`, and every mistake
//! is reported at start, against the kinds file, with a line and column where
//! there is one: a service that started has kinds that work.
//!
//! - [`compat`] decides whether records stored under one schema can be read
//!   under the next (checked at start against the schema each kind's
//!   records were written with, see [`DeclaredKinds::schema_of`]).
//! - [`mask`] applies AIP-134 updates (with or without an update mask) to
//!   records held as [`DynamicMessage`](prost_reflect::DynamicMessage)s.
//!
//! Loading, compatibility and masks depend on external crates only (they
//! can be built and tested on their own); [`Catalog`] ties them to the
//! crate's built-in resources.

mod catalog;
pub mod compat;
pub mod mask;

pub use catalog::{Catalog, Kind, TYPE_URL_PREFIX};

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use prost::Message as _;
use prost_reflect::{prost_types, DescriptorPool, FileDescriptor, MessageDescriptor};
use serde::Deserialize;
use toml::Spanned;

/// The names of the kinds settingsd serves itself. A kinds file may not
/// declare them: a declared kind shares the built-ins' name space (in
/// routes, in the store's keys), so reusing a name would shadow one.
pub const BUILT_IN_KINDS: [&str; 2] = ["recording_settings", "composition_settings"];

/// The longest kind name, so that names fit comfortably in store keys and
/// URL paths.
const MAX_NAME_LEN: usize = 63;

/// How a kind name must look, quoted in every error about one.
const NAME_PATTERN: &str = "[a-z][a-z0-9_]{0,62}";

/// The name of a settings kind: a lowercase letter, then up to 62 lowercase
/// letters, digits or underscores (`[a-z][a-z0-9_]{0,62}`).
///
/// Names appear in routes and store keys, hence the small, unambiguous
/// alphabet: no case folding, no escaping, no separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindName(String);

impl KindName {
    /// # Errors
    /// A message saying what is wrong with `value`, and the pattern a name
    /// must match.
    pub fn parse(value: &str) -> Result<KindName, String> {
        let problem = match value.chars().next() {
            None => Some("is empty".to_owned()),
            Some(first) if !first.is_ascii_lowercase() => {
                Some(format!("starts with {first:?}, not a lowercase letter"))
            }
            Some(_) if value.len() > MAX_NAME_LEN => Some(format!(
                "is {} characters long, more than {MAX_NAME_LEN}",
                value.chars().count()
            )),
            Some(_) => value
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
                .map(|c| {
                    format!("contains {c:?}: only lowercase letters, digits and '_' are allowed")
                }),
        };
        match problem {
            None => Ok(KindName(value.to_owned())),
            Some(problem) => Err(format!(
                "kind name {value:?} {problem} (a name must match {NAME_PATTERN})"
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One kind a kinds file declares: its name and the message its records are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredKind {
    pub name: KindName,
    /// The record's message, from [`DeclaredKinds::pool`].
    pub message: MessageDescriptor,
}

/// The kinds a kinds file declares, with the compiled files that define them.
///
/// Built once at start; [`DeclaredKinds::empty`] stands for "no `--kinds`",
/// so callers need no `Option`.
#[derive(Debug, Clone)]
pub struct DeclaredKinds {
    /// In declaration order, so listings and errors follow the file.
    kinds: Vec<DeclaredKind>,
    /// Every compiled file, imports included: what reflection serves, and
    /// what every kind's message refers into.
    pool: DescriptorPool,
    /// The kinds file, kept to name it in later diagnostics.
    source: PathBuf,
}

/// The kinds file as written. Unknown keys are refused so that a misspelt
/// key (`proto_paths`) fails loudly instead of being ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindsFile {
    proto_path: Option<Vec<Spanned<PathBuf>>>,
    files: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    kinds: Vec<KindEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindEntry {
    name: Spanned<String>,
    message: Spanned<String>,
}

impl DeclaredKinds {
    /// Reads the kinds file at `path`, compiles the `.proto` files it lists
    /// and resolves every kind's message.
    ///
    /// `proto_path` entries are relative to the kinds file's directory (an
    /// absolute entry is taken as is); without `proto_path`, that directory
    /// is the only import root. `files` are named as imports are, relative
    /// to an import root. The standard `google/protobuf/*.proto` files can
    /// always be imported. A kind's message may be any message in the
    /// compiled files or their imports.
    ///
    /// # Errors
    /// A [`KindsError`] naming the kinds file (and, where there is one, the
    /// line and column, or the `.proto` file, line and column) for: an
    /// unreadable file, invalid TOML or an unknown key, a `proto_path` entry
    /// that is not a directory, a missing or empty `files` list, a listed file
    /// that does not exist, a `.proto` file that does not compile, no kinds,
    /// and a kind whose name is invalid, reserved or taken, or whose message
    /// does not exist or is not a message.
    pub fn load(path: &Path) -> Result<DeclaredKinds, KindsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KindsError::Read {
            at: Location::file(path),
            source,
        })?;
        let file: KindsFile = toml::from_str(&text).map_err(|err| KindsError::Toml {
            at: Location::span(path, &text, err.span()),
            message: err.message().to_owned(),
        })?;
        let at = |span: Range<usize>| Location::span(path, &text, Some(span));

        // Import roots are absolute so that `files` entries resolve against
        // them and never against the working directory.
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let includes = match file.proto_path {
            None => vec![base.clone()],
            Some(entries) => {
                let mut includes = Vec::with_capacity(entries.len());
                for entry in entries {
                    let resolved = base.join(entry.get_ref());
                    if !resolved.is_dir() {
                        return Err(KindsError::ProtoPath {
                            at: at(entry.span()),
                            entry: entry.into_inner(),
                            resolved,
                        });
                    }
                    includes.push(resolved);
                }
                includes
            }
        };

        let files = file.files.unwrap_or_default();
        if files.is_empty() {
            return Err(KindsError::NoFiles {
                at: Location::file(path),
            });
        }
        for listed in &files {
            let name = Path::new(listed.get_ref());
            let found = if name.is_absolute() {
                name.is_file()
            } else {
                includes.iter().any(|root| root.join(name).is_file())
            };
            if !found {
                return Err(KindsError::ProtoFileNotFound {
                    at: at(listed.span()),
                    file: listed.get_ref().clone(),
                    searched: includes.clone(),
                });
            }
        }

        if file.kinds.is_empty() {
            return Err(KindsError::NoKinds {
                at: Location::file(path),
            });
        }
        let mut names = Vec::with_capacity(file.kinds.len());
        let mut first_index: HashMap<String, usize> = HashMap::new();
        for (index, entry) in file.kinds.iter().enumerate() {
            let name = KindName::parse(entry.name.get_ref()).map_err(|reason| {
                KindsError::InvalidName {
                    at: at(entry.name.span()),
                    index,
                    reason,
                }
            })?;
            if BUILT_IN_KINDS.contains(&name.as_str()) {
                return Err(KindsError::ReservedName {
                    at: at(entry.name.span()),
                    index,
                    name,
                });
            }
            if let Some(&first) = first_index.get(name.as_str()) {
                return Err(KindsError::DuplicateName {
                    at: at(entry.name.span()),
                    index,
                    first,
                    name,
                });
            }
            first_index.insert(name.as_str().to_owned(), index);
            names.push(name);
        }

        let pool = compile(&includes, &files).map_err(|detail| KindsError::Compile {
            at: Location::file(path),
            detail,
        })?;

        let mut kinds = Vec::with_capacity(names.len());
        for (entry, name) in file.kinds.iter().zip(names) {
            let wanted = entry.message.get_ref();
            let message = match pool.get_message_by_name(wanted) {
                Some(message) if message.is_map_entry() => {
                    return Err(KindsError::NotAMessage {
                        at: at(entry.message.span()),
                        name,
                        message: wanted.clone(),
                        what: "a map's entry type",
                    });
                }
                Some(message) => message,
                None => {
                    let at = at(entry.message.span());
                    let what = if pool.get_enum_by_name(wanted).is_some() {
                        Some("an enum")
                    } else if pool.get_service_by_name(wanted).is_some() {
                        Some("a service")
                    } else if pool.get_extension_by_name(wanted).is_some() {
                        Some("an extension")
                    } else {
                        None
                    };
                    return Err(match what {
                        Some(what) => KindsError::NotAMessage {
                            at,
                            name,
                            message: wanted.clone(),
                            what,
                        },
                        None => KindsError::UnknownMessage {
                            at,
                            name,
                            message: wanted.clone(),
                            known: known_messages(&pool, &files, wanted),
                        },
                    });
                }
            };
            kinds.push(DeclaredKind { name, message });
        }

        Ok(DeclaredKinds {
            kinds,
            pool,
            source: path.to_path_buf(),
        })
    }

    /// No declared kinds: what the service runs with without `--kinds`.
    pub fn empty() -> DeclaredKinds {
        DeclaredKinds {
            kinds: Vec::new(),
            pool: DescriptorPool::new(),
            source: PathBuf::new(),
        }
    }

    /// The declared kinds, in the kinds file's order.
    pub fn kinds(&self) -> &[DeclaredKind] {
        &self.kinds
    }

    /// The declared kind called `name`, if any (never a built-in kind).
    pub fn get(&self, name: &str) -> Option<&DeclaredKind> {
        self.kinds.iter().find(|kind| kind.name.as_str() == name)
    }

    /// Every compiled file, imports included.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// The kinds file these kinds came from (empty for [`DeclaredKinds::empty`]).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// An encoded `google.protobuf.FileDescriptorSet` of every file in the
    /// pool, imports such as `google/protobuf/*.proto` included (with source
    /// info, so reflection clients see the comments): what server
    /// reflection needs to describe the kinds' messages, since a reflection
    /// client asks for a file's dependencies too.
    pub fn file_descriptor_set_bytes(&self) -> Vec<u8> {
        self.pool.encode_to_vec()
    }

    /// An encoded `google.protobuf.FileDescriptorSet` of just the files
    /// `kind`'s message needs: its file and that file's transitive imports,
    /// dependencies first.
    ///
    /// This is what the store keeps as "the schema this kind's records were
    /// written with", to check the next start's schema against
    /// ([`compat::check`], after [`schema_from_bytes`]). Source info
    /// (comments, spans) is left out: it does not affect decoding, and
    /// leaving it out keeps the stored schema small and unchanged by an edit
    /// to a comment.
    pub fn schema_of(&self, kind: &DeclaredKind) -> Vec<u8> {
        let pool = kind.message.parent_pool();
        let mut needed = HashSet::new();
        let mut pending = vec![kind.message.parent_file()];
        while let Some(file) = pending.pop() {
            if needed.insert(file.name().to_owned()) {
                pending.extend(file.dependencies());
            }
        }
        // The pool lists files dependencies first; keep its order so the
        // set can be loaded file by file.
        let file = pool
            .files()
            .filter(|file| needed.contains(file.name()))
            .map(|file: FileDescriptor| prost_types::FileDescriptorProto {
                source_code_info: None,
                ..file.file_descriptor_proto().clone()
            })
            .collect();
        prost_types::FileDescriptorSet { file }.encode_to_vec()
    }
}

/// Loads a schema stored by [`DeclaredKinds::schema_of`] and finds `message`
/// in it, to compare the schema records were written with against the
/// current one.
///
/// # Errors
/// A message if `bytes` is not a valid, self-contained file descriptor set,
/// or holds no message called `message`.
pub fn schema_from_bytes(bytes: &[u8], message: &str) -> Result<MessageDescriptor, String> {
    let pool = DescriptorPool::decode(bytes)
        .map_err(|err| format!("the stored schema is not a valid file descriptor set: {err}"))?;
    pool.get_message_by_name(message).ok_or_else(|| {
        let files: Vec<&str> = pool.file_descriptor_protos().map(|f| f.name()).collect();
        format!(
            "the stored schema (files: {}) has no message {message}",
            files.join(", ")
        )
    })
}

/// Compiles `files` with `includes` as import roots (plus the standard
/// `google/protobuf` files).
///
/// # Errors
/// protox's error as `file.proto:LINE:COL: message` (the file as named in
/// the kinds file or an import), its usual rendering.
fn compile(includes: &[PathBuf], files: &[Spanned<String>]) -> Result<DescriptorPool, String> {
    let render = |err: protox::Error| {
        let rendered = format!("{err:?}");
        match err.file() {
            Some(file) if !rendered.starts_with(file) => format!("{file}: {rendered}"),
            _ => rendered,
        }
    };
    let mut compiler = protox::Compiler::new(includes).map_err(render)?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(files.iter().map(|file| file.get_ref()))
        .map_err(render)?;
    Ok(compiler.descriptor_pool())
}

/// A few messages that do exist, for an unknown message's error: first any
/// whose short name matches the one asked for (a missing or wrong package is
/// the likely mistake), then the rest of the listed files' messages.
fn known_messages(pool: &DescriptorPool, files: &[Spanned<String>], wanted: &str) -> Vec<String> {
    const SHOWN: usize = 8;
    let listed: HashSet<String> = files
        .iter()
        .map(|file| normalize_file_name(file.get_ref()))
        .collect();
    let short = wanted.rsplit('.').next().unwrap_or(wanted);
    let mut messages: BTreeSet<(bool, String)> = BTreeSet::new();
    for message in pool.all_messages() {
        if message.is_map_entry() {
            continue;
        }
        let in_listed = listed.contains(message.parent_file().name());
        let same_short = message.name() == short;
        if in_listed || same_short {
            messages.insert((!same_short, message.full_name().to_owned()));
        }
    }
    let total = messages.len();
    let mut known: Vec<String> = messages
        .into_iter()
        .take(SHOWN)
        .map(|(_, name)| name)
        .collect();
    if total > SHOWN {
        known.push(format!("and {} more", total - SHOWN));
    }
    known
}

/// A listed file's name as protox names it (forward slashes, no `./`).
fn normalize_file_name(listed: &str) -> String {
    listed.trim_start_matches("./").replace('\\', "/")
}

/// Where in a kinds file a problem is: the file, and a 1-based line and
/// column when the problem is at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based line and column (in characters).
    pub line_column: Option<(usize, usize)>,
}

impl Location {
    fn file(path: &Path) -> Location {
        Location {
            path: path.to_path_buf(),
            line_column: None,
        }
    }

    fn span(path: &Path, text: &str, span: Option<Range<usize>>) -> Location {
        Location {
            path: path.to_path_buf(),
            line_column: span.map(|span| line_column(text, span.start)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.line_column {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Why a kinds file cannot be used. Every message starts with the kinds
/// file's path (and line and column, when the problem is at one place), so
/// an operator can go straight to the mistake.
#[derive(Debug, thiserror::Error)]
pub enum KindsError {
    #[error("{at}: cannot read the kinds file: {source}")]
    Read {
        at: Location,
        #[source]
        source: io::Error,
    },
    #[error("{at}: {message}")]
    Toml { at: Location, message: String },
    #[error("{at}: proto_path entry {entry:?} resolves to {}, which is not a directory", resolved.display())]
    ProtoPath {
        at: Location,
        entry: PathBuf,
        resolved: PathBuf,
    },
    #[error("{at}: `files` is missing or empty: list the .proto files that define the kinds' messages, relative to proto_path")]
    NoFiles { at: Location },
    #[error(
        "{at}: proto file {file:?} not found in proto_path (searched {})",
        display_paths(searched)
    )]
    ProtoFileNotFound {
        at: Location,
        file: String,
        searched: Vec<PathBuf>,
    },
    /// `detail` is `file.proto:LINE:COL: message`, the `.proto` file named as
    /// in `files` or the import that names it.
    #[error("{at}: {detail}")]
    Compile { at: Location, detail: String },
    #[error("{at}: declares no kinds: add a [[kinds]] table with a name and a message")]
    NoKinds { at: Location },
    #[error("{at}: kinds[{index}]: {reason}")]
    InvalidName {
        at: Location,
        index: usize,
        reason: String,
    },
    #[error("{at}: kinds[{index}] {name}: the name is reserved for a built-in kind ({})", BUILT_IN_KINDS.join(", "))]
    ReservedName {
        at: Location,
        index: usize,
        name: KindName,
    },
    #[error("{at}: kinds[{index}] {name}: the name is already declared by kinds[{first}]")]
    DuplicateName {
        at: Location,
        index: usize,
        first: usize,
        name: KindName,
    },
    #[error("{at}: kind {name}: no message {message:?} in the compiled files; messages there include: {}", known.join(", "))]
    UnknownMessage {
        at: Location,
        name: KindName,
        message: String,
        /// A few messages that do exist, likeliest first.
        known: Vec<String>,
    },
    #[error("{at}: kind {name}: {message:?} is {what}, not a message")]
    NotAMessage {
        at: Location,
        name: KindName,
        message: String,
        what: &'static str,
    },
}

impl KindsError {
    /// Where the problem is: the kinds file, and a line and column if known.
    pub fn location(&self) -> &Location {
        match self {
            KindsError::Read { at, .. }
            | KindsError::Toml { at, .. }
            | KindsError::ProtoPath { at, .. }
            | KindsError::NoFiles { at }
            | KindsError::ProtoFileNotFound { at, .. }
            | KindsError::Compile { at, .. }
            | KindsError::NoKinds { at }
            | KindsError::InvalidName { at, .. }
            | KindsError::ReservedName { at, .. }
            | KindsError::DuplicateName { at, .. }
            | KindsError::UnknownMessage { at, .. }
            | KindsError::NotAMessage { at, .. } => at,
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tempfile::TempDir;

    const LIMITS: &str = r#"
syntax = "proto3";
package acme.billing.v1;
import "google/protobuf/timestamp.proto";
message BillingLimits {
  string display_name = 1;
  int64 monthly_cap_cents = 2;
  Tier default_tier = 3;
  google.protobuf.Timestamp updated = 4;
}
message Tier { string name = 1; }
enum Plan { PLAN_UNSPECIFIED = 0; }
service Billing {}
"#;

    const OTHER: &str = r#"
syntax = "proto3";
package acme.other.v1;
message Unrelated { string x = 1; }
"#;

    /// A temporary directory holding `kinds.toml` with `toml`, and the
    /// sample protos under `schemas/`.
    fn kinds_dir(toml: &str) -> (TempDir, PathBuf) {
        let dir = TempDir::new().unwrap();
        let schemas = dir.path().join("schemas/acme/billing/v1");
        fs::create_dir_all(&schemas).unwrap();
        fs::write(schemas.join("limits.proto"), LIMITS).unwrap();
        let other = dir.path().join("schemas/acme/other/v1");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("other.proto"), OTHER).unwrap();
        let path = dir.path().join("kinds.toml");
        fs::write(&path, toml).unwrap();
        (dir, path)
    }

    fn load_err(toml: &str) -> (KindsError, String, PathBuf) {
        let (_dir, path) = kinds_dir(toml);
        let err = DeclaredKinds::load(&path).unwrap_err();
        let message = err.to_string();
        (err, message, path)
    }

    const HEADER: &str = r#"proto_path = ["schemas"]
files = ["acme/billing/v1/limits.proto"]
"#;

    fn with_kinds(kinds: &str) -> String {
        format!("{HEADER}{kinds}")
    }

    #[test]
    fn kind_names_follow_the_pattern() {
        for good in ["a", "billing_limits", "a1_", &"a".repeat(63)] {
            assert_eq!(KindName::parse(good).unwrap().as_str(), good);
        }
        for (bad, says) in [
            ("", "is empty"),
            ("1abc", "starts with '1'"),
            ("_abc", "starts with '_'"),
            ("Billing", "starts with 'B'"),
            ("billing-limits", "contains '-'"),
            ("billingLimits", "contains 'L'"),
            ("billing limits", "contains ' '"),
            (&"a".repeat(64), "64 characters long"),
        ] {
            let err = KindName::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(err.contains(NAME_PATTERN), "{bad:?}: {err}");
        }
    }

    #[test]
    fn kind_name_displays_as_itself() {
        assert_eq!(
            KindName::parse("feature_flags").unwrap().to_string(),
            "feature_flags"
        );
    }

    #[test]
    fn a_valid_kinds_file_loads_every_kind_in_order() {
        let (_dir, path) = kinds_dir(&with_kinds(
            r#"
[[kinds]]
name = "billing_limits"
message = "acme.billing.v1.BillingLimits"

[[kinds]]
name = "tiers"
message = "acme.billing.v1.Tier"
"#,
        ));

        let kinds = DeclaredKinds::load(&path).unwrap();

        let names: Vec<&str> = kinds.kinds().iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["billing_limits", "tiers"]);
        let limits = kinds.get("billing_limits").unwrap();
        assert_eq!(limits.message.full_name(), "acme.billing.v1.BillingLimits");
        assert!(kinds.get("recording_settings").is_none());
        assert_eq!(kinds.source(), path);
    }

    /// `tests/kinds/` of the settingsd repository. Built through a scratch
    /// crate that includes this module by path, the manifest is elsewhere,
    /// so fall back to this file's own location.
    fn samples() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kinds");
        if manifest.is_dir() {
            return manifest;
        }
        Path::new(file!())
            .ancestors()
            .nth(3)
            .unwrap()
            .join("tests/kinds")
    }

    #[test]
    fn the_sample_kinds_file_loads() {
        let kinds = DeclaredKinds::load(&samples().join("kinds.toml")).unwrap();

        let names: Vec<&str> = kinds.kinds().iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["billing_limits", "feature_flags"]);
    }

    /// The restart tests rely on the evolved samples being what their names say.
    #[test]
    fn the_evolved_samples_are_compatible_and_incompatible_as_named() {
        let original = DeclaredKinds::load(&samples().join("kinds.toml")).unwrap();
        let stored = |name: &str| {
            let kind = original.get(name).unwrap();
            schema_from_bytes(&original.schema_of(kind), kind.message.full_name()).unwrap()
        };
        let load = |which: &str| {
            DeclaredKinds::load(&samples().join("evolved").join(which).join("kinds.toml")).unwrap()
        };
        let compatible = load("compatible");
        let incompatible = load("incompatible");

        for name in ["billing_limits", "feature_flags"] {
            let now = &compatible.get(name).unwrap().message;
            assert_eq!(compat::check(name, &stored(name), now), Ok(()));
        }
        let now = &incompatible.get("billing_limits").unwrap().message;
        let err = compat::check("billing_limits", &stored("billing_limits"), now).unwrap_err();
        assert_eq!(err.field, "monthly_cap_cents");
        assert_eq!(
            err.to_string(),
            "kind billing_limits: field monthly_cap_cents (number 2): was int64, now string: \
             not wire-compatible with stored records"
        );
    }

    #[test]
    fn without_proto_path_the_kinds_files_directory_is_the_import_root() {
        let (_dir, path) = kinds_dir(
            r#"files = ["schemas/acme/billing/v1/limits.proto"]
[[kinds]]
name = "billing_limits"
message = "acme.billing.v1.BillingLimits"
"#,
        );

        let kinds = DeclaredKinds::load(&path).unwrap();

        assert_eq!(kinds.kinds().len(), 1);
    }

    #[test]
    fn a_relative_kinds_file_path_resolves_against_its_own_directory() {
        let (dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"t\"\nmessage = \"acme.billing.v1.Tier\"\n",
        ));
        // Relative to the parent of the temporary directory, not to it.
        let parent = dir.path().parent().unwrap();
        let relative = path.strip_prefix(parent).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let from_parent = pathdiff(parent, &cwd).join(relative);

        let kinds = DeclaredKinds::load(&from_parent).unwrap();

        assert_eq!(kinds.kinds()[0].name.as_str(), "t");
    }

    /// `to` expressed relative to `from` (both absolute), with `..` as needed.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let to: Vec<_> = to.components().collect();
        let from: Vec<_> = from.components().collect();
        let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
        let mut out = PathBuf::new();
        for _ in common..from.len() {
            out.push("..");
        }
        for part in &to[common..] {
            out.push(part);
        }
        out
    }

    #[test]
    fn a_message_from_an_import_can_be_a_kind() {
        let (_dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"stamp\"\nmessage = \"google.protobuf.Timestamp\"\n",
        ));

        let kinds = DeclaredKinds::load(&path).unwrap();

        assert_eq!(
            kinds.kinds()[0].message.full_name(),
            "google.protobuf.Timestamp"
        );
    }

    #[test]
    fn the_descriptor_set_holds_every_file_including_imports() {
        let (_dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"t\"\nmessage = \"acme.billing.v1.Tier\"\n",
        ));
        let kinds = DeclaredKinds::load(&path).unwrap();

        let bytes = kinds.file_descriptor_set_bytes();

        let set = prost_types::FileDescriptorSet::decode(bytes.as_slice()).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "google/protobuf/timestamp.proto",
                "acme/billing/v1/limits.proto"
            ]
        );
        assert!(DescriptorPool::decode(bytes.as_slice()).is_ok());
    }

    #[test]
    fn a_kinds_schema_holds_its_file_and_its_imports_without_source_info() {
        let (_dir, path) = kinds_dir(
            r#"proto_path = ["schemas"]
files = ["acme/billing/v1/limits.proto", "acme/other/v1/other.proto"]
[[kinds]]
name = "billing_limits"
message = "acme.billing.v1.BillingLimits"
[[kinds]]
name = "unrelated"
message = "acme.other.v1.Unrelated"
"#,
        );
        let kinds = DeclaredKinds::load(&path).unwrap();

        let limits = kinds.schema_of(kinds.get("billing_limits").unwrap());
        let unrelated = kinds.schema_of(kinds.get("unrelated").unwrap());

        let set = prost_types::FileDescriptorSet::decode(limits.as_slice()).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "google/protobuf/timestamp.proto",
                "acme/billing/v1/limits.proto"
            ]
        );
        assert!(set.file.iter().all(|f| f.source_code_info.is_none()));
        let set = prost_types::FileDescriptorSet::decode(unrelated.as_slice()).unwrap();
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["acme/other/v1/other.proto"]);
    }

    #[test]
    fn a_stored_schema_loads_back_to_the_same_message() {
        let (_dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"b\"\nmessage = \"acme.billing.v1.BillingLimits\"\n",
        ));
        let kinds = DeclaredKinds::load(&path).unwrap();
        let kind = &kinds.kinds()[0];

        let stored =
            schema_from_bytes(&kinds.schema_of(kind), "acme.billing.v1.BillingLimits").unwrap();

        assert_eq!(stored.full_name(), kind.message.full_name());
        assert_eq!(stored.fields().count(), kind.message.fields().count());
        assert!(compat::check("b", &stored, &kind.message).is_ok());
    }

    #[test]
    fn a_stored_schema_without_the_message_or_undecodable_is_refused() {
        let (_dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"b\"\nmessage = \"acme.billing.v1.BillingLimits\"\n",
        ));
        let kinds = DeclaredKinds::load(&path).unwrap();
        let schema = kinds.schema_of(&kinds.kinds()[0]);

        let missing = schema_from_bytes(&schema, "acme.billing.v1.Nope").unwrap_err();
        let garbage = schema_from_bytes(b"\xff\xff\xff", "x").unwrap_err();

        assert!(
            missing.contains("no message acme.billing.v1.Nope"),
            "{missing}"
        );
        assert!(
            missing.contains("acme/billing/v1/limits.proto"),
            "{missing}"
        );
        assert!(
            garbage.contains("not a valid file descriptor set"),
            "{garbage}"
        );
    }

    #[test]
    fn empty_kinds_have_nothing_and_an_empty_descriptor_set() {
        let kinds = DeclaredKinds::empty();

        assert!(kinds.kinds().is_empty());
        assert!(kinds.get("billing_limits").is_none());
        assert!(DescriptorPool::decode(kinds.file_descriptor_set_bytes().as_slice()).is_ok());
    }

    #[test]
    fn a_missing_kinds_file_is_named() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("nope.toml");

        let err = DeclaredKinds::load(&path).unwrap_err();

        assert!(matches!(err, KindsError::Read { .. }));
        let message = err.to_string();
        assert!(
            message.starts_with(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("cannot read"), "{message}");
    }

    #[test]
    fn invalid_toml_is_reported_with_line_and_column() {
        let (err, message, path) = load_err("files = [\"a.proto\"]\nkinds = [[\n");

        assert!(matches!(err, KindsError::Toml { .. }));
        assert!(
            message.starts_with(&format!("{}:2:", path.display())),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_line() {
        let (err, message, path) = load_err(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Tier\"\nmesage = \"x\"\n",
        ));

        assert!(matches!(err, KindsError::Toml { .. }));
        assert!(
            message.starts_with(&format!("{}:6:1:", path.display())),
            "{message}"
        );
        assert!(message.contains("unknown field `mesage`"), "{message}");
    }

    #[test]
    fn an_unknown_top_level_key_is_refused() {
        let (err, message, path) = load_err("proto_paths = [\"schemas\"]\n");

        assert!(matches!(err, KindsError::Toml { .. }));
        assert!(
            message.starts_with(&format!("{}:1:1:", path.display())),
            "{message}"
        );
        assert!(message.contains("proto_paths"), "{message}");
    }

    #[test]
    fn a_proto_path_that_is_not_a_directory_is_refused() {
        let (err, message, path) = load_err(
            "proto_path = [\"schemas\", \"missing\"]\nfiles = [\"acme/billing/v1/limits.proto\"]\n",
        );

        assert!(matches!(err, KindsError::ProtoPath { .. }));
        assert!(
            message.starts_with(&format!("{}:1:26:", path.display())),
            "{message}"
        );
        assert!(
            message.contains("entry \"missing\" resolves to"),
            "{message}"
        );
        assert!(message.contains("not a directory"), "{message}");
    }

    #[test]
    fn a_missing_files_list_is_refused() {
        let (err, message, path) = load_err(
            "proto_path = [\"schemas\"]\n[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Tier\"\n",
        );

        assert!(matches!(err, KindsError::NoFiles { .. }));
        assert!(
            message.starts_with(&format!("{}: `files`", path.display())),
            "{message}"
        );
    }

    #[test]
    fn an_empty_files_list_is_refused() {
        let (err, _, _) = load_err("files = []\n");

        assert!(matches!(err, KindsError::NoFiles { .. }));
    }

    #[test]
    fn a_listed_file_that_does_not_exist_is_named_with_the_roots_searched() {
        let (err, message, path) = load_err(
            "proto_path = [\"schemas\"]\nfiles = [\"acme/billing/v1/limits.proto\", \"acme/nope.proto\"]\n",
        );

        assert!(matches!(err, KindsError::ProtoFileNotFound { .. }));
        assert!(
            message.starts_with(&format!("{}:2:42:", path.display())),
            "{message}"
        );
        assert!(message.contains("\"acme/nope.proto\""), "{message}");
        assert!(message.contains("schemas"), "{message}");
    }

    #[test]
    fn a_proto_that_does_not_parse_is_reported_with_its_file_line_and_column() {
        let (dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Tier\"\n",
        ));
        fs::write(
            dir.path().join("schemas/acme/billing/v1/limits.proto"),
            "syntax = \"proto3\";\nmessage Tier {\n  strin name = 1;\n  int64 = 2;\n}\n",
        )
        .unwrap();

        let err = DeclaredKinds::load(&path).unwrap_err();

        assert!(matches!(err, KindsError::Compile { .. }));
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: acme/billing/v1/limits.proto:4:9: ",
                path.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_proto_that_does_not_type_check_is_reported_with_its_file_line_and_column() {
        let (dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Tier\"\n",
        ));
        fs::write(
            dir.path().join("schemas/acme/billing/v1/limits.proto"),
            "syntax = \"proto3\";\npackage acme.billing.v1;\nmessage Tier {\n  Missing m = 1;\n}\n",
        )
        .unwrap();

        let err = DeclaredKinds::load(&path).unwrap_err();

        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: acme/billing/v1/limits.proto:4:3: ",
                path.display()
            )),
            "{message}"
        );
        assert!(message.contains("Missing"), "{message}");
    }

    #[test]
    fn a_missing_import_is_reported_with_the_importing_file_and_line() {
        let (dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Tier\"\n",
        ));
        fs::write(
            dir.path().join("schemas/acme/billing/v1/limits.proto"),
            "syntax = \"proto3\";\n\nimport \"acme/gone.proto\";\nmessage Tier {}\n",
        )
        .unwrap();

        let err = DeclaredKinds::load(&path).unwrap_err();

        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: acme/billing/v1/limits.proto:3:1: ",
                path.display()
            )),
            "{message}"
        );
        assert!(message.contains("acme/gone.proto"), "{message}");
    }

    #[test]
    fn a_file_without_kinds_is_refused() {
        let (err, message, _) = load_err(HEADER);

        assert!(matches!(err, KindsError::NoKinds { .. }));
        assert!(message.contains("declares no kinds"), "{message}");
    }

    #[test]
    fn an_invalid_kind_name_is_refused_with_its_index_and_the_pattern() {
        let (err, message, path) = load_err(&with_kinds(
            "[[kinds]]\nname = \"ok\"\nmessage = \"acme.billing.v1.Tier\"\n[[kinds]]\nname = \"Billing-Limits\"\nmessage = \"acme.billing.v1.Tier\"\n",
        ));

        assert!(matches!(err, KindsError::InvalidName { index: 1, .. }));
        assert!(
            message.starts_with(&format!("{}:7:8: kinds[1]: ", path.display())),
            "{message}"
        );
        assert!(message.contains("\"Billing-Limits\""), "{message}");
        assert!(message.contains(NAME_PATTERN), "{message}");
    }

    #[test]
    fn a_built_in_kind_name_is_reserved() {
        for built_in in BUILT_IN_KINDS {
            let (err, message, _) = load_err(&with_kinds(&format!(
                "[[kinds]]\nname = \"{built_in}\"\nmessage = \"acme.billing.v1.Tier\"\n"
            )));

            assert!(matches!(err, KindsError::ReservedName { index: 0, .. }));
            assert!(
                message.contains(&format!("kinds[0] {built_in}: the name is reserved")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_duplicate_kind_name_names_both_declarations() {
        let (err, message, path) = load_err(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Tier\"\n[[kinds]]\nname = \"b\"\nmessage = \"acme.billing.v1.Tier\"\n[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.BillingLimits\"\n",
        ));

        assert!(matches!(
            err,
            KindsError::DuplicateName {
                index: 2,
                first: 0,
                ..
            }
        ));
        assert!(
            message.starts_with(&format!("{}:10:8: kinds[2] a: ", path.display())),
            "{message}"
        );
        assert!(
            message.contains("already declared by kinds[0]"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_message_lists_messages_that_exist_likeliest_first() {
        let (err, message, path) = load_err(&with_kinds(
            "[[kinds]]\nname = \"limits\"\nmessage = \"acme.billing.BillingLimits\"\n",
        ));

        let KindsError::UnknownMessage { known, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            known,
            &["acme.billing.v1.BillingLimits", "acme.billing.v1.Tier"]
        );
        assert!(
            message.starts_with(&format!("{}:5:11: kind limits: ", path.display())),
            "{message}"
        );
        assert!(
            message.contains("no message \"acme.billing.BillingLimits\""),
            "{message}"
        );
        assert!(
            message.ends_with("include: acme.billing.v1.BillingLimits, acme.billing.v1.Tier"),
            "{message}"
        );
    }

    #[test]
    fn an_unknown_message_list_is_cut_short() {
        let (dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Nope\"\n",
        ));
        let many: String = (0..12).map(|i| format!("message M{i:02} {{}}\n")).collect();
        fs::write(
            dir.path().join("schemas/acme/billing/v1/limits.proto"),
            format!("syntax = \"proto3\";\npackage acme.billing.v1;\n{many}"),
        )
        .unwrap();

        let err = DeclaredKinds::load(&path).unwrap_err();

        let KindsError::UnknownMessage { known, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(known.len(), 9);
        assert_eq!(known[0], "acme.billing.v1.M00");
        assert_eq!(known[8], "and 4 more");
    }

    #[test]
    fn an_enum_service_or_map_entry_is_not_a_message() {
        for (name, what) in [
            ("acme.billing.v1.Plan", "an enum"),
            ("acme.billing.v1.Billing", "a service"),
        ] {
            let (err, message, _) = load_err(&with_kinds(&format!(
                "[[kinds]]\nname = \"a\"\nmessage = \"{name}\"\n"
            )));

            assert!(matches!(err, KindsError::NotAMessage { .. }), "{err:?}");
            assert!(
                message.contains(&format!("kind a: \"{name}\" is {what}, not a message")),
                "{message}"
            );
        }
    }

    #[test]
    fn a_map_entry_type_is_not_a_kind() {
        let (dir, path) = kinds_dir(&with_kinds(
            "[[kinds]]\nname = \"a\"\nmessage = \"acme.billing.v1.Q.CountsEntry\"\n",
        ));
        fs::write(
            dir.path().join("schemas/acme/billing/v1/limits.proto"),
            "syntax = \"proto3\";\npackage acme.billing.v1;\nmessage Q { map<string, int64> counts = 1; }\n",
        )
        .unwrap();

        let err = DeclaredKinds::load(&path).unwrap_err();

        assert!(
            err.to_string()
                .contains("is a map's entry type, not a message"),
            "{err}"
        );
    }

    #[test]
    fn every_error_starts_with_the_kinds_file_path() {
        let (err, message, path) = load_err("files = []\n");

        assert_eq!(err.location().path, path);
        assert!(message.starts_with(&path.display().to_string()));
    }

    #[test]
    fn line_and_column_count_characters_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("éx", 2), (1, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
