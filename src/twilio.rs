//! Twilio's REST shapes: the Recording Settings JSON body (shared by the HTTP
//! bridge and the CLI, which both print the resource as the REST API does)
//! and the error body.

use serde::{Deserialize, Serialize};

use crate::pb;

/// The Recording Settings resource exactly as Twilio's REST API renders it:
/// eight snake_case fields, `null` where unset, JSON booleans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSettingsJson {
    pub account_sid: Option<String>,
    pub friendly_name: Option<String>,
    pub aws_credentials_sid: Option<String>,
    pub aws_s3_url: Option<String>,
    pub aws_storage_enabled: Option<bool>,
    pub encryption_key_sid: Option<String>,
    pub encryption_enabled: Option<bool>,
    pub url: Option<String>,
}

impl From<pb::RecordingSettings> for RecordingSettingsJson {
    fn from(s: pb::RecordingSettings) -> Self {
        RecordingSettingsJson {
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

/// Twilio's error body: `{"code", "message", "more_info", "status"}`. The
/// helper libraries raise their usual exception (`TwilioRestException` with
/// `code` and `status`) from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioError {
    pub code: u32,
    pub message: String,
    pub more_info: String,
    pub status: u16,
}

impl TwilioError {
    pub fn new(code: u32, message: impl Into<String>, status: u16) -> Self {
        TwilioError {
            code,
            message: message.into(),
            more_info: format!("https://www.twilio.com/docs/errors/{code}"),
            status,
        }
    }
}
