//! Wiring: the store, the gRPC services (settings, health, reflection) and
//! graceful shutdown. [`run`] takes already-bound listeners and a shutdown
//! future, so tests bind port 0 and stop the server without signals.

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};
use tonic_health::ServingStatus;

use crate::{
    grpc::RecordingSettingsGrpc,
    pb::{recording_settings_service_server::RecordingSettingsServiceServer, FILE_DESCRIPTOR_SET},
    store::{Store, StoreOptions},
};

/// The public base URL that resources report in their `url` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(Arc<str>);

impl PublicUrl {
    /// What the real API answers.
    pub const TWILIO: &'static str = "https://video.twilio.com";

    /// # Errors
    /// A message if `value` is not an absolute http(s) URL without query or fragment.
    pub fn parse(value: &str) -> Result<Self, String> {
        let url =
            url::Url::parse(value).map_err(|e| format!("invalid public URL {value:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "invalid public URL {value:?}: must be an http or https URL with a host"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "invalid public URL {value:?}: must not have a query or fragment"
            ));
        }
        Ok(PublicUrl(value.trim_end_matches('/').into()))
    }

    /// The Recording Settings resource's address under this base.
    pub fn recording_settings_url(&self) -> String {
        format!("{}/v1/RecordingSettings/Default", self.0)
    }
}

impl Default for PublicUrl {
    fn default() -> Self {
        PublicUrl(Self::TWILIO.into())
    }
}

/// Everything `run` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub store: StoreOptions,
    pub public_url: PublicUrl,
}

/// Opens the store, serves gRPC on `grpc` until `shutdown` completes, then
/// finishes in-flight requests, makes every write durable and closes the store.
///
/// # Errors
/// If the store cannot be opened (for example, the data directory is held by
/// another settingsd), if serving fails, or if the final flush fails.
pub async fn run(
    config: ServerConfig,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let store_options = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_options)).await??;
    let result = serve(&config, store.clone(), grpc, shutdown).await;
    let closed = tokio::task::spawn_blocking(move || store.close()).await?;
    result?;
    closed?;
    tracing::info!("stopped; every acknowledged write is on disk");
    Ok(())
}

async fn serve(
    config: &ServerConfig,
    store: Store,
    grpc: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let grpc_addr: SocketAddr = grpc.local_addr()?;
    let settings = RecordingSettingsServiceServer::new(RecordingSettingsGrpc::new(
        store,
        config.public_url.recording_settings_url(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<RecordingSettingsServiceServer<RecordingSettingsGrpc>>()
        .await;
    health.set_service_status("", ServingStatus::Serving).await;

    // grpcurl 1.8 asks for v1alpha, newer clients for v1: serve both.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    tracing::info!(%grpc_addr, "serving gRPC");
    let incoming = TcpIncoming::from(grpc).with_nodelay(Some(true));
    let health_on_shutdown = health.clone();
    Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(settings)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            health_on_shutdown
                .set_service_status("", ServingStatus::NotServing)
                .await;
        })
        .await?;
    Ok(())
}
