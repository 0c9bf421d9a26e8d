//! A settings resource exactly as Twilio's REST API renders it (shared by
//! the bridge and the CLI, which both print the resource as the REST API
//! does).

use serde::{Deserialize, Serialize};

use crate::contract::SettingsMessage;

/// A settings resource as Twilio's REST API renders it: eight snake_case
/// fields, `null` where unset, JSON booleans. Recording and Composition
/// Settings have the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsJson {
    pub account_sid: Option<String>,
    pub friendly_name: Option<String>,
    pub aws_credentials_sid: Option<String>,
    pub aws_s3_url: Option<String>,
    pub aws_storage_enabled: Option<bool>,
    pub encryption_key_sid: Option<String>,
    pub encryption_enabled: Option<bool>,
    pub url: Option<String>,
}

impl From<SettingsMessage> for SettingsJson {
    fn from(s: SettingsMessage) -> Self {
        SettingsJson {
            account_sid: Some(s.account_sid),
            friendly_name: s.friendly_name,
            aws_credentials_sid: s.aws_credentials_sid,
            aws_s3_url: s.aws_s3_url,
            aws_storage_enabled: Some(s.aws_storage_enabled),
            encryption_key_sid: s.encryption_key_sid,
            encryption_enabled: Some(s.encryption_enabled),
            url: Some(s.url),
        }
    }
}
