//! The bridge's in-process backend: the gRPC core, called directly, so the
//! bridge and gRPC clients share one code path (auth, limits, validation)
//! without a network hop.

use tonic::{Request, Status};

use crate::{
    bridge::SettingsBackend,
    contract::{pb, GetSettingsMessage, SetSettingsMessage, SettingsMessage},
    grpc::{SettingsApi, SettingsGrpc},
    resource::Resource,
};

/// [`SettingsApi`] (and the generic service over it) as the bridge's
/// backend.
pub(super) struct LocalBackend(pub(super) SettingsApi, pub(super) SettingsGrpc);

#[tonic::async_trait]
impl SettingsBackend for LocalBackend {
    #[tracing::instrument(level = "debug", skip_all, fields(%resource, account))]
    async fn get(
        &self,
        resource: Resource,
        request: Request<GetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        let (metadata, _, message) = request.into_parts();
        Ok(self.0.get(resource, &metadata, message).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(%resource, account))]
    async fn set(
        &self,
        resource: Resource,
        request: Request<SetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        let (metadata, _, message) = request.into_parts();
        Ok(self.0.set(resource, &metadata, message).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<pb::Settings, Status> {
        let (metadata, _, message) = request.into_parts();
        tracing::Span::current().record("kind", message.kind.as_str());
        Ok(self.1.get(&metadata, message).await?)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(kind, account))]
    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Result<pb::Settings, Status> {
        let (metadata, _, message) = request.into_parts();
        Ok(self.1.update(&metadata, message).await?)
    }
}
