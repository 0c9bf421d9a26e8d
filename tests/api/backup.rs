//! `settingsd export` and `settingsd import`: a round trip through JSON
//! lines, atomic output, a clear refusal while a server holds the directory,
//! and the online export from a running server (operators only).

use std::path::Path;

use settingsd::pb::{
    admin_service_client::AdminServiceClient, ExportRecordingSettingsRequest,
    SetRecordingSettingsRequest,
};
use tonic::Code;

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
fn content(s: SettingsMessage) -> SettingsMessage {
    SettingsMessage {
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
async fn an_export_of_a_directory_without_data_fails_and_keeps_the_old_backup() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped");
    let file = dir.path().join("backup.jsonl");
    std::fs::write(&file, "the previous good backup\n").unwrap();

    let out = settingsd(&["export", file.to_str().unwrap()], &missing).await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("mistyped"), "{stderr}");
    assert!(!missing.exists(), "no empty database is created");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the previous good backup\n"
    );
}

/// A stopped server's data directory: ACCOUNT's record reads as "readable",
/// OTHER_ACCOUNT's (after it in a scan) does not decode.
async fn data_with_a_corrupt_record() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    app.set(set_request(ACCOUNT, "readable")).await;
    app.stop().await.unwrap();
    corrupt(dir.path(), OTHER_ACCOUNT, &[7]);
    dir
}

#[tokio::test]
async fn a_failed_export_leaves_the_previous_file_in_place() {
    // An undecodable record makes the export fail part way.
    let dir = data_with_a_corrupt_record().await;
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
async fn skip_corrupt_backs_up_the_rest_and_an_import_repairs_the_bad_record() {
    let dir = data_with_a_corrupt_record().await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("backup.jsonl");
    let repair = out.path().join("repair.jsonl");
    std::fs::write(
        &repair,
        line(OTHER_ACCOUNT, "friendly_name", "repaired".into()),
    )
    .unwrap();

    let exported = settingsd(
        &["export", "--skip-corrupt", file.to_str().unwrap()],
        dir.path(),
    )
    .await;
    let imported = settingsd(&["import", repair.to_str().unwrap()], dir.path()).await;

    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert!(exported.status.success(), "{stderr}");
    assert!(
        stderr.contains(OTHER_ACCOUNT),
        "the skipped account is named: {stderr}"
    );
    let backup = std::fs::read_to_string(&file).unwrap();
    assert_eq!(backup.lines().count(), 1);
    assert!(backup.contains(ACCOUNT) && !backup.contains(OTHER_ACCOUNT));
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let app = spawn_app_on(dir.path()).await;
    let repaired = app.get(OTHER_ACCOUNT).await;
    assert_eq!(repaired.friendly_name.as_deref(), Some("repaired"));
}

/// One exported record as a JSON line, with `field` set to `value`.
fn line(account: &str, field: &str, value: serde_json::Value) -> String {
    let mut record = serde_json::json!({
        "account_sid": account,
        "friendly_name": "ok",
        "aws_credentials_sid": null,
        "aws_s3_url": null,
        "aws_storage_enabled": false,
        "encryption_key_sid": null,
        "encryption_enabled": false,
    });
    record[field] = value;
    format!("{record}\n")
}

#[tokio::test]
async fn import_rejects_an_invalid_line_naming_it_and_imports_nothing() {
    for (field, bad) in [
        ("aws_s3_url", serde_json::json!("http://not-https")),
        // Valid on its own, but storage enabled needs a URL and a credential.
        ("aws_storage_enabled", serde_json::json!(true)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("in.jsonl");
        let good = line(ACCOUNT, "friendly_name", serde_json::json!("ok"));
        std::fs::write(&file, good + &line(OTHER_ACCOUNT, field, bad)).unwrap();
        let data = dir.path().join("data");

        let out = settingsd(&["import", file.to_str().unwrap()], &data).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("line 2"), "{stderr}");
        assert!(stderr.contains(field), "{stderr}");
        let app = spawn_app_on(&data).await;
        assert_eq!(
            app.get(ACCOUNT).await.revision,
            0,
            "line 1 was not imported"
        );
    }
}

async fn export_online(app: &TestApp, extra: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        GUARD,
        binary()
            .args(["export", "--grpc-addr", &app.grpc_addr.to_string()])
            .args(extra)
            .output(),
    )
    .await
    .expect("finishes")
    .unwrap()
}

#[tokio::test]
async fn an_export_from_a_running_server_matches_the_offline_export() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let online = out.path().join("online.jsonl");
    let offline = out.path().join("offline.jsonl");
    let app = spawn_app_on(dir.path()).await;
    app.set(full_set_request(ACCOUNT)).await;
    app.set(set_request(OTHER_ACCOUNT, "second")).await;

    let exported = export_online(&app, &[online.to_str().unwrap()]).await;
    app.stop().await.unwrap();
    let stopped = settingsd(&["export", offline.to_str().unwrap()], dir.path()).await;

    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    assert!(stopped.status.success());
    let online = std::fs::read_to_string(&online).unwrap();
    assert_eq!(online.lines().count(), 2, "{online}");
    assert!(online.contains(ACCOUNT) && online.contains(OTHER_ACCOUNT));
    assert_eq!(online, std::fs::read_to_string(&offline).unwrap());
}

#[tokio::test]
async fn only_operators_may_export_from_a_server_with_accounts() {
    let app = spawn_authenticated_app().await;
    app.try_set(with_auth(set_request(ACCOUNT, "a"), ACCOUNT, TOKEN))
        .await
        .unwrap();
    let admin = AdminServiceClient::new(channel(app.grpc_addr).await);
    let export = |user: Option<(&str, &str)>| {
        let mut admin = admin.clone();
        let request = match user {
            Some((user, secret)) => with_auth(ExportRecordingSettingsRequest {}, user, secret),
            None => tonic::Request::new(ExportRecordingSettingsRequest {}),
        };
        async move {
            let answer = admin.export_recording_settings(request).await;
            answer.map(tonic::Response::into_inner)
        }
    };

    let anonymous = export(None).await.unwrap_err();
    let account = export(Some((ACCOUNT, TOKEN))).await.unwrap_err();
    let api_key = export(Some((API_KEY, API_SECRET))).await.unwrap_err();
    let wrong = export(Some((OPERATOR, TOKEN))).await.unwrap_err();
    let mut records = export(Some((OPERATOR, OPERATOR_SECRET))).await.unwrap();

    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(account.code(), Code::PermissionDenied, "{account:?}");
    assert!(account.message().contains("operator"), "{account:?}");
    assert_eq!(api_key.code(), Code::PermissionDenied);
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let first = records.message().await.unwrap().unwrap();
    assert_eq!(first.account_sid, ACCOUNT);
    assert_eq!(first.friendly_name.as_deref(), Some("a"));
    assert!(records.message().await.unwrap().is_none());
}

#[tokio::test]
async fn an_operator_acts_for_any_account_it_names() {
    let app = spawn_authenticated_app().await;

    let set = app
        .try_set(with_auth(
            set_request(OTHER_ACCOUNT, "by the operator"),
            OPERATOR,
            OPERATOR_SECRET,
        ))
        .await
        .unwrap();
    let unnamed = app
        .try_get(with_auth(get_request(""), OPERATOR, OPERATOR_SECRET))
        .await
        .unwrap_err();

    assert_eq!(set.account_sid, OTHER_ACCOUNT);
    let read = app
        .try_get(with_auth(
            get_request(OTHER_ACCOUNT),
            OTHER_ACCOUNT,
            OTHER_TOKEN,
        ))
        .await
        .unwrap();
    assert_eq!(read.friendly_name.as_deref(), Some("by the operator"));
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    assert!(unnamed.message().contains("account_sid"), "{unnamed:?}");
}

#[tokio::test]
async fn a_refused_online_export_is_a_clear_error_and_writes_no_file() {
    let app = spawn_authenticated_app().await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("backup.jsonl");
    let credentials = format!("{ACCOUNT}:{TOKEN}");

    let refused = export_online(
        &app,
        &["--credentials", &credentials, file.to_str().unwrap()],
    )
    .await;
    let nothing_written = std::fs::read_dir(out.path()).unwrap().count() == 0;
    let allowed = export_online(
        &app,
        &[
            "--credentials",
            &format!("{OPERATOR}:{OPERATOR_SECRET}"),
            file.to_str().unwrap(),
        ],
    )
    .await;

    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(
        nothing_written,
        "a refused export leaves no file, temporary or not"
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
}

#[tokio::test]
async fn an_undecodable_record_ends_an_online_export_with_data_loss_naming_it() {
    let dir = data_with_a_corrupt_record().await;
    let app = spawn_app_on(dir.path()).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("backup.jsonl");
    std::fs::write(&file, "the previous good backup\n").unwrap();

    let exported = export_online(&app, &[file.to_str().unwrap()]).await;

    let stderr = String::from_utf8_lossy(&exported.stderr);
    assert!(!exported.status.success());
    assert!(stderr.contains("DataLoss"), "{stderr}");
    assert!(stderr.contains(OTHER_ACCOUNT), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "the previous good backup\n"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn both_resources_round_trip_through_export_and_import_each_line_naming_its_resource() {
    let source = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (offline, online) = (out.path().join("off.jsonl"), out.path().join("on.jsonl"));
    let recording = spawn_app_on(source.path()).await;
    recording.set(full_set_request(ACCOUNT)).await;
    let composition = recording.for_resource(Resource::Composition);
    composition.set(set_request(ACCOUNT, "compositions")).await;
    composition
        .set(set_request(OTHER_ACCOUNT, "other's compositions"))
        .await;
    let exported = export_online(&composition, &[online.to_str().unwrap()]).await;
    let before = [
        composition.get(ACCOUNT).await,
        composition.get(OTHER_ACCOUNT).await,
    ];
    let recording = composition.for_resource(Resource::Recording);
    let recording_before = recording.get(ACCOUNT).await;
    recording.stop().await.unwrap();

    let export = settingsd(&["export", offline.to_str().unwrap()], source.path()).await;
    let import = settingsd(
        &["import", offline.to_str().unwrap()],
        &target.path().join("data"),
    )
    .await;

    for out in [&exported, &export, &import] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&offline).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let resources: Vec<_> = lines.iter().map(|l| l["resource"].clone()).collect();
    assert_eq!(
        resources,
        [
            "recording_settings",
            "composition_settings",
            "composition_settings"
        ],
        "{text}"
    );
    assert_eq!(
        text,
        std::fs::read_to_string(&online).unwrap(),
        "the online export streams every resource too"
    );
    let restored = spawn_app_on(&target.path().join("data"))
        .await
        .for_resource(Resource::Composition);
    let after = [
        restored.get(ACCOUNT).await,
        restored.get(OTHER_ACCOUNT).await,
    ];
    assert_eq!(after.map(content), before.map(content));
    let restored = restored.for_resource(Resource::Recording);
    assert_eq!(
        content(restored.get(ACCOUNT).await),
        content(recording_before)
    );
    assert_eq!(restored.get(OTHER_ACCOUNT).await.revision, 0);
}

#[tokio::test]
async fn a_line_without_a_resource_from_an_older_export_imports_as_recording_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.jsonl");
    std::fs::write(
        &file,
        line(ACCOUNT, "friendly_name", "from an old backup".into()),
    )
    .unwrap();
    let data = dir.path().join("data");

    let out = settingsd(&["import", file.to_str().unwrap()], &data).await;

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = spawn_app_on(&data).await;
    let recording = app.get(ACCOUNT).await;
    let app = app.for_resource(Resource::Composition);
    assert_eq!(
        recording.friendly_name.as_deref(),
        Some("from an old backup")
    );
    assert_eq!(
        app.get(ACCOUNT).await.revision,
        0,
        "no composition settings"
    );
}

#[tokio::test]
async fn a_line_naming_an_unknown_resource_fails_the_import_naming_the_line_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    let good = line(ACCOUNT, "resource", "composition_settings".into());
    let unknown = line(OTHER_ACCOUNT, "resource", "room_settings".into());
    std::fs::write(&file, good + &unknown).unwrap();
    let data = dir.path().join("data");

    let out = settingsd(&["import", file.to_str().unwrap()], &data).await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("room_settings"), "{stderr}");
    assert!(
        stderr.contains("composition_settings"),
        "names the known ones: {stderr}"
    );
    let app = spawn_app_on(&data)
        .await
        .for_resource(Resource::Composition);
    assert_eq!(
        app.get(ACCOUNT).await.revision,
        0,
        "line 1 was not imported"
    );
}

#[tokio::test]
async fn a_bad_composition_record_fails_the_full_export_naming_it_but_not_the_recording_export() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    app.set(set_request(ACCOUNT, "recording")).await;
    app.stop().await.unwrap();
    corrupt_resource(
        dir.path(),
        Resource::Composition,
        OTHER_ACCOUNT,
        b"\x01\xff\xff",
    );
    let app = spawn_app_on(dir.path()).await;
    let admin = AdminServiceClient::new(channel(app.grpc_addr).await);

    let full = export_online(&app, &[]).await;
    let mut recording = admin
        .clone()
        .export_recording_settings(ExportRecordingSettingsRequest {})
        .await
        .unwrap()
        .into_inner();

    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(!full.status.success());
    assert!(stderr.contains("DataLoss"), "{stderr}");
    assert!(
        stderr.contains(OTHER_ACCOUNT) && stderr.contains("Composition Settings"),
        "{stderr}"
    );
    let first = recording.message().await.unwrap().expect("one record");
    assert_eq!(first.friendly_name.as_deref(), Some("recording"));
    assert!(
        recording.message().await.unwrap().is_none(),
        "old clients' export ends cleanly: it never reads the other resource"
    );
    let composition = app.for_resource(Resource::Composition);
    let status = composition
        .try_get(get_request(OTHER_ACCOUNT))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss);
    assert_eq!(
        composition.get(ACCOUNT).await.revision,
        0,
        "other records still read"
    );
}

#[tokio::test]
async fn serve_seed_loads_a_fixture_and_starting_again_with_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("fixture.jsonl");
    std::fs::write(
        &seed,
        line(ACCOUNT, "friendly_name", "seeded".into())
            + &line(OTHER_ACCOUNT, "resource", "composition_settings".into()),
    )
    .unwrap();
    let data = dir.path().join("data");
    let seed_arg = seed.to_str().unwrap();
    let read = |server: &BinaryServer, resource: Resource, account: &str| {
        let addr = server.grpc_addr;
        let account = account.to_owned();
        async move {
            let client = SettingsClient::new(channel(addr).await);
            let request = tonic::Request::new(GetSettingsMessage {
                account_sid: account,
            });
            client.get(resource, request).await.unwrap()
        }
    };

    let mut first = BinaryServer::start_with(&data, &["--seed", seed_arg]).await;
    let seeded = read(&first, Resource::Recording, ACCOUNT).await;
    let composition = read(&first, Resource::Composition, OTHER_ACCOUNT).await;
    first.signal("TERM");
    first.wait().await;
    let mut again = BinaryServer::start_with(&data, &["--seed", seed_arg]).await;
    let unchanged = read(&again, Resource::Recording, ACCOUNT).await;
    again.signal("TERM");
    again.wait().await;

    assert_eq!(seeded.friendly_name.as_deref(), Some("seeded"));
    assert_eq!(composition.friendly_name.as_deref(), Some("ok"));
    assert_eq!(unchanged, seeded, "the same seed again writes nothing");
}

#[tokio::test]
async fn a_bad_seed_line_stops_the_start_naming_it_and_seeds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("fixture.jsonl");
    std::fs::write(
        &seed,
        line(ACCOUNT, "friendly_name", "fine".into())
            + &line(OTHER_ACCOUNT, "aws_s3_url", "ftp://nope".into()),
    )
    .unwrap();
    let data = dir.path().join("data");

    let out = finish(
        binary()
            .args(SERVE_ON_PORT_0)
            .arg("--data-dir")
            .arg(&data)
            .arg("--seed")
            .arg(&seed),
    )
    .await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 2") && stderr.contains("aws_s3_url"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no ready line: it never served");
    wait_until_released(&data);
    let app = spawn_app_on(&data).await;
    assert_eq!(app.get(ACCOUNT).await.revision, 0, "line 1 was not seeded");
}
