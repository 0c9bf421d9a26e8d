//! The gRPC edge's conversions, written once for every resource: a stored
//! record into the contract's shape, a Set request into a validated patch.

use std::time::SystemTime;

use crate::{
    contract::{SetSettingsMessage, SettingsMessage},
    domain::{
        CredentialSid, Etag, Field, FriendlyName, S3Url, Settings, SettingsPatch, Update,
        ValidationError,
    },
};

/// A record as the contract answers it, with `url` as its resource's address.
pub fn to_message(s: Settings, url: String) -> SettingsMessage {
    let text = |v: Option<&str>| v.map(str::to_owned);
    SettingsMessage {
        account_sid: s.account_sid.as_str().to_owned(),
        friendly_name: text(s.friendly_name.as_ref().map(FriendlyName::as_str)),
        aws_credentials_sid: text(s.aws_credentials_sid.as_ref().map(CredentialSid::as_str)),
        aws_s3_url: text(s.aws_s3_url.as_ref().map(S3Url::as_str)),
        aws_storage_enabled: s.aws_storage_enabled,
        encryption_key_sid: text(s.encryption_key_sid.as_ref().map(CredentialSid::as_str)),
        encryption_enabled: s.encryption_enabled,
        url,
        revision: s.revision,
        update_time: s.update_time.map(timestamp),
        etag: Etag::of_revision(s.revision).to_string(),
    }
}

/// Validates a Set request's fields (all but the account, which the caller
/// resolves) into the patch to apply, in the order the proto declares them.
///
/// # Errors
/// The first invalid field.
pub fn parse_patch(req: &SetSettingsMessage) -> Result<SettingsPatch, ValidationError> {
    let friendly_name = FriendlyName::parse(&req.friendly_name)?;
    let aws_credentials_sid = Update::from_wire(req.aws_credentials_sid.as_deref(), |v| {
        CredentialSid::parse(Field::AwsCredentialsSid, v)
    })?;
    let aws_s3_url = Update::from_wire(req.aws_s3_url.as_deref(), S3Url::parse)?;
    let encryption_key_sid = Update::from_wire(req.encryption_key_sid.as_deref(), |v| {
        CredentialSid::parse(Field::EncryptionKeySid, v)
    })?;
    Ok(SettingsPatch {
        friendly_name,
        aws_credentials_sid,
        aws_s3_url,
        aws_storage_enabled: req.aws_storage_enabled,
        encryption_key_sid,
        encryption_enabled: req.encryption_enabled,
    })
}

/// A request's optional etag: `""` means "no condition".
///
/// # Errors
/// A malformed etag, on `etag`.
pub fn parse_etag(value: &str) -> Result<Option<Etag>, ValidationError> {
    match value {
        "" => Ok(None),
        v => Etag::parse(v).map(Some),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}
