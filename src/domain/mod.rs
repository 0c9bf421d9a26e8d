//! The settings domain: validated identifiers ([`values`]), the record every
//! settings resource stores and the patch a Set applies to it ([`settings`]),
//! and the structured validation error. Nothing here knows about gRPC, HTTP,
//! sled or which resource a record belongs to (see [`crate::resource`]);
//! every transport converts its input into these types once, at its edge, and
//! everything past the edge can rely on them being valid.

mod settings;
mod values;

use std::fmt;

pub use settings::{Settings, SettingsPatch, SettingsText, Update};
pub use values::{AccountSid, CredentialSid, Etag, FriendlyName, S3Url};

/// A field of a settings resource, named for error reporting.
///
/// Each edge renders it in its own vocabulary: gRPC uses [`Field::as_str`]
/// (the proto field name), the HTTP bridge uses Twilio's PascalCase parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    AccountSid,
    FriendlyName,
    AwsCredentialsSid,
    AwsS3Url,
    AwsStorageEnabled,
    EncryptionKeySid,
    EncryptionEnabled,
    /// A conditional write's etag.
    Etag,
    /// A rollback's revision.
    Revision,
    /// A history listing's page size.
    PageSize,
    /// A history listing's page token.
    PageToken,
    /// A fault rule's resource, method, count, fraction, code and delay.
    Resource,
    Method,
    Count,
    Fraction,
    GrpcCode,
    DelayMs,
    /// An import's record (a stream message without one).
    Record,
    /// The generic service's kind, settings, value and update mask.
    Kind,
    Settings,
    Value,
    UpdateMask,
    /// UpdateSettings' account, kind and etag, inside its `settings`.
    SettingsAccountSid,
    SettingsKind,
    SettingsEtag,
}

impl Field {
    /// The snake_case name used by the proto contract and the REST JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::AccountSid => "account_sid",
            Field::FriendlyName => "friendly_name",
            Field::AwsCredentialsSid => "aws_credentials_sid",
            Field::AwsS3Url => "aws_s3_url",
            Field::AwsStorageEnabled => "aws_storage_enabled",
            Field::EncryptionKeySid => "encryption_key_sid",
            Field::EncryptionEnabled => "encryption_enabled",
            Field::Etag => "etag",
            Field::Revision => "revision",
            Field::PageSize => "page_size",
            Field::PageToken => "page_token",
            Field::Resource => "resource",
            Field::Method => "method",
            Field::Count => "count",
            Field::Fraction => "fraction",
            Field::GrpcCode => "grpc_code",
            Field::DelayMs => "delay_ms",
            Field::Record => "record",
            Field::Kind => "kind",
            Field::Settings => "settings",
            Field::Value => "settings.value",
            Field::UpdateMask => "update_mask",
            Field::SettingsAccountSid => "settings.account_sid",
            Field::SettingsKind => "settings.kind",
            Field::SettingsEtag => "settings.etag",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value was rejected. Kept structured (rather than a finished sentence)
/// so that each transport can name fields in its own vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A required field was absent or empty.
    Missing,
    /// The value is longer than allowed.
    TooLong { max_chars: usize },
    /// The value does not have the expected shape; the text says what was expected.
    Malformed(String),
    /// The value is `true` but a field it depends on is unset.
    Requires(Field),
}

/// A rejected input: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {}", self.describe(|f| f.as_str()))]
pub struct ValidationError {
    pub field: Field,
    pub violation: Violation,
}

impl ValidationError {
    fn new(field: Field, violation: Violation) -> Self {
        ValidationError { field, violation }
    }

    fn malformed(field: Field, expected: impl Into<String>) -> Self {
        ValidationError::new(field, Violation::Malformed(expected.into()))
    }

    /// Describes the violation (without the offending field's own name),
    /// naming any other field with `name`.
    pub fn describe(&self, name: impl Fn(Field) -> &'static str) -> String {
        match &self.violation {
            Violation::Missing => "is required".to_owned(),
            Violation::TooLong { max_chars } => {
                format!("must be at most {max_chars} characters")
            }
            Violation::Malformed(expected) => expected.clone(),
            Violation::Requires(other) => format!("cannot be true while {} is unset", name(*other)),
        }
    }
}
