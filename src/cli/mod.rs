//! The command line: `serve` runs the service; `get` and `set` are an
//! operator's client for a running server (like etcdctl), printing the
//! resource as the REST API's JSON; `export` and `import` back up and
//! restore; `bench` load-tests.

use std::{net::SocketAddr, num::NonZeroUsize, path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::{
    auth::{Authenticator, BasicCredentials},
    backup::{self, ExportedRecord},
    bench,
    bridge::SettingsJson,
    contract::{
        pb::{
            admin_service_client::AdminServiceClient, ExportRecordingSettingsRequest,
            ExportSettingsRequest,
        },
        GetSettingsMessage, ListRevisionsMessage, RollbackMessage, SetSettingsMessage,
        SettingsClient, SettingsMessage, WatchSettingsMessage,
    },
    kinds::{Catalog, DeclaredKinds, KindName},
    metrics::Metrics,
    resource::Resource,
    server::{self, Limits, Listeners, PublicUrl, Ready, ServerConfig, StoreConfig},
    store::{
        etcd::EtcdOptions,
        sled::{SledStore, StoreOptions, SyncMode},
        Store,
    },
};

#[derive(Debug, Parser)]
#[command(
    name = "settingsd",
    version,
    about = "A durable settings service: gRPC API over sled (embedded) or etcd, for per-account settings with a Twilio-shaped HTTP bridge"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the settings service: gRPC API and the Twilio-shaped HTTP bridge.
    Serve(ServeArgs),
    /// Run only the Twilio-shaped HTTP bridge, in front of a settingsd gRPC
    /// server elsewhere.
    Bridge(BridgeArgs),
    /// Print an account's settings resource (--resource, default
    /// recording) from a running server.
    Get(GetArgs),
    /// Create or update an account's settings resource (--resource, default
    /// recording) on a running server (fields not given keep their stored
    /// value; "" clears a field).
    Set(SetArgs),
    /// Stream the changes of a resource (--resource) from a running server,
    /// one JSON line each: of one account, or of every account with --all.
    /// Runs until interrupted.
    Watch(WatchArgs),
    /// Print an account's past states of a resource, newest first, from the
    /// server's retained history.
    History(HistoryArgs),
    /// Write a new revision of an account's resource equal to a past one.
    Rollback(RollbackArgs),
    /// Emulator controls of a running server (operators, or anyone in open
    /// mode): fault injection.
    Admin(AdminArgs),
    /// Load-test a settingsd (its own, on temporary directories, unless
    /// --target is given) and report throughput and latency percentiles.
    Bench(bench::BenchArgs),
    /// The constant-answer gRPC server the bench's `noop` scenario runs against.
    #[command(hide = true)]
    BenchNoopServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        grpc_addr: SocketAddr,
    },
    /// Write every stored record of every resource as JSON lines: from a
    /// stopped server's --data-dir, or from a running server with
    /// --grpc-addr. Declared kinds' records need --kinds.
    Export(ExportArgs),
    /// Load JSON lines written by `export`, replacing each listed account's
    /// resource: offline (the server must be stopped), or into a running
    /// server with --grpc-addr.
    Import(ImportArgs),
}

/// Where `serve` keeps the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded sled database in --data-dir: one process, no servers to
    /// run.
    Sled,
    /// An etcd cluster (--etcd-endpoints): any number of settingsd front
    /// ends share it and survive the loss of any of them and of a minority
    /// of etcd members.
    Etcd,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where settings are stored: "sled", embedded in --data-dir (the
    /// default), or "etcd", a cluster at --etcd-endpoints shared by every
    /// front end pointed at it (see README, "Running on etcd").
    #[arg(long, env = "SETTINGSD_STORE", value_enum, default_value_t = StoreKind::Sled)]
    pub store: StoreKind,
    /// With --store etcd: the client URLs of the etcd members, comma
    /// separated (http://127.0.0.1:2379,http://127.0.0.1:22379,...). A
    /// request to a member that is down goes to the next.
    #[arg(long, env = "SETTINGSD_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// With --store etcd: the prefix of every key settingsd writes, so
    /// that several deployments can share a cluster.
    #[arg(long, env = "SETTINGSD_ETCD_PREFIX", default_value = EtcdOptions::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// With --store etcd: the most one request to etcd may take, moving
    /// between members included (for example 3s, 500ms); past it the
    /// request fails with UNAVAILABLE (HTTP 503).
    #[arg(long, env = "SETTINGSD_ETCD_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub etcd_timeout: std::time::Duration,
    /// Directory holding the sled database; created if missing. Only one
    /// settingsd can use a directory at a time. Not used with --store etcd.
    #[arg(long, env = "SETTINGSD_DATA_DIR", default_value = "./settingsd-data")]
    pub data_dir: PathBuf,
    /// Address for the gRPC API (port 0 picks a free port). Once both
    /// listeners accept, `serve` prints one JSON line on stdout with the
    /// bound addresses: {"grpc":"127.0.0.1:50051","http":"127.0.0.1:8080"}.
    #[arg(long, env = "SETTINGSD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address for the Twilio-shaped HTTP bridge (GET/POST
    /// /v1/RecordingSettings/Default and /v1/CompositionSettings/Default).
    #[arg(long, env = "SETTINGSD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// TOML file of accounts ([[accounts]] sid, auth_token), API keys
    /// ([[api_keys]] sid, secret, account_sid) and operators ([[operators]]
    /// name, secret) allowed to call. Without it the server runs open: any AC
    /// SID with any password, on loopback only.
    #[arg(long, env = "SETTINGSD_ACCOUNTS")]
    pub accounts: Option<PathBuf>,
    /// Address for the admin listener: Prometheus /metrics and the
    /// /healthz and /readyz probes, plain HTTP. "off" disables it (and
    /// metrics with it).
    #[arg(long, env = "SETTINGSD_ADMIN_ADDR", default_value = "127.0.0.1:9090", value_parser = AdminAddr::parse)]
    pub admin_addr: AdminAddr,
    /// Load this file (JSON lines in the export format) at start: every line
    /// is validated first (a bad one stops the start, naming its line), and
    /// only records that differ from what is stored are written, so starting
    /// again with the same file changes nothing. For test fixtures. Lines
    /// of declared kinds are read with --kinds.
    #[arg(long, env = "SETTINGSD_SEED")]
    pub seed: Option<PathBuf>,
    /// Serve your own settings kinds: a TOML file naming .proto files
    /// (compiled at start, no protoc needed) and the messages that become
    /// kinds, served by settingsd.v1.SettingsService and the JSON API
    /// (README, "Your own settings"). A mistake in it stops the start,
    /// naming the file and line.
    #[arg(long, env = "SETTINGSD_KINDS", value_name = "FILE")]
    pub kinds: Option<PathBuf>,
    /// Serve a declared kind even if its schema changed in a way that
    /// stored records cannot be read under (a field number whose type
    /// changed, a removed field whose number is not reserved). Without it,
    /// such a change stops the start, naming the kind and the field.
    #[arg(long, env = "SETTINGSD_ALLOW_INCOMPATIBLE_KINDS")]
    pub allow_incompatible_kinds: bool,
    /// How many of the latest settings requests to keep in memory for
    /// `settingsd admin requests` (AdminService/ListRecentRequests); 0
    /// keeps none.
    #[arg(long, env = "SETTINGSD_REQUEST_LOG", default_value_t = crate::request_log::DEFAULT_CAPACITY)]
    pub request_log: usize,
    /// Serve /metrics without operator credentials even with --accounts
    /// (for a scraper on a trusted network).
    #[arg(long, env = "SETTINGSD_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Run open (no --accounts) even on a non-loopback address.
    #[arg(long, env = "SETTINGSD_ALLOW_OPEN")]
    pub allow_open: bool,
    /// Base URL that resources report in their `url` field.
    #[arg(long, env = "SETTINGSD_PUBLIC_URL", default_value = PublicUrl::TWILIO, value_parser = PublicUrl::parse)]
    pub public_url: PublicUrl,
    /// Give every write its own flush+fdatasync, one at a time, instead of
    /// sharing one among concurrent writers (group commit). Much slower; only
    /// for measuring what group commit buys.
    #[arg(long, env = "SETTINGSD_SYNC_PER_WRITE")]
    pub sync_per_write: bool,
    /// Open connections allowed per listener; more wait in the accept queue.
    #[arg(long, env = "SETTINGSD_MAX_CONNECTIONS", default_value_t = nonzero(Limits::default().max_connections))]
    pub max_connections: NonZeroUsize,
    /// Requests handled at once; past it, requests are shed with
    /// UNAVAILABLE (gRPC) or 503 (HTTP).
    #[arg(long, env = "SETTINGSD_MAX_IN_FLIGHT", default_value_t = nonzero(Limits::default().max_in_flight))]
    pub max_in_flight: NonZeroUsize,
    /// Watch streams open at once; past it, a new watch gets
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "SETTINGSD_MAX_WATCHES", default_value_t = nonzero(Limits::default().max_watches))]
    pub max_watches: NonZeroUsize,
    /// Watch streams open at once acting for one account (watches of every
    /// account, by operators, count only toward --max-watches).
    #[arg(long, env = "SETTINGSD_MAX_WATCHES_PER_ACCOUNT", default_value_t = nonzero(Limits::default().max_watches_per_account))]
    pub max_watches_per_account: NonZeroUsize,
    /// How many changes the change log keeps for watches, history and
    /// rollback (the oldest are compacted away); a watch or a rollback
    /// further back fails.
    #[arg(long, env = "SETTINGSD_HISTORY_REVISIONS", default_value_t = StoreOptions::DEFAULT_HISTORY_REVISIONS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_revisions: u64,
    /// sled's page cache size, in MiB.
    #[arg(long, env = "SETTINGSD_CACHE_MB", default_value_t = StoreOptions::DEFAULT_CACHE_CAPACITY >> 20)]
    pub cache_mb: u64,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data directory to read (no server may be running on it). Ignored
    /// with --grpc-addr.
    #[arg(long, env = "SETTINGSD_DATA_DIR", default_value = "./settingsd-data")]
    pub data_dir: PathBuf,
    /// Export from a running server instead, through its gRPC AdminService:
    /// HOST:PORT or http://HOST:PORT. Not a point-in-time snapshot: each
    /// record is as it was when read.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// Leave out records that do not decode (each is logged with its
    /// account) instead of failing. Only with --data-dir; to repair such an
    /// account, import a good line for it.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// With --grpc-addr and a server that has --accounts: an operator's
    /// credentials from its [[operators]] table, as NAME:SECRET.
    #[arg(long, env = "SETTINGSD_CREDENTIALS", hide_env_values = true)]
    pub credentials: Option<BasicCredentials>,
    /// The kinds file the server serves (`serve --kinds`): declared kinds'
    /// records are written with their message as proto3 JSON, which needs
    /// their .proto files. Without it, an export from a server that has
    /// declared kinds fails, naming the kind; an export of a data directory
    /// leaves their records out (and says so).
    #[arg(long, env = "SETTINGSD_KINDS", value_name = "FILE")]
    pub kinds: Option<PathBuf>,
    /// Where to write; replaced atomically (temporary file, fsync, rename).
    /// Standard output if omitted.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The data directory to load into; created if missing. Ignored with
    /// --grpc-addr.
    #[arg(long, env = "SETTINGSD_DATA_DIR", default_value = "./settingsd-data")]
    pub data_dir: PathBuf,
    /// Load into a running server instead, through its gRPC AdminService
    /// (HOST:PORT or http://HOST:PORT): records equal to what is stored are
    /// left alone, so loading a fixture again changes nothing. Up to
    /// 100,000 records per call.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// With --grpc-addr and a server that has --accounts: an operator's
    /// credentials from its [[operators]] table, as NAME:SECRET.
    #[arg(long, env = "SETTINGSD_CREDENTIALS", hide_env_values = true)]
    pub credentials: Option<BasicCredentials>,
    /// The kinds file the server serves (`serve --kinds`): declared kinds'
    /// lines hold their message as proto3 JSON, read with their .proto
    /// files. Without it, a line of a declared kind fails the import,
    /// naming the kind.
    #[arg(long, env = "SETTINGSD_KINDS", value_name = "FILE")]
    pub kinds: Option<PathBuf>,
    /// The JSON lines to load. Standard input if omitted.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// The settingsd gRPC server to forward to, as http://HOST:PORT.
    #[arg(long, env = "SETTINGSD_UPSTREAM")]
    pub upstream: String,
    /// Address for the Twilio-shaped HTTP bridge. Once it accepts, the
    /// bridge prints one JSON line on stdout: {"http":"127.0.0.1:8080"}.
    #[arg(long, env = "SETTINGSD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Address of the settingsd gRPC API: HOST:PORT or http://HOST:PORT.
    #[arg(long, env = "SETTINGSD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// The account: AC followed by 32 hex digits. May be left out when
    /// --credentials say which account to act for.
    #[arg(long, default_value = "")]
    pub account: String,
    /// Basic credentials, as USER:SECRET: AccountSid:AuthToken or
    /// ApiKeySid:Secret. Needed when the server has --accounts.
    #[arg(long, env = "SETTINGSD_CREDENTIALS", hide_env_values = true)]
    pub credentials: Option<BasicCredentials>,
    /// Which settings resource: recording (Recording Settings) or
    /// composition (Composition Settings).
    #[arg(long, default_value = "recording", value_parser = parse_resource)]
    pub resource: Resource,
}

/// `--admin-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct AdminAddr(pub Option<SocketAddr>);

impl AdminAddr {
    fn parse(value: &str) -> Result<AdminAddr, String> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(AdminAddr(None));
        }
        value
            .parse()
            .map(|addr| AdminAddr(Some(addr)))
            .map_err(|e| format!("expected HOST:PORT or off: {e}"))
    }
}

fn parse_resource(value: &str) -> Result<Resource, String> {
    value.parse()
}

/// A built-in resource's short or stable name, as its stable name, or a
/// declared kind's name (which the server checks: the CLI does not know
/// its kinds).
fn parse_kind(value: &str) -> Result<String, String> {
    match value.parse::<Resource>() {
        Ok(resource) => Ok(resource.name().to_owned()),
        Err(_) => KindName::parse(value)
            .map(|name| name.as_str().to_owned())
            .map_err(|e| format!("not recording, composition or a kind's name: {e}")),
    }
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Address of the settingsd gRPC API: HOST:PORT or http://HOST:PORT.
    #[arg(long, env = "SETTINGSD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// With a server that has --accounts: an operator's NAME:SECRET.
    #[arg(long, env = "SETTINGSD_CREDENTIALS", hide_env_values = true)]
    pub credentials: Option<BasicCredentials>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make matching Gets and Sets fail (or wait) on purpose, to test a
    /// client's retry paths; prints the rule.
    InjectFault {
        /// recording, composition or a declared kind's name (`serve
        /// --kinds`, whose Get and Set are GetSettings and UpdateSettings);
        /// every one if omitted.
        #[arg(long, value_parser = parse_kind)]
        resource: Option<String>,
        /// get or set; both if omitted.
        #[arg(long, default_value = "")]
        method: String,
        /// Only this account's requests (AC + 32 hex digits).
        #[arg(long, default_value = "")]
        account: String,
        /// The next COUNT matching requests.
        #[arg(long, default_value_t = 0)]
        count: u32,
        /// This fraction (0 to 1) of matching requests.
        #[arg(long, default_value_t = 0.0)]
        fraction: f64,
        /// The gRPC status code to fail with (14 = UNAVAILABLE, which the
        /// Twilio bridge answers 503); 0 to only delay.
        #[arg(long, default_value_t = 14)]
        code: i32,
        /// Milliseconds to wait before answering.
        #[arg(long, default_value_t = 0)]
        delay_ms: u32,
    },
    /// Print the fault rules in force, one JSON line each.
    ListFaults,
    /// Remove every fault rule.
    ClearFaults,
    /// Delete stored settings, so that reads answer the defaults again: one
    /// account's (--account), one resource's (--resource), one resource of
    /// one account (both), or everything (--all). Prints how many stored
    /// resources were deleted.
    #[command(group(clap::ArgGroup::new("target").required(true).multiple(true)
        .args(["account", "resource", "all"])))]
    Reset {
        /// Only this account's settings (AC + 32 hex digits).
        #[arg(long)]
        account: Option<String>,
        /// recording, composition or a declared kind's name: only this one.
        #[arg(long, value_parser = parse_kind)]
        resource: Option<String>,
        /// Every resource of every account.
        #[arg(long, conflicts_with_all = ["account", "resource"])]
        all: bool,
    },
    /// Print the latest settings requests the server answered, newest
    /// first, one JSON line each: time, transport, method or route,
    /// account, status, latency and (HTTP) form parameters.
    Requests {
        /// Only this account's requests (AC + 32 hex digits).
        #[arg(long, default_value = "")]
        account: String,
        /// At most this many (0: every one kept).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Watch every account (operators, or any caller of an open server)
    /// instead of --account.
    #[arg(long, conflicts_with = "account")]
    pub all: bool,
    /// Start at this revision: every change from it on (resume with the last
    /// revision printed + 1). Without it: the current state first, then a
    /// progress line, then every later change.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// At most this many revisions (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub page_size: i32,
    /// The next_page_token a previous page printed.
    #[arg(long, default_value = "")]
    pub page_token: String,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The past revision to restore (from `settingsd history`).
    #[arg(long)]
    pub revision: u64,
    /// Roll back only if the stored resource still has this etag (quotes
    /// included, e.g. '"42"').
    #[arg(long)]
    pub etag: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Required: a descriptive name, 1 to 255 characters.
    #[arg(long)]
    pub friendly_name: String,
    /// AWS credential SID (CR + 32 hex digits), or "" to clear.
    #[arg(long)]
    pub aws_credentials_sid: Option<String>,
    /// S3 URL for recordings or compositions (absolute https), or "" to clear.
    #[arg(long)]
    pub aws_s3_url: Option<String>,
    /// Store recordings or compositions in your S3 bucket: true or false.
    #[arg(long)]
    pub aws_storage_enabled: Option<bool>,
    /// Public key SID for encryption (CR + 32 hex digits), or "" to clear.
    #[arg(long)]
    pub encryption_key_sid: Option<String>,
    /// Encrypt recordings or compositions: true or false.
    #[arg(long)]
    pub encryption_enabled: Option<bool>,
    /// Write only if the stored resource still has this etag (as `get`
    /// printed it, quotes included, e.g. '"42"'); otherwise fail with
    /// Aborted and change nothing.
    #[arg(long)]
    pub etag: Option<String>,
}

/// Runs a parsed command line.
///
/// # Errors
/// Anything that stops the command; `main` prints it and exits non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Bridge(args) => {
            let shutdown = shutdown_signal()?;
            let http = TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("cannot listen on --http-addr {}", args.http_addr))?;
            let (ready, announced) = tokio::sync::oneshot::channel();
            tokio::spawn(print_ready_line(announced));
            server::run_bridge(&args.upstream, http, Some(ready), shutdown).await
        }
        Command::Bench(args) => bench::run(args).await,
        Command::BenchNoopServer { grpc_addr } => bench::serve_noop(grpc_addr).await,
        Command::Export(ExportArgs {
            grpc_addr: Some(addr),
            credentials,
            file,
            skip_corrupt,
            kinds,
            ..
        }) => {
            anyhow::ensure!(
                !skip_corrupt,
                "--skip-corrupt works only with --data-dir (a server's export stops at an \
                 undecodable record)"
            );
            let catalog = load_catalog(kinds.as_deref())?;
            let client = AdminServiceClient::new(connect(&addr).await?);
            let mut out = backup::ExportWriter::create(file.as_deref())?;
            export_online(client, credentials.as_ref(), &catalog, &mut out).await?;
            let n = out.commit()?;
            eprintln!("settingsd: exported {n} records from {addr}");
            Ok(())
        }
        Command::Export(args) => {
            // sled creates a missing database: a mistyped --data-dir would
            // export nothing and replace a good backup with an empty one.
            anyhow::ensure!(
                SledStore::exists(&args.data_dir),
                "{} holds no settingsd data (no sled database there); check --data-dir",
                args.data_dir.display()
            );
            let catalog = load_catalog(args.kinds.as_deref())?;
            let store = open_offline(&args.data_dir, &catalog).await?;
            let summary = export_offline(&store, &catalog, &args).await;
            store.close().await?;
            let summary = summary?;
            eprintln!("settingsd: exported {} records", summary.written);
            if !summary.skipped.is_empty() {
                let records: Vec<_> = summary
                    .skipped
                    .iter()
                    .map(|(resource, account)| format!("{resource} of {account}"))
                    .collect();
                eprintln!(
                    "settingsd: left out {} records that do not decode: {}",
                    records.len(),
                    records.join(", ")
                );
            }
            Ok(())
        }
        Command::Import(ImportArgs {
            grpc_addr: Some(addr),
            credentials,
            file,
            kinds,
            ..
        }) => {
            let catalog = load_catalog(kinds.as_deref())?;
            let messages = match &file {
                Some(path) => {
                    let file = std::fs::File::open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    backup::read_import_messages(&catalog, std::io::BufReader::new(file))?
                }
                None => backup::read_import_messages(&catalog, std::io::stdin().lock())?,
            };
            let mut client = AdminServiceClient::new(connect(&addr).await?);
            let request =
                BasicCredentials::request(credentials.as_ref(), tokio_stream::iter(messages));
            let imported = client
                .import_settings(request)
                .await
                .map_err(status_error)?
                .into_inner();
            eprintln!(
                "settingsd: imported {} records ({} already so)",
                imported.written, imported.unchanged
            );
            Ok(())
        }
        Command::Import(args) => {
            let catalog = load_catalog(args.kinds.as_deref())?;
            let store = open_offline(&args.data_dir, &catalog).await?;
            let imported = import_offline(&store, &catalog, args.file.as_deref()).await;
            store.close().await?;
            let n = imported?;
            eprintln!("settingsd: imported {n} records");
            Ok(())
        }
        Command::Watch(args) => watch(args).await,
        Command::Admin(args) => admin(args).await,
        Command::History(args) => {
            let client = SettingsClient::new(connect(&args.client.grpc_addr).await?);
            let request = args.client.request(ListRevisionsMessage {
                account_sid: args.client.account.clone(),
                page_size: args.page_size,
                page_token: args.page_token,
            });
            let page = client
                .list_revisions(args.client.resource, request)
                .await
                .map_err(status_error)?;
            let revisions: Vec<_> = page.revisions.into_iter().map(CliOutput::from).collect();
            let output = serde_json::json!({
                "revisions": revisions,
                "next_page_token": page.next_page_token,
            });
            println!("{}", serde_json::to_string_pretty(&output)?);
            Ok(())
        }
        Command::Rollback(args) => {
            let client = SettingsClient::new(connect(&args.client.grpc_addr).await?);
            let request = args.client.request(RollbackMessage {
                account_sid: args.client.account.clone(),
                revision: args.revision,
                etag: args.etag.unwrap_or_default(),
            });
            let settings = client
                .rollback(args.client.resource, request)
                .await
                .map_err(status_error)?;
            print_json(settings)
        }
        Command::Get(args) => {
            let client = SettingsClient::new(connect(&args.client.grpc_addr).await?);
            let request = args.client.request(GetSettingsMessage {
                account_sid: args.client.account.clone(),
            });
            let settings = client
                .get(args.client.resource, request)
                .await
                .map_err(status_error)?;
            print_json(settings)
        }
        Command::Set(args) => {
            let client = SettingsClient::new(connect(&args.client.grpc_addr).await?);
            let request = args.client.request(SetSettingsMessage {
                account_sid: args.client.account.clone(),
                friendly_name: args.friendly_name,
                aws_credentials_sid: args.aws_credentials_sid,
                aws_s3_url: args.aws_s3_url,
                aws_storage_enabled: args.aws_storage_enabled,
                encryption_key_sid: args.encryption_key_sid,
                encryption_enabled: args.encryption_enabled,
                etag: args.etag.unwrap_or_default(),
            });
            let settings = client
                .set(args.client.resource, request)
                .await
                .map_err(status_error)?;
            print_json(settings)
        }
    }
}

/// Runs an emulator control against a running server.
async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(connect(&args.grpc_addr).await?);
    let credentials = args.credentials.as_ref();
    let show = |f: &crate::pb::Fault| {
        serde_json::json!({
            "id": f.id, "resource": f.resource, "method": f.method, "account_sid": f.account_sid,
            "remaining": f.remaining, "fraction": f.fraction, "grpc_code": f.grpc_code,
            "delay_ms": f.delay_ms, "applied": f.applied,
        })
    };
    match args.command {
        AdminCommand::InjectFault {
            resource,
            method,
            account,
            count,
            fraction,
            code,
            delay_ms,
        } => {
            let request = crate::pb::InjectFaultRequest {
                resource: resource.unwrap_or_default(),
                method,
                account_sid: account,
                count,
                fraction,
                grpc_code: code,
                delay_ms,
            };
            let fault = client
                .inject_fault(BasicCredentials::request(credentials, request))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", show(&fault));
        }
        AdminCommand::ListFaults => {
            let request = BasicCredentials::request(credentials, crate::pb::ListFaultsRequest {});
            let faults = client
                .list_faults(request)
                .await
                .map_err(status_error)?
                .into_inner();
            for fault in &faults.faults {
                println!("{}", show(fault));
            }
        }
        AdminCommand::ClearFaults => {
            let request = BasicCredentials::request(credentials, crate::pb::ClearFaultsRequest {});
            let cleared = client
                .clear_faults(request)
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}", serde_json::json!({ "cleared": cleared.cleared }));
        }
        AdminCommand::Reset {
            account,
            resource,
            all: _,
        } => {
            let request = crate::pb::ResetSettingsRequest {
                account_sid: account.unwrap_or_default(),
                resource: resource.unwrap_or_default(),
            };
            let reset = client
                .reset_settings(BasicCredentials::request(credentials, request))
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({ "reset_count": reset.reset_count, "revision": reset.revision })
            );
        }
        AdminCommand::Requests { account, limit } => {
            let request = crate::pb::ListRecentRequestsRequest {
                account_sid: account,
                limit,
            };
            let recent = client
                .list_recent_requests(BasicCredentials::request(credentials, request))
                .await
                .map_err(status_error)?
                .into_inner();
            for r in recent.requests {
                let time = r
                    .time
                    .and_then(|t| std::time::SystemTime::try_from(t).ok())
                    .map(|t| humantime::format_rfc3339_micros(t).to_string());
                let latency_ms = r
                    .latency
                    .and_then(|d| std::time::Duration::try_from(d).ok())
                    .map(|d| d.as_secs_f64() * 1000.0);
                // In order, repeats kept: [[name, value], ...].
                let parameters: Vec<[String; 2]> = r
                    .parameters
                    .into_iter()
                    .map(|p| [p.name, p.value])
                    .collect();
                let line = serde_json::json!({
                    "time": time, "transport": r.transport, "method": r.method,
                    "account_sid": r.account_sid, "status": r.status,
                    "latency_ms": latency_ms, "parameters": parameters,
                });
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// Prints a watch's messages as JSON lines until the stream ends or fails.
async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let client = SettingsClient::new(connect(&args.client.grpc_addr).await?);
    let account_sid = if args.all {
        "-".to_owned()
    } else {
        args.client.account.clone()
    };
    let request = args.client.request(WatchSettingsMessage {
        account_sid,
        start_revision: args.from,
    });
    let mut stream = client
        .watch(args.client.resource, request)
        .await
        .map_err(status_error)?;
    while let Some(message) = tokio_stream::StreamExt::next(&mut stream).await {
        let message = message.map_err(status_error)?;
        let line = match message.settings {
            Some(settings) if message.reset => {
                let mut line = serde_json::to_value(CliOutput::from(settings))?;
                line["reset"] = true.into();
                line.to_string()
            }
            Some(settings) => serde_json::to_string(&CliOutput::from(settings))?,
            None => serde_json::json!({"progress": true, "revision": message.revision}).to_string(),
        };
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// Streams a running server's export into `out`: every kind through
/// `ExportSettings` (declared kinds' values read with `catalog`), or, from
/// a server that predates it (UNIMPLEMENTED), its Recording Settings
/// through `ExportRecordingSettings`.
async fn export_online(
    mut client: AdminServiceClient<Channel>,
    credentials: Option<&BasicCredentials>,
    catalog: &Catalog,
    out: &mut backup::ExportWriter,
) -> anyhow::Result<()> {
    let request = BasicCredentials::request(credentials, ExportSettingsRequest {});
    match client.export_settings(request).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            while let Some(record) = stream.message().await.map_err(status_error)? {
                out.write(&ExportedRecord::from_exported(catalog, record)?)?;
            }
            Ok(())
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            tracing::warn!(
                "the server has no ExportSettings: exporting its Recording Settings only"
            );
            let request = BasicCredentials::request(credentials, ExportRecordingSettingsRequest {});
            let mut stream = client
                .export_recording_settings(request)
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(record) = stream.message().await.map_err(status_error)? {
                out.write(&ExportedRecord::from_message(
                    Resource::Recording,
                    record.into(),
                ))?;
            }
            Ok(())
        }
        Err(status) => Err(status_error(status)),
    }
}

impl ClientArgs {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        BasicCredentials::request(self.credentials.as_ref(), message)
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let auth = match &args.accounts {
        Some(path) => Authenticator::load(path)?,
        None => Authenticator::Open,
    };
    // Check before binding, so a refused configuration never listens at all.
    let mut addrs = vec![args.grpc_addr, args.http_addr];
    addrs.extend(args.admin_addr.0);
    server::check_exposure(&auth, args.allow_open, &addrs)?;
    let admin = match args.admin_addr.0 {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --admin-addr {addr}"))?,
        ),
        None => None,
    };
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on --grpc-addr {}", args.grpc_addr))?;
    let http = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", args.http_addr))?;
    let kinds = match &args.kinds {
        Some(path) => DeclaredKinds::load(path).map_err(|e| anyhow::anyhow!("--kinds: {e}"))?,
        None => DeclaredKinds::empty(),
    };
    let store = match args.store {
        StoreKind::Sled => {
            anyhow::ensure!(
                args.etcd_endpoints.is_empty(),
                "--etcd-endpoints is given but --store is sled: add --store etcd to use etcd"
            );
            StoreConfig::Sled(StoreOptions {
                cache_capacity: args.cache_mb << 20,
                history_revisions: args.history_revisions,
                sync_mode: if args.sync_per_write {
                    SyncMode::PerWrite
                } else {
                    SyncMode::Group
                },
                ..StoreOptions::new(args.data_dir)
            })
        }
        StoreKind::Etcd => {
            anyhow::ensure!(
                !args.etcd_endpoints.is_empty(),
                "--store etcd needs --etcd-endpoints (SETTINGSD_ETCD_ENDPOINTS): the client \
                 URLs of the etcd members, such as http://127.0.0.1:2379"
            );
            let options = EtcdOptions {
                endpoints: args.etcd_endpoints,
                prefix: args.etcd_prefix,
                timeout: args.etcd_timeout,
                observer: None,
                declared: Vec::new(),
            };
            options.check().map_err(anyhow::Error::msg)?;
            StoreConfig::Etcd(options)
        }
    };
    let config = ServerConfig {
        store,
        public_url: args.public_url,
        auth,
        allow_open: args.allow_open,
        limits: Limits {
            max_connections: args.max_connections.get(),
            max_in_flight: args.max_in_flight.get(),
            max_watches: args.max_watches.get(),
            max_watches_per_account: args.max_watches_per_account.get(),
            ..Limits::default()
        },
        metrics: admin.as_ref().map(|_| Metrics::new()),
        metrics_public: args.metrics_public,
        seed: args.seed,
        request_log: args.request_log,
        kinds: Arc::new(Catalog::new(kinds)),
        allow_incompatible_kinds: args.allow_incompatible_kinds,
    };
    let (ready, announced) = tokio::sync::oneshot::channel();
    tokio::spawn(print_ready_line(announced));
    let listeners = Listeners {
        grpc,
        http,
        admin,
        ready: Some(ready),
    };
    server::run(config, listeners, shutdown).await
}

/// Prints the ready line on stdout once the server says it accepts: the
/// one machine-readable output of `serve` and `bridge` (logs go to stderr),
/// so scripts and tests learn the bound ports without parsing logs.
async fn print_ready_line(announced: tokio::sync::oneshot::Receiver<Ready>) {
    use std::io::Write;
    if let Ok(ready) = announced.await {
        let mut stdout = std::io::stdout().lock();
        let written = writeln!(stdout, "{}", ready.to_line()).and_then(|()| stdout.flush());
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the ready line to stdout");
        }
    }
}

/// Opens a data directory for export or import, which need it to themselves,
/// with `catalog`'s declared kinds (a kind left out keeps its records on
/// disk, unread).
async fn open_offline(data_dir: &std::path::Path, catalog: &Catalog) -> anyhow::Result<SledStore> {
    let options = StoreOptions {
        declared: catalog.declared_resources(),
        ..StoreOptions::new(data_dir)
    };
    tokio::task::spawn_blocking(move || SledStore::open(&options))
        .await?
        .context("export and import need the data directory to themselves: stop the server first")
}

/// The kinds of `--kinds FILE` (only the built-in ones without it).
fn load_catalog(path: Option<&std::path::Path>) -> anyhow::Result<Catalog> {
    let declared = match path {
        Some(path) => DeclaredKinds::load(path).map_err(|e| anyhow::anyhow!("--kinds: {e}"))?,
        None => DeclaredKinds::empty(),
    };
    Ok(Catalog::new(declared))
}

/// The offline export, once the store is open: the declared kinds' schemas
/// are checked against the stored ones first (reading records with an
/// incompatible schema would misread them), and the records of declared
/// kinds that `--kinds` does not declare, which the export cannot see, are
/// named on stderr.
async fn export_offline(
    store: &SledStore,
    catalog: &Catalog,
    args: &ExportArgs,
) -> anyhow::Result<backup::ExportSummary> {
    server::schemas::check_offline(store, catalog, false)
        .await
        .with_context(|| kinds_context(catalog))?;
    let unseen = store.unopened_kinds()?;
    if !unseen.is_empty() {
        eprintln!(
            "settingsd: warning: {} also holds records of declared kinds {}, which this export \
             leaves out: pass --kinds FILE with the kinds file that declares them",
            args.data_dir.display(),
            unseen.join(", ")
        );
    }
    backup::export(store, catalog, args.file.as_deref(), args.skip_corrupt).await
}

/// The offline import, once the store is open: the declared kinds' schemas
/// are checked against the stored ones first, and recorded once the
/// records are in (the records are
/// written in them), as a server's start does.
async fn import_offline(
    store: &SledStore,
    catalog: &Catalog,
    file: Option<&std::path::Path>,
) -> anyhow::Result<usize> {
    // Checked first; recorded only once the records are in, so an import
    // that fails (a bad line writes nothing) leaves the schemas as they
    // were, and the server's own kinds file still starts.
    server::schemas::check_offline(store, catalog, false)
        .await
        .with_context(|| kinds_context(catalog))?;
    let imported = match file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            backup::import(store, catalog, std::io::BufReader::new(file)).await?
        }
        None => backup::import(store, catalog, std::io::stdin().lock()).await?,
    };
    server::schemas::check_offline(store, catalog, true)
        .await
        .with_context(|| kinds_context(catalog))?;
    Ok(imported)
}

/// Names the kinds file in a schema check's error.
fn kinds_context(catalog: &Catalog) -> String {
    format!("--kinds {}", catalog.declared().source().display())
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are
/// installed now, not when the future is first polled: a signal that
/// arrives while the store is still opening is kept, and stops the server
/// gracefully as soon as it serves, instead of killing the process.
///
/// # Errors
/// If a handler cannot be installed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        }
        // A second signal means "now": every acknowledged write is already
        // on disk, so exiting without the graceful close loses nothing.
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::warn!("second signal: exiting without waiting for open requests");
            std::process::exit(1);
        });
    })
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let channel = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid --grpc-addr {addr:?}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to settingsd at {uri}"))?;
    Ok(channel)
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

/// The REST resource's eight fields, plus the store's revision, update
/// time and etag.
#[derive(Serialize)]
struct CliOutput {
    #[serde(flatten)]
    resource: SettingsJson,
    revision: u64,
    update_time: Option<String>,
    etag: String,
}

impl From<SettingsMessage> for CliOutput {
    fn from(settings: SettingsMessage) -> Self {
        CliOutput {
            revision: settings.revision,
            update_time: settings.update_time.as_ref().map(ToString::to_string),
            etag: settings.etag.clone(),
            resource: settings.into(),
        }
    }
}

fn print_json(settings: SettingsMessage) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&CliOutput::from(settings))?
    );
    Ok(())
}
