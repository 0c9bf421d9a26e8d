//! Faults give clear errors and never silent loss: an undecodable record,
//! failing commits, an unusable data directory.

use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};

use std::time::Duration;

use settingsd::{server::Limits, store::sled::StoreOptions};
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    helpers::*,
    http_bridge::{assert_twilio_error, fetch, post},
};

#[tokio::test]
async fn an_undecodable_record_is_data_loss_for_that_account_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    app.set(full_set_request(ACCOUNT)).await;
    app.set(set_request(OTHER_ACCOUNT, "healthy")).await;
    app.stop().await.unwrap();
    corrupt(dir.path(), ACCOUNT, &[1, 0xff, 0xff, 0xff]);

    let app = spawn_app_on(dir.path()).await;
    let mut client = app.client.clone();
    let get = client
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .unwrap_err();
    let set = client
        .set_recording_settings(set_request(ACCOUNT, "x"))
        .await
        .unwrap_err();
    let http = fetch(&app.url(), ACCOUNT, "any").await;

    assert_eq!(get.code(), Code::DataLoss);
    assert!(get.message().contains(ACCOUNT), "{}", get.message());
    assert_eq!(set.code(), Code::DataLoss);
    let message = assert_twilio_error(http, 500, 20500).await;
    assert!(!message.contains("0xff"), "no internals leak: {message}");
    assert_eq!(
        app.get(OTHER_ACCOUNT).await.friendly_name.as_deref(),
        Some("healthy")
    );
    app.set(set_request(OTHER_ACCOUNT, "still writable")).await;
}

#[tokio::test]
async fn a_record_of_an_unknown_format_version_is_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    app.set(set_request(ACCOUNT, "x")).await;
    app.stop().await.unwrap();
    corrupt(dir.path(), ACCOUNT, &[99, 0x0a, 0x01, b'x']);

    let app = spawn_app_on(dir.path()).await;
    let status = app
        .client
        .clone()
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::DataLoss);
}

/// Waits (bounded) until the server's overall health is `wanted`.
pub async fn health_becomes(app: &TestApp, wanted: ServingStatus) {
    health_at_becomes(app.grpc_addr, wanted).await;
}

/// Waits (bounded) until the overall health of the server whose gRPC
/// listener is `grpc_addr` is `wanted`.
pub async fn health_at_becomes(grpc_addr: std::net::SocketAddr, wanted: ServingStatus) {
    let mut health = HealthClient::new(channel(grpc_addr).await);
    let mut statuses = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(GUARD, async {
        while let Some(s) = statuses.message().await.unwrap() {
            if s.status == wanted as i32 {
                return;
            }
        }
        panic!("the health stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("health never became {wanted:?}"));
}

/// What a fault test saw while a failed commit stopped writes, and after.
pub struct WritesStopped {
    /// The Set whose commit failed.
    pub failed: tonic::Status,
    /// A bridge POST during the fault.
    pub http: reqwest::Response,
    /// A Set after the failure, of another account.
    pub refused: tonic::Status,
    /// A Get of that account during the fault.
    pub read: SettingsMessage,
    /// A Set of it once the fault cleared.
    pub after: SettingsMessage,
}

/// The promises of a failed commit, whatever failed (`fault` names it):
/// UNAVAILABLE (503 / 20503 through the bridge), no more writes until the
/// store recovers, reads going on, writes again after it.
pub async fn assert_stopped_then_recovered(fault: &str, seen: WritesStopped) {
    assert_eq!(
        seen.failed.code(),
        Code::Unavailable,
        "{fault}: {:?}",
        seen.failed
    );
    assert_twilio_error(seen.http, 503, 20503).await;
    assert_eq!(
        seen.refused.code(),
        Code::Unavailable,
        "{fault}: {:?}",
        seen.refused
    );
    assert!(
        seen.refused.message().contains("stopped taking writes"),
        "{fault}: {:?}",
        seen.refused
    );
    assert_eq!(
        seen.read.revision, 0,
        "{fault}: reads go on; the refused Set wrote nothing"
    );
    assert_eq!(seen.after.friendly_name.as_deref(), Some("after the fault"));
}

#[tokio::test]
async fn a_failed_commit_stops_writes_until_the_disk_recovers_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (app, disk_full) = spawn_app_with_failing_disk(dir.path()).await;
    let acknowledged = app.set(set_request(ACCOUNT, "before the fault")).await;

    disk_full.store(true, Ordering::SeqCst);
    let grpc = app
        .try_set(set_request(ACCOUNT, "during the fault"))
        .await
        .unwrap_err();
    let http = post(&app.url(), ACCOUNT, "any", "FriendlyName=during+the+fault").await;
    let refused = app
        .try_set(set_request(OTHER_ACCOUNT, "refused"))
        .await
        .unwrap_err();
    health_becomes(&app, ServingStatus::NotServing).await;
    let read = app.get(OTHER_ACCOUNT).await;
    disk_full.store(false, Ordering::SeqCst);
    health_becomes(&app, ServingStatus::Serving).await;
    let after = app.set(set_request(OTHER_ACCOUNT, "after the fault")).await;
    let survived = app.get(ACCOUNT).await;
    app.stop().await.unwrap();

    assert_stopped_then_recovered(
        "an injected disk fault",
        WritesStopped {
            failed: grpc,
            http,
            refused,
            read,
            after: after.clone(),
        },
    )
    .await;
    assert!(
        survived.revision >= acknowledged.revision,
        "the acknowledged write (or the unacknowledged one after it) survived: {survived:?}"
    );
    let restarted = spawn_app_on(dir.path()).await;
    assert_eq!(restarted.get(OTHER_ACCOUNT).await, after);
    assert_eq!(restarted.get(ACCOUNT).await, survived);
}

#[tokio::test]
async fn a_stuck_commit_turns_health_not_serving_until_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let stuck = Arc::new(AtomicBool::new(false));
    let app = spawn_app_with_store_and_limits(
        StoreOptions {
            stall_commits: Some(Arc::clone(&stuck)),
            ..StoreOptions::new(dir.path())
        },
        Limits {
            commit_stall_limit: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;

    stuck.store(true, Ordering::SeqCst);
    let mut client = app.client.clone();
    let waiting = tokio::spawn(async move {
        client
            .set_recording_settings(set_request(ACCOUNT, "through a stuck disk"))
            .await
    });
    health_becomes(&app, ServingStatus::NotServing).await;
    let still_waiting = !waiting.is_finished();
    stuck.store(false, Ordering::SeqCst);
    health_becomes(&app, ServingStatus::Serving).await;
    let acknowledged = tokio::time::timeout(GUARD, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_inner();

    assert!(
        still_waiting,
        "the Set is not acknowledged while its commit hangs"
    );
    assert_eq!(
        acknowledged.friendly_name.as_deref(),
        Some("through a stuck disk")
    );
    assert_eq!(app.get(ACCOUNT).await, SettingsMessage::from(acknowledged));
}

#[tokio::test]
async fn an_unusable_data_directory_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let data_dir = file.join("data");

    let out = tokio::time::timeout(
        GUARD,
        binary()
            .args(SERVE_ON_PORT_0)
            .arg("--data-dir")
            .arg(&data_dir)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&data_dir.display().to_string()), "{stderr}");
    assert!(stderr.contains("Not a directory"), "{stderr}");
}

#[tokio::test]
async fn while_writes_are_stopped_reads_show_the_last_durable_state_and_watches_resume_after_the_reopen(
) {
    let dir = tempfile::tempdir().unwrap();
    let (app, disk_full) = spawn_app_with_failing_disk(dir.path()).await;
    let acknowledged = app.set(set_request(ACCOUNT, "before the fault")).await;
    let mut watcher = app.watch(ACCOUNT, acknowledged.revision + 1).await;

    disk_full.store(true, Ordering::SeqCst);
    let failed = app
        .try_set(set_request(ACCOUNT, "during the fault"))
        .await
        .unwrap_err();
    health_becomes(&app, ServingStatus::NotServing).await;
    let during = app.get(ACCOUNT).await;
    disk_full.store(false, Ordering::SeqCst);
    health_becomes(&app, ServingStatus::Serving).await;
    let ended = tokio::time::timeout(GUARD, tokio_stream::StreamExt::next(&mut watcher))
        .await
        .expect("the old watch ends");
    let mut resumed = app.watch(ACCOUNT, acknowledged.revision + 1).await;
    let after = app.set(set_request(ACCOUNT, "after the fault")).await;

    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(
        during, acknowledged,
        "a read shows the last durable state, not the failed write, and does not fail"
    );
    match ended {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("the watch must end with UNAVAILABLE to be resumed, got {other:?}"),
    }
    // The failed write may have survived the reopen (it was never
    // acknowledged); if it did, the resumed watch shows it, in order.
    let mut seen = next_settings(&mut resumed).await;
    if seen.friendly_name.as_deref() == Some("during the fault") {
        seen = next_settings(&mut resumed).await;
    }
    assert_eq!(seen, after);
}
