//! Wiring: the store, the gRPC services (settings, health, reflection), the
//! HTTP bridge, and graceful shutdown. [`run`] takes already-bound listeners and a shutdown
//! future, so tests bind port 0 and stop the server without signals.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::StreamExt;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;

use crate::{
    auth::Authenticator,
    grpc::{AdminGrpc, RecordingSettingsGrpc},
    http::{self, SettingsBackend},
    idle::{TrackActivity, TrackActivityLayer},
    limits::{limited_incoming, InFlight, Limits},
    pb::{
        admin_service_server::AdminServiceServer,
        recording_settings_service_client::RecordingSettingsServiceClient,
        recording_settings_service_server::RecordingSettingsServiceServer, FILE_DESCRIPTOR_SET,
    },
    store::{Store, StoreOptions},
};

/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
    pub auth: Authenticator,
    /// Serve without an accounts file on a non-loopback address anyway.
    pub allow_open: bool,
    pub limits: Limits,
}

/// The bound sockets `run` serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

/// Refuses to expose an open (credential-less) server beyond loopback unless
/// the operator said so: in open mode anyone who can connect can read and
/// write every account.
///
/// # Errors
/// A message naming the address and the two ways out.
pub fn check_exposure(
    auth: &Authenticator,
    allow_open: bool,
    addrs: &[SocketAddr],
) -> anyhow::Result<()> {
    if !auth.is_open() || allow_open {
        return Ok(());
    }
    if let Some(addr) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        anyhow::bail!(
            "refusing to serve without --accounts on non-loopback address {addr}: \
             anyone who can reach it could read and change every account's settings; \
             give --accounts FILE, bind a loopback address, or pass --allow-open"
        );
    }
    Ok(())
}

/// Opens the store and serves gRPC and the HTTP bridge until `shutdown`
/// completes; then stops accepting, finishes in-flight requests, makes every
/// write durable and closes the store.
///
/// # Errors
/// If an open server would be exposed beyond loopback (see
/// [`check_exposure`]), if the store cannot be opened (for example, the data
/// directory is held by another settingsd), if serving fails, or if the
/// final flush fails.
pub async fn run(
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    check_exposure(&config.auth, config.allow_open, &[grpc_addr, http_addr])?;
    if config.auth.is_open() {
        tracing::warn!(
            "running open (no --accounts): any account SID is accepted with any password; \
             use this only as a local emulator"
        );
    }
    let store_options = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_options)).await??;
    let service = RecordingSettingsGrpc::new(
        store.clone(),
        config.auth.clone(),
        InFlight::new(config.limits.max_in_flight),
        config.public_url.recording_settings_url(),
    );
    let result = serve(service, &store, listeners, &config.limits, shutdown).await;
    let closed = tokio::task::spawn_blocking(move || store.close()).await?;
    result?;
    closed?;
    tracing::info!("stopped; every acknowledged write is on disk");
    Ok(())
}

async fn serve(
    service: RecordingSettingsGrpc,
    store: &Store,
    listeners: Listeners,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    serving(&health).await;
    // Health follows whether writes work: a failed commit stops them until
    // the store reopens (see `store`), a stuck commit holds them up.
    let _supervisor = AbortOnDrop(tokio::spawn(supervise_store(
        store.clone(),
        health.clone(),
        limits.commit_stall_limit,
    )));

    // grpcurl 1.8 asks for v1alpha, newer clients for v1: serve both.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // Connections are closed after `limits.idle_timeout` without a request
    // (see `crate::idle`); the layer reports each request's progress to its
    // connection. No `max_connection_age`: it would also cut connections in
    // active use (a long export stream, unless its grace were as long), and
    // the client would simply reconnect; holding a slot without using it,
    // which is what an age limit would guard against here, the idle timeout
    // already prevents.
    let grpc = Server::builder()
        .layer(TrackActivityLayer)
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            RecordingSettingsServiceServer::new(service.clone())
                .max_decoding_message_size(limits.max_grpc_message_bytes),
        )
        .add_service(
            AdminServiceServer::new(AdminGrpc::new(service.clone()))
                .max_decoding_message_size(limits.max_grpc_message_bytes),
        )
        .serve_with_incoming_shutdown(
            limited_incoming(listeners.grpc, limits.max_connections, limits.idle_timeout),
            stopped(),
        );
    let http = serve_http(listeners.http, Arc::new(service), limits.clone(), stopped());

    tracing::info!(%grpc_addr, %http_addr, "serving gRPC and the HTTP bridge");
    let servers = async {
        let (grpc, http) = tokio::join!(grpc, http);
        grpc?;
        http
    };
    tokio::pin!(servers);
    tokio::select! {
        result = &mut servers => return result,
        () = shutdown => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
    not_serving(&health).await;
    let _ = stop_tx.send(true);
    // In-flight requests end within the request timeout; what is still open
    // after that is a stream that never ends on its own (health's Watch):
    // close it rather than wait forever.
    let grace = limits.request_timeout + SHUTDOWN_SLACK;
    match tokio::time::timeout(grace, servers).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?grace,
                "connections still open after the shutdown grace period: closing them"
            );
            Ok(())
        }
    }
}

/// Added to the request timeout to give shutdown's last answers time to be written.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(2);

/// How often the store supervisor looks at the store (so health reflects a
/// failed or stuck commit within this), and, after a failed commit, checks
/// whether the disk takes writes again.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);

/// Forever: keeps health true to whether writes work, and brings writes
/// back after a failed commit. Health is NOT_SERVING while a failed commit
/// has stopped writes (until [`Store::recover`] succeeds, which this retries)
/// and while a commit has been running longer than `stall_limit` (a stuck
/// disk: writers are waiting on it).
async fn supervise_store(
    store: Store,
    health: tonic_health::server::HealthReporter,
    stall_limit: Duration,
) {
    let mut healthy = true;
    let mut attempts = 0_u64;
    loop {
        tokio::time::sleep(SUPERVISE_INTERVAL).await;
        if store.write_failure().is_some() {
            let attempt = store.clone();
            match tokio::task::spawn_blocking(move || attempt.recover()).await {
                Ok(Ok(())) => attempts = 0,
                Ok(Err(e)) => {
                    // Every 10 s, not every attempt: a full disk may last hours.
                    if attempts % 20 == 0 {
                        tracing::warn!(error = %e, attempts, "store not recovered yet; retrying");
                    }
                    attempts += 1;
                }
                Err(e) => tracing::error!(error = %e, "store recovery task failed"),
            }
        }
        let failure = store.write_failure();
        let stalled = store.commit_running_for().filter(|d| *d >= stall_limit);
        let now_healthy = failure.is_none() && stalled.is_none();
        if now_healthy == healthy {
            continue;
        }
        healthy = now_healthy;
        if healthy {
            tracing::info!("writes work again: health is SERVING");
            serving(&health).await;
            continue;
        }
        match (failure, stalled) {
            (Some(error), _) => tracing::error!(
                %error,
                "writes stopped after a failed commit: health is NOT_SERVING until the disk \
                 takes writes again"
            ),
            (None, stalled) => tracing::error!(
                running_for = ?stalled,
                "a commit (flush + fdatasync) is stuck: health is NOT_SERVING until it finishes"
            ),
        }
        not_serving(&health).await;
    }
}

/// Reports every service, and the server as a whole, as SERVING.
async fn serving(health: &tonic_health::server::HealthReporter) {
    health
        .set_serving::<RecordingSettingsServiceServer<RecordingSettingsGrpc>>()
        .await;
    health.set_serving::<AdminServiceServer<AdminGrpc>>().await;
    health.set_service_status("", ServingStatus::Serving).await;
}

/// Reports every service, and the server as a whole, as NOT_SERVING.
async fn not_serving(health: &tonic_health::server::HealthReporter) {
    health
        .set_not_serving::<RecordingSettingsServiceServer<RecordingSettingsGrpc>>()
        .await;
    health
        .set_not_serving::<AdminServiceServer<AdminGrpc>>()
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
}

/// Aborts a background task when the scope that owns it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the bridge with hyper directly (rather than `axum::serve`) for the
/// limits axum does not expose: the header read timeout that cuts off
/// slowloris clients, the header size caps, and the idle timeout (which also
/// bounds the protocol sniffing before the first request, where no hyper
/// timer runs).
async fn serve_http(
    listener: TcpListener,
    backend: Arc<dyn SettingsBackend>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = http::router(backend, limits.request_timeout, limits.max_header_bytes);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // Room for headers somewhat over the limit, so the router answers
        // them with a Twilio 431 body; hyper's own 431 (no body) is left for
        // the grossly oversized.
        .max_buf_size(limits.max_header_bytes.saturating_mul(4).max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut incoming = limited_incoming(listener, limits.max_connections, limits.idle_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(stream)) => stream,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    continue;
                }
                None => break,
            },
            () = &mut shutdown => break,
        };
        let service =
            TowerToHyperService::new(TrackActivity::new(router.clone(), stream.activity()));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(incoming);
    if tokio::time::timeout(limits.request_timeout + SHUTDOWN_SLACK, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace period: closing them");
    }
    Ok(())
}

/// Runs the HTTP bridge alone, in front of the settingsd gRPC server at
/// `upstream` (for example `http://10.0.0.5:50051`). Credentials pass
/// through; the upstream server decides.
///
/// # Errors
/// If `upstream` is not a valid URI or serving fails. An unreachable upstream
/// is not an error here: each request then answers Twilio's 503.
pub async fn run_bridge(
    upstream: &str,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(upstream.to_owned())
        .map_err(|e| anyhow::anyhow!("invalid --upstream {upstream:?}: {e}"))?
        .tcp_nodelay(true)
        .connect_lazy();
    let backend: Arc<dyn SettingsBackend> = Arc::new(RecordingSettingsServiceClient::new(channel));
    tracing::info!(http_addr = %http.local_addr()?, %upstream, "serving the HTTP bridge");
    serve_http(http, backend, Limits::default(), async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}
