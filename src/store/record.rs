//! What the store keeps per resource and account, for every kind: a
//! [`Record`], and the [`Patch`] a write merges into it.
//!
//! The store's guarantees (atomic read-merge-write, revisions, the change
//! log, durability) do not depend on what a record holds, so it holds
//! either of two bodies:
//!
//! - the built-in Twilio resources' [`Settings`], merged with a
//!   [`SettingsPatch`] and their cross-field rules, re-validated on every
//!   read (a record the API could never have written is corrupt);
//! - a declared kind's message ([`MessageRecord`]), kept as its protobuf
//!   encoding. The store cannot read it (it has no descriptors, and needs
//!   none); the generic service that holds the kind's descriptor builds the
//!   [`MessagePatch`] that maps the stored encoding to the new one, and the
//!   store runs it inside its atomic read-merge-write.

use std::{fmt, sync::Arc, time::SystemTime};

use bytes::Bytes;

use crate::{
    domain::{AccountSid, Settings, SettingsPatch},
    error::Error,
    resource::Resource,
};

/// A declared kind's record: its message's protobuf encoding, plus what the
/// store stamps on every record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub account_sid: AccountSid,
    /// The message, protobuf-encoded; empty for the empty message (the
    /// default of an account that never set the kind).
    pub value: Bytes,
    /// As [`Settings::revision`].
    pub revision: u64,
    /// As [`Settings::update_time`].
    pub update_time: Option<SystemTime>,
}

/// One account's record of one resource, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A built-in (Twilio) resource.
    Twilio(Settings),
    /// A declared kind.
    Message(MessageRecord),
}

impl Record {
    /// The record of an account that never set `resource`: its default
    /// resource, or the empty message. Revision 0.
    pub fn default_for(resource: Resource, account: AccountSid) -> Record {
        if resource.is_built_in() {
            Record::Twilio(Settings::default_for(account))
        } else {
            Record::Message(MessageRecord {
                account_sid: account,
                value: Bytes::new(),
                revision: 0,
                update_time: None,
            })
        }
    }

    pub fn account_sid(&self) -> &AccountSid {
        match self {
            Record::Twilio(s) => &s.account_sid,
            Record::Message(m) => &m.account_sid,
        }
    }

    /// The revision of the write that produced it; 0 for a default record.
    pub fn revision(&self) -> u64 {
        match self {
            Record::Twilio(s) => s.revision,
            Record::Message(m) => m.revision,
        }
    }

    pub fn update_time(&self) -> Option<SystemTime> {
        match self {
            Record::Twilio(s) => s.update_time,
            Record::Message(m) => m.update_time,
        }
    }

    /// Stamps the write that produces this state.
    pub fn stamp(&mut self, revision: u64, update_time: Option<SystemTime>) {
        match self {
            Record::Twilio(s) => (s.revision, s.update_time) = (revision, update_time),
            Record::Message(m) => (m.revision, m.update_time) = (revision, update_time),
        }
    }

    /// `patch` merged into this record; keeps its revision and time (the
    /// store stamps the write).
    ///
    /// # Errors
    /// [`Error::Invalid`] if the result breaks a rule of its kind; an
    /// [`Error::Storage`] for a patch of the other body (a bug of the
    /// caller: the kinds are fixed per resource).
    pub fn merged(&self, patch: Patch) -> Result<Record, Error> {
        match (self, patch) {
            (Record::Twilio(s), Patch::Twilio(p)) => Ok(Record::Twilio(s.merged(p)?)),
            (Record::Twilio(s), Patch::TwilioWith(f)) => Ok(Record::Twilio(s.merged((f.0)(s)?)?)),
            (Record::Message(m), Patch::Message(p)) => Ok(Record::Message(MessageRecord {
                value: (p.0)(&m.value)?,
                ..m.clone()
            })),
            _ => Err(Error::Storage(
                "a patch of one kind of record was applied to another".into(),
            )),
        }
    }

    /// The Twilio resource it holds.
    ///
    /// # Errors
    /// [`Error::Storage`] if it is a declared kind's record: the typed
    /// services and the bridge serve built-in resources only, so this is a
    /// bug, reported rather than panicked on.
    pub fn into_twilio(self) -> Result<Settings, Error> {
        match self {
            Record::Twilio(s) => Ok(s),
            Record::Message(m) => Err(Error::Storage(format!(
                "account {}'s record is a declared kind's message, not a built-in resource",
                m.account_sid
            ))),
        }
    }

    /// The declared kind's record it holds.
    ///
    /// # Errors
    /// As [`Record::into_twilio`], the other way round.
    pub fn into_message(self) -> Result<MessageRecord, Error> {
        match self {
            Record::Message(m) => Ok(m),
            Record::Twilio(s) => Err(Error::Storage(format!(
                "account {}'s record is a built-in resource, not a declared kind's message",
                s.account_sid
            ))),
        }
    }
}

impl From<Settings> for Record {
    fn from(settings: Settings) -> Record {
        Record::Twilio(settings)
    }
}

/// The merge of a declared kind's write: the stored encoding (empty for an
/// account that never set the kind) to the new one. It may run more than
/// once for one write (the etcd store retries a merge that lost a race), so
/// it must not have effects of its own.
pub type MergeFn = dyn Fn(&[u8]) -> Result<Bytes, Error> + Send + Sync;

/// A declared kind's patch (see [`MergeFn`]).
#[derive(Clone)]
pub struct MessagePatch(pub Arc<MergeFn>);

impl MessagePatch {
    /// The patch that makes the record hold exactly `value` (an import, a
    /// rollback, `*`).
    pub fn replacing(value: Bytes) -> MessagePatch {
        MessagePatch(Arc::new(move |_| Ok(value.clone())))
    }
}

impl fmt::Debug for MessagePatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessagePatch(..)")
    }
}

/// A built-in resource's patch computed from the stored resource, inside
/// the store's atomic read-merge-write (a generic update: its mask applies
/// to what is stored). Like [`MergeFn`], it may run more than once.
#[derive(Clone)]
pub struct TwilioMerge(pub Arc<TwilioMergeFn>);

/// See [`TwilioMerge`].
pub type TwilioMergeFn = dyn Fn(&Settings) -> Result<SettingsPatch, Error> + Send + Sync;

impl fmt::Debug for TwilioMerge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TwilioMerge(..)")
    }
}

/// What a write merges into a [`Record`].
#[derive(Debug, Clone)]
pub enum Patch {
    Twilio(SettingsPatch),
    TwilioWith(TwilioMerge),
    Message(MessagePatch),
}

impl From<SettingsPatch> for Patch {
    fn from(patch: SettingsPatch) -> Patch {
        Patch::Twilio(patch)
    }
}

impl Patch {
    /// The patch that makes a resource hold exactly `state` (a rollback to
    /// it).
    ///
    /// # Errors
    /// As [`SettingsPatch::replacing`]: `state` is a default Twilio resource.
    pub fn replacing(state: &Record) -> Result<Patch, Error> {
        Ok(match state {
            Record::Twilio(s) => Patch::Twilio(SettingsPatch::replacing(s)?),
            Record::Message(m) => Patch::Message(MessagePatch::replacing(m.value.clone())),
        })
    }
}
