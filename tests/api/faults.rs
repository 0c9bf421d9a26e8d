//! Faults give clear errors and never silent loss: an undecodable record,
//! failing commits, an unusable data directory.

use std::sync::{atomic::AtomicBool, atomic::Ordering, Arc};

use settingsd::store::StoreOptions;
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

#[tokio::test]
async fn a_failed_commit_stops_writes_until_a_restart_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let disk_full = Arc::new(AtomicBool::new(false));
    let app = spawn_app_with_store(StoreOptions {
        fail_commits: Some(Arc::clone(&disk_full)),
        ..StoreOptions::new(dir.path())
    })
    .await;
    let acknowledged = app.set(set_request(ACCOUNT, "before the fault")).await;
    let mut health = HealthClient::new(channel(app.grpc_addr).await);

    disk_full.store(true, Ordering::SeqCst);
    let grpc = app
        .client
        .clone()
        .set_recording_settings(set_request(ACCOUNT, "during the fault"))
        .await
        .unwrap_err();
    let http = post(&app.url(), ACCOUNT, "any", "FriendlyName=during+the+fault").await;
    disk_full.store(false, Ordering::SeqCst);
    // The disk is back, but a sync that failed may have lost pages the kernel
    // then marked clean: no later sync can vouch for them, so writes stay off.
    let after = app
        .client
        .clone()
        .set_recording_settings(set_request(OTHER_ACCOUNT, "after the fault"))
        .await
        .unwrap_err();
    let status = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let not_serving = tokio::time::timeout(GUARD, async {
        let mut status = status;
        while let Some(s) = status.message().await.unwrap() {
            if s.status == ServingStatus::NotServing as i32 {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    let read = app.get(OTHER_ACCOUNT).await;
    let stopped = app.stop().await;

    assert_eq!(grpc.code(), Code::Unavailable);
    assert_twilio_error(http, 503, 20503).await;
    assert_eq!(after.code(), Code::Unavailable);
    assert!(after.message().contains("restart"), "{after:?}");
    assert!(not_serving, "health turns NOT_SERVING");
    assert_eq!(
        read.revision, 0,
        "reads go on; the refused Set wrote nothing"
    );
    assert!(
        stopped.is_err(),
        "a poisoned store does not claim a clean stop"
    );
    let restarted = spawn_app_on(dir.path()).await;
    let survived = restarted.get(ACCOUNT).await;
    assert!(
        survived.revision >= acknowledged.revision,
        "the acknowledged write (or the unacknowledged one after it) survived: {survived:?}"
    );
    let again = restarted
        .set(set_request(OTHER_ACCOUNT, "after a restart"))
        .await;
    assert_eq!(again.friendly_name.as_deref(), Some("after a restart"));
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
