//! The gRPC contract (`proto/settingsd/v1`): the generated code ([`pb`]),
//! and one shape for the per-resource messages.
//!
//! Every settings resource has its own service and messages
//! (`RecordingSettings`, `CompositionSettings`, ...), field for field the
//! same. Code that handles any resource (the gRPC services, the HTTP bridge,
//! the CLI, backups) works on the shapes here ([`SettingsMessage`],
//! [`SetSettingsMessage`], [`GetSettingsMessage`]) and converts to the
//! resource's own message type only where it calls or answers that
//! resource's RPC. The conversions are written once, in
//! [`resource_messages!`], and instantiated per resource, so each edge maps
//! fields once, not once per resource.

use tonic::{transport::Channel, Request, Status};

use crate::resource::Resource;
use pb::{
    composition_settings_service_client::CompositionSettingsServiceClient,
    recording_settings_service_client::RecordingSettingsServiceClient,
};

/// Generated from `proto/settingsd/v1` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("settingsd.v1");

    /// The encoded descriptor set of `proto/` (with imports), for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("settingsd_descriptor");
}

/// `google.rpc.BadRequest.FieldViolation.reason` for a required field that
/// was absent or empty. The HTTP bridge relies on it to say "Missing
/// required parameter" rather than "Invalid parameter".
pub const REASON_MISSING: &str = "MISSING";
/// `FieldViolation.reason` for any other invalid value.
pub const REASON_INVALID: &str = "INVALID";

/// A settings resource as its RPCs answer it (`RecordingSettings`,
/// `CompositionSettings`, ...), whichever resource it is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsMessage {
    pub account_sid: String,
    pub friendly_name: Option<String>,
    pub aws_credentials_sid: Option<String>,
    pub aws_s3_url: Option<String>,
    pub aws_storage_enabled: bool,
    pub encryption_key_sid: Option<String>,
    pub encryption_enabled: bool,
    pub url: String,
    pub revision: u64,
    pub update_time: Option<prost_types::Timestamp>,
}

/// A Set request of any resource (`SetRecordingSettingsRequest`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetSettingsMessage {
    pub account_sid: String,
    pub friendly_name: String,
    pub aws_credentials_sid: Option<String>,
    pub aws_s3_url: Option<String>,
    pub aws_storage_enabled: Option<bool>,
    pub encryption_key_sid: Option<String>,
    pub encryption_enabled: Option<bool>,
}

/// A Get request of any resource (`GetRecordingSettingsRequest`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetSettingsMessage {
    pub account_sid: String,
}

/// Converts both ways between the shapes above and one resource's own
/// messages: `resource_messages!(Settings, GetRequest, SetRequest)`.
macro_rules! resource_messages {
    ($settings:ident, $get:ident, $set:ident) => {
        impl From<pb::$settings> for SettingsMessage {
            fn from(m: pb::$settings) -> Self {
                SettingsMessage {
                    account_sid: m.account_sid,
                    friendly_name: m.friendly_name,
                    aws_credentials_sid: m.aws_credentials_sid,
                    aws_s3_url: m.aws_s3_url,
                    aws_storage_enabled: m.aws_storage_enabled,
                    encryption_key_sid: m.encryption_key_sid,
                    encryption_enabled: m.encryption_enabled,
                    url: m.url,
                    revision: m.revision,
                    update_time: m.update_time,
                }
            }
        }

        impl From<SettingsMessage> for pb::$settings {
            fn from(m: SettingsMessage) -> Self {
                pb::$settings {
                    account_sid: m.account_sid,
                    friendly_name: m.friendly_name,
                    aws_credentials_sid: m.aws_credentials_sid,
                    aws_s3_url: m.aws_s3_url,
                    aws_storage_enabled: m.aws_storage_enabled,
                    encryption_key_sid: m.encryption_key_sid,
                    encryption_enabled: m.encryption_enabled,
                    url: m.url,
                    revision: m.revision,
                    update_time: m.update_time,
                }
            }
        }

        impl From<pb::$set> for SetSettingsMessage {
            fn from(m: pb::$set) -> Self {
                SetSettingsMessage {
                    account_sid: m.account_sid,
                    friendly_name: m.friendly_name,
                    aws_credentials_sid: m.aws_credentials_sid,
                    aws_s3_url: m.aws_s3_url,
                    aws_storage_enabled: m.aws_storage_enabled,
                    encryption_key_sid: m.encryption_key_sid,
                    encryption_enabled: m.encryption_enabled,
                }
            }
        }

        impl From<SetSettingsMessage> for pb::$set {
            fn from(m: SetSettingsMessage) -> Self {
                pb::$set {
                    account_sid: m.account_sid,
                    friendly_name: m.friendly_name,
                    aws_credentials_sid: m.aws_credentials_sid,
                    aws_s3_url: m.aws_s3_url,
                    aws_storage_enabled: m.aws_storage_enabled,
                    encryption_key_sid: m.encryption_key_sid,
                    encryption_enabled: m.encryption_enabled,
                }
            }
        }

        impl From<pb::$get> for GetSettingsMessage {
            fn from(m: pb::$get) -> Self {
                GetSettingsMessage {
                    account_sid: m.account_sid,
                }
            }
        }

        impl From<GetSettingsMessage> for pb::$get {
            fn from(m: GetSettingsMessage) -> Self {
                pb::$get {
                    account_sid: m.account_sid,
                }
            }
        }
    };
}

resource_messages!(
    RecordingSettings,
    GetRecordingSettingsRequest,
    SetRecordingSettingsRequest
);
resource_messages!(
    CompositionSettings,
    GetCompositionSettingsRequest,
    SetCompositionSettingsRequest
);

/// A client of every settings service of one settingsd server, for any
/// resource (the CLI, the standalone bridge, the bench). Cheap to clone:
/// clones share one channel (one connection pool).
#[derive(Debug, Clone)]
pub struct SettingsClient {
    recording: RecordingSettingsServiceClient<Channel>,
    composition: CompositionSettingsServiceClient<Channel>,
}

impl SettingsClient {
    pub fn new(channel: Channel) -> Self {
        SettingsClient {
            recording: RecordingSettingsServiceClient::new(channel.clone()),
            composition: CompositionSettingsServiceClient::new(channel),
        }
    }

    /// `resource`'s Get RPC.
    ///
    /// # Errors
    /// The server's status.
    pub async fn get(
        &self,
        resource: Resource,
        request: Request<GetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        match resource {
            Resource::Recording => {
                let request = request.map(pb::GetRecordingSettingsRequest::from);
                answer(self.recording.clone().get_recording_settings(request).await)
            }
            Resource::Composition => {
                let request = request.map(pb::GetCompositionSettingsRequest::from);
                answer(
                    self.composition
                        .clone()
                        .get_composition_settings(request)
                        .await,
                )
            }
        }
    }

    /// `resource`'s Set RPC.
    ///
    /// # Errors
    /// The server's status.
    pub async fn set(
        &self,
        resource: Resource,
        request: Request<SetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        match resource {
            Resource::Recording => {
                let request = request.map(pb::SetRecordingSettingsRequest::from);
                answer(self.recording.clone().set_recording_settings(request).await)
            }
            Resource::Composition => {
                let request = request.map(pb::SetCompositionSettingsRequest::from);
                answer(
                    self.composition
                        .clone()
                        .set_composition_settings(request)
                        .await,
                )
            }
        }
    }
}

/// A resource's answer in the shared shape.
fn answer<M>(result: Result<tonic::Response<M>, Status>) -> Result<SettingsMessage, Status>
where
    SettingsMessage: From<M>,
{
    result.map(|r| r.into_inner().into())
}

impl pb::ExportedSettings {
    /// A record of `resource`, in that resource's own message.
    pub fn new(resource: Resource, message: SettingsMessage) -> Self {
        use pb::exported_settings::Settings;
        let settings = match resource {
            Resource::Recording => Settings::RecordingSettings(message.into()),
            Resource::Composition => Settings::CompositionSettings(message.into()),
        };
        pb::ExportedSettings {
            settings: Some(settings),
        }
    }

    /// Which resource this record is, and the record; `None` if the server
    /// sent a resource this client does not know (a newer server).
    pub fn into_parts(self) -> Option<(Resource, SettingsMessage)> {
        use pb::exported_settings::Settings;
        match self.settings? {
            Settings::RecordingSettings(m) => Some((Resource::Recording, m.into())),
            Settings::CompositionSettings(m) => Some((Resource::Composition, m.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The shapes only hold if the messages really are field for field the
    /// same: a resource message encoded must decode as its sibling.
    #[test]
    fn every_resource_message_has_the_same_wire_shape() {
        let settings = pb::RecordingSettings {
            account_sid: "AC1".into(),
            friendly_name: Some("n".into()),
            aws_credentials_sid: Some("CR1".into()),
            aws_s3_url: Some("https://b/".into()),
            aws_storage_enabled: true,
            encryption_key_sid: Some("CR2".into()),
            encryption_enabled: true,
            url: "u".into(),
            revision: 7,
            update_time: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 2,
            }),
        };
        let sibling = pb::CompositionSettings::decode(&*settings.encode_to_vec()).unwrap();
        assert_eq!(
            SettingsMessage::from(sibling),
            SettingsMessage::from(settings)
        );
        let set = pb::SetRecordingSettingsRequest {
            account_sid: "AC1".into(),
            friendly_name: "n".into(),
            aws_credentials_sid: Some(String::new()),
            aws_s3_url: Some("https://b/".into()),
            aws_storage_enabled: Some(false),
            encryption_key_sid: None,
            encryption_enabled: Some(true),
        };
        let sibling = pb::SetCompositionSettingsRequest::decode(&*set.encode_to_vec()).unwrap();
        assert_eq!(
            SetSettingsMessage::from(sibling),
            SetSettingsMessage::from(set)
        );
    }
}
