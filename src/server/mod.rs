//! Wiring: the store, the gRPC services (settings, health, reflection), the
//! HTTP bridge, and graceful shutdown. [`run`] takes already-bound listeners and a shutdown
//! future, so tests bind port 0 and stop the server without signals.
//!
//! Layout: `limits` and `idle` keep clients from holding the server,
//! `supervise` keeps health true to whether writes work, `local` is the
//! bridge's in-process backend (the services, called directly).

mod admin;
mod idle;
mod limits;
mod local;
mod observe;
pub(crate) mod schemas;
mod supervise;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use serde::Serialize;
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};
use tokio_stream::StreamExt;
use tonic::transport::{Endpoint, Server};

pub use self::limits::Limits;
use self::{
    idle::{TrackActivity, TrackActivityLayer},
    limits::limited_incoming,
    local::LocalBackend,
    observe::{observe_http, HttpObservers},
    supervise::{not_serving, serving, supervise_store},
};
pub use crate::grpc::PublicUrl;
use crate::{
    auth::Authenticator,
    bridge::{self, SettingsBackend},
    contract::{
        pb::{
            admin_service_server::AdminServiceServer,
            composition_settings_service_server::CompositionSettingsServiceServer,
            recording_settings_service_server::RecordingSettingsServiceServer,
            settings_service_server::SettingsServiceServer, FILE_DESCRIPTOR_SET,
        },
        SettingsClient,
    },
    grpc::{
        AdminGrpc, CompositionSettingsGrpc, InFlight, RecordingSettingsGrpc, SettingsApi,
        SettingsGrpc, WatchSlots,
    },
    kinds::Catalog,
    metrics::Metrics,
    request_log::RequestLog,
    resource::Resource,
    store::{
        etcd::{EtcdOptions, EtcdStore},
        sled::{SledStore, StoreOptions},
        SharedStore, Store,
    },
};

/// Which backend a server stores its settings in, and how to open it.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded sled store in a data directory (the default).
    Sled(StoreOptions),
    /// An etcd cluster, shared with other front ends.
    Etcd(EtcdOptions),
}

impl StoreConfig {
    /// Opens the store for the built-in resources and `declared` kinds,
    /// telling `metrics` (if any) about its writes.
    ///
    /// # Errors
    /// The sled store's open errors (a data directory held by another
    /// settingsd...); invalid etcd options.
    pub async fn open(
        &self,
        metrics: Option<&Metrics>,
        declared: Vec<Resource>,
    ) -> anyhow::Result<SharedStore> {
        let observer = metrics.map(|m| Arc::new(m.clone()) as _);
        Ok(match self.clone() {
            StoreConfig::Sled(mut options) => {
                options.declared = declared;
                options.observer = observer.or(options.observer);
                let store =
                    tokio::task::spawn_blocking(move || SledStore::open(&options)).await??;
                Arc::new(store)
            }
            StoreConfig::Etcd(mut options) => {
                options.declared = declared;
                options.observer = observer.or(options.observer);
                Arc::new(EtcdStore::connect(&options).await?)
            }
        })
    }
}

/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything `run` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub store: StoreConfig,
    pub public_url: PublicUrl,
    pub auth: Authenticator,
    /// Serve without an accounts file on a non-loopback address anyway.
    pub allow_open: bool,
    pub limits: Limits,
    /// Metrics, served on the admin listener; `None` records nothing (the
    /// admin listener is off).
    pub metrics: Option<Metrics>,
    /// `/metrics` needs no operator credentials even with `--accounts`.
    pub metrics_public: bool,
    /// A file in the export format loaded at start (see
    /// [`crate::backup::seed`]).
    pub seed: Option<std::path::PathBuf>,
    /// How many requests the request log keeps (0: none).
    pub request_log: usize,
    /// Every kind it serves: the built-in ones and those of `--kinds`.
    pub kinds: Arc<Catalog>,
    /// Serve a declared kind whose schema changed incompatibly with its
    /// stored records (`--allow-incompatible-kinds`).
    pub allow_incompatible_kinds: bool,
}

/// The bound sockets `run` serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
    /// The admin listener (metrics and probes), if on. Served only with
    /// [`ServerConfig::metrics`].
    pub admin: Option<TcpListener>,
    /// Told the bound addresses once both listeners accept (after the store
    /// has opened): `serve` prints them as its ready line.
    pub ready: Option<oneshot::Sender<Ready>>,
}

/// The addresses a server accepts on, once it does: `serve`'s ready line on
/// stdout, `{"grpc":"127.0.0.1:50051","http":"127.0.0.1:8080"}` (the
/// standalone bridge's has `http` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ready {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<SocketAddr>,
}

impl Ready {
    /// The ready line: one line of JSON.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("addresses serialize")
    }
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
    let mut addrs = vec![grpc_addr, http_addr];
    if let Some(admin) = &listeners.admin {
        addrs.push(admin.local_addr()?);
    }
    check_exposure(&config.auth, config.allow_open, &addrs)?;
    if config.auth.is_open() {
        tracing::warn!(
            "running open (no --accounts): any account SID is accepted with any password; \
             use this only as a local emulator"
        );
    }
    let store = config
        .store
        .open(config.metrics.as_ref(), config.kinds.declared_resources())
        .await?;
    run_on(store, config, listeners, shutdown).await
}

/// [`run`] on a store that is already open (any [`crate::store::Store`]
/// implementation; `config.store` is not used): checks the declared kinds'
/// schemas, loads `config.seed`, then serves. Closes the store when it
/// stops.
///
/// # Errors
/// As [`run`], but for opening the store; an incompatible schema or an
/// invalid seed line.
pub async fn run_on(
    store: SharedStore,
    config: ServerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    if let Err(e) =
        schemas::check_and_record(&*store, &config.kinds, config.allow_incompatible_kinds).await
    {
        let _ = store.close().await;
        let source = config.kinds.declared().source().display().to_string();
        return Err(e.context(format!("--kinds {source}")));
    }
    // After the schema check: a seed's declared values are written in the
    // schema the server serves, so it must first be known to fit the
    // stored records.
    if let Some(path) = &config.seed {
        if let Err(e) = seed(&*store, &config.kinds, path).await {
            let _ = store.close().await;
            return Err(e);
        }
    }
    let in_flight = InFlight::new(config.limits.max_in_flight);
    let requests = Arc::new(RequestLog::new(config.request_log));
    let api = SettingsApi::new(
        store.clone(),
        config.auth.clone(),
        in_flight.clone(),
        &config.public_url,
        config.metrics.clone(),
        Arc::clone(&requests),
        WatchSlots::new(
            config.limits.max_watches,
            config.limits.max_watches_per_account,
        ),
    );
    let observers = HttpObservers {
        metrics: config.metrics.clone(),
        requests,
    };
    let result = serve(api, &store, listeners, &config, observers, shutdown).await;
    let closed = store.close().await;
    // The last handle may run a backend's own final flush when it drops:
    // drop it off the async workers.
    tokio::task::spawn_blocking(move || drop(store)).await?;
    result?;
    closed?;
    tracing::info!("stopped; every acknowledged write is on disk");
    Ok(())
}

/// Loads a `--seed` file into `store`, its declared kinds' lines read with
/// the server's `catalog`.
async fn seed(store: &dyn Store, catalog: &Catalog, path: &std::path::Path) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open --seed {}", path.display()))?;
    let (written, unchanged) = crate::backup::seed(store, catalog, std::io::BufReader::new(file))
        .await
        .with_context(|| format!("invalid --seed {}", path.display()))?;
    tracing::info!(seed = %path.display(), written, unchanged, "seeded");
    Ok(())
}

async fn serve(
    api: SettingsApi,
    store: &SharedStore,
    listeners: Listeners,
    config: &ServerConfig,
    observers: HttpObservers,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let in_flight = api.in_flight().clone();
    let limits = &config.limits;
    let metrics = config.metrics.as_ref();
    let gauge = |listener: &str| metrics.map(|m| m.connections(listener));
    let grpc_addr = listeners.grpc.local_addr()?;
    let http_addr = listeners.http.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    serving(&health).await;
    // Health follows whether writes work: a failed commit stops them until
    // the store reopens (see `store`), a stuck commit holds them up.
    let _supervisor = AbortOnDrop(tokio::spawn(supervise_store(
        Arc::clone(store),
        health.clone(),
        limits.commit_stall_limit,
    )));

    let declared_files = config.kinds.declared().file_descriptor_set_bytes();
    // grpcurl 1.8 asks for v1alpha, newer clients for v1: serve both.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // The declared kinds' messages, so that grpcurl can describe
            // them and read and write their Any values as JSON.
            .register_encoded_file_descriptor_set(&declared_files)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_rx_admin = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // Connections are closed after `limits.idle_timeout` without a request
    // (see `idle`); the layer reports each request's progress to its
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
            RecordingSettingsServiceServer::new(RecordingSettingsGrpc(api.clone()))
                .max_decoding_message_size(limits.max_grpc_message_bytes),
        )
        .add_service(
            CompositionSettingsServiceServer::new(CompositionSettingsGrpc(api.clone()))
                .max_decoding_message_size(limits.max_grpc_message_bytes),
        )
        .add_service(
            AdminServiceServer::new(AdminGrpc::new(api.clone(), Arc::clone(&config.kinds)))
                .max_decoding_message_size(limits.max_grpc_message_bytes),
        )
        .add_service(
            SettingsServiceServer::new(SettingsGrpc::new(api.clone(), Arc::clone(&config.kinds)))
                .max_decoding_message_size(limits.max_grpc_message_bytes),
        )
        .serve_with_incoming_shutdown(
            limited_incoming(
                listeners.grpc,
                limits.max_connections,
                limits.idle_timeout,
                gauge("grpc"),
            ),
            stopped(),
        );
    let http = serve_http(
        listeners.http,
        bridge_router(
            Arc::new(LocalBackend(
                api.clone(),
                SettingsGrpc::new(api, Arc::clone(&config.kinds)),
            )),
            Arc::clone(&config.kinds),
            limits,
            observers,
        ),
        limits.clone(),
        gauge("http"),
        stopped(),
    );
    // The admin listener: only with metrics (it is off otherwise).
    let admin_addr = match (&listeners.admin, metrics) {
        (Some(admin), Some(_)) => Some(admin.local_addr()?),
        _ => None,
    };
    let admin = async {
        let (Some(listener), Some(metrics)) = (listeners.admin, metrics) else {
            return Ok(());
        };
        let state = admin::AdminState {
            metrics: metrics.clone(),
            store: Arc::clone(store),
            in_flight,
            auth: config.auth.clone(),
            metrics_public: config.metrics_public,
            stopping: stop_rx_admin,
        };
        serve_http(
            listener,
            admin::router(state),
            limits.clone(),
            gauge("admin"),
            stopped(),
        )
        .await
    };

    tracing::info!(%grpc_addr, %http_addr, admin_addr = ?admin_addr, "serving gRPC and the HTTP bridge");
    if let Some(ready) = listeners.ready {
        let _ = ready.send(Ready {
            grpc: Some(grpc_addr),
            http: Some(http_addr),
            admin: admin_addr,
        });
    }
    let servers = async {
        let (grpc, http, admin) = tokio::join!(grpc, http, admin);
        grpc?;
        admin?;
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
/// The admin listener is served the same way.
async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    open: Option<prometheus::IntGauge>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
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
    let mut incoming =
        limited_incoming(listener, limits.max_connections, limits.idle_timeout, open);
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

/// The bridge's routes over `backend`, reporting each request to
/// `observers`.
fn bridge_router(
    backend: Arc<dyn SettingsBackend>,
    catalog: Arc<Catalog>,
    limits: &Limits,
    observers: HttpObservers,
) -> axum::Router {
    bridge::router(
        backend,
        catalog,
        limits.request_timeout,
        limits.max_header_bytes,
    )
    .layer(axum::middleware::from_fn_with_state(
        observers,
        observe_http,
    ))
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
    ready: Option<oneshot::Sender<Ready>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(upstream.to_owned())
        .map_err(|e| anyhow::anyhow!("invalid --upstream {upstream:?}: {e}"))?
        .tcp_nodelay(true)
        .connect_lazy();
    let backend: Arc<dyn SettingsBackend> = Arc::new(SettingsClient::new(channel));
    let http_addr = http.local_addr()?;
    tracing::info!(%http_addr, %upstream, "serving the HTTP bridge");
    if let Some(ready) = ready {
        let _ = ready.send(Ready {
            grpc: None,
            http: Some(http_addr),
            admin: None,
        });
    }
    // A standalone bridge keeps no metrics or request log: the server
    // behind it does.
    let limits = Limits::default();
    // Only the built-in kinds' JSON API: the kinds declared upstream are
    // not known here (their descriptors are the upstream server's).
    let router = bridge::router(
        backend,
        Arc::new(Catalog::built_in()),
        limits.request_timeout,
        limits.max_header_bytes,
    );
    serve_http(http, router, limits, None, async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}
