//! Every kind one server serves, built-in and declared, with the message
//! descriptor its values are read and written with: what the generic
//! service, reflection and the store's list of kinds are built from.
//!
//! (Unlike the rest of [`crate::kinds`], this part knows the crate: which
//! built-in resources exist and where their descriptors are.)

use prost_reflect::{DescriptorPool, MessageDescriptor};

use super::DeclaredKinds;
use crate::{contract::pb, error::Error, resource::Resource};

/// The prefix of every `google.protobuf.Any` type URL settingsd writes.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// One kind a server serves.
#[derive(Debug, Clone)]
pub struct Kind {
    /// The store's handle (a built-in resource or an interned declared one).
    pub resource: Resource,
    /// The message type of its values.
    pub message: MessageDescriptor,
    /// Its values may hold well-known types (`google.protobuf.*`), whose
    /// proto3 JSON can fail where the encoding does not (an `Any` of a type
    /// not in the schema, a `Timestamp` out of range): such a value must be
    /// checked before it is stored, or the JSON API and backups could not
    /// show it.
    pub holds_well_known: bool,
}

impl Kind {
    /// Its name (`recording_settings`, `billing_limits`).
    pub fn name(&self) -> &'static str {
        self.resource.name()
    }

    /// The `google.protobuf.Any` type URL of its values.
    pub fn type_url(&self) -> String {
        format!("{TYPE_URL_PREFIX}{}", self.message.full_name())
    }
}

/// Every kind of one server: the built-in ones first, then the declared
/// ones in the order of the kinds file.
#[derive(Debug, Clone)]
pub struct Catalog {
    kinds: Vec<Kind>,
    declared: DeclaredKinds,
}

/// The message type of each built-in resource's values.
fn built_in_message(resource: Resource) -> &'static str {
    match resource {
        Resource::Recording => "settingsd.v1.RecordingSettings",
        Resource::Composition => "settingsd.v1.CompositionSettings",
        Resource::Declared(_) => "",
    }
}

/// Whether `message` has a field (at any depth) of a `google.protobuf.*`
/// message type.
fn holds_well_known(message: &MessageDescriptor, seen: &mut Vec<String>) -> bool {
    if seen.iter().any(|s| s == message.full_name()) {
        return false;
    }
    seen.push(message.full_name().to_owned());
    message.fields().any(|field| match field.kind() {
        prost_reflect::Kind::Message(inner) => {
            inner.full_name().starts_with("google.protobuf.") || holds_well_known(&inner, seen)
        }
        _ => false,
    })
}

impl Catalog {
    /// The built-in kinds and `declared`.
    ///
    /// # Panics
    /// If the descriptor set compiled into the binary does not hold the
    /// built-in messages: a build defect that every test would show.
    pub fn new(declared: DeclaredKinds) -> Catalog {
        let own = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("the compiled-in descriptor set decodes");
        let mut kinds: Vec<Kind> = Resource::ALL
            .into_iter()
            .map(|resource| Kind {
                resource,
                message: own
                    .get_message_by_name(built_in_message(resource))
                    .expect("the built-in messages are compiled in"),
                // Only the output-only update_time, which the server sets.
                holds_well_known: false,
            })
            .collect();
        kinds.extend(declared.kinds().iter().map(|kind| Kind {
            resource: Resource::declared(kind.name.as_str()),
            message: kind.message.clone(),
            holds_well_known: holds_well_known(&kind.message, &mut Vec::new()),
        }));
        Catalog { kinds, declared }
    }

    /// Only the built-in kinds.
    pub fn built_in() -> Catalog {
        Catalog::new(DeclaredKinds::empty())
    }

    /// Every kind, built-in first.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The kind named `name`.
    ///
    /// # Errors
    /// [`Error::UnknownKind`], listing the kinds there are.
    pub fn get(&self, name: &str) -> Result<&Kind, Error> {
        self.kinds
            .iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| Error::UnknownKind {
                kind: name.to_owned(),
                known: self.kinds.iter().map(|k| k.name().to_owned()).collect(),
            })
    }

    /// The kind of `resource`, if this server serves it.
    pub fn of(&self, resource: Resource) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.resource == resource)
    }

    /// The declared kinds' store handles (what the store opens besides the
    /// built-in resources).
    pub fn declared_resources(&self) -> Vec<Resource> {
        self.kinds
            .iter()
            .map(|k| k.resource)
            .filter(|r| !r.is_built_in())
            .collect()
    }

    /// The declared kinds as loaded (their files, for reflection and for
    /// the schemas the store keeps).
    pub fn declared(&self) -> &DeclaredKinds {
        &self.declared
    }
}
