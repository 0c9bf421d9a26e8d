//! The bridge's in-process backend: the gRPC core, called directly, so the
//! bridge and gRPC clients share one code path (auth, limits, validation)
//! without a network hop.

use tonic::{Request, Status};

use crate::{
    bridge::SettingsBackend,
    contract::{GetSettingsMessage, SetSettingsMessage, SettingsMessage},
    grpc::SettingsApi,
    resource::Resource,
};

/// [`SettingsApi`] as the bridge's backend.
pub(super) struct LocalBackend(pub(super) SettingsApi);

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
}
