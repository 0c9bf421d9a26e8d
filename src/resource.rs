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

use std::{fmt, str::FromStr};

/// A settings resource. Each account has exactly one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// Twilio Video's Recording Settings.
    Recording,
    /// Twilio Video's Composition Settings.
    Composition,
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

    /// This resource's row of the table.
    pub fn spec(self) -> &'static ResourceSpec {
        match self {
            Resource::Recording => &RECORDING,
            Resource::Composition => &COMPOSITION,
        }
    }

    /// The stable name (`recording_settings`, `composition_settings`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The resource whose stable name is `name`.
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
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

    /// Stores and services index per-resource tables by `resource as usize`.
    #[test]
    fn every_resource_is_its_own_index_in_all() {
        for (i, resource) in Resource::ALL.iter().enumerate() {
            assert_eq!(*resource as usize, i);
        }
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
