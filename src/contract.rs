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
    settings_service_client::SettingsServiceClient,
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
    pub etag: String,
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
    pub etag: String,
}

/// A Get request of any resource (`GetRecordingSettingsRequest`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetSettingsMessage {
    pub account_sid: String,
}

/// A Watch request of any resource (`WatchRecordingSettingsRequest`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchSettingsMessage {
    pub account_sid: String,
    pub start_revision: u64,
}

/// One message of any resource's watch stream (`RecordingSettingsChange`, ...).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsChangeMessage {
    pub revision: u64,
    pub settings: Option<SettingsMessage>,
    pub progress: bool,
    /// The change was a reset: the resource was deleted.
    pub reset: bool,
}

/// A history listing request of any resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListRevisionsMessage {
    pub account_sid: String,
    pub page_size: i32,
    pub page_token: String,
}

/// A page of any resource's history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RevisionsPageMessage {
    pub revisions: Vec<SettingsMessage>,
    pub next_page_token: String,
}

/// A rollback request of any resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollbackMessage {
    pub account_sid: String,
    pub revision: u64,
    pub etag: String,
}

/// Converts a message to and from its shape, moving the fields listed:
/// `both_ways!(Shape <=> pb::Message { field, ... })`.
macro_rules! both_ways {
    ($shape:ident <=> $message:ty { $($field:ident),* $(,)? }) => {
        impl From<$message> for $shape {
            fn from(m: $message) -> Self {
                $shape { $($field: m.$field),* }
            }
        }

        impl From<$shape> for $message {
            fn from(m: $shape) -> Self {
                Self { $($field: m.$field),* }
            }
        }
    };
}

/// Converts both ways between the shapes above and one resource's own
/// messages: `resource_messages!(Settings, GetRequest, SetRequest, ...)`.
macro_rules! resource_messages {
    (
        $settings:ident, $get:ident, $set:ident, $watch:ident, $change:ident,
        $list:ident, $page:ident, $rollback:ident
    ) => {
        both_ways!(SettingsMessage <=> pb::$settings {
            account_sid, friendly_name, aws_credentials_sid, aws_s3_url, aws_storage_enabled,
            encryption_key_sid, encryption_enabled, url, revision, update_time, etag,
        });
        both_ways!(SetSettingsMessage <=> pb::$set {
            account_sid, friendly_name, aws_credentials_sid, aws_s3_url, aws_storage_enabled,
            encryption_key_sid, encryption_enabled, etag,
        });
        both_ways!(GetSettingsMessage <=> pb::$get { account_sid });
        both_ways!(WatchSettingsMessage <=> pb::$watch { account_sid, start_revision });
        both_ways!(ListRevisionsMessage <=> pb::$list { account_sid, page_size, page_token });
        both_ways!(RollbackMessage <=> pb::$rollback { account_sid, revision, etag });

        impl From<pb::$change> for SettingsChangeMessage {
            fn from(m: pb::$change) -> Self {
                SettingsChangeMessage {
                    revision: m.revision,
                    settings: m.settings.map(Into::into),
                    progress: m.progress,
                    reset: m.reset,
                }
            }
        }

        impl From<SettingsChangeMessage> for pb::$change {
            fn from(m: SettingsChangeMessage) -> Self {
                pb::$change {
                    revision: m.revision,
                    settings: m.settings.map(Into::into),
                    progress: m.progress,
                    reset: m.reset,
                }
            }
        }

        impl From<pb::$page> for RevisionsPageMessage {
            fn from(m: pb::$page) -> Self {
                RevisionsPageMessage {
                    revisions: m.revisions.into_iter().map(Into::into).collect(),
                    next_page_token: m.next_page_token,
                }
            }
        }

        impl From<RevisionsPageMessage> for pb::$page {
            fn from(m: RevisionsPageMessage) -> Self {
                pb::$page {
                    revisions: m.revisions.into_iter().map(Into::into).collect(),
                    next_page_token: m.next_page_token,
                }
            }
        }
    };
}

resource_messages!(
    RecordingSettings,
    GetRecordingSettingsRequest,
    SetRecordingSettingsRequest,
    WatchRecordingSettingsRequest,
    RecordingSettingsChange,
    ListRecordingSettingsRevisionsRequest,
    ListRecordingSettingsRevisionsResponse,
    RollbackRecordingSettingsRequest
);
resource_messages!(
    CompositionSettings,
    GetCompositionSettingsRequest,
    SetCompositionSettingsRequest,
    WatchCompositionSettingsRequest,
    CompositionSettingsChange,
    ListCompositionSettingsRevisionsRequest,
    ListCompositionSettingsRevisionsResponse,
    RollbackCompositionSettingsRequest
);

/// Calls one RPC on the resource's own client, converting the request from
/// and the answer to the shared shapes.
macro_rules! call {
    ($self:ident, $resource:expr, $request:expr,
     $recording:ident($recording_request:ident), $composition:ident($composition_request:ident)) => {
        match $resource {
            Resource::Recording => {
                let request = $request.map(pb::$recording_request::from);
                let answer = $self.recording.clone().$recording(request).await?;
                Ok(answer.into_inner().into())
            }
            Resource::Composition => {
                let request = $request.map(pb::$composition_request::from);
                let answer = $self.composition.clone().$composition(request).await?;
                Ok(answer.into_inner().into())
            }
            Resource::Declared(_) => Err(no_typed_service($resource)),
        }
    };
}

/// A declared kind has no typed service: it is served by SettingsService.
fn no_typed_service(resource: Resource) -> Status {
    Status::invalid_argument(format!(
        "kind {resource} has no typed service; use settingsd.v1.SettingsService"
    ))
}

/// A client of every settings service of one settingsd server, for any
/// built-in resource (the CLI, the standalone bridge, the bench). Cheap to clone:
/// clones share one channel (one connection pool).
#[derive(Debug, Clone)]
pub struct SettingsClient {
    recording: RecordingSettingsServiceClient<Channel>,
    composition: CompositionSettingsServiceClient<Channel>,
    generic: SettingsServiceClient<Channel>,
}

impl SettingsClient {
    pub fn new(channel: Channel) -> Self {
        SettingsClient {
            recording: RecordingSettingsServiceClient::new(channel.clone()),
            composition: CompositionSettingsServiceClient::new(channel.clone()),
            generic: SettingsServiceClient::new(channel),
        }
    }

    /// `SettingsService/GetSettings`.
    ///
    /// # Errors
    /// The server's status.
    pub async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<pb::Settings, Status> {
        Ok(self
            .generic
            .clone()
            .get_settings(request)
            .await?
            .into_inner())
    }

    /// `SettingsService/UpdateSettings`.
    ///
    /// # Errors
    /// The server's status.
    pub async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<pb::Settings, Status> {
        Ok(self
            .generic
            .clone()
            .update_settings(request)
            .await?
            .into_inner())
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
        call!(
            self,
            resource,
            request,
            get_recording_settings(GetRecordingSettingsRequest),
            get_composition_settings(GetCompositionSettingsRequest)
        )
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
        call!(
            self,
            resource,
            request,
            set_recording_settings(SetRecordingSettingsRequest),
            set_composition_settings(SetCompositionSettingsRequest)
        )
    }

    /// `resource`'s history listing RPC.
    ///
    /// # Errors
    /// The server's status.
    pub async fn list_revisions(
        &self,
        resource: Resource,
        request: Request<ListRevisionsMessage>,
    ) -> Result<RevisionsPageMessage, Status> {
        call!(
            self,
            resource,
            request,
            list_recording_settings_revisions(ListRecordingSettingsRevisionsRequest),
            list_composition_settings_revisions(ListCompositionSettingsRevisionsRequest)
        )
    }

    /// `resource`'s Rollback RPC.
    ///
    /// # Errors
    /// The server's status.
    pub async fn rollback(
        &self,
        resource: Resource,
        request: Request<RollbackMessage>,
    ) -> Result<SettingsMessage, Status> {
        call!(
            self,
            resource,
            request,
            rollback_recording_settings(RollbackRecordingSettingsRequest),
            rollback_composition_settings(RollbackCompositionSettingsRequest)
        )
    }

    /// `resource`'s Watch RPC, as a stream of the shared shape.
    ///
    /// # Errors
    /// The server's status (also as the stream's last item).
    pub async fn watch(
        &self,
        resource: Resource,
        request: Request<WatchSettingsMessage>,
    ) -> Result<ChangeMessages, Status> {
        fn shared<M: Into<SettingsChangeMessage> + Send + 'static>(
            stream: tonic::Streaming<M>,
        ) -> ChangeMessages {
            Box::pin(tokio_stream::StreamExt::map(stream, |m| m.map(Into::into)))
        }
        match resource {
            Resource::Recording => {
                let request = request.map(pb::WatchRecordingSettingsRequest::from);
                let answer = self
                    .recording
                    .clone()
                    .watch_recording_settings(request)
                    .await?;
                Ok(shared(answer.into_inner()))
            }
            Resource::Composition => {
                let request = request.map(pb::WatchCompositionSettingsRequest::from);
                let answer = self
                    .composition
                    .clone()
                    .watch_composition_settings(request)
                    .await?;
                Ok(shared(answer.into_inner()))
            }
            Resource::Declared(_) => Err(no_typed_service(resource)),
        }
    }
}

/// A watch stream in the shared shape.
pub type ChangeMessages = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<SettingsChangeMessage, Status>> + Send>,
>;

impl pb::ExportedSettings {
    /// A record of built-in `resource`, in that resource's own message.
    /// (A declared kind's record is [`pb::ExportedSettings::declared`]; a
    /// declared `resource` here gives an empty record.)
    pub fn new(resource: Resource, message: SettingsMessage) -> Self {
        use pb::exported_settings::Settings;
        let settings = match resource {
            Resource::Recording => Some(Settings::RecordingSettings(message.into())),
            Resource::Composition => Some(Settings::CompositionSettings(message.into())),
            Resource::Declared(_) => None,
        };
        pb::ExportedSettings { settings }
    }

    /// A record of a declared kind, in the generic shape.
    pub fn declared(settings: pb::Settings) -> Self {
        pb::ExportedSettings {
            settings: Some(pb::exported_settings::Settings::DeclaredSettings(settings)),
        }
    }

    /// Which built-in resource this record is, and the record; `None` if
    /// the server sent a resource this client does not know (a newer
    /// server) or a declared kind's record.
    pub fn into_parts(self) -> Option<(Resource, SettingsMessage)> {
        use pb::exported_settings::Settings;
        match self.settings? {
            Settings::RecordingSettings(m) => Some((Resource::Recording, m.into())),
            Settings::CompositionSettings(m) => Some((Resource::Composition, m.into())),
            Settings::DeclaredSettings(_) => None,
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
            etag: "\"7\"".into(),
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
            etag: "\"7\"".into(),
        };
        let sibling = pb::SetCompositionSettingsRequest::decode(&*set.encode_to_vec()).unwrap();
        assert_eq!(
            SetSettingsMessage::from(sibling),
            SetSettingsMessage::from(set)
        );
    }
}
