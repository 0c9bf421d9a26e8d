//! The admin listener: Prometheus metrics (checked with the real promtool),
//! the /healthz and /readyz probes, operator-only metrics with --accounts.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use settingsd::{pb::SetRecordingSettingsRequest, store::sled::StoreOptions};
use tokio::io::AsyncWriteExt;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{helpers::*, http_bridge::*};

/// promtool: `PROMTOOL`, else on the PATH (scripts/test installs Debian's
/// `prometheus` package, which ships it).
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return path.into();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("promtool"))
        .find(|p| p.exists())
        .expect("promtool not found: run ./scripts/test (it installs it), or set PROMTOOL")
}

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    http()
        .get(format!("http://{}{path}", app.admin_addr))
        .send()
        .await
        .unwrap()
}

async fn scrape(app: &TestApp) -> String {
    let response = admin_get(app, "/metrics").await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample `name{labels}` (labels as the exposition orders
/// them), or 0 if absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_after_mixed_traffic_pass_promtool_and_count_exactly_the_requests_made() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.set(set_request(ACCOUNT, &format!("set {i}"))).await;
    }
    for _ in 0..2 {
        app.get(ACCOUNT).await;
    }
    app.try_set(set_request(ACCOUNT, "")).await.unwrap_err();
    let composition = app.for_resource(Resource::Composition);
    let (url, app) = (composition.url(), composition);
    assert_eq!(fetch(&url, ACCOUNT, "any").await.status(), 200);
    assert_eq!(fetch(&url, ACCOUNT, "any").await.status(), 200);
    assert_eq!(post(&url, ACCOUNT, "any", "").await.status(), 400);

    let metrics = scrape(&app).await;

    let mut check = tokio::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = check.stdin.take().unwrap();
    stdin.write_all(metrics.as_bytes()).await.unwrap();
    drop(stdin);
    let checked = check.wait_with_output().await.unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let grpc = |method: &str, code: &str| {
        sample(
            &metrics,
            &format!("settingsd_requests_total{{code=\"{code}\",method=\"{method}\",transport=\"grpc\"}}"),
        )
    };
    assert_eq!(grpc("set_recording_settings", "OK"), 3.0, "{metrics}");
    assert_eq!(grpc("get_recording_settings", "OK"), 2.0);
    assert_eq!(grpc("set_recording_settings", "INVALID_ARGUMENT"), 1.0);
    let http = |method: &str, code: &str| {
        sample(
            &metrics,
            &format!("settingsd_requests_total{{code=\"{code}\",method=\"{method}\",transport=\"http\"}}"),
        )
    };
    assert_eq!(http("GET /v1/CompositionSettings/Default", "200"), 2.0);
    assert_eq!(http("POST /v1/CompositionSettings/Default", "400"), 1.0);
    assert!(sample(&metrics, "settingsd_commits_total") >= 3.0);
    assert_eq!(sample(&metrics, "settingsd_commit_failures_total"), 0.0);
    assert_eq!(sample(&metrics, "settingsd_store_writes_stopped"), 0.0);
    assert!(sample(&metrics, "settingsd_connections_open{listener=\"grpc\"}") >= 1.0);
    assert!(metrics.contains("settingsd_request_duration_seconds_bucket"));
    assert!(metrics.contains("settingsd_commit_duration_seconds_bucket"));
    assert!(metrics.contains("settingsd_commit_batch_writes_bucket"));
    assert!(metrics.contains("process_resident_memory_bytes"));
    assert!(metrics.contains("process_open_fds"));
}

#[tokio::test]
async fn a_failed_commit_moves_the_failure_counter_and_readyz_is_503_until_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let disk_full = Arc::new(AtomicBool::new(false));
    let app = spawn_app_with_store(StoreOptions {
        fail_commits: Some(Arc::clone(&disk_full)),
        ..StoreOptions::new(dir.path())
    })
    .await;
    let ready_before = admin_get(&app, "/readyz").await.status();

    disk_full.store(true, Ordering::SeqCst);
    app.try_set(set_request(ACCOUNT, "fails"))
        .await
        .unwrap_err();
    let not_ready = admin_get(&app, "/readyz").await;
    let failed = scrape(&app).await;
    crate::faults::health_becomes(&app, ServingStatus::NotServing).await;
    disk_full.store(false, Ordering::SeqCst);
    // Recovery turns health SERVING; readyz follows the same store state.
    crate::faults::health_becomes(&app, ServingStatus::Serving).await;
    let ready_again = admin_get(&app, "/readyz").await;

    assert_eq!(ready_before, 200);
    assert_eq!(not_ready.status(), 503);
    let reason = not_ready.text().await.unwrap();
    assert!(
        reason.contains("no writes") && reason.lines().count() == 1,
        "{reason}"
    );
    assert_eq!(sample(&failed, "settingsd_commit_failures_total"), 1.0);
    assert_eq!(sample(&failed, "settingsd_store_writes_stopped"), 1.0);
    assert_eq!(ready_again.text().await.unwrap(), "ready\n");
    assert_eq!(admin_get(&app, "/healthz").await.status(), 200);
}

#[tokio::test]
async fn with_accounts_metrics_need_an_operator_and_no_secret_appears_in_them() {
    let app = spawn_authenticated_app().await;
    app.try_set(with_auth(
        SetRecordingSettingsRequest {
            aws_s3_url: Some(S3_URL.into()),
            ..set_request(ACCOUNT, "x")
        },
        ACCOUNT,
        TOKEN,
    ))
    .await
    .unwrap();
    post(&app.url(), ACCOUNT, TOKEN, "FriendlyName=y").await;
    let url = format!("http://{}/metrics", app.admin_addr);

    let anonymous = http().get(&url).send().await.unwrap();
    let tenant = http()
        .get(&url)
        .basic_auth(ACCOUNT, Some(TOKEN))
        .send()
        .await
        .unwrap();
    let operator = http()
        .get(&url)
        .basic_auth(OPERATOR, Some(OPERATOR_SECRET))
        .send()
        .await
        .unwrap();
    let probe = admin_get(&app, "/readyz").await;
    let unknown = admin_get(&app, "/nothing").await;

    assert_eq!(anonymous.status(), 401);
    assert_eq!(tenant.status(), 403);
    assert_eq!(operator.status(), 200);
    let metrics = operator.text().await.unwrap();
    for secret in [TOKEN, OPERATOR_SECRET, API_SECRET, S3_URL] {
        assert!(!metrics.contains(secret), "{secret} in the metrics");
    }
    assert_eq!(probe.status(), 200, "probes need no credentials");
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.text().await.unwrap().lines().count(), 1);
}

#[tokio::test]
async fn the_binary_reports_its_admin_address_in_the_ready_line_and_admin_off_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = binary();
    cmd.args(SERVE_ON_PORT_0)
        .arg("--data-dir")
        .arg(dir.path().join("on"));
    let mut on = BinaryServer::spawn_command(cmd).await;
    let ready = on.wait_for_ready_line().await;
    let mut cmd = binary();
    cmd.args(&SERVE_ON_PORT_0[..5])
        .args(["--admin-addr", "off", "--data-dir"])
        .arg(dir.path().join("off"));
    let mut off = BinaryServer::spawn_command(cmd).await;
    let ready_off = off.wait_for_ready_line().await;

    let admin = ready["admin"].as_str().expect("an admin address");
    let healthz = http()
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), 200);
    assert!(ready_off.get("admin").is_none(), "{ready_off}");
}
