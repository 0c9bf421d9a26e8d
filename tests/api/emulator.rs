//! Emulator controls for test suites: ResetSettings, the request log
//! (ListRecentRequests) and the stored-resources gauge, over gRPC, the CLI
//! and a real pytest suite driving twilio-python; and that no credential
//! reaches the request log, the metrics or the logs.

use settingsd::{
    pb::{
        admin_service_client::AdminServiceClient, ListRecentRequestsRequest, ResetSettingsRequest,
        SetRecordingSettingsRequest,
    },
    resource::Resource,
};
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use settingsd::store::sled::StoreOptions;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{helpers::*, http_bridge::*};

type Admin = AdminServiceClient<Channel>;

async fn admin(app: &TestApp) -> Admin {
    AdminServiceClient::new(channel(app.grpc_addr).await)
}

fn reset_request(account: &str, resource: &str) -> ResetSettingsRequest {
    ResetSettingsRequest {
        account_sid: account.into(),
        resource: resource.into(),
    }
}

async fn reset(admin: &mut Admin, account: &str, resource: &str) -> u64 {
    admin
        .reset_settings(reset_request(account, resource))
        .await
        .expect("reset")
        .into_inner()
        .reset_count
}

/// Both resources of both accounts, each named after itself.
async fn write_all(app: &TestApp) {
    for resource in Resource::ALL {
        for account in [ACCOUNT, OTHER_ACCOUNT] {
            let request =
                SetSettingsMessage::from(set_request(account, &format!("{resource} of {account}")));
            app.settings
                .set(resource, tonic::Request::new(request))
                .await
                .expect("set");
        }
    }
}

/// `account`'s `resource` as a Get answers it.
async fn get(app: &TestApp, resource: Resource, account: &str) -> SettingsMessage {
    let request = GetSettingsMessage {
        account_sid: account.to_owned(),
    };
    app.settings
        .get(resource, tonic::Request::new(request))
        .await
        .expect("get")
}

fn is_default(settings: &SettingsMessage) -> bool {
    settings.revision == 0 && settings.friendly_name.is_none() && !settings.aws_storage_enabled
}

#[tokio::test]
async fn reset_deletes_exactly_what_it_selects_and_reads_answer_defaults() {
    let app = spawn_app().await;
    let mut admin = admin(&app).await;
    write_all(&app).await;
    let before = get(&app, Resource::Recording, ACCOUNT).await.revision;

    let one = reset(&mut admin, ACCOUNT, "recording_settings").await;
    let a_recording = get(&app, Resource::Recording, ACCOUNT).await;
    let a_composition = get(&app, Resource::Composition, ACCOUNT).await;
    let b_recording = get(&app, Resource::Recording, OTHER_ACCOUNT).await;
    let account = reset(&mut admin, ACCOUNT, "").await;
    let resource = reset(&mut admin, "", "composition_settings").await;
    let b_composition = get(&app, Resource::Composition, OTHER_ACCOUNT).await;
    let everything = reset(&mut admin, "", "").await;
    let nothing_left = reset(&mut admin, "", "").await;
    let written_again = app.set(set_request(ACCOUNT, "again")).await;
    let last_reset = admin
        .reset_settings(reset_request(ACCOUNT, ""))
        .await
        .unwrap()
        .into_inner();
    let after_it = app.set(set_request(ACCOUNT, "after the last reset")).await;

    assert_eq!(one, 1);
    assert!(is_default(&a_recording), "{a_recording:?}");
    assert_eq!(a_recording.account_sid, ACCOUNT);
    assert!(!is_default(&a_composition), "other resources stay");
    assert!(!is_default(&b_recording), "other accounts stay");
    assert_eq!(account, 1, "only A's composition was left to A");
    assert_eq!(resource, 1, "only B's composition was left");
    assert!(is_default(&b_composition));
    assert_eq!(everything, 1, "only B's recording was left");
    assert_eq!(nothing_left, 0);
    assert!(written_again.revision > before, "revisions keep increasing");
    assert_eq!(last_reset.reset_count, 1);
    assert!(last_reset.revision > written_again.revision);
    assert!(after_it.revision > last_reset.revision);
}

#[tokio::test]
async fn a_full_reset_is_durable_across_a_restart_and_moves_the_stored_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    write_all(&app).await;
    let stored_before = stored(&app).await;
    let count = reset(&mut admin(&app).await, "", "").await;
    let stored_after = stored(&app).await;
    app.stop().await.unwrap();

    let app = spawn_app_on(dir.path()).await;
    let recording = get(&app, Resource::Recording, ACCOUNT).await;
    let composition = get(&app, Resource::Composition, OTHER_ACCOUNT).await;
    let stored_reopened = stored(&app).await;

    assert_eq!(count, 4);
    assert_eq!(stored_before, (2, 2));
    assert_eq!(stored_after, (0, 0));
    assert!(is_default(&recording) && is_default(&composition));
    assert_eq!(stored_reopened, (0, 0));
}

/// The stored-resources gauge, (recording, composition), once counted.
async fn stored(app: &TestApp) -> (u64, u64) {
    let series = |resource: &str| format!("settingsd_stored_resources{{resource=\"{resource}\"}} ");
    tokio::time::timeout(GUARD, async {
        loop {
            let metrics = http()
                .get(format!("http://{}/metrics", app.admin_addr))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value = |resource: &str| {
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(&series(resource)))
                    .map(|v| v.trim().parse::<u64>().unwrap())
            };
            // Counted in the background after the store opens.
            if let (Some(r), Some(c)) = (value("recording_settings"), value("composition_settings"))
            {
                return (r, c);
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stored-resources gauge appears once the store is counted")
}

#[tokio::test]
async fn the_stored_gauge_counts_records_written_before_a_restart_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    let records = 2_500; // more than one chunk of the background count
    for i in 0..records {
        let account = format!("AC{i:032x}");
        app.set(set_request(&account, "x")).await;
    }
    app.stop().await.unwrap();

    let app = spawn_app_on(dir.path()).await;
    // Writes while the count may still run: new accounts and rewrites.
    for i in records - 10..records + 10 {
        app.set(set_request(&format!("AC{i:032x}"), "y")).await;
    }
    let counted = stored(&app).await;

    assert_eq!(counted, (records + 10, 0));
}

#[tokio::test]
async fn watchers_see_a_reset_and_the_history_lists_it() {
    let app = spawn_app().await;
    let written = app.set(set_request(ACCOUNT, "before the reset")).await;
    let mut one = app.watch(ACCOUNT, written.revision + 1).await;
    let mut all = app.watch("-", written.revision + 1).await;

    reset(&mut admin(&app).await, ACCOUNT, "").await;
    let change = next_change(&mut one).await;
    let change_all = loop {
        let message = next_change(&mut all).await;
        if !message.progress {
            break message;
        }
    };
    let history = app.history(ACCOUNT, 0, "").await;

    assert!(change.reset, "{change:?}");
    assert!(change.revision > written.revision);
    let settings = change.settings.clone().unwrap();
    assert_eq!(settings, app.get(ACCOUNT).await, "what a Get now answers");
    assert_eq!(settings.revision, 0);
    assert_eq!(change_all, change);
    let listed = &history.revisions[0];
    assert_eq!(listed.revision, change.revision, "newest first: the reset");
    assert_eq!(listed.friendly_name, None);
    assert_eq!(history.revisions[1], written);
}

#[tokio::test]
async fn a_malformed_reset_target_is_invalid_argument_naming_the_field_and_only_operators_reset_or_read_the_log(
) {
    let app = spawn_authenticated_app().await;
    app.try_set(with_auth(set_request(ACCOUNT, "kept"), ACCOUNT, TOKEN))
        .await
        .unwrap();
    let mut admin = admin(&app).await;
    let as_operator = |r: ResetSettingsRequest| with_auth(r, OPERATOR, OPERATOR_SECRET);

    let bad_resource = admin
        .reset_settings(as_operator(reset_request(ACCOUNT, "recording")))
        .await
        .unwrap_err();
    let bad_account = admin
        .reset_settings(as_operator(reset_request("AC123", "")))
        .await
        .unwrap_err();
    let tenant = admin
        .reset_settings(with_auth(reset_request(ACCOUNT, ""), ACCOUNT, TOKEN))
        .await
        .unwrap_err();
    let anonymous = admin
        .reset_settings(reset_request(ACCOUNT, ""))
        .await
        .unwrap_err();
    let tenant_reads_the_log = admin
        .list_recent_requests(with_auth(
            ListRecentRequestsRequest::default(),
            ACCOUNT,
            TOKEN,
        ))
        .await
        .unwrap_err();
    let kept = app
        .try_get(with_auth(get_request(ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap();
    let operator = admin
        .reset_settings(as_operator(reset_request(ACCOUNT, "")))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(bad_resource.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_resource.message().contains("resource"),
        "{bad_resource:?}"
    );
    assert_eq!(bad_account.code(), tonic::Code::InvalidArgument);
    assert!(
        bad_account.message().contains("account_sid"),
        "{bad_account:?}"
    );
    assert_eq!(tenant.code(), tonic::Code::PermissionDenied);
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    assert_eq!(tenant_reads_the_log.code(), tonic::Code::PermissionDenied);
    assert_eq!(kept.friendly_name.as_deref(), Some("kept"));
    assert_eq!(operator.reset_count, 1);
}

#[tokio::test]
async fn a_reset_refused_while_writes_are_stopped_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (app, disk_full) = spawn_app_with_failing_disk(dir.path()).await;
    app.set(set_request(ACCOUNT, "kept")).await;
    disk_full.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = app
        .try_set(set_request(ACCOUNT, "fails"))
        .await
        .unwrap_err();

    let refused = admin(&app)
        .await
        .reset_settings(reset_request("", ""))
        .await
        .unwrap_err();
    disk_full.store(false, std::sync::atomic::Ordering::SeqCst);
    crate::faults::health_becomes(&app, ServingStatus::Serving).await;
    let kept = app.get(ACCOUNT).await;
    let history = app.history(ACCOUNT, 10, "").await;

    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        kept.friendly_name.as_deref(),
        Some("kept"),
        "after recovery too"
    );
    assert_eq!(history.revisions, [kept], "no reset was logged");
}

/// While a reset's commit hangs, a Get and a watch snapshot of every
/// account wait for it (the record is already gone from memory, but its
/// deletion may not survive a crash). Once it is durable, the Get answers
/// the default; the snapshot, taken as of before the reset, shows the
/// record as it was, and the stream then carries the reset.
#[tokio::test]
async fn reads_do_not_show_a_reset_until_it_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (app, stuck) = spawn_app_with_stalling_disk(dir.path()).await;
    let kept = app.set(set_request(ACCOUNT, "before the reset")).await;
    stuck.store(true, Ordering::SeqCst);
    let mut reset_client = admin(&app).await;
    let resetting =
        tokio::spawn(async move { reset_client.reset_settings(reset_request("", "")).await });
    // The reset has deleted the record (in memory) once the stored gauge says so.
    stored_becomes(&app, (0, 0)).await;

    let get = tokio::spawn({
        let mut client = app.client.clone();
        async move { client.get_recording_settings(get_request(ACCOUNT)).await }
    });
    let mut snapshot = app.watch("-", 0).await;
    let first = tokio::spawn(async move {
        let message = next_change(&mut snapshot).await;
        (message, snapshot)
    });
    tokio::task::yield_now().await;
    let waiting = !get.is_finished() && !first.is_finished() && !resetting.is_finished();
    stuck.store(false, Ordering::SeqCst);
    let got = get.await.unwrap().unwrap().into_inner();
    let (first, mut snapshot) = first.await.unwrap();
    let reset_event = loop {
        let message = next_change(&mut snapshot).await;
        if !message.progress {
            break message;
        }
    };
    let reset = resetting.await.unwrap().unwrap().into_inner();

    assert!(waiting, "nothing answered while the reset's commit hung");
    assert_eq!(got.friendly_name, None, "after the commit: the reset");
    assert_eq!(
        first.settings.as_ref(),
        Some(&kept),
        "the snapshot as of before the reset"
    );
    assert!(reset_event.reset, "{reset_event:?}");
    assert!(reset_event.revision > kept.revision);
    assert_eq!(reset_event.settings.unwrap().account_sid, ACCOUNT);
    assert_eq!(reset.reset_count, 1);
}

/// A server whose commits hang while the flag is set.
async fn spawn_app_with_stalling_disk(dir: &std::path::Path) -> (TestApp, Arc<AtomicBool>) {
    let stuck = Arc::new(AtomicBool::new(false));
    let app = spawn_app_with_store(StoreOptions {
        stall_commits: Some(Arc::clone(&stuck)),
        ..StoreOptions::new(dir)
    })
    .await;
    (app, stuck)
}

/// The stored-resources gauge, once it equals `wanted`.
async fn stored_becomes(app: &TestApp, wanted: (u64, u64)) {
    tokio::time::timeout(GUARD, async {
        while stored(app).await != wanted {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stored-resources gauge reaches the value");
}

/// A watch snapshot of every account, taken while a Set of an account
/// reset earlier commits, leaves that account out (it was not stored as of
/// the snapshot) and then streams the Set.
#[tokio::test]
async fn a_watch_snapshot_leaves_out_an_account_reset_before_it_and_set_since() {
    let dir = tempfile::tempdir().unwrap();
    let (app, stuck) = spawn_app_with_stalling_disk(dir.path()).await;
    app.set(set_request(ACCOUNT, "first")).await;
    let other = app.set(set_request(OTHER_ACCOUNT, "other")).await;
    reset(&mut admin(&app).await, ACCOUNT, "").await;
    stuck.store(true, Ordering::SeqCst);
    let setting = tokio::spawn({
        let mut client = app.client.clone();
        async move {
            client
                .set_recording_settings(set_request(ACCOUNT, "again"))
                .await
        }
    });
    stored_becomes(&app, (2, 0)).await; // the Set is in the tree, not durable

    let mut all = app.watch("-", 0).await;
    stuck.store(false, Ordering::SeqCst);
    let mut snapshot = Vec::new();
    loop {
        let message = next_change(&mut all).await;
        if message.progress {
            break;
        }
        snapshot.push(message.settings.unwrap());
    }
    let streamed = next_settings(&mut all).await;
    let again = setting.await.unwrap().unwrap().into_inner();

    assert_eq!(snapshot, [other], "only what was stored as of the snapshot");
    assert_eq!(streamed, SettingsMessage::from(again));
}

#[tokio::test]
async fn the_request_log_keeps_both_transports_newest_first_with_accounts_and_form_parameters() {
    let app = spawn_app().await;
    app.set(set_request(ACCOUNT, "over grpc")).await;
    post(
        &app.url(),
        OTHER_ACCOUNT,
        "any",
        "FriendlyName=over+http&AwsStorageEnabled=false&Password=hunter2",
    )
    .await;
    let unauthenticated = http().get(app.url()).send().await.unwrap();
    let mut admin = admin(&app).await;

    let all = admin
        .list_recent_requests(ListRecentRequestsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .requests;
    let only_a = admin
        .list_recent_requests(ListRecentRequestsRequest {
            account_sid: ACCOUNT.into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    let newest = admin
        .list_recent_requests(ListRecentRequestsRequest {
            account_sid: String::new(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .requests;

    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(all.len(), 3, "{all:#?}");
    let (get, post, set) = (&all[0], &all[1], &all[2]);
    assert_eq!(
        (
            get.transport.as_str(),
            get.method.as_str(),
            get.status.as_str()
        ),
        ("http", "GET /v1/RecordingSettings/Default", "401")
    );
    assert_eq!(get.account_sid, "", "rejected before it acted for anyone");
    assert_eq!(
        (
            post.transport.as_str(),
            post.method.as_str(),
            post.status.as_str()
        ),
        ("http", "POST /v1/RecordingSettings/Default", "200")
    );
    assert_eq!(post.account_sid, OTHER_ACCOUNT);
    let parameters: Vec<(&str, &str)> = post
        .parameters
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(
        parameters,
        [
            ("FriendlyName", "over http"),
            ("AwsStorageEnabled", "false"),
            ("Password", "(not recorded)"),
        ]
    );
    assert_eq!(
        (
            set.transport.as_str(),
            set.method.as_str(),
            set.status.as_str()
        ),
        ("grpc", "SetRecordingSettings", "OK")
    );
    assert_eq!(set.account_sid, ACCOUNT);
    assert!(set.parameters.is_empty());
    assert!(set.time.is_some() && set.latency.is_some());
    assert_eq!(only_a, std::slice::from_ref(set));
    assert_eq!(newest, std::slice::from_ref(get));
}

/// The way a user's suite runs: pytest, with a fixture that resets the
/// emulator before each test (`tests/clients/test_emulator_suite.py`, the
/// README's example), against the real binary.
#[tokio::test]
async fn a_pytest_suite_resets_between_tests_and_sees_injected_faults_through_twilio_python() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path()).await;
    let suite = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/test_emulator_suite.py"
    );

    let mut pytest = tokio::process::Command::new(crate::twilio_libraries::python());
    pytest
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", suite])
        .env("SETTINGSD", env!("CARGO_BIN_EXE_settingsd"))
        .env("SETTINGSD_GRPC_ADDR", server.grpc_addr.to_string())
        .env("SETTINGSD_HTTP_URL", format!("http://{}", server.http_addr));
    let out = finish(&mut pytest).await;

    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("5 passed"), "{report}");
}

/// The same with Jest and twilio-node (`tests/clients/emulator.test.js`).
#[tokio::test]
async fn a_jest_suite_resets_between_tests_and_sees_injected_faults_through_twilio_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path()).await;
    let modules = crate::twilio_libraries::node_path();
    let clients = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");

    let mut jest = tokio::process::Command::new(modules.join(".bin/jest"));
    let config = serde_json::json!({
        "rootDir": clients,
        "testEnvironment": "node",
        "modulePaths": [modules],
    });
    jest.args(["--ci", "--config", &config.to_string(), "--runTestsByPath"])
        .arg(format!("{clients}/emulator.test.js"))
        .env("SETTINGSD", env!("CARGO_BIN_EXE_settingsd"))
        .env("SETTINGSD_GRPC_ADDR", server.grpc_addr.to_string())
        .env("SETTINGSD_HTTP_URL", format!("http://{}", server.http_addr));
    let out = finish(&mut jest).await;

    // Jest reports on stderr.
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("3 passed"), "{report}");
}

/// Credentials never reach the request log, the metrics or the logs, even
/// at debug level, whichever way they were sent.
#[tokio::test]
async fn no_secret_appears_in_the_request_log_the_metrics_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts.toml");
    std::fs::write(&accounts, accounts_toml()).unwrap();
    let mut cmd = binary();
    cmd.env("RUST_LOG", "debug")
        .args(SERVE_ON_PORT_0)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--accounts")
        .arg(&accounts);
    let mut server = BinaryServer::spawn_command(cmd).await;
    let ready = server.wait_for_ready_line().await;
    let grpc = ready["grpc"].as_str().unwrap().to_owned();
    let http_url = format!(
        "http://{}/v1/RecordingSettings/Default",
        ready["http"].as_str().unwrap()
    );
    let admin_url = format!("http://{}/metrics", ready["admin"].as_str().unwrap());
    let set = |user: &'static str, secret: &'static str| {
        let grpc = grpc.clone();
        async move {
            let mut client = settingsd::pb::recording_settings_service_client::RecordingSettingsServiceClient::new(
                Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap(),
            );
            client
                .set_recording_settings(with_auth(
                    SetRecordingSettingsRequest {
                        aws_s3_url: Some(S3_URL.into()),
                        ..set_request("", "over grpc")
                    },
                    user,
                    secret,
                ))
                .await
        }
    };
    set(ACCOUNT, TOKEN).await.unwrap();
    set(API_KEY, API_SECRET).await.unwrap();
    set(ACCOUNT, OTHER_TOKEN).await.unwrap_err();
    post(
        &http_url,
        ACCOUNT,
        TOKEN,
        &format!("FriendlyName=http&AuthToken={TOKEN}"),
    )
    .await;
    post(&http_url, API_KEY, API_SECRET, "FriendlyName=key").await;
    post(&http_url, ACCOUNT, OTHER_TOKEN, "FriendlyName=wrong").await;
    let operator = format!("{OPERATOR}:{OPERATOR_SECRET}");
    let requests = finish_ok(binary().args([
        "admin",
        "--grpc-addr",
        &grpc,
        "--credentials",
        &operator,
        "requests",
    ]))
    .await;
    let metrics = http()
        .get(&admin_url)
        .basic_auth(OPERATOR, Some(OPERATOR_SECRET))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.signal("TERM");
    server.wait().await;
    let logs = server.remaining_logs().await.join("\n");

    assert_eq!(requests.lines().count(), 6, "{requests}");
    assert!(
        requests.contains(r#"["AuthToken","(not recorded)"]"#),
        "{requests}"
    );
    assert!(logs.contains("DEBUG"), "the logs were at debug level");
    for secret in [TOKEN, OTHER_TOKEN, API_SECRET, OPERATOR_SECRET] {
        assert!(!requests.contains(secret), "{secret} in the request log");
        assert!(!metrics.contains(secret), "{secret} in the metrics");
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[tokio::test]
async fn the_cli_resets_and_lists_requests_and_refuses_a_reset_without_a_target() {
    let app = spawn_app().await;
    write_all(&app).await;
    let addr = app.grpc_addr.to_string();
    let admin = |args: &[&str]| {
        let mut command = binary();
        command.args(["admin", "--grpc-addr", &addr]).args(args);
        async move { finish(&mut command).await }
    };

    let no_target = admin(&["reset"]).await;
    let one = admin(&["reset", "--account", ACCOUNT, "--resource", "recording"]).await;
    let all = admin(&["reset", "--all"]).await;
    let requests = admin(&["requests", "--account", OTHER_ACCOUNT, "--limit", "1"]).await;

    assert!(!no_target.status.success());
    let stderr = String::from_utf8_lossy(&no_target.stderr);
    assert!(
        stderr.contains("--account") && stderr.contains("--all"),
        "{stderr}"
    );
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    };
    let (one, all) = (json(&one), json(&all));
    assert_eq!(one["reset_count"], 1);
    assert_eq!(all["reset_count"], 3);
    let revision = |v: &serde_json::Value| v["revision"].as_u64().unwrap();
    assert!(revision(&all) > revision(&one), "{one} then {all}");
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&requests.stdout).trim()).unwrap();
    assert_eq!(line["account_sid"], OTHER_ACCOUNT);
    assert_eq!(
        line["method"], "SetCompositionSettings",
        "the newest of B's"
    );
    assert_eq!(line["transport"], "grpc");
    assert_eq!(line["status"], "OK");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}

/// A fixture in the export format, for the online import tests.
fn fixture(lines: &[serde_json::Value]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for line in lines {
        std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
    }
    file
}

fn fixture_line(resource: &str, account: &str, name: &str) -> serde_json::Value {
    serde_json::json!({
        "resource": resource, "account_sid": account, "friendly_name": name,
        "aws_credentials_sid": null, "aws_s3_url": null, "aws_storage_enabled": false,
        "encryption_key_sid": null, "encryption_enabled": false,
    })
}

/// How a suite gets back to a fixture between tests without a restart:
/// reset, then import into the running server; importing what is already
/// there writes nothing.
#[tokio::test]
async fn an_online_import_loads_a_fixture_and_loading_it_again_changes_nothing() {
    let app = spawn_app().await;
    let file = fixture(&[
        fixture_line("recording_settings", ACCOUNT, "fixture A"),
        fixture_line("composition_settings", OTHER_ACCOUNT, "fixture B"),
    ]);
    let addr = app.grpc_addr.to_string();
    let import = || {
        let mut command = binary();
        command
            .args(["import", "--grpc-addr", &addr])
            .arg(file.path());
        async move { finish(&mut command).await }
    };

    let first = import().await;
    let a = get(&app, Resource::Recording, ACCOUNT).await;
    let b = get(&app, Resource::Composition, OTHER_ACCOUNT).await;
    let again = import().await;
    let a_again = get(&app, Resource::Recording, ACCOUNT).await;
    reset(&mut admin(&app).await, "", "").await;
    let after_reset = import().await;

    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("imported 2 records (0 already so)"),
        "{}",
        stderr(&first)
    );
    assert_eq!(a.friendly_name.as_deref(), Some("fixture A"));
    assert_eq!(b.friendly_name.as_deref(), Some("fixture B"));
    assert!(
        stderr(&again).contains("imported 0 records (2 already so)"),
        "{}",
        stderr(&again)
    );
    assert_eq!(a_again, a, "no new revision");
    assert!(
        stderr(&after_reset).contains("imported 2 records"),
        "{}",
        stderr(&after_reset)
    );
}

#[tokio::test]
async fn an_online_import_with_a_bad_record_writes_nothing_and_names_it() {
    let app = spawn_authenticated_app().await;
    let record = |name: &str| settingsd::pb::ImportSettingsRequest {
        record: Some(settingsd::pb::ExportedSettings::new(
            Resource::Recording,
            SettingsMessage {
                account_sid: ACCOUNT.into(),
                friendly_name: Some(name.into()),
                ..SettingsMessage::default()
            },
        )),
    };
    let mut admin = admin(&app).await;
    let as_operator = |records: Vec<settingsd::pb::ImportSettingsRequest>| {
        with_auth(tokio_stream::iter(records), OPERATOR, OPERATOR_SECRET)
    };

    let bad = admin
        .import_settings(as_operator(vec![record("good"), record(&"x".repeat(256))]))
        .await
        .unwrap_err();
    let tenant = admin
        .import_settings(with_auth(
            tokio_stream::iter(vec![record("mine")]),
            ACCOUNT,
            TOKEN,
        ))
        .await
        .unwrap_err();
    let untouched = app
        .try_get(with_auth(get_request(ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_line = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad_line,
        format!(
            "{}\n{{\"account_sid\": \"AC1\"}}\n",
            fixture_line("recording_settings", ACCOUNT, "fine")
        ),
    )
    .unwrap();
    let operator = format!("{OPERATOR}:{OPERATOR_SECRET}");
    let cli = finish(
        binary()
            .args(["import", "--grpc-addr", &app.grpc_addr.to_string()])
            .args(["--credentials", &operator, bad_line.to_str().unwrap()]),
    )
    .await;

    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("record 2"), "{bad:?}");
    assert!(bad.message().contains("friendly_name"), "{bad:?}");
    assert_eq!(tenant.code(), tonic::Code::PermissionDenied);
    assert_eq!(untouched.revision, 0, "nothing written: {untouched:?}");
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert_eq!(
        app.try_get(with_auth(get_request(ACCOUNT), ACCOUNT, TOKEN))
            .await
            .unwrap()
            .revision,
        0
    );
}

/// Of two records for one resource in one import, the last counts (as an
/// offline import applies them in order); a record that does not decode is
/// repaired by importing a good one.
#[tokio::test]
async fn an_online_import_applies_the_last_of_duplicates_and_repairs_an_unreadable_record() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    app.set(set_request(ACCOUNT, "y")).await;
    app.set(set_request(OTHER_ACCOUNT, "to be corrupted")).await;
    app.stop().await.unwrap();
    corrupt_resource(
        dir.path(),
        Resource::Recording,
        OTHER_ACCOUNT,
        b"\x01garbage",
    );
    let app = spawn_app_on(dir.path()).await;
    let unreadable = app.try_get(get_request(OTHER_ACCOUNT)).await.unwrap_err();
    let file = fixture(&[
        fixture_line("recording_settings", ACCOUNT, "x"),
        fixture_line("recording_settings", ACCOUNT, "y"),
        fixture_line("recording_settings", OTHER_ACCOUNT, "repaired"),
    ]);

    let out = finish(
        binary()
            .args(["import", "--grpc-addr", &app.grpc_addr.to_string()])
            .arg(file.path()),
    )
    .await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(unreadable.code(), tonic::Code::DataLoss);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 1 records (2 already so)"),
        "{stderr}"
    );
    assert_eq!(app.get(ACCOUNT).await.friendly_name.as_deref(), Some("y"));
    assert_eq!(
        app.get(OTHER_ACCOUNT).await.friendly_name.as_deref(),
        Some("repaired")
    );
}
