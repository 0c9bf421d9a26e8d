//! The admin listener: Prometheus metrics (checked with the real promtool),
//! the /healthz and /readyz probes, operator-only metrics with --accounts;
//! and fault injection, over gRPC, the CLI and twilio-python.

use std::{path::PathBuf, sync::atomic::Ordering};

use settingsd::pb::SetRecordingSettingsRequest;
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
    let (app, disk_full) = spawn_app_with_failing_disk(dir.path()).await;
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

async fn admin_client(app: &TestApp) -> AdminClient {
    AdminClient::new(channel(app.grpc_addr).await)
}

type AdminClient =
    settingsd::pb::admin_service_client::AdminServiceClient<tonic::transport::Channel>;

fn rule(method: &str, count: u32, grpc_code: i32) -> settingsd::pb::InjectFaultRequest {
    settingsd::pb::InjectFaultRequest {
        resource: "recording_settings".into(),
        method: method.into(),
        count,
        grpc_code,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_injected_fault_fails_the_next_matching_requests_and_a_failed_set_stores_nothing() {
    let app = spawn_app().await;
    let mut admin = admin_client(&app).await;
    let added = admin
        .inject_fault(rule("set", 2, tonic::Code::Unavailable as i32))
        .await
        .unwrap()
        .into_inner();

    let first = app.try_set(set_request(ACCOUNT, "one")).await.unwrap_err();
    let second = app.try_set(set_request(ACCOUNT, "two")).await.unwrap_err();
    let after_failures = app.get(ACCOUNT).await;
    let composition = app.for_resource(Resource::Composition);
    composition
        .set(set_request(ACCOUNT, "other resource"))
        .await;
    let app = composition.for_resource(Resource::Recording);
    let third = app.set(set_request(ACCOUNT, "three")).await;
    let left = admin
        .list_faults(settingsd::pb::ListFaultsRequest {})
        .await
        .unwrap()
        .into_inner();
    let metrics = scrape(&app).await;

    assert!(!added.id.is_empty() && added.remaining == 2, "{added:?}");
    assert_eq!(first.code(), tonic::Code::Unavailable);
    assert_eq!(second.code(), tonic::Code::Unavailable);
    assert_eq!(after_failures.revision, 0, "a failed Set stores nothing");
    assert_eq!(third.friendly_name.as_deref(), Some("three"));
    assert!(left.faults.is_empty(), "a rule whose count ran out is gone");
    assert_eq!(
        sample(
            &metrics,
            "settingsd_faults_injected_total{code=\"UNAVAILABLE\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn delay_and_fraction_rules_apply_until_cleared() {
    let app = spawn_app().await;
    let mut admin = admin_client(&app).await;
    admin
        .inject_fault(settingsd::pb::InjectFaultRequest {
            delay_ms: 300,
            ..rule("get", 1, 0)
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let delayed = app.get(ACCOUNT).await;
    let waited = started.elapsed();
    admin
        .inject_fault(settingsd::pb::InjectFaultRequest {
            fraction: 1.0,
            ..rule("", 0, tonic::Code::Internal as i32)
        })
        .await
        .unwrap();
    let failed = app.try_get(get_request(ACCOUNT)).await.unwrap_err();
    let still = app.try_get(get_request(ACCOUNT)).await.unwrap_err();
    let cleared = admin
        .clear_faults(settingsd::pb::ClearFaultsRequest {})
        .await
        .unwrap()
        .into_inner();
    let fine = app.get(ACCOUNT).await;

    assert_eq!(delayed.revision, 0);
    assert!(
        waited >= std::time::Duration::from_millis(300),
        "{waited:?}"
    );
    assert_eq!(failed.code(), tonic::Code::Internal);
    assert_eq!(
        still.code(),
        tonic::Code::Internal,
        "a fraction of 1 has no count"
    );
    assert_eq!(cleared.cleared, 1);
    assert_eq!(fine.account_sid, ACCOUNT);
}

#[tokio::test]
async fn a_malformed_fault_rule_is_invalid_argument_naming_the_field_and_tenants_may_not_add_one() {
    let app = spawn_authenticated_app().await;
    let mut admin = admin_client(&app).await;
    let as_operator =
        |r: settingsd::pb::InjectFaultRequest| with_auth(r, OPERATOR, OPERATOR_SECRET);

    for (bad, field) in [
        (
            settingsd::pb::InjectFaultRequest {
                resource: "rooms".into(),
                ..rule("set", 1, 14)
            },
            "resource",
        ),
        (rule("put", 1, 14), "method"),
        (
            settingsd::pb::InjectFaultRequest {
                account_sid: "AC1".into(),
                ..rule("set", 1, 14)
            },
            "account_sid",
        ),
        (rule("set", 0, 14), "count"),
        (
            settingsd::pb::InjectFaultRequest {
                fraction: 1.5,
                ..rule("set", 1, 14)
            },
            "fraction",
        ),
        (rule("set", 1, 17), "grpc_code"),
        (rule("set", 1, 0), "grpc_code"),
        (
            settingsd::pb::InjectFaultRequest {
                delay_ms: 60_001,
                ..rule("set", 1, 14)
            },
            "delay_ms",
        ),
    ] {
        let status = admin
            .inject_fault(as_operator(bad.clone()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        let details = tonic_types::StatusExt::get_details_bad_request(&status).unwrap();
        assert_eq!(details.field_violations[0].field, field, "{bad:?}");
    }
    let tenant = admin
        .inject_fault(with_auth(rule("set", 1, 14), ACCOUNT, TOKEN))
        .await
        .unwrap_err();
    assert_eq!(tenant.code(), tonic::Code::PermissionDenied);
    let listed = admin
        .list_faults(as_operator_list())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.faults.is_empty(), "nothing was added");
}

fn as_operator_list() -> tonic::Request<settingsd::pb::ListFaultsRequest> {
    with_auth(
        settingsd::pb::ListFaultsRequest {},
        OPERATOR,
        OPERATOR_SECRET,
    )
}

/// The way a user's test suite would use it: inject a 503 with the CLI,
/// see twilio-python raise its usual exception, clear, succeed.
#[tokio::test]
async fn twilio_python_sees_an_injected_503_and_succeeds_after_clear_faults() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();
    let admin = |args: &[&str]| {
        let mut command = binary();
        command.args(["admin", "--grpc-addr", &addr]).args(args);
        async move { finish_ok(&mut command).await }
    };
    let python = crate::twilio_libraries::python();
    let script = r#"
import json, sys
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
client = Client(sys.argv[2], "any")
client.video.base_url = sys.argv[1]
try:
    client.video.v1.recording_settings().create(friendly_name=sys.argv[3])
    print(json.dumps({"ok": True}))
except TwilioRestException as e:
    print(json.dumps({"status": e.status, "code": e.code}))
"#;
    let create = |name: &'static str| {
        let mut command = tokio::process::Command::new(&python);
        command
            .args(["-c", script])
            .arg(format!("http://{}", app.http_addr))
            .args([ACCOUNT, name]);
        async move { serde_json::from_str::<serde_json::Value>(&finish_ok(&mut command).await).unwrap() }
    };

    let injected = admin(&[
        "inject-fault",
        "--resource",
        "recording",
        "--method",
        "set",
        "--count",
        "5",
    ])
    .await;
    let failing = create("while failing").await;
    let listed = admin(&["list-faults"]).await;
    let cleared = admin(&["clear-faults"]).await;
    let working = create("after clearing").await;

    let rule: serde_json::Value = serde_json::from_str(&injected).unwrap();
    assert_eq!(rule["grpc_code"], 14);
    assert_eq!(failing, serde_json::json!({"status": 503, "code": 20503}));
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert_eq!(cleared.trim(), r#"{"cleared":1}"#);
    assert_eq!(working, serde_json::json!({"ok": true}));
    assert_eq!(
        app.get(ACCOUNT).await.friendly_name.as_deref(),
        Some("after clearing")
    );
}
