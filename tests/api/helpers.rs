//! Starting servers for tests: in-process (`spawn_app`) and as the real
//! binary (`BinaryServer`). Neither sleeps to wait for readiness: listeners
//! are bound before the server runs, and the binary prints a ready line
//! with its addresses.
//!
//! Every in-process server opens its store in [`open_store`]: the one place
//! a test run picks the backend, so the semantic suites (`grpc_settings`,
//! `http_bridge`, ...) run unchanged against any `Store` implementation.
//! Likewise [`ResourceClient`] is the one place a test's Get, Set, Watch,
//! history or rollback picks the service: a built-in resource's typed one,
//! or `settingsd.v1.SettingsService` for a declared kind, so the suites of
//! [`for_each_kind!`] run unchanged for a declared kind too.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use std::sync::Arc;

use prost::Message as _;
use settingsd::{
    auth::{basic_authorization, Authenticator},
    pb::{
        self, recording_settings_service_client::RecordingSettingsServiceClient,
        settings_service_client::SettingsServiceClient, GetRecordingSettingsRequest,
        SetRecordingSettingsRequest, WatchRecordingSettingsRequest,
    },
    server::{self, Limits, Listeners, PublicUrl, ServerConfig, StoreConfig},
    store::{
        etcd::{EtcdOptions, EtcdStore},
        sled::{SledStore, StoreOptions},
        SharedStore,
    },
};
pub use settingsd::{
    contract::{
        ChangeMessages, GetSettingsMessage, ListRevisionsMessage, RevisionsPageMessage,
        RollbackMessage, SetSettingsMessage, SettingsChangeMessage, SettingsClient,
        SettingsMessage, WatchSettingsMessage,
    },
    kinds::{Catalog, DeclaredKinds},
    resource::Resource,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tonic::{transport::Channel, Request, Status};

pub const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const OTHER_ACCOUNT: &str = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
pub const CREDENTIAL: &str = "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const KEY: &str = "CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab";
pub const S3_URL: &str = "https://my-super-duper-bucket.s3.amazonaws.com/my/path/";
pub const TWILIO_URL: &str = "https://video.twilio.com/v1/RecordingSettings/Default";
pub const COMPOSITION_URL: &str = "https://video.twilio.com/v1/CompositionSettings/Default";

/// Instantiates the items given once per built-in (Twilio) resource, in
/// modules `recording` and `composition`, each with `RESOURCE`, `TWILIO_URL`
/// (the resource's Twilio URL) and a `spawn_app` whose server's helpers
/// (`get`, `set`, `url`...) address that resource: the semantic tests are
/// written once and run for every resource. Tests of the Twilio shape only
/// (the HTTP bridge, Twilio's libraries) use it directly; the semantic
/// suites use [`for_each_kind!`], which also runs them for a declared kind.
/// `built_in_only! { ... }` keeps its items here (see [`for_each_kind!`]).
macro_rules! for_each_resource {
    ($($item:item)*) => {
        mod recording {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::helpers::keep_items as built_in_only;
            #[allow(dead_code)]
            const RESOURCE: Resource = Resource::Recording;
            #[allow(dead_code)]
            const TWILIO_URL: &str = crate::helpers::TWILIO_URL;
            /// Where a Set's etag is, as an error names it.
            #[allow(dead_code)]
            const ETAG_FIELD: &str = "etag";
            #[allow(dead_code)]
            async fn spawn_app() -> TestApp {
                crate::helpers::spawn_app().await.for_resource(RESOURCE)
            }
            $($item)*
        }
        mod composition {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::helpers::keep_items as built_in_only;
            #[allow(dead_code)]
            const RESOURCE: Resource = Resource::Composition;
            #[allow(dead_code)]
            const TWILIO_URL: &str = crate::helpers::COMPOSITION_URL;
            #[allow(dead_code)]
            const ETAG_FIELD: &str = "etag";
            #[allow(dead_code)]
            async fn spawn_app() -> TestApp {
                crate::helpers::spawn_app().await.for_resource(RESOURCE)
            }
            $($item)*
        }
    };
}
pub(crate) use for_each_resource;

/// [`for_each_resource!`], and a third module, `declared`, for a declared
/// kind served by `settingsd.v1.SettingsService`: [`TWIN`] of
/// `tests/kinds/twin.toml`, whose message has Recording Settings' stored
/// fields, so the same tests run unchanged through the generic service
/// (see [`ResourceClient`]). In `declared`, `RESOURCE` is [`TWIN`] (a
/// declared [`Resource`] is interned at run time, so no `const` can hold
/// one), `TWILIO_URL` is "" (a declared kind has no Twilio address),
/// `ETAG_FIELD` is `settings.etag` (where UpdateSettings has it), and
/// `spawn_app_on` shadows the helper of that name: a restart on a directory
/// serves the kind again.
///
/// Items inside `built_in_only! { ... }` are left out of `declared`: tests
/// of Twilio's own rules or shape, which a declared kind does not have.
/// (The test paths of the built-in resources stay as they were:
/// `watch::recording::...`.)
macro_rules! for_each_kind {
    ($($item:item)*) => {
        crate::helpers::for_each_resource! { $($item)* }
        mod declared {
            #[allow(unused_imports)]
            use super::*;
            #[allow(unused_imports)]
            use crate::helpers::leave_out_items as built_in_only;
            #[allow(dead_code)]
            const RESOURCE: crate::helpers::DeclaredName = crate::helpers::TWIN;
            #[allow(dead_code)]
            const TWILIO_URL: &str = "";
            /// UpdateSettings carries the etag inside its `settings`.
            #[allow(dead_code)]
            const ETAG_FIELD: &str = "settings.etag";
            #[allow(dead_code)]
            async fn spawn_app() -> TestApp {
                crate::helpers::spawn_twin_app().await
            }
            #[allow(dead_code)]
            async fn spawn_app_on(data_dir: &std::path::Path) -> TestApp {
                crate::helpers::spawn_app_with_kinds(data_dir, crate::helpers::twin_kinds())
                    .await
                    .for_resource(RESOURCE)
            }
            $($item)*
        }
    };
}
pub(crate) use for_each_kind;

/// `built_in_only!` in the modules of the built-in resources: the items.
/// (Each module imports it under that name explicitly: a glob-imported
/// macro could not be shadowed by `declared`'s, as the compiler resolves
/// macros while it expands them.)
macro_rules! keep_items {
    ($($item:item)*) => {
        $($item)*
    };
}
pub(crate) use keep_items;

/// `built_in_only!` in [`for_each_kind!`]'s `declared` module: no items.
macro_rules! leave_out_items {
    ($($item:item)*) => {};
}
pub(crate) use leave_out_items;

/// A declared kind's name, as a `const` can hold it: it becomes the
/// [`Resource`] (interned) where a test addresses it.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredName(pub &'static str);

impl From<DeclaredName> for Resource {
    fn from(name: DeclaredName) -> Resource {
        Resource::declared(name.0)
    }
}

/// The declared kind of `tests/kinds/twin.toml` (message
/// `acme.twin.v1.TwinSettings`): Recording Settings' stored fields, with
/// their numbers and types, so `pb::RecordingSettings` encodes and decodes
/// its values.
pub const TWIN: DeclaredName = DeclaredName("twin_settings");

/// The kinds of `tests/kinds/twin.toml`.
pub fn twin_kinds() -> Arc<Catalog> {
    test_kinds("twin.toml")
}

/// An open-mode server with its own data directory, serving
/// `tests/kinds/twin.toml`, whose helpers address [`TWIN`].
pub async fn spawn_twin_app() -> TestApp {
    spawn_app_declaring(twin_kinds()).await.for_resource(TWIN)
}

pub const TOKEN: &str = "token-of-account-a";
pub const OTHER_TOKEN: &str = "token-of-account-b";
pub const API_KEY: &str = "SKaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const API_SECRET: &str = "secret-of-key-a";
pub const OPERATOR: &str = "backup-operator";
pub const OPERATOR_SECRET: &str = "secret-of-the-operator";

/// Accounts A and B with auth tokens, an API key of account A, and an operator.
pub fn accounts_toml() -> String {
    format!(
        r#"[[accounts]]
sid = "{ACCOUNT}"
auth_token = "{TOKEN}"

[[accounts]]
sid = "{OTHER_ACCOUNT}"
auth_token = "{OTHER_TOKEN}"

[[api_keys]]
sid = "{API_KEY}"
secret = "{API_SECRET}"
account_sid = "{ACCOUNT}"

[[operators]]
name = "{OPERATOR}"
secret = "{OPERATOR_SECRET}"
"#
    )
}

/// A guard against a test hanging forever on a broken server; never a
/// readiness wait.
pub const GUARD: Duration = Duration::from_secs(30);

pub type Client = RecordingSettingsServiceClient<Channel>;

/// An in-process server on port 0 with its own data directory.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The admin listener: metrics and probes.
    pub admin_addr: SocketAddr,
    /// A Recording Settings client.
    pub client: Client,
    /// A client of every built-in resource's service.
    pub settings: SettingsClient,
    /// `settingsd.v1.SettingsService`, which `get`, `set`... call for a
    /// declared kind.
    generic: SettingsServiceClient<Channel>,
    /// The resource `get`, `set`, `url`... address (Recording Settings
    /// unless [`TestApp::for_resource`] says otherwise).
    pub resource: Resource,
    /// The kinds the server serves (a declared kind's type URL).
    kinds: Arc<Catalog>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
    data_dir: std::path::PathBuf,
    /// Deletes the data directory when the test ends (None when the caller
    /// owns the directory, as restart tests do).
    _temp: Option<tempfile::TempDir>,
}

/// An open-mode server (no accounts file), as `settingsd serve` runs by default.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(Authenticator::Open).await
}

/// A server that only accepts the credentials in [`accounts_toml`].
pub async fn spawn_authenticated_app() -> TestApp {
    spawn_app_with(Authenticator::parse(&accounts_toml()).unwrap()).await
}

pub async fn spawn_app_with(auth: Authenticator) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = start(StoreOptions::new(temp.path()), auth, Limits::default()).await;
    app._temp = Some(temp);
    app
}

/// An open-mode server on a data directory the caller owns (for restarts).
pub async fn spawn_app_on(data_dir: &Path) -> TestApp {
    start(
        StoreOptions::new(data_dir),
        Authenticator::Open,
        Limits::default(),
    )
    .await
}

/// An open-mode server with these store options (the caller owns the directory).
pub async fn spawn_app_with_store(store: StoreOptions) -> TestApp {
    start(store, Authenticator::Open, Limits::default()).await
}

/// An open-mode server on `dir` whose every commit fails, as on a full
/// disk, while the returned flag is set.
pub async fn spawn_app_with_failing_disk(
    dir: &Path,
) -> (TestApp, Arc<std::sync::atomic::AtomicBool>) {
    let disk_full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = spawn_app_with_store(StoreOptions {
        fail_commits: Some(Arc::clone(&disk_full)),
        ..StoreOptions::new(dir)
    })
    .await;
    (app, disk_full)
}

/// An open-mode server with these store options and limits (the caller owns
/// the directory).
pub async fn spawn_app_with_store_and_limits(store: StoreOptions, limits: Limits) -> TestApp {
    start(store, Authenticator::Open, limits).await
}

/// An open-mode server with these limits.
pub async fn spawn_app_with_limits(limits: Limits) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = start(StoreOptions::new(temp.path()), Authenticator::Open, limits).await;
    app._temp = Some(temp);
    app
}

/// Whether this run's in-process servers store on etcd
/// (`SETTINGSD_TEST_STORE=etcd`, which `scripts/test` sets for its etcd run
/// of the semantic suites) instead of sled.
pub fn on_etcd() -> bool {
    std::env::var("SETTINGSD_TEST_STORE").is_ok_and(|v| v == "etcd")
}

/// Opens the store a test server runs on: the sled store on the test's own
/// directory, or, on etcd (see [`on_etcd`]), the shared test cluster under
/// a key prefix named after that directory, so that every test has its own
/// data and a restart on the same directory finds it again.
pub async fn open_store(options: StoreOptions) -> SharedStore {
    if on_etcd() {
        let cluster = tokio::task::spawn_blocking(crate::etcd_cluster::shared_cluster)
            .await
            .unwrap();
        let store = EtcdStore::connect(&EtcdOptions {
            endpoints: cluster.endpoints(),
            prefix: format!("/test{}/", options.data_dir.display()),
            timeout: Duration::from_secs(5),
            observer: options.observer.clone(),
            declared: options.declared.clone(),
        })
        .await
        .expect("connect to etcd");
        return Arc::new(store);
    }
    let store = tokio::task::spawn_blocking(move || SledStore::open(&options))
        .await
        .unwrap()
        .expect("open the store");
    Arc::new(store)
}

async fn start(store: StoreOptions, auth: Authenticator, limits: Limits) -> TestApp {
    start_with(store, auth, limits, Arc::new(Catalog::built_in()), false).await
}

/// The kinds of `tests/kinds/kinds.toml` (or another kinds file under
/// `tests/kinds`).
pub fn test_kinds(file: &str) -> Arc<Catalog> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kinds")
        .join(file);
    Arc::new(Catalog::new(
        DeclaredKinds::load(&path).expect("the test kinds load"),
    ))
}

/// An open-mode server with its own data directory, serving `kinds`.
pub async fn spawn_app_declaring(kinds: Arc<Catalog>) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut app = spawn_app_with_kinds(temp.path(), kinds).await;
    app._temp = Some(temp);
    app
}

/// An open-mode server on `data_dir` serving `kinds`.
pub async fn spawn_app_with_kinds(data_dir: &Path, kinds: Arc<Catalog>) -> TestApp {
    start_with(
        StoreOptions::new(data_dir),
        Authenticator::Open,
        Limits::default(),
        kinds,
        false,
    )
    .await
}

/// An authenticated server (see [`accounts_toml`]) serving `kinds`.
#[allow(dead_code)] // used by the kinds suite
pub async fn spawn_authenticated_app_with_kinds(kinds: Arc<Catalog>) -> TestApp {
    let temp = tempfile::tempdir().expect("temp dir");
    let auth = Authenticator::parse(&accounts_toml()).unwrap();
    let mut app = start_with(
        StoreOptions::new(temp.path()),
        auth,
        Limits::default(),
        kinds,
        false,
    )
    .await;
    app._temp = Some(temp);
    app
}

/// What `server::run_on` answers for a start on `data_dir` with `kinds`
/// that must fail before serving.
pub async fn start_error_with_kinds(
    data_dir: &Path,
    kinds: Arc<Catalog>,
    allow_incompatible_kinds: bool,
) -> Option<anyhow::Error> {
    let options = StoreOptions {
        declared: kinds.declared_resources(),
        ..StoreOptions::new(data_dir)
    };
    let config = ServerConfig {
        metrics: None,
        metrics_public: false,
        seed: None,
        request_log: 0,
        store: StoreConfig::Sled(options.clone()),
        public_url: PublicUrl::default(),
        auth: Authenticator::Open,
        allow_open: false,
        limits: Limits::default(),
        kinds,
        allow_incompatible_kinds,
    };
    let listeners = Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        http: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        admin: None,
        ready: None,
    };
    let opened = open_store(options).await;
    // A start that succeeds serves until told to stop: stop it at once.
    server::run_on(opened, config, listeners, async {})
        .await
        .err()
}

async fn start_with(
    store: StoreOptions,
    auth: Authenticator,
    limits: Limits,
    kinds: Arc<Catalog>,
    allow_incompatible_kinds: bool,
) -> TestApp {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let grpc_addr = grpc.local_addr().unwrap();
    let http_addr = http.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let metrics = settingsd::metrics::Metrics::new();
    let store = StoreOptions {
        observer: Some(Arc::new(metrics.clone())),
        declared: kinds.declared_resources(),
        ..store
    };
    let config = ServerConfig {
        metrics: Some(metrics),
        metrics_public: false,
        seed: None,
        request_log: settingsd::request_log::DEFAULT_CAPACITY,
        store: StoreConfig::Sled(store.clone()),
        public_url: PublicUrl::default(),
        auth,
        allow_open: false,
        limits,
        kinds: Arc::clone(&kinds),
        allow_incompatible_kinds,
    };
    let data_dir = store.data_dir.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let opened = open_store(store.clone()).await;
    let listeners = Listeners {
        grpc,
        http,
        admin: Some(admin),
        ready: None,
    };
    let handle = tokio::spawn(server::run_on(opened, config, listeners, async {
        let _ = rx.await;
    }));
    let grpc_channel = channel(grpc_addr).await;
    TestApp {
        grpc_addr,
        http_addr,
        admin_addr,
        client: RecordingSettingsServiceClient::new(grpc_channel.clone()),
        settings: SettingsClient::new(grpc_channel.clone()),
        generic: SettingsServiceClient::new(grpc_channel),
        resource: Resource::Recording,
        kinds,
        shutdown: Some(tx),
        handle,
        data_dir,
        _temp: None,
    }
}

/// Waits (bounded) until no file descriptor of this process is sled's data
/// file in `data_dir`: sled finishes some writes on its own threads after a
/// store is closed, and another process (the CLI) opening the directory
/// meanwhile would find it locked.
pub fn wait_until_released(data_dir: &Path) {
    let started = std::time::Instant::now();
    while SledStore::held_by_this_process(data_dir) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sled still holds {} after 5 s",
            data_dir.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to gRPC")
}

pub async fn connect(addr: SocketAddr) -> Client {
    RecordingSettingsServiceClient::new(channel(addr).await)
}

impl TestApp {
    /// Stops the server gracefully and returns what `run` returned, once
    /// sled has let go of the data directory.
    pub async fn stop(self) -> anyhow::Result<()> {
        let data_dir = self.data_dir.clone();
        let result = self.stop_server().await;
        wait_until_released(&data_dir);
        result
    }

    /// Stops the server gracefully and returns what `run` returned, without
    /// waiting for sled to let go of the directory (connections the server
    /// gave up on may still hold the store).
    pub async fn stop_server(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(GUARD, &mut self.handle)
            .await
            .expect("server stops")
            .expect("server task")
    }
}

/// Wraps a message with Basic credentials, as an authenticated caller sends it.
pub fn with_auth<T>(message: T, user: &str, secret: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        basic_authorization(user, secret).parse().unwrap(),
    );
    request
}

impl TestApp {
    /// This server, with `get`, `set`, `url`... addressing `resource` (a
    /// built-in resource, or a declared kind the server serves).
    pub fn for_resource(self, resource: impl Into<Resource>) -> TestApp {
        TestApp {
            resource: resource.into(),
            ..self
        }
    }

    /// A client of [`TestApp::resource`] on this server (see
    /// [`ResourceClient`]), for tasks of their own.
    pub fn resource_client(&self) -> ResourceClient {
        let type_url = self
            .kinds
            .of(self.resource)
            .map(settingsd::kinds::Kind::type_url)
            .unwrap_or_default();
        ResourceClient {
            settings: self.settings.clone(),
            generic: self.generic.clone(),
            resource: self.resource,
            type_url,
        }
    }

    /// The resource's REST URL on the bridge.
    pub fn url(&self) -> String {
        format!(
            "http://{}{}",
            self.http_addr,
            self.resource.spec().rest_path
        )
    }

    /// Reads the account's resource over gRPC (open mode, no credentials).
    pub async fn get(&self, account: &str) -> SettingsMessage {
        self.try_get(get_request(account)).await.expect("get")
    }

    /// Sets over gRPC (open mode, no credentials).
    pub async fn set(&self, request: SetRecordingSettingsRequest) -> SettingsMessage {
        self.try_set(request).await.expect("set")
    }

    /// A Get of [`TestApp::resource`] over gRPC (a bare message, or a
    /// request with credentials). Requests are built as Recording Settings
    /// messages and sent as the resource's own: every resource's messages
    /// have the same fields (the contract says so, `contract` checks it).
    pub async fn try_get(
        &self,
        request: impl tonic::IntoRequest<GetRecordingSettingsRequest>,
    ) -> Result<SettingsMessage, tonic::Status> {
        let request = request.into_request().map(GetSettingsMessage::from);
        self.resource_client().get(request).await
    }

    /// A Watch of [`TestApp::resource`] (see [`TestApp::try_get`]).
    pub async fn try_watch(
        &self,
        request: impl tonic::IntoRequest<WatchRecordingSettingsRequest>,
    ) -> Result<ChangeMessages, tonic::Status> {
        let request = request.into_request().map(WatchSettingsMessage::from);
        self.resource_client().watch(request).await
    }

    /// Watches `account` (or "-") from `start_revision` (open mode).
    pub async fn watch(&self, account: &str, start_revision: u64) -> ChangeMessages {
        self.try_watch(WatchRecordingSettingsRequest {
            account_sid: account.to_owned(),
            start_revision,
        })
        .await
        .expect("watch")
    }

    /// A Set of [`TestApp::resource`] over gRPC (see [`TestApp::try_get`]).
    pub async fn try_set(
        &self,
        request: impl tonic::IntoRequest<SetRecordingSettingsRequest>,
    ) -> Result<SettingsMessage, tonic::Status> {
        let request = request.into_request().map(SetSettingsMessage::from);
        self.resource_client().set(request).await
    }
}

/// A client of one resource of one server, as [`TestApp`]'s `get`, `set`,
/// `watch`, `history` and `rollback` address it: a built-in resource
/// through its typed service ([`SettingsClient`]); a declared kind through
/// `settingsd.v1.SettingsService`, with the typed requests and answers
/// translated to and from the generic ones, field for field (the kind's
/// message must have Recording Settings' stored fields, as [`TWIN`]'s
/// does). Errors are the service's status, as it sent it. Cheap to clone:
/// clones share the server's channel.
#[derive(Debug, Clone)]
pub struct ResourceClient {
    settings: SettingsClient,
    generic: SettingsServiceClient<Channel>,
    resource: Resource,
    /// A declared kind's `Any` type URL ("" for a built-in resource, or a
    /// kind the server does not serve, which it answers NOT_FOUND).
    type_url: String,
}

impl ResourceClient {
    /// Get (`GetSettings` for a declared kind).
    pub async fn get(
        &self,
        request: Request<GetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        if self.resource.is_built_in() {
            return self.settings.get(self.resource, request).await;
        }
        let request = request.map(|m| pb::GetSettingsRequest {
            kind: self.kind(),
            account_sid: m.account_sid,
        });
        let answer = self.generic.clone().get_settings(request).await?;
        Ok(self.typed(answer.into_inner()))
    }

    /// Set (`UpdateSettings` for a declared kind, see [`update_request`]).
    pub async fn set(
        &self,
        request: Request<SetSettingsMessage>,
    ) -> Result<SettingsMessage, Status> {
        if self.resource.is_built_in() {
            return self.settings.set(self.resource, request).await;
        }
        let request = request.map(|m| update_request(self.kind(), self.type_url.clone(), m));
        let answer = self.generic.clone().update_settings(request).await?;
        Ok(self.typed(answer.into_inner()))
    }

    /// Watch (`WatchSettings` for a declared kind).
    pub async fn watch(
        &self,
        request: Request<WatchSettingsMessage>,
    ) -> Result<ChangeMessages, Status> {
        if self.resource.is_built_in() {
            return self.settings.watch(self.resource, request).await;
        }
        let request = request.map(|m| pb::WatchSettingsRequest {
            kind: self.kind(),
            account_sid: m.account_sid,
            start_revision: m.start_revision,
        });
        let stream = self
            .generic
            .clone()
            .watch_settings(request)
            .await?
            .into_inner();
        let this = self.clone();
        Ok(Box::pin(tokio_stream::StreamExt::map(stream, move |m| {
            m.map(|change| SettingsChangeMessage {
                revision: change.revision,
                settings: change.settings.map(|s| this.typed(s)),
                progress: change.progress,
                reset: change.reset,
            })
        })))
    }

    /// History (`ListSettingsRevisions` for a declared kind).
    pub async fn list_revisions(
        &self,
        request: Request<ListRevisionsMessage>,
    ) -> Result<RevisionsPageMessage, Status> {
        if self.resource.is_built_in() {
            return self.settings.list_revisions(self.resource, request).await;
        }
        let request = request.map(|m| pb::ListSettingsRevisionsRequest {
            kind: self.kind(),
            account_sid: m.account_sid,
            page_size: m.page_size,
            page_token: m.page_token,
        });
        let page = self
            .generic
            .clone()
            .list_settings_revisions(request)
            .await?
            .into_inner();
        Ok(RevisionsPageMessage {
            revisions: page.revisions.into_iter().map(|s| self.typed(s)).collect(),
            next_page_token: page.next_page_token,
        })
    }

    /// Rollback (`RollbackSettings` for a declared kind).
    pub async fn rollback(
        &self,
        request: Request<RollbackMessage>,
    ) -> Result<SettingsMessage, Status> {
        if self.resource.is_built_in() {
            return self.settings.rollback(self.resource, request).await;
        }
        let request = request.map(|m| pb::RollbackSettingsRequest {
            kind: self.kind(),
            account_sid: m.account_sid,
            revision: m.revision,
            etag: m.etag,
        });
        let answer = self.generic.clone().rollback_settings(request).await?;
        Ok(self.typed(answer.into_inner()))
    }

    fn kind(&self) -> String {
        self.resource.name().to_owned()
    }

    /// A declared kind's answer as the typed services answer: the value's
    /// fields, with the answer's account, revision, etag and update time,
    /// and no Twilio URL.
    ///
    /// # Panics
    /// If the answer is of another kind or type, or its value does not
    /// decode or holds more than the kind's fields: the service got it
    /// wrong, and the test says so.
    fn typed(&self, settings: pb::Settings) -> SettingsMessage {
        assert_eq!(settings.kind, self.resource.name(), "the answer's kind");
        let any = settings.value.expect("an answer carries its value");
        assert_eq!(any.type_url, self.type_url, "the value's type");
        let value = pb::RecordingSettings::decode(any.value.as_slice())
            .expect("the value decodes with Recording Settings' field numbers");
        let only_the_kinds_fields = pb::RecordingSettings {
            account_sid: String::new(),
            url: String::new(),
            revision: 0,
            update_time: None,
            etag: String::new(),
            ..value.clone()
        };
        assert_eq!(
            value, only_the_kinds_fields,
            "the value has only the kind's fields"
        );
        SettingsMessage {
            account_sid: settings.account_sid,
            friendly_name: value.friendly_name,
            aws_credentials_sid: value.aws_credentials_sid,
            aws_s3_url: value.aws_s3_url,
            aws_storage_enabled: value.aws_storage_enabled,
            encryption_key_sid: value.encryption_key_sid,
            encryption_enabled: value.encryption_enabled,
            url: String::new(),
            revision: settings.revision,
            update_time: settings.update_time,
            etag: settings.etag,
        }
    }
}

/// A typed Set as an `UpdateSettings` of a declared kind (AIP-134) with the
/// same effect: the mask names exactly the fields the Set sends (the
/// friendly name always, each optional field when present), and the value
/// carries those that are not empty, so a field the Set leaves out is kept
/// and one it sends as "" (absent from the value) is cleared. The etag
/// passes through: a conditional Set is a conditional update.
pub fn update_request(
    kind: String,
    type_url: String,
    set: SetSettingsMessage,
) -> pb::UpdateSettingsRequest {
    fn text(path: &str, sent: Option<String>, paths: &mut Vec<String>) -> Option<String> {
        let sent = sent?;
        paths.push(path.to_owned());
        (!sent.is_empty()).then_some(sent)
    }
    fn flag(path: &str, sent: Option<bool>, paths: &mut Vec<String>) -> bool {
        let Some(sent) = sent else { return false };
        paths.push(path.to_owned());
        sent
    }
    let mut paths = Vec::new();
    let value = pb::RecordingSettings {
        friendly_name: text("friendly_name", Some(set.friendly_name), &mut paths),
        aws_credentials_sid: text("aws_credentials_sid", set.aws_credentials_sid, &mut paths),
        aws_s3_url: text("aws_s3_url", set.aws_s3_url, &mut paths),
        aws_storage_enabled: flag("aws_storage_enabled", set.aws_storage_enabled, &mut paths),
        encryption_key_sid: text("encryption_key_sid", set.encryption_key_sid, &mut paths),
        encryption_enabled: flag("encryption_enabled", set.encryption_enabled, &mut paths),
        ..pb::RecordingSettings::default()
    };
    pb::UpdateSettingsRequest {
        settings: Some(pb::Settings {
            kind,
            account_sid: set.account_sid,
            value: Some(prost_types::Any {
                type_url,
                value: value.encode_to_vec(),
            }),
            revision: 0,
            etag: set.etag,
            update_time: None,
        }),
        update_mask: Some(prost_types::FieldMask { paths }),
    }
}

/// The next message of a watch, within [`GUARD`].
pub async fn next_change(stream: &mut ChangeMessages) -> SettingsChangeMessage {
    tokio::time::timeout(GUARD, tokio_stream::StreamExt::next(stream))
        .await
        .expect("a watch message within the guard")
        .expect("the watch stream is open")
        .expect("a watch message, not an error")
}

/// The next change of a watch, skipping progress messages.
pub async fn next_settings(stream: &mut ChangeMessages) -> SettingsMessage {
    loop {
        let message = next_change(stream).await;
        if let Some(settings) = message.settings {
            assert_eq!(message.revision, settings.revision);
            return settings;
        }
    }
}

pub fn get_request(account: &str) -> GetRecordingSettingsRequest {
    GetRecordingSettingsRequest {
        account_sid: account.to_owned(),
    }
}

/// A Set that only sends the (required) friendly name.
pub fn set_request(account: &str, friendly_name: &str) -> SetRecordingSettingsRequest {
    SetRecordingSettingsRequest {
        account_sid: account.to_owned(),
        friendly_name: friendly_name.to_owned(),
        ..Default::default()
    }
}

/// A Set that fills every field, as Twilio's own example does.
pub fn full_set_request(account: &str) -> SetRecordingSettingsRequest {
    SetRecordingSettingsRequest {
        account_sid: account.to_owned(),
        friendly_name: "friendly_name".to_owned(),
        aws_credentials_sid: Some(CREDENTIAL.to_owned()),
        aws_s3_url: Some(S3_URL.to_owned()),
        aws_storage_enabled: Some(true),
        encryption_key_sid: Some(KEY.to_owned()),
        encryption_enabled: Some(true),
        etag: String::new(),
    }
}

/// The real `settingsd` binary, started with `serve` on port 0.
pub struct BinaryServer {
    pub child: Child,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The admin listener's, if it has one.
    pub admin_addr: Option<SocketAddr>,
    lines: mpsc::UnboundedReceiver<String>,
    stdout_lines: mpsc::UnboundedReceiver<String>,
}

/// `serve` with both listeners on free ports, so tests can run in parallel.
pub const SERVE_ON_PORT_0: [&str; 7] = [
    "serve",
    "--grpc-addr",
    "127.0.0.1:0",
    "--http-addr",
    "127.0.0.1:0",
    "--admin-addr",
    "127.0.0.1:0",
];

/// Runs `command` to its end (within [`GUARD`]) and returns its output.
pub async fn finish(command: &mut Command) -> std::process::Output {
    tokio::time::timeout(GUARD, command.output())
        .await
        .expect("the command finishes")
        .expect("the command starts")
}

/// [`finish`], asserting that it succeeded; returns its stdout.
pub async fn finish_ok(command: &mut Command) -> String {
    let out = finish(command).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `settingsd ARGS` to its end.
/// grpcurl's stdout (with `-plaintext`), asserting that it succeeded.
pub async fn run_grpcurl(args: &[&str]) -> String {
    let output = finish(Command::new(grpcurl()).arg("-plaintext").args(args)).await;
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub async fn cli(args: &[&str]) -> std::process::Output {
    finish(binary().args(args)).await
}

pub fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_settingsd"));
    cmd.env("RUST_LOG", "info").kill_on_drop(true);
    cmd
}

impl BinaryServer {
    /// `settingsd serve` on port 0 for both listeners.
    pub async fn start(data_dir: &Path) -> BinaryServer {
        Self::start_with(data_dir, &[]).await
    }

    /// `settingsd serve` on port 0 with extra arguments.
    pub async fn start_with(data_dir: &Path, args: &[&str]) -> BinaryServer {
        let mut cmd = binary();
        cmd.args(SERVE_ON_PORT_0)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args);
        let mut server = Self::spawn(cmd).await;
        let ready = server.wait_for_ready_line().await;
        server.grpc_addr = ready["grpc"].as_str().unwrap().parse().unwrap();
        server.http_addr = ready["http"].as_str().unwrap().parse().unwrap();
        server.admin_addr = ready["admin"].as_str().map(|a| a.parse().unwrap());
        server
    }

    /// `settingsd serve` on port 0 with `--accounts` naming a file of
    /// [`accounts_toml`] written in `dir`; its data directory is `dir/data`.
    pub async fn start_with_accounts(dir: &Path) -> BinaryServer {
        let accounts = dir.join("accounts.toml");
        std::fs::write(&accounts, accounts_toml()).unwrap();
        let accounts = accounts.to_str().unwrap();
        Self::start_with(&dir.join("data"), &["--accounts", accounts]).await
    }

    /// `settingsd bridge` on port 0 in front of `upstream`.
    pub async fn start_bridge(upstream: SocketAddr) -> BinaryServer {
        let mut cmd = binary();
        cmd.args(["bridge", "--http-addr", "127.0.0.1:0", "--upstream"])
            .arg(format!("http://{upstream}"));
        let mut server = Self::spawn(cmd).await;
        let ready = server.wait_for_ready_line().await;
        assert!(ready.get("grpc").is_none(), "{ready}");
        server.http_addr = ready["http"].as_str().unwrap().parse().unwrap();
        server
    }

    /// Starts `cmd` (a `settingsd` command line) without waiting for it.
    pub async fn spawn_command(cmd: Command) -> BinaryServer {
        Self::spawn(cmd).await
    }

    async fn spawn(mut cmd: Command) -> BinaryServer {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn settingsd");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        let (ready_tx, stdout_lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if ready_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let unknown: SocketAddr = "0.0.0.0:0".parse().unwrap();
        BinaryServer {
            child,
            grpc_addr: unknown,
            http_addr: unknown,
            admin_addr: None,
            lines,
            stdout_lines,
        }
    }

    /// Waits for the ready line on stdout (the bound addresses, as JSON)
    /// and returns it parsed; it must be the first thing on stdout.
    pub async fn wait_for_ready_line(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(GUARD, self.stdout_lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no ready line within {GUARD:?}"))
            .expect("settingsd exited without a ready line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"))
    }

    /// Waits for a log line containing `needle` and returns it.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        tokio::time::timeout(GUARD, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("settingsd exited without logging {needle:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no log line {needle:?} within {GUARD:?}"))
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Every log line not yet read, once the process has exited (stderr
    /// closed).
    pub async fn remaining_logs(&mut self) -> Vec<String> {
        tokio::time::timeout(GUARD, async {
            let mut lines = Vec::new();
            while let Some(line) = self.lines.recv().await {
                lines.push(line);
            }
            lines
        })
        .await
        .expect("settingsd's stderr closes once it exits")
    }

    pub async fn wait(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(GUARD, self.child.wait())
            .await
            .expect("settingsd exits")
            .expect("wait")
    }
}

/// Overwrites `account`'s stored Recording Settings with `bytes`, behind
/// the server's back (no server may hold `data_dir`).
pub fn corrupt(data_dir: &Path, account: &str, bytes: &[u8]) {
    corrupt_resource(data_dir, Resource::Recording, account, bytes);
}

/// Overwrites `account`'s stored `resource` with `bytes`, behind the
/// server's back (no server may hold `data_dir`).
pub fn corrupt_resource(data_dir: &Path, resource: Resource, account: &str, bytes: &[u8]) {
    wait_until_released(data_dir);
    let db = sled::open(data_dir).unwrap();
    let tree = db.open_tree(resource.name()).unwrap();
    tree.insert(account, bytes).unwrap();
    db.flush().unwrap();
    drop((tree, db));
    wait_until_released(data_dir);
}

/// grpcurl from `GRPCURL`, the project's `.venv` (made by `.ci/run`), or PATH.
pub fn grpcurl() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("GRPCURL") {
        return path.into();
    }
    let venv = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/grpcurl");
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("grpcurl"))
        .find(|p| p.exists());
    on_path.expect(
        "grpcurl not found: run `bash .ci/run` once (it installs grpcurl into .venv), \
         or set GRPCURL to a grpcurl binary",
    )
}
