//! What the bridge calls: a settings resource's Get and Set RPCs, with the
//! caller's metadata. The in-process implementation lives with the server's
//! wiring; [`SettingsClient`] calls a settingsd elsewhere (`settingsd bridge`).

use tonic::{Request, Status};

use crate::{
    contract::{pb, GetSettingsMessage, SetSettingsMessage, SettingsClient, SettingsMessage},
    resource::Resource,
};

/// A settings resource's two RPCs, for any resource.
#[tonic::async_trait]
pub trait SettingsBackend: Send + Sync + 'static {
    /// The resource's Get RPC.
    async fn get(
        &self,
        resource: Resource,
        request: Request<GetSettingsMessage>,
    ) -> Result<SettingsMessage, Status>;

    /// The resource's Set RPC.
    async fn set(
        &self,
        resource: Resource,
        request: Request<SetSettingsMessage>,
    ) -> Result<SettingsMessage, Status>;

    /// `SettingsService/GetSettings`, for any kind (the JSON API).
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<pb::Settings, Status>;

    /// `SettingsService/UpdateSettings`, for any kind (the JSON API).
    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<pb::Settings, Status>;
}

#[tonic::async_trait]
impl SettingsBackend for SettingsClient {
    async fn get(
        &self,
        resource: Resource,
        request: Request<GetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        SettingsClient::get(self, resource, request).await
    }

    async fn set(
        &self,
        resource: Resource,
        request: Request<SetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        SettingsClient::set(self, resource, request).await
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<pb::Settings, Status> {
        SettingsClient::get_settings(self, request).await
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<pb::Settings, Status> {
        SettingsClient::update_settings(self, request).await
    }
}
