//! `settingsd bench`: a load generator that ships with the binary, like
//! etcd's benchmark tool. It drives a server over gRPC or HTTP with C
//! connections x M concurrent requests for a fixed time, spreads keys over K
//! accounts, and reports throughput and HDR-histogram latency percentiles.
//!
//! Every figure is meant to be read as a ratio against a baseline from the
//! same run (this kind of machine is shared and noisy): `noop` is the ceiling
//! the client, tonic and the machine allow; `grpc_set_sync_each` is what
//! group commit is measured against; `grpc_get` is the HTTP bridge's baseline.
//!
//! Without `--target` the bench starts its own servers as child processes
//! (the real `settingsd serve` on a temporary directory, and a constant-answer
//! gRPC server for `noop`), so client and server are separate processes.

use std::{
    future::Future,
    path::Path,
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};
use tonic::{transport::Channel, Request, Response, Status};

use crate::{
    auth::{basic_authorization, BasicCredentials},
    domain::{AccountSid, FriendlyName, SettingsPatch},
    pb::{
        admin_service_client::AdminServiceClient,
        recording_settings_service_client::RecordingSettingsServiceClient,
        recording_settings_service_server::{
            RecordingSettingsService, RecordingSettingsServiceServer,
        },
        settings_service_client::SettingsServiceClient,
        GetRecordingSettingsRequest, GetSettingsRequest, ListRecordingSettingsRevisionsRequest,
        ListRecordingSettingsRevisionsResponse, RecordingSettings, RecordingSettingsChange,
        ResetSettingsRequest, RollbackRecordingSettingsRequest, SetRecordingSettingsRequest,
        Settings as GenericSettings, UpdateSettingsRequest, WatchRecordingSettingsRequest,
    },
    resource::Resource,
    server::Ready,
    store::{
        sled::{SledStore, StoreOptions},
        Replacement, Store,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Scenario {
    /// The same RPC shape answered with a constant: the ceiling.
    Noop,
    GrpcGet,
    /// Durable Sets, group commit.
    GrpcSet,
    /// Durable Sets, one flush+fdatasync per write.
    GrpcSetSyncEach,
    HttpGet,
    HttpPost,
    /// grpc_set with --watchers idle watch streams attached (on an account
    /// nobody writes): what watchers cost writers.
    GrpcSetWatched,
    /// --watchers watch streams on one account, one writer: delivered
    /// changes per second (all watchers together) and the latency from each
    /// Set's acknowledgement to each watcher's receipt.
    GrpcWatchFanout,
    /// grpc_get through SettingsService/GetSettings of a declared kind
    /// shaped like Recording Settings ([`BENCH_KIND`]).
    GrpcGetGeneric,
    /// grpc_set through SettingsService/UpdateSettings of that kind.
    GrpcSetGeneric,
}

/// The declared kind the generic scenarios use: the bench writes this
/// kinds file and .proto for the servers it starts (a `--target` must
/// declare the same). Its message has Recording Settings' fields and
/// numbers, so a record is the same size.
const BENCH_KIND: &str = "bench_settings";
const BENCH_KINDS_TOML: &str = "files = [\"settingsd/bench/v1/bench.proto\"]\n\
    [[kinds]]\nname = \"bench_settings\"\nmessage = \"settingsd.bench.v1.BenchSettings\"\n";
const BENCH_PROTO: &str = "syntax = \"proto3\";\npackage settingsd.bench.v1;\n\
    message BenchSettings {\n  optional string friendly_name = 2;\n\
    optional string aws_credentials_sid = 3;\n  optional string aws_s3_url = 4;\n\
    bool aws_storage_enabled = 5;\n  optional string encryption_key_sid = 6;\n\
    bool encryption_enabled = 7;\n}\n";

/// A [`BENCH_KIND`] value: `friendly_name` only, as the typed scenarios
/// set.
#[derive(Clone, PartialEq, prost::Message)]
struct BenchSettings {
    #[prost(string, optional, tag = "2")]
    friendly_name: Option<String>,
}

/// The `UpdateSettings` of the generic scenarios.
fn bench_update(account_sid: String, friendly_name: String) -> UpdateSettingsRequest {
    use prost::Message as _;
    let value = BenchSettings {
        friendly_name: Some(friendly_name),
    };
    UpdateSettingsRequest {
        settings: Some(GenericSettings {
            kind: BENCH_KIND.into(),
            account_sid,
            value: Some(prost_types::Any {
                type_url: "type.googleapis.com/settingsd.bench.v1.BenchSettings".into(),
                value: value.encode_to_vec(),
            }),
            ..GenericSettings::default()
        }),
        update_mask: None,
    }
}

/// Writes the bench's kinds file (and its .proto) into `dir`; returns the
/// kinds file's path.
fn write_bench_kinds(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let proto = dir.join("settingsd/bench/v1");
    std::fs::create_dir_all(&proto)?;
    std::fs::write(proto.join("bench.proto"), BENCH_PROTO)?;
    let kinds = dir.join("kinds.toml");
    std::fs::write(&kinds, BENCH_KINDS_TOML)?;
    Ok(kinds)
}

impl Scenario {
    const ALL: [Scenario; 10] = [
        Scenario::Noop,
        Scenario::GrpcGet,
        Scenario::GrpcSet,
        Scenario::GrpcSetSyncEach,
        Scenario::HttpGet,
        Scenario::HttpPost,
        Scenario::GrpcSetWatched,
        Scenario::GrpcWatchFanout,
        Scenario::GrpcGetGeneric,
        Scenario::GrpcSetGeneric,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Noop => "noop",
            Scenario::GrpcGet => "grpc_get",
            Scenario::GrpcSet => "grpc_set",
            Scenario::GrpcSetSyncEach => "grpc_set_sync_each",
            Scenario::HttpGet => "http_get",
            Scenario::HttpPost => "http_post",
            Scenario::GrpcSetWatched => "grpc_set_watched",
            Scenario::GrpcWatchFanout => "grpc_watch_fanout",
            Scenario::GrpcGetGeneric => "grpc_get_generic",
            Scenario::GrpcSetGeneric => "grpc_set_generic",
        }
    }

    /// The scenario this one is compared against in the same run.
    fn baseline(self) -> Option<Scenario> {
        match self {
            Scenario::Noop | Scenario::GrpcSetSyncEach | Scenario::GrpcWatchFanout => None,
            Scenario::GrpcSetWatched => Some(Scenario::GrpcSet),
            Scenario::GrpcGet => Some(Scenario::Noop),
            Scenario::GrpcSet => Some(Scenario::GrpcSetSyncEach),
            Scenario::HttpGet | Scenario::HttpPost | Scenario::GrpcGetGeneric => {
                Some(Scenario::GrpcGet)
            }
            Scenario::GrpcSetGeneric => Some(Scenario::GrpcSet),
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A running settingsd's gRPC address (http://HOST:PORT). Without it the
    /// bench starts its own servers on temporary directories.
    #[arg(long)]
    pub target: Option<String>,
    /// The HTTP bridge of --target (http://HOST:PORT), for the http_* scenarios.
    #[arg(long)]
    pub http_target: Option<String>,
    /// Basic credentials USER:SECRET for a --target with --accounts. A
    /// caller acts only for its own account, so with credentials every
    /// request acts for theirs (sent as an empty account_sid) and --accounts
    /// has no effect.
    #[arg(long, env = "SETTINGSD_CREDENTIALS", hide_env_values = true)]
    pub credentials: Option<BasicCredentials>,
    /// A scenario to run (repeatable); all by default.
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Watch streams in grpc_set_watched and grpc_watch_fanout.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// gRPC connections (HTTP/2) the requests are spread over. HTTP/1.1 has
    /// one request per connection at a time, so the http_* scenarios use as
    /// many connections as --concurrency.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Accounts the keys are spread over (written once before the runs).
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// How long each scenario runs, after a short warm-up (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Run each scenario for this many requests instead of --duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// About a second per scenario and a small --preload: a smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Fill this many accounts through the store's bulk path, then report the
    /// open time after a restart, disk bytes per account, grpc_get over all
    /// of them, and the server's peak RSS. Needs no --target.
    #[arg(long)]
    pub preload: Option<usize>,
    /// Start the bench's own servers with --admin-addr off and
    /// --request-log 0, so they record nothing (to measure what metrics and
    /// the request log cost).
    #[arg(long)]
    pub no_metrics: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ScenarioResult {
    pub scenario: &'static str,
    pub concurrency: usize,
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// The scenario this one is compared with, and throughput / its throughput.
    pub baseline: Option<&'static str>,
    pub ratio_to_baseline: Option<f64>,
}

/// The largest preload whose full reset the bench times.
pub const FULL_RESET_TIMED_UP_TO: usize = 100_000;

#[derive(Debug, Serialize)]
pub struct PreloadResult {
    pub accounts: usize,
    pub preload_seconds: f64,
    pub open_after_restart_ms: f64,
    pub disk_bytes_per_account: f64,
    pub grpc_get: ScenarioResult,
    pub server_peak_rss_mb: f64,
    /// AdminService/ResetSettings of everything, all `accounts` stored:
    /// the time to its (durable) answer; `None` above
    /// [`FULL_RESET_TIMED_UP_TO`] accounts.
    pub full_reset_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub results: Vec<ScenarioResult>,
    pub preload: Option<PreloadResult>,
}

/// Runs the bench and prints its report.
///
/// # Errors
/// If a server cannot be started or reached, or a scenario cannot run at all.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.quick {
        args.duration = Duration::from_secs(1);
        args.preload = args.preload.map(|n| n.min(10_000));
    }
    anyhow::ensure!(
        args.concurrency > 0 && args.connections > 0 && args.accounts > 0,
        "--concurrency, --connections and --accounts must be at least 1"
    );
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let mut results = Vec::new();
    for scenario in scenarios {
        let result = run_scenario(&args, scenario).await?;
        if !args.json {
            eprintln!("{}", table_row(&result));
        }
        results.push(result);
    }
    for i in 0..results.len() {
        let baseline = Scenario::ALL
            .into_iter()
            .find(|s| s.name() == results[i].scenario)
            .and_then(Scenario::baseline);
        if let Some(base) = baseline.and_then(|b| results.iter().find(|r| r.scenario == b.name())) {
            let ratio = results[i].throughput_rps / base.throughput_rps;
            let name = base.scenario;
            results[i].baseline = Some(name);
            results[i].ratio_to_baseline = Some(ratio);
        }
    }
    let preload = match args.preload {
        Some(n) => Some(run_preload(&args, n).await?),
        None => None,
    };
    let report = Report { results, preload };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn table_row(r: &ScenarioResult) -> String {
    format!(
        "{:<20} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        r.scenario,
        r.throughput_rps,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.p999_us,
        r.errors,
        r.ratio_to_baseline
            .map(|x| format!("{x:.2}x {}", r.baseline.unwrap_or("")))
            .unwrap_or_default()
    )
}

fn print_table(report: &Report) {
    println!(
        "{:<20} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "scenario", "req/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "errors", "vs baseline"
    );
    for r in &report.results {
        println!("{}", table_row(r));
    }
    if let Some(p) = &report.preload {
        println!(
            "preload {} accounts: {:.1}s to fill, open after restart {:.0} ms, {:.0} disk bytes/account, \
             server peak RSS {:.1} MB, grpc_get over all: {:.0} req/s p99 {} us, \
             full reset {}",
            p.accounts,
            p.preload_seconds,
            p.open_after_restart_ms,
            p.disk_bytes_per_account,
            p.server_peak_rss_mb,
            p.grpc_get.throughput_rps,
            p.grpc_get.p99_us,
            p.full_reset_ms.map_or_else(
                || format!("not timed (over {FULL_RESET_TIMED_UP_TO} accounts)"),
                |ms| format!("{ms:.0} ms")
            )
        );
    }
}

fn account(n: usize) -> String {
    format!("AC{n:032x}")
}

/// One request of a scenario; `n` picks the account.
type Op = Box<dyn FnMut(usize) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

async fn run_scenario(args: &BenchArgs, scenario: Scenario) -> anyhow::Result<ScenarioResult> {
    // Servers this scenario owns; dropped (killed) when it ends.
    let mut _servers: Vec<ChildServer> = Vec::new();
    let mut _kinds_dir: Option<tempfile::TempDir> = None;
    let (grpc_target, http_target) = match (scenario, &args.target) {
        (Scenario::Noop, _) => {
            let server = ChildServer::start(&["bench-noop-server"], None).await?;
            let grpc = server.grpc.clone();
            _servers.push(server);
            (grpc, None)
        }
        (_, Some(target)) => {
            anyhow::ensure!(
                scenario != Scenario::GrpcSetSyncEach,
                "grpc_set_sync_each needs a server started with --sync-per-write; \
                 run it without --target"
            );
            (target.clone(), args.http_target.clone())
        }
        (_, None) => {
            let dir = tempfile::tempdir()?;
            let extra: &[&str] = if scenario == Scenario::GrpcSetSyncEach {
                &["--sync-per-write"]
            } else {
                &[]
            };
            // Every server the bench starts declares the generic
            // scenarios' kind, so that all scenarios run the same server.
            let kinds_dir = tempfile::tempdir()?;
            let kinds = write_bench_kinds(kinds_dir.path())?;
            let kinds = kinds.to_str().context("a temporary path is not UTF-8")?;
            let mut serve = serve_args(args);
            serve.extend_from_slice(extra);
            serve.extend_from_slice(&["--kinds", kinds]);
            let server = ChildServer::start(&serve, Some(dir)).await?;
            _kinds_dir = Some(kinds_dir);
            let targets = (server.grpc.clone(), server.http.clone());
            _servers.push(server);
            targets
        }
    };
    let credentials = args.credentials.clone();
    let channels = connect_channels(&grpc_target, args.connections).await?;
    if scenario == Scenario::GrpcWatchFanout {
        return watch_fanout(args, &channels).await;
    }
    // Idle watchers: held open (answering only progress) while writers run.
    let _watchers = if scenario == Scenario::GrpcSetWatched {
        anyhow::ensure!(
            credentials.is_none(),
            "grpc_set_watched needs a server without --accounts: its idle watchers watch an \
             account nobody writes, and a tenant can only watch its own"
        );
        let unwritten = "ACffffffffffffffffffffffffffffffff";
        let mut watchers = Vec::new();
        for w in 0..args.watchers {
            let mut stream = open_watch(
                &channels[w % channels.len()],
                unwritten,
                credentials.as_ref(),
            )
            .await?;
            watchers.push(AbortOnDrop(tokio::spawn(async move {
                while let Ok(Some(_)) = stream.message().await {}
            })));
        }
        watchers
    } else {
        Vec::new()
    };
    // Every account exists before reads, so Gets read real records.
    if matches!(scenario, Scenario::GrpcGet | Scenario::HttpGet) {
        preload_over_grpc(&channels, args.accounts, credentials.as_ref(), false).await?;
    }
    if scenario == Scenario::GrpcGetGeneric {
        preload_over_grpc(&channels, args.accounts, credentials.as_ref(), true).await?;
    }
    let accounts = args.accounts;
    let make_op: Box<dyn Fn(usize) -> Op> = match scenario {
        Scenario::Noop | Scenario::GrpcGet => Box::new(move |worker| {
            let client =
                RecordingSettingsServiceClient::new(channels[worker % channels.len()].clone());
            let credentials = credentials.clone();
            Box::new(move |n| {
                let mut client = client.clone();
                let request = BasicCredentials::request(
                    credentials.as_ref(),
                    GetRecordingSettingsRequest {
                        account_sid: request_account(n, accounts, credentials.as_ref()),
                    },
                );
                Box::pin(async move { client.get_recording_settings(request).await.is_ok() })
            })
        }),
        Scenario::GrpcSet | Scenario::GrpcSetSyncEach | Scenario::GrpcSetWatched => {
            Box::new(move |worker| {
                let client =
                    RecordingSettingsServiceClient::new(channels[worker % channels.len()].clone());
                let credentials = credentials.clone();
                Box::new(move |n| {
                    let mut client = client.clone();
                    let request = BasicCredentials::request(
                        credentials.as_ref(),
                        SetRecordingSettingsRequest {
                            account_sid: request_account(n, accounts, credentials.as_ref()),
                            friendly_name: format!("bench {n}"),
                            ..Default::default()
                        },
                    );
                    Box::pin(async move { client.set_recording_settings(request).await.is_ok() })
                })
            })
        }
        Scenario::GrpcWatchFanout => unreachable!("run above"),
        Scenario::GrpcGetGeneric => Box::new(move |worker| {
            let client = SettingsServiceClient::new(channels[worker % channels.len()].clone());
            let credentials = credentials.clone();
            Box::new(move |n| {
                let mut client = client.clone();
                let request = BasicCredentials::request(
                    credentials.as_ref(),
                    GetSettingsRequest {
                        kind: BENCH_KIND.into(),
                        account_sid: request_account(n, accounts, credentials.as_ref()),
                    },
                );
                Box::pin(async move { client.get_settings(request).await.is_ok() })
            })
        }),
        Scenario::GrpcSetGeneric => Box::new(move |worker| {
            let client = SettingsServiceClient::new(channels[worker % channels.len()].clone());
            let credentials = credentials.clone();
            Box::new(move |n| {
                let mut client = client.clone();
                let request = BasicCredentials::request(
                    credentials.as_ref(),
                    bench_update(
                        request_account(n, accounts, credentials.as_ref()),
                        format!("bench {n}"),
                    ),
                );
                Box::pin(async move { client.update_settings(request).await.is_ok() })
            })
        }),
        Scenario::HttpGet | Scenario::HttpPost => {
            let base =
                http_target.context("the http_* scenarios need --http-target with --target")?;
            let url: hyper::Uri = format!(
                "{}/v1/RecordingSettings/Default",
                base.trim_end_matches('/')
            )
            .parse()
            .context("invalid --http-target")?;
            let client: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(args.concurrency)
                .build_http();
            let post = scenario == Scenario::HttpPost;
            let fixed_user = credentials.clone();
            Box::new(move |_worker| {
                let client = client.clone();
                let url = url.clone();
                let fixed_user = fixed_user.clone();
                Box::new(move |n| {
                    // As the helper libraries send it: Basic auth per request.
                    let authorization = match &fixed_user {
                        Some(c) => c.authorization().to_owned(),
                        None => basic_authorization(&account(n % accounts), "bench"),
                    };
                    let builder = hyper::Request::builder()
                        .uri(url.clone())
                        .header("authorization", authorization)
                        .header("accept", "application/json");
                    let request = if post {
                        builder
                            .method("POST")
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(Full::new(Bytes::from(format!("FriendlyName=bench+{n}"))))
                    } else {
                        builder.method("GET").body(Full::new(Bytes::new()))
                    };
                    let client = client.clone();
                    Box::pin(async move {
                        let Ok(request) = request else { return false };
                        match client.request(request).await {
                            Ok(response) => {
                                let ok = response.status().is_success();
                                ok && response.into_body().collect().await.is_ok()
                            }
                            Err(_) => false,
                        }
                    })
                })
            })
        }
    };
    drive(&make_op, args.concurrency, args.warmup()).await;
    let outcome = drive(&make_op, args.concurrency, args.budget()).await;
    let connections = match scenario {
        Scenario::HttpGet | Scenario::HttpPost => args.concurrency,
        _ => args.connections,
    };
    Ok(outcome.result(scenario.name(), args.concurrency, connections))
}

/// A watch of `account` from now on (its first messages, the snapshot and
/// a progress message, are read before it returns).
async fn open_watch(
    channel: &Channel,
    account: &str,
    credentials: Option<&BasicCredentials>,
) -> anyhow::Result<tonic::Streaming<RecordingSettingsChange>> {
    let mut client = RecordingSettingsServiceClient::new(channel.clone());
    let request = BasicCredentials::request(
        credentials,
        WatchRecordingSettingsRequest {
            account_sid: if credentials.is_some() {
                String::new()
            } else {
                account.to_owned()
            },
            start_revision: 0,
        },
    );
    let mut stream = client.watch_recording_settings(request).await?.into_inner();
    // The snapshot, then the progress message that ends it.
    while let Some(message) = stream.message().await? {
        if message.progress {
            break;
        }
    }
    Ok(stream)
}

/// grpc_watch_fanout: `args.watchers` watchers on one account, one writer
/// setting it back to back. Throughput is changes delivered per second over
/// all watchers; latency, from a Set's acknowledgement (as the writer saw
/// it) to a watcher's receipt of that change (0 when the change arrived
/// first: it is published as soon as it is durable, before the writer's
/// answer travels back).
async fn watch_fanout(args: &BenchArgs, channels: &[Channel]) -> anyhow::Result<ScenarioResult> {
    let credentials = args.credentials.as_ref();
    let target = account(0);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::new();
    for w in 0..args.watchers {
        let mut stream = open_watch(&channels[w % channels.len()], &target, credentials).await?;
        let mut stopped = stopped.clone();
        watchers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(message)) if !message.progress => {
                            received.push((message.revision, Instant::now()));
                        }
                        Ok(Some(_)) => {}
                        _ => break,
                    },
                    _ = stopped.changed() => break,
                }
            }
            received
        }));
    }
    let mut client = RecordingSettingsServiceClient::new(channels[0].clone());
    let mut acked = std::collections::HashMap::new();
    let mut errors = 0;
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut n = 0u64;
    while Instant::now() < deadline && args.requests.is_none_or(|max| n < max) {
        let request = BasicCredentials::request(
            credentials,
            SetRecordingSettingsRequest {
                account_sid: request_account(0, 1, credentials),
                friendly_name: format!("fanout {n}"),
                ..Default::default()
            },
        );
        match client.set_recording_settings(request).await {
            Ok(answer) => {
                acked.insert(answer.into_inner().revision, Instant::now());
            }
            Err(_) => errors += 1,
        }
        n += 1;
    }
    // Give the last changes time to arrive, then close the streams.
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(true);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for watcher in watchers {
        if let Ok(received) = watcher.await {
            for (revision, at) in received {
                if let Some(ack) = acked.get(&revision) {
                    let micros = at.saturating_duration_since(*ack).as_micros();
                    histogram.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
                }
            }
        }
    }
    let outcome = Outcome {
        histogram,
        errors,
        elapsed,
    };
    Ok(outcome.result(
        Scenario::GrpcWatchFanout.name(),
        args.watchers,
        args.connections,
    ))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The account_sid request `n` names: spread over `accounts` accounts, or
/// empty (the caller's own account) when credentials say who is calling.
fn request_account(n: usize, accounts: usize, credentials: Option<&BasicCredentials>) -> String {
    match credentials {
        Some(_) => String::new(),
        None => account(n % accounts),
    }
}

async fn connect_channels(target: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            Channel::from_shared(target.to_owned())
                .context("invalid --target")?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("cannot connect to {target}"))?,
        );
    }
    Ok(channels)
}

async fn preload_over_grpc(
    channels: &[Channel],
    accounts: usize,
    credentials: Option<&BasicCredentials>,
    generic: bool,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for (w, channel) in channels.iter().enumerate() {
        let mut client = RecordingSettingsServiceClient::new(channel.clone());
        let mut generic_client = SettingsServiceClient::new(channel.clone());
        let credentials = credentials.cloned();
        let stride = channels.len();
        // With credentials there is one account to fill: the caller's own.
        let accounts = if credentials.is_some() { 1 } else { accounts };
        tasks.push(tokio::spawn(async move {
            for n in (w..accounts).step_by(stride) {
                let account_sid = request_account(n, accounts, credentials.as_ref());
                if generic {
                    let update = bench_update(account_sid, "preloaded".into());
                    let request = BasicCredentials::request(credentials.as_ref(), update);
                    generic_client.update_settings(request).await?;
                    continue;
                }
                let request = BasicCredentials::request(
                    credentials.as_ref(),
                    SetRecordingSettingsRequest {
                        account_sid,
                        friendly_name: "preloaded".into(),
                        ..Default::default()
                    },
                );
                client.set_recording_settings(request).await?;
            }
            Ok::<_, Status>(())
        }));
    }
    for task in tasks {
        task.await?.context("preloading accounts")?;
    }
    Ok(())
}

struct Outcome {
    histogram: Histogram<u64>,
    errors: u64,
    elapsed: Duration,
}

impl Outcome {
    fn result(
        &self,
        scenario: &'static str,
        concurrency: usize,
        connections: usize,
    ) -> ScenarioResult {
        let h = &self.histogram;
        let requests = h.len();
        ScenarioResult {
            scenario,
            concurrency,
            connections,
            requests,
            errors: self.errors,
            throughput_rps: requests as f64 / self.elapsed.as_secs_f64(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            baseline: None,
            ratio_to_baseline: None,
        }
    }
}

/// How long a measured run lasts.
#[derive(Debug, Clone, Copy)]
enum Budget {
    Time(Duration),
    Requests(u64),
}

impl BenchArgs {
    fn budget(&self) -> Budget {
        match self.requests {
            Some(n) => Budget::Requests(n),
            None => Budget::Time(self.duration),
        }
    }

    /// A short run before each measured one, to open connections and warm caches.
    fn warmup(&self) -> Budget {
        Budget::Time((self.duration / 10).min(Duration::from_millis(500)))
    }
}

/// Runs `concurrency` workers issuing requests back to back until `budget`
/// is spent. Only successful requests count toward throughput and latency.
async fn drive(make_op: &dyn Fn(usize) -> Op, concurrency: usize, budget: Budget) -> Outcome {
    let start = Instant::now();
    let (deadline, max_requests) = match budget {
        Budget::Time(duration) => (start + duration, u64::MAX),
        // A day is "no deadline" for any run someone waits for.
        Budget::Requests(n) => (start + Duration::from_secs(86_400), n),
    };
    let issued = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let mut op = make_op(worker);
            let issued = Arc::clone(&issued);
            tokio::spawn(async move {
                let mut histogram =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
                let mut errors = 0u64;
                let mut n = worker;
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < max_requests
                {
                    let t = Instant::now();
                    if op(n).await {
                        let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        histogram.saturating_record(micros.max(1));
                    } else {
                        errors += 1;
                    }
                    n += concurrency;
                }
                (histogram, errors)
            })
        })
        .collect();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let mut errors = 0;
    for worker in workers {
        if let Ok((h, e)) = worker.await {
            let _ = histogram.add(&h);
            errors += e;
        }
    }
    Outcome {
        histogram,
        errors,
        elapsed: start.elapsed(),
    }
}

async fn run_preload(args: &BenchArgs, n: usize) -> anyhow::Result<PreloadResult> {
    anyhow::ensure!(
        args.target.is_none(),
        "--preload starts its own server; drop --target"
    );
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || bulk_fill(&path, n)).await??;
    let preload_seconds = started.elapsed().as_secs_f64();

    // Restart: the time from spawning the server to its first answer.
    let opened = Instant::now();
    let server = ChildServer::start(&serve_args(args), Some(dir)).await?;
    let channels = connect_channels(&server.grpc, args.connections).await?;
    RecordingSettingsServiceClient::new(channels[0].clone())
        .get_recording_settings(GetRecordingSettingsRequest {
            account_sid: account(0),
        })
        .await?;
    let open_after_restart_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let disk_bytes = disk_usage(server.data_dir())?;
    let channels_for_reset = channels[0].clone();

    let make_op: Box<dyn Fn(usize) -> Op> = Box::new(move |worker| {
        let client = RecordingSettingsServiceClient::new(channels[worker % channels.len()].clone());
        Box::new(move |i| {
            let mut client = client.clone();
            // Spread reads over every account, in a scattered order.
            let k = (i.wrapping_mul(2_654_435_761)) % n;
            let request = GetRecordingSettingsRequest {
                account_sid: account(k),
            };
            Box::pin(async move { client.get_recording_settings(request).await.is_ok() })
        })
    });
    drive(&make_op, args.concurrency, args.warmup()).await;
    let outcome = drive(&make_op, args.concurrency, args.budget()).await;
    let server_peak_rss_mb = server.peak_rss_kb()? as f64 / 1024.0;

    // What a test suite pays to reset between tests, at this size. Not at
    // a million: deleting every record one change at a time takes longer
    // than the server's request timeout (10 s), which cuts the call.
    let full_reset_ms = if n <= FULL_RESET_TIMED_UP_TO {
        let reset_started = Instant::now();
        let reset = AdminServiceClient::new(channels_for_reset)
            .reset_settings(ResetSettingsRequest::default())
            .await?
            .into_inner();
        anyhow::ensure!(
            reset.reset_count == n as u64,
            "the full reset deleted {} of {n} accounts",
            reset.reset_count
        );
        Some(reset_started.elapsed().as_secs_f64() * 1000.0)
    } else {
        None
    };
    Ok(PreloadResult {
        accounts: n,
        preload_seconds,
        open_after_restart_ms,
        disk_bytes_per_account: disk_bytes as f64 / n as f64,
        grpc_get: outcome.result("grpc_get", args.concurrency, args.connections),
        server_peak_rss_mb,
        full_reset_ms,
    })
}

/// Fills `n` accounts through the store's bulk path (no server, one durable
/// commit per batch).
fn bulk_fill(dir: &Path, n: usize) -> anyhow::Result<()> {
    let store = SledStore::open(&StoreOptions::new(dir))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let name = FriendlyName::parse("preloaded")?;
    for start in (0..n).step_by(8192) {
        let batch = (start..(start + 8192).min(n))
            .map(|k| -> anyhow::Result<_> {
                Ok(Replacement {
                    resource: Resource::Recording,
                    account: AccountSid::parse(&account(k))?,
                    patch: SettingsPatch::new(name.clone()).into(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        runtime.block_on(store.replace_many(batch))?;
    }
    runtime.block_on(store.close())?;
    Ok(())
}

fn disk_usage(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            disk_usage(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}

/// The `serve` arguments of the bench's own servers: metrics and the
/// request log on, as deployed, or off with --no-metrics.
fn serve_args(args: &BenchArgs) -> Vec<&'static str> {
    if args.no_metrics {
        vec!["serve", "--admin-addr", "off", "--request-log", "0"]
    } else {
        vec!["serve", "--admin-addr", "127.0.0.1:0"]
    }
}

/// A ready line as the bench reads it.
#[derive(serde::Deserialize)]
struct ReadyLine {
    grpc: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
}

/// A server the bench started: the real binary as a child process, killed
/// when dropped.
struct ChildServer {
    child: Child,
    grpc: String,
    http: Option<String>,
    dir: Option<tempfile::TempDir>,
}

impl ChildServer {
    async fn start(args: &[&str], dir: Option<tempfile::TempDir>) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("cannot find the settingsd binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .args(["--grpc-addr", "127.0.0.1:0"])
            // Errors only (a server that cannot start says why on the
            // bench's stderr); its addresses come from the ready line.
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(dir) = &dir {
            cmd.args(["--http-addr", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path());
        }
        let mut child = cmd.spawn().context("cannot start a server")?;
        // The ready line: the bound addresses, as JSON, once it accepts.
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not start within 60s")??
            .context("the server exited before serving")?;
        let ready: ReadyLine =
            serde_json::from_str(&line).with_context(|| format!("not a ready line: {line:?}"))?;
        let url = |addr: std::net::SocketAddr| format!("http://{addr}");
        Ok(ChildServer {
            grpc: url(ready.grpc.context("no grpc address in the ready line")?),
            http: ready.http.map(url),
            child,
            dir,
        })
    }

    fn data_dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("."), |d| d.path())
    }

    /// The server's peak resident set (VmHWM), in KiB.
    fn peak_rss_kb(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the server has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")
    }
}

/// `settingsd bench-noop-server`: the settings service's RPC shape, answered
/// with a constant. The `noop` scenario's ceiling.
pub async fn serve_noop(grpc_addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(grpc_addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(grpc_addr = %addr, "serving gRPC (noop)");
    let ready = Ready {
        grpc: Some(addr),
        http: None,
        admin: None,
    };
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", ready.to_line())?;
        stdout.flush()?;
    }
    tonic::transport::Server::builder()
        .add_service(RecordingSettingsServiceServer::new(Noop))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}

struct Noop;

#[tonic::async_trait]
impl RecordingSettingsService for Noop {
    async fn get_recording_settings(
        &self,
        request: Request<GetRecordingSettingsRequest>,
    ) -> Result<Response<RecordingSettings>, Status> {
        Ok(Response::new(RecordingSettings {
            account_sid: request.into_inner().account_sid,
            url: "https://video.twilio.com/v1/RecordingSettings/Default".into(),
            ..Default::default()
        }))
    }

    async fn set_recording_settings(
        &self,
        request: Request<SetRecordingSettingsRequest>,
    ) -> Result<Response<RecordingSettings>, Status> {
        let request = request.into_inner();
        Ok(Response::new(RecordingSettings {
            account_sid: request.account_sid,
            friendly_name: Some(request.friendly_name),
            ..Default::default()
        }))
    }

    type WatchRecordingSettingsStream = crate::grpc::WatchStream<RecordingSettingsChange>;

    async fn watch_recording_settings(
        &self,
        _: Request<WatchRecordingSettingsRequest>,
    ) -> Result<Response<Self::WatchRecordingSettingsStream>, Status> {
        Err(Status::unimplemented(
            "the noop server answers Get and Set only",
        ))
    }

    async fn list_recording_settings_revisions(
        &self,
        _: Request<ListRecordingSettingsRevisionsRequest>,
    ) -> Result<Response<ListRecordingSettingsRevisionsResponse>, Status> {
        Err(Status::unimplemented(
            "the noop server answers Get and Set only",
        ))
    }

    async fn rollback_recording_settings(
        &self,
        _: Request<RollbackRecordingSettingsRequest>,
    ) -> Result<Response<RecordingSettings>, Status> {
        Err(Status::unimplemented(
            "the noop server answers Get and Set only",
        ))
    }
}
