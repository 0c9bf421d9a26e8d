//! The settings resources settingsd serves, and the one table that says
//! everything a transport or the store needs to know about each.
//!
//! Every resource has the same record ([`crate::domain::Settings`]) and the
//! same rules; they differ only in name and address. Adding another
//! singleton of this shape is a variant here with its row in
//! [`Resource::spec`], its proto service (and its arm of `ExportedSettings`),
//! and one line per place that binds generated code to it: the
//! `resource_messages!` of `contract`, the `settings_service!` of `grpc`, the
//! server's service list and health. The compiler points at every `match` on
//! `Resource` that needs an arm; the store, the bridge, the CLI and backups
//! follow from this table, and the integration tests check that every
//! resource in it is served, healthy and listed by reflection. The module depends on nothing else in the crate, so every
//! layer (including the bridge, which knows only the contract) may use it.

use std::{
    fmt,
    str::FromStr,
    sync::{PoisonError, RwLock},
};

/// A settings resource (a settings kind). Each account has exactly one of
/// each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Twilio Video's Recording Settings.
    Recording,
    /// Twilio Video's Composition Settings.
    Composition,
    /// A kind declared at start (`serve --kinds`): its records are messages
    /// of a type the server learns from a .proto file. The store keeps them
    /// as opaque bytes; the generic service validates them.
    Declared(DeclaredId),
}

/// A declared kind's name, interned: [`Resource`] stays `Copy`, and its
/// name is read without a lock (requests read it on every call). The
/// table of names is process-wide, consulted only to intern, and only
/// grows (by the distinct kind names a process ever declares, a handful),
/// so a name interned once is the same [`Resource`] in every server of the
/// process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeclaredId(&'static str);

static DECLARED: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());

impl DeclaredId {
    fn name(self) -> &'static str {
        self.0
    }
}

/// What identifies a [`Resource`] in each vocabulary.
#[derive(Debug)]
pub struct ResourceSpec {
    /// The stable name: the sled tree, the export line's `resource`, logs.
    pub name: &'static str,
    /// The short name the CLI's `--resource` takes.
    pub cli_name: &'static str,
    /// Twilio's REST path (the bridge's route and the `url` field's path).
    pub rest_path: &'static str,
    /// The name people read, in messages.
    pub title: &'static str,
    /// The full name of its gRPC service (what reflection lists and health
    /// reports).
    pub grpc_service: &'static str,
}

const RECORDING: ResourceSpec = ResourceSpec {
    name: "recording_settings",
    cli_name: "recording",
    rest_path: "/v1/RecordingSettings/Default",
    title: "Recording Settings",
    grpc_service: "settingsd.v1.RecordingSettingsService",
};

const COMPOSITION: ResourceSpec = ResourceSpec {
    name: "composition_settings",
    cli_name: "composition",
    rest_path: "/v1/CompositionSettings/Default",
    title: "Composition Settings",
    grpc_service: "settingsd.v1.CompositionSettingsService",
};

impl Resource {
    /// Every resource, in the order exports list them.
    pub const ALL: [Resource; 2] = [Resource::Recording, Resource::Composition];

    /// This built-in resource's row of the table; `None` for a declared
    /// kind, which has no Twilio address or typed service.
    pub fn built_in(self) -> Option<&'static ResourceSpec> {
        match self {
            Resource::Recording => Some(&RECORDING),
            Resource::Composition => Some(&COMPOSITION),
            Resource::Declared(_) => None,
        }
    }

    /// This built-in resource's row of the table.
    ///
    /// # Panics
    /// For a declared kind: only the Twilio edges (bridge, typed services)
    /// call it, and they serve built-in resources only.
    pub fn spec(self) -> &'static ResourceSpec {
        self.built_in()
            .expect("only built-in resources have a Twilio spec")
    }

    /// The stable name (`recording_settings`, `composition_settings`, or
    /// the declared kind's name): the sled tree, the etcd key, the export
    /// line's `resource`, logs.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Declared(id) => id.name(),
            builtin => builtin.spec().name,
        }
    }

    /// The name people read, in messages.
    pub fn title(self) -> &'static str {
        self.built_in()
            .map_or_else(|| self.name(), |spec| spec.title)
    }

    /// The built-in resource whose stable name is `name`.
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The declared kind named `name` (a validated kind name that is not a
    /// built-in one), interned.
    pub fn declared(name: &str) -> Resource {
        if let Some(builtin) = Resource::from_name(name) {
            return builtin;
        }
        let find = |names: &[&'static str]| names.iter().copied().find(|n| *n == name);
        if let Some(interned) = find(&DECLARED.read().unwrap_or_else(PoisonError::into_inner)) {
            return Resource::Declared(DeclaredId(interned));
        }
        let mut names = DECLARED.write().unwrap_or_else(PoisonError::into_inner);
        let interned = find(&names).unwrap_or_else(|| {
            let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.push(leaked);
            leaked
        });
        Resource::Declared(DeclaredId(interned))
    }

    /// Whether it is one of the built-in (Twilio) resources.
    pub fn is_built_in(self) -> bool {
        self.built_in().is_some()
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses the CLI's short name (`recording`) or the stable name
/// (`recording_settings`).
impl FromStr for Resource {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        Resource::ALL
            .into_iter()
            .find(|r| r.spec().cli_name == value || r.name() == value)
            .ok_or_else(|| {
                let names: Vec<_> = Resource::ALL.iter().map(|r| r.spec().cli_name).collect();
                format!(
                    "unknown resource {value:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_name_interns_to_one_resource_and_keeps_its_name() {
        let a = Resource::declared("test_kind_a");
        let b = Resource::declared("test_kind_b");
        assert_ne!(a, b);
        assert_eq!(Resource::declared("test_kind_a"), a);
        assert_eq!(a.name(), "test_kind_a");
        assert_eq!(a.title(), "test_kind_a");
        assert!(!a.is_built_in());
        assert_eq!(
            Resource::declared("recording_settings"),
            Resource::Recording
        );
    }

    #[test]
    fn names_paths_and_cli_names_are_unique_and_round_trip() {
        for (i, a) in Resource::ALL.iter().enumerate() {
            assert_eq!(Resource::from_name(a.name()), Some(*a));
            assert_eq!(a.spec().cli_name.parse::<Resource>(), Ok(*a));
            for b in &Resource::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.spec().rest_path, b.spec().rest_path);
                assert_ne!(a.spec().cli_name, b.spec().cli_name);
            }
        }
        assert!("nope"
            .parse::<Resource>()
            .unwrap_err()
            .contains("recording"));
    }
}
