//! The stored encoding of a settings record: one format-version byte, then
//! a prost message ([`StoredSettingsV1`] for a built-in resource,
//! [`StoredMessageV1`] for a declared kind), so the encoding can evolve
//! without guessing what an old record means. Every resource and every backend uses
//! it (a record exported from sled and imported on etcd is the same bytes);
//! the key (tree or etcd key, and account) says whose record it is, so
//! neither is repeated in the value.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::{
    domain::{AccountSid, Settings, SettingsText, ValidationError},
    error::Error,
    resource::Resource,
    store::record::{MessageRecord, Record},
};

/// First byte of every stored built-in resource; bump it when the encoding
/// changes.
const FORMAT_V1: u8 = 1;
/// First byte of every stored declared kind's record.
const FORMAT_MESSAGE_V1: u8 = 2;

/// Now, truncated to the microseconds the encoding keeps, so that a Set's
/// answer equals what a later Get reads back.
pub fn now_micros() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_micros(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
}

/// The on-disk encoding of one account's settings resource, version 1.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredSettingsV1 {
    #[prost(string, optional, tag = "1")]
    friendly_name: Option<String>,
    #[prost(string, optional, tag = "2")]
    aws_credentials_sid: Option<String>,
    #[prost(string, optional, tag = "3")]
    aws_s3_url: Option<String>,
    #[prost(bool, tag = "4")]
    aws_storage_enabled: bool,
    #[prost(string, optional, tag = "5")]
    encryption_key_sid: Option<String>,
    #[prost(bool, tag = "6")]
    encryption_enabled: bool,
    #[prost(uint64, tag = "7")]
    revision: u64,
    /// Microseconds since the Unix epoch.
    #[prost(int64, tag = "8")]
    update_time_unix_micros: i64,
}

/// The on-disk encoding of one account's record of a declared kind,
/// version 1. Revision and time keep the tags they have in
/// [`StoredSettingsV1`].
#[derive(Clone, PartialEq, prost::Message)]
struct StoredMessageV1 {
    /// The kind's message, protobuf-encoded.
    #[prost(bytes = "bytes", tag = "1")]
    value: bytes::Bytes,
    #[prost(uint64, tag = "7")]
    revision: u64,
    /// Microseconds since the Unix epoch.
    #[prost(int64, tag = "8")]
    update_time_unix_micros: i64,
}

fn unix_micros(time: Option<SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Encodes a record as stored: the format byte, then the prost message.
pub fn encode(record: &Record) -> Vec<u8> {
    let settings = match record {
        Record::Twilio(settings) => settings,
        Record::Message(message) => {
            let stored = StoredMessageV1 {
                value: message.value.clone(),
                revision: message.revision,
                update_time_unix_micros: unix_micros(message.update_time),
            };
            let mut bytes = Vec::with_capacity(1 + stored.encoded_len());
            bytes.push(FORMAT_MESSAGE_V1);
            stored
                .encode(&mut bytes)
                .expect("a Vec grows to fit any message");
            return bytes;
        }
    };
    let stored = StoredSettingsV1 {
        friendly_name: settings
            .friendly_name
            .as_ref()
            .map(|v| v.as_str().to_owned()),
        aws_credentials_sid: settings
            .aws_credentials_sid
            .as_ref()
            .map(|v| v.as_str().to_owned()),
        aws_s3_url: settings.aws_s3_url.as_ref().map(|v| v.as_str().to_owned()),
        aws_storage_enabled: settings.aws_storage_enabled,
        encryption_key_sid: settings
            .encryption_key_sid
            .as_ref()
            .map(|v| v.as_str().to_owned()),
        encryption_enabled: settings.encryption_enabled,
        revision: settings.revision,
        update_time_unix_micros: unix_micros(settings.update_time),
    };
    let mut bytes = Vec::with_capacity(1 + stored.encoded_len());
    bytes.push(FORMAT_V1);
    stored
        .encode(&mut bytes)
        .expect("a Vec grows to fit any message");
    bytes
}

/// Decodes a stored value, re-validating every field: a record that decodes
/// but holds something the API would reject is as corrupt as one that does not.
///
/// # Errors
/// [`Error::Corrupt`] naming the resource and the account.
pub fn decode(resource: Resource, account: &AccountSid, bytes: &[u8]) -> Result<Record, Error> {
    decode_at(resource, account, bytes, None)
}

/// [`decode`] for a backend that keeps the revision outside the value
/// (etcd's `mod_revision`): `revision`, if given, replaces the stored one.
///
/// # Errors
/// As [`decode`].
pub fn decode_at(
    resource: Resource,
    account: &AccountSid,
    bytes: &[u8],
    revision: Option<u64>,
) -> Result<Record, Error> {
    let corrupt = |detail: String| Error::Corrupt {
        resource,
        account: account.clone(),
        detail,
    };
    let invalid = |e: ValidationError| corrupt(e.to_string());
    let time = |micros: i64, revision: u64| {
        let micros = u64::try_from(micros).map_err(|_| corrupt("negative update time".into()))?;
        Ok::<_, Error>((revision > 0).then(|| UNIX_EPOCH + Duration::from_micros(micros)))
    };
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    let expected = if resource.is_built_in() {
        FORMAT_V1
    } else {
        FORMAT_MESSAGE_V1
    };
    if *version != expected {
        return Err(corrupt(format!("unknown format version {version}")));
    }
    if !resource.is_built_in() {
        let stored = StoredMessageV1::decode(body).map_err(|e| corrupt(e.to_string()))?;
        let revision = revision.unwrap_or(stored.revision);
        return Ok(Record::Message(MessageRecord {
            account_sid: account.clone(),
            value: stored.value,
            revision,
            update_time: time(stored.update_time_unix_micros, revision)?,
        }));
    }
    let stored = StoredSettingsV1::decode(body).map_err(|e| corrupt(e.to_string()))?;
    // Every field re-validated, cross-field rules included: a record the
    // API could never have written (say, storage enabled with no URL) would
    // make every later Set fail over a field its caller never sent.
    let text = SettingsText {
        friendly_name: stored.friendly_name.as_deref(),
        aws_credentials_sid: stored.aws_credentials_sid.as_deref(),
        aws_s3_url: stored.aws_s3_url.as_deref(),
        aws_storage_enabled: stored.aws_storage_enabled,
        encryption_key_sid: stored.encryption_key_sid.as_deref(),
        encryption_enabled: stored.encryption_enabled,
    };
    let settings = Settings::parse(account.clone(), text).map_err(invalid)?;
    let revision = revision.unwrap_or(stored.revision);
    Ok(Record::Twilio(Settings {
        revision,
        update_time: time(stored.update_time_unix_micros, revision)?,
        ..settings
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FriendlyName;

    #[test]
    fn a_record_breaking_a_cross_field_rule_is_corrupt_naming_the_account() {
        let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let mut record = Settings::default_for(account.clone());
        record.friendly_name = Some(FriendlyName::parse("x").unwrap());
        record.revision = 1;
        let resource = Resource::Composition;
        assert!(decode(resource, &account, &encode(&record.clone().into())).is_ok());
        record.aws_storage_enabled = true;

        let error = decode(resource, &account, &encode(&record.into())).unwrap_err();

        assert!(
            matches!(&error, Error::Corrupt { resource: r, account: a, detail }
                if *r == resource && *a == account && detail.contains("aws_s3_url")),
            "{error:?}"
        );
    }
}
