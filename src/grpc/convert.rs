//! The gRPC edge's conversions, written once for every resource: a stored
//! record into the contract's shape, a Set request into a validated patch.

use std::time::SystemTime;

use crate::{
    contract::{pb, SetSettingsMessage, SettingsMessage},
    domain::{
        AccountSid, CredentialSid, Etag, Field, FriendlyName, S3Url, Settings, SettingsPatch,
        Update, ValidationError, Violation,
    },
    request_log::RecordedRequest,
    resource::Resource,
};

/// An operator request's `resource`: the name of a resource (or declared
/// kind) of `served`, or "" for every resource (`None`).
///
/// # Errors
/// A [`Field::Resource`] error for any other value, listing the names.
pub fn optional_resource(
    name: &str,
    served: &[Resource],
) -> Result<Option<Resource>, ValidationError> {
    match name {
        "" => Ok(None),
        name => served
            .iter()
            .find(|r| r.name() == name)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                let names: Vec<_> = served.iter().map(|r| r.name()).collect();
                ValidationError {
                    field: Field::Resource,
                    violation: Violation::Malformed(format!(
                        "must be one of {} or empty",
                        names.join(", ")
                    )),
                }
            }),
    }
}

/// An operator request's `account_sid`: an account, or "" for every
/// account (`None`).
///
/// # Errors
/// A [`Field::AccountSid`] error for a malformed SID.
pub fn optional_account(sid: &str) -> Result<Option<AccountSid>, ValidationError> {
    match sid {
        "" => Ok(None),
        sid => AccountSid::parse(sid).map(Some),
    }
}

/// An RPC's name as the contract spells it (`GetRecordingSettings`), from
/// the handler's (`get_recording_settings`, the metrics' label).
fn rpc_name(handler: &str) -> String {
    handler
        .split('_')
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// The write that makes an account's `resource` hold exactly `message`'s
/// fields (an exported record's): whatever was stored is replaced.
///
/// # Errors
/// The first invalid field (or broken cross-field rule), named.
pub fn replacement(
    resource: Resource,
    message: &SettingsMessage,
) -> Result<crate::store::Replacement, ValidationError> {
    let account = AccountSid::parse(&message.account_sid)?;
    let patch = replacing_patch(account.clone(), message, false)?;
    Ok(crate::store::Replacement {
        resource,
        account,
        patch: patch.into(),
    })
}

/// The patch that makes `account`'s built-in resource hold exactly
/// `message`'s fields, validated as a Set validates (every field, the
/// cross-field rules, `friendly_name` required). With `blank_clears`, a
/// string sent empty is an unset field, as in a Set (a generic update);
/// without, it is a value, and refused (an import's record says exactly
/// what is stored).
///
/// # Errors
/// The first invalid field.
pub fn replacing_patch(
    account: AccountSid,
    message: &SettingsMessage,
    blank_clears: bool,
) -> Result<SettingsPatch, ValidationError> {
    fn text(v: &Option<String>, blank_clears: bool) -> Option<&str> {
        v.as_deref().filter(|v| !(blank_clears && v.is_empty()))
    }
    let text = crate::domain::SettingsText {
        friendly_name: text(&message.friendly_name, blank_clears),
        aws_credentials_sid: text(&message.aws_credentials_sid, blank_clears),
        aws_s3_url: text(&message.aws_s3_url, blank_clears),
        aws_storage_enabled: message.aws_storage_enabled,
        encryption_key_sid: text(&message.encryption_key_sid, blank_clears),
        encryption_enabled: message.encryption_enabled,
    };
    SettingsPatch::replacing(&Settings::parse(account, text)?)
}

/// A request-log entry as `ListRecentRequests` answers it.
pub fn recorded_request(r: RecordedRequest) -> pb::RecordedRequest {
    pb::RecordedRequest {
        time: Some(timestamp(r.time)),
        transport: r.transport.to_owned(),
        method: match r.transport {
            "grpc" => rpc_name(&r.method),
            _ => r.method.into_owned(),
        },
        account_sid: r.account.map(|a| a.as_str().to_owned()).unwrap_or_default(),
        status: r.status.into_owned(),
        latency: prost_types::Duration::try_from(r.latency).ok(),
        parameters: r
            .parameters
            .into_iter()
            .map(|(name, value)| pb::FormParameter { name, value })
            .collect(),
    }
}

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
