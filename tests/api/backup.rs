//! `settingsd export` and `settingsd import`: a round trip through JSON
//! lines, atomic output, and a clear refusal while a server holds the
//! directory.

use std::path::Path;

use settingsd::pb::{RecordingSettings, SetRecordingSettingsRequest};

use crate::helpers::*;

async fn settingsd(args: &[&str], dir: &Path) -> std::process::Output {
    tokio::time::timeout(
        GUARD,
        binary().args(args).arg("--data-dir").arg(dir).output(),
    )
    .await
    .expect("finishes")
    .unwrap()
}

/// What a record says, without the revision and time a write stamps.
fn content(s: RecordingSettings) -> RecordingSettings {
    RecordingSettings {
        revision: 0,
        update_time: None,
        ..s
    }
}

#[tokio::test]
async fn export_then_import_into_a_fresh_directory_round_trips_every_record() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let app = spawn_app_on(source.path()).await;
    app.set(full_set_request(ACCOUNT)).await;
    app.set(SetRecordingSettingsRequest {
        aws_s3_url: Some("https://b.s3.amazonaws.com/with%20escape?q=1".into()),
        ..set_request(OTHER_ACCOUNT, "Ünïcode name")
    })
    .await;
    let before = [app.get(ACCOUNT).await, app.get(OTHER_ACCOUNT).await];
    app.stop().await.unwrap();
    let file = target.path().join("backup.jsonl");

    let export = settingsd(&["export", file.to_str().unwrap()], source.path()).await;
    let import = settingsd(
        &["import", file.to_str().unwrap()],
        &target.path().join("data"),
    )
    .await;

    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
    let restored = spawn_app_on(&target.path().join("data")).await;
    let after = [
        restored.get(ACCOUNT).await,
        restored.get(OTHER_ACCOUNT).await,
    ];
    assert_eq!(after.map(content), before.map(content));
}

#[tokio::test]
async fn export_refuses_a_directory_a_running_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(dir.path()).await;

    let out = settingsd(&["export"], dir.path()).await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("stop the server first"), "{stderr}");
    server.signal("TERM");
    assert!(server.wait().await.success());
}

#[tokio::test]
async fn a_failed_export_leaves_the_previous_file_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    app.set(set_request(ACCOUNT, "x")).await;
    app.stop().await.unwrap();
    {
        // An undecodable record makes the export fail part way.
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("recording_settings").unwrap();
        tree.insert(OTHER_ACCOUNT, &[7u8][..]).unwrap();
        db.flush().unwrap();
    }
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("backup.jsonl");
    std::fs::write(&file, "the previous good backup\n").unwrap();

    let out = settingsd(&["export", file.to_str().unwrap()], dir.path()).await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(OTHER_ACCOUNT), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the previous good backup\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(out_dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[tokio::test]
async fn import_rejects_an_invalid_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"account_sid\":\"{ACCOUNT}\",\"friendly_name\":\"ok\",\"aws_credentials_sid\":null,\
             \"aws_s3_url\":null,\"aws_storage_enabled\":false,\"encryption_key_sid\":null,\
             \"encryption_enabled\":false}}\n\
             {{\"account_sid\":\"{OTHER_ACCOUNT}\",\"friendly_name\":\"bad\",\"aws_credentials_sid\":null,\
             \"aws_s3_url\":\"http://not-https\",\"aws_storage_enabled\":false,\"encryption_key_sid\":null,\
             \"encryption_enabled\":false}}\n"
        ),
    )
    .unwrap();

    let out = settingsd(
        &["import", file.to_str().unwrap()],
        &dir.path().join("data"),
    )
    .await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("aws_s3_url"), "{stderr}");
}
