//! Backups of declared kinds (`serve --kinds`): `AdminService`'s
//! ExportSettings and ImportSettings carry their records as
//! `declared_settings` (the value an `Any` of the kind's message), and the
//! JSON lines of `settingsd export`, `import` and `serve --seed` hold the
//! value as proto3 JSON, read with the kinds file given by `--kinds`.
//!
//! The tests through `settingsd export --data-dir` and `import --data-dir`
//! write their data through the binary, so they run on sled whatever
//! `SETTINGSD_TEST_STORE` says: they are about sled data directories.

use std::path::Path;

use prost::Message as _;
use prost_reflect::{DynamicMessage, ReflectMessage};
use settingsd::pb::{
    self, admin_service_client::AdminServiceClient, exported_settings::Settings as Exported,
    settings_service_client::SettingsServiceClient,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    helpers::{
        binary, channel, cli, finish, full_set_request, set_request, spawn_app,
        spawn_app_with_kinds, test_kinds, BinaryServer, Resource, ACCOUNT, OTHER_ACCOUNT,
        SERVE_ON_PORT_0,
    },
    kinds::{
        any, client, get_request, limits, recording_update, serve_kinds, update, value_of, write,
    },
};

const KIND: &str = "billing_limits";

/// A value with a map of several entries: prost-reflect encodes a map in
/// hash order, so its bytes differ from one encoding to the next while the
/// message is the same.
const VALUE: &str = r#"{
    "displayName": "Acme",
    "monthlyCapCents": "5000",
    "plan": "PLAN_PRO",
    "tiers": [{"name": "gold", "limit": "3"}],
    "quotas": {"calls": "100", "rooms": "5", "sms": "7", "fax": "1"}
}"#;

/// A value as proto3 JSON: how values from different descriptor pools (the
/// test's, the server's) are compared.
fn json(message: &DynamicMessage) -> serde_json::Value {
    serde_json::to_value(message).unwrap()
}

/// The kinds file the test servers serve.
fn kinds_file() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kinds/kinds.toml")
        .to_str()
        .unwrap()
        .to_owned()
}

type Admin = AdminServiceClient<tonic::transport::Channel>;

async fn admin(addr: std::net::SocketAddr) -> Admin {
    AdminServiceClient::new(channel(addr).await)
}

/// Every record ExportSettings streams.
async fn export(admin: &mut Admin) -> Vec<Exported> {
    let mut stream = admin
        .export_settings(pb::ExportSettingsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.message().await.unwrap() {
        records.push(record.settings.expect("a record"));
    }
    records
}

/// ImportSettings of `records`, in order.
async fn import(
    admin: &mut Admin,
    records: Vec<Exported>,
) -> Result<pb::ImportSettingsResponse, tonic::Status> {
    let requests: Vec<_> = records
        .into_iter()
        .map(|settings| pb::ImportSettingsRequest {
            record: Some(pb::ExportedSettings {
                settings: Some(settings),
            }),
        })
        .collect();
    admin
        .import_settings(tokio_stream::iter(requests))
        .await
        .map(tonic::Response::into_inner)
}

/// A `billing_limits` record of `account` for an import.
fn declared(account: &str, value: prost_types::Any) -> Exported {
    Exported::DeclaredSettings(pb::Settings {
        kind: KIND.into(),
        account_sid: account.into(),
        value: Some(value),
        ..pb::Settings::default()
    })
}

/// A server on a fresh directory serving the test kinds.
#[tokio::test]
async fn an_online_export_streams_both_built_in_resources_and_a_declared_kinds_record_as_an_any() {
    let (app, _dir) = serve_kinds().await;
    let written = write(&mut client(&app).await, VALUE, None).await;
    app.set(full_set_request(ACCOUNT)).await;
    let app = app.for_resource(Resource::Composition);
    app.set(set_request(OTHER_ACCOUNT, "compositions")).await;

    let records = export(&mut admin(app.grpc_addr).await).await;

    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(
        matches!(&records[0], Exported::RecordingSettings(r) if r.account_sid == ACCOUNT),
        "{records:#?}"
    );
    assert!(
        matches!(&records[1], Exported::CompositionSettings(c)
            if c.account_sid == OTHER_ACCOUNT && c.friendly_name.as_deref() == Some("compositions")),
        "{records:#?}"
    );
    let Exported::DeclaredSettings(exported) = &records[2] else {
        panic!("a declared kind's record: {records:#?}");
    };
    assert_eq!(
        exported, &written,
        "as GetSettings answers it: kind, account, Any, revision, etag, time"
    );
    assert_eq!(json(&value_of(exported)), json(&limits(VALUE)));
}

#[tokio::test]
async fn a_declared_kinds_record_round_trips_through_export_and_import_and_importing_it_again_changes_nothing(
) {
    let (source, _source_dir) = serve_kinds().await;
    let (target, _target_dir) = serve_kinds().await;
    let original = write(&mut client(&source).await, VALUE, None).await;
    source.set(set_request(ACCOUNT, "recordings")).await;
    let records = export(&mut admin(source.grpc_addr).await).await;
    let mut target_admin = admin(target.grpc_addr).await;

    let first = import(&mut target_admin, records.clone()).await.unwrap();
    let restored = client(&target)
        .await
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();
    let again = import(&mut target_admin, records).await.unwrap();
    let after_again = client(&target)
        .await
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();

    assert_eq!((first.written, first.unchanged), (2, 0));
    assert_eq!(
        restored.value.as_ref().unwrap().value,
        original.value.as_ref().unwrap().value,
        "the value's bytes are kept as exported"
    );
    assert!(restored.revision > 0);
    assert_eq!((again.written, again.unchanged), (0, 2));
    assert_eq!(after_again, restored, "no new revision");
    assert_eq!(
        target.get(ACCOUNT).await.friendly_name.as_deref(),
        Some("recordings")
    );
}

/// An import whose value is the same message encoded otherwise (the map's
/// entries in another order) leaves the stored record alone.
#[tokio::test]
async fn importing_an_equal_value_encoded_differently_counts_as_unchanged() {
    let (app, _dir) = serve_kinds().await;
    let stored = write(&mut client(&app).await, VALUE, None).await;
    let stored_bytes = stored.value.clone().unwrap().value;
    // The map's entries (field 7, quotas) reversed, after the other
    // fields: the same message, other bytes.
    let message = value_of(&stored);
    let mut without_quotas = message.clone();
    without_quotas.clear_field_by_name("quotas");
    let mut bytes = without_quotas.encode_to_vec();
    let entries = map_entries(&stored_bytes, 7);
    assert!(entries.len() > 1);
    for entry in entries.iter().rev() {
        bytes.extend_from_slice(entry);
    }
    assert_ne!(bytes, stored_bytes);
    assert_eq!(
        DynamicMessage::decode(message.descriptor(), bytes.as_slice()).unwrap(),
        message
    );
    let mut admin = admin(app.grpc_addr).await;
    let value = prost_types::Any {
        type_url: "type.googleapis.com/acme.billing.v1.BillingLimits".into(),
        value: bytes,
    };

    let answer = import(&mut admin, vec![declared(ACCOUNT, value)])
        .await
        .unwrap();

    assert_eq!((answer.written, answer.unchanged), (0, 1));
    let after = client(&app)
        .await
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, stored);
}

/// The encoded entries (tag included) of map field `number` in `encoded`,
/// a message whose every field is length-delimited or a varint.
fn map_entries(encoded: &[u8], number: u64) -> Vec<Vec<u8>> {
    fn varint(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut value, mut shift) = (0_u64, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }
    let mut entries = Vec::new();
    let mut at = 0;
    while at < encoded.len() {
        let start = at;
        let key = varint(encoded, &mut at);
        match key & 7 {
            0 => {
                varint(encoded, &mut at);
            }
            2 => {
                let len = usize::try_from(varint(encoded, &mut at)).unwrap();
                at += len;
            }
            wire => panic!("unexpected wire type {wire}"),
        }
        if key >> 3 == number {
            entries.push(encoded[start..at].to_vec());
        }
    }
    entries
}

#[tokio::test]
async fn an_imported_record_of_an_unknown_kind_or_of_another_type_is_refused_naming_it() {
    let (app, _dir) = serve_kinds().await;
    let built_in_only = spawn_app().await;
    let good = declared(ACCOUNT, any(&limits(r#"{"displayName":"fine"}"#)));
    let mut unknown_kind = declared(OTHER_ACCOUNT, any(&limits("{}")));
    if let Exported::DeclaredSettings(s) = &mut unknown_kind {
        s.kind = "room_limits".into();
    }
    let mut other_type = any(&limits("{}"));
    other_type.type_url = "type.googleapis.com/acme.billing.v1.FeatureFlags".into();
    let undecodable = prost_types::Any {
        type_url: "type.googleapis.com/acme.billing.v1.BillingLimits".into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let mut admin_client = admin(app.grpc_addr).await;

    let unknown = import(&mut admin_client, vec![good.clone(), unknown_kind])
        .await
        .unwrap_err();
    let wrong = import(
        &mut admin_client,
        vec![good.clone(), declared(OTHER_ACCOUNT, other_type)],
    )
    .await
    .unwrap_err();
    let broken = import(
        &mut admin_client,
        vec![declared(OTHER_ACCOUNT, undecodable)],
    )
    .await
    .unwrap_err();
    let not_served = import(&mut admin(built_in_only.grpc_addr).await, vec![good])
        .await
        .unwrap_err();
    let untouched = client(&app)
        .await
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    let message = unknown.message();
    assert!(message.contains("record 2"), "{message}");
    assert!(message.contains("room_limits"), "{message}");
    assert!(
        message.contains("billing_limits"),
        "lists the kinds served: {message}"
    );
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    let message = wrong.message();
    assert!(message.contains("record 2"), "{message}");
    assert!(message.contains("settings.value"), "{message}");
    assert!(
        message.contains("acme.billing.v1.BillingLimits"),
        "{message}"
    );
    let field = wrong.get_details_bad_request().unwrap().field_violations[0]
        .field
        .clone();
    assert_eq!(field, "record[2].settings.value");
    assert_eq!(broken.code(), Code::InvalidArgument, "{broken:?}");
    assert!(broken.message().contains("record 1"), "{broken:?}");
    assert!(broken.message().contains("does not decode"), "{broken:?}");
    assert_eq!(not_served.code(), Code::InvalidArgument, "{not_served:?}");
    assert!(
        not_served.message().contains("record 1") && not_served.message().contains(KIND),
        "{not_served:?}"
    );
    assert_eq!(untouched.revision, 0, "nothing was written");
}

/// A built-in kind's record in the generic shape (as SettingsService
/// answers it) imports as its typed record would: validated as a Set.
#[tokio::test]
async fn a_built_in_kinds_record_in_the_generic_shape_imports_validated_as_a_set() {
    let (app, _dir) = serve_kinds().await;
    let generic = |name: &str| {
        let value = pb::RecordingSettings {
            friendly_name: Some(name.into()),
            ..pb::RecordingSettings::default()
        };
        Exported::DeclaredSettings(recording_update(&value).settings.unwrap())
    };
    let mut admin = admin(app.grpc_addr).await;

    let invalid = import(&mut admin, vec![generic(&"x".repeat(256))])
        .await
        .unwrap_err();
    let imported = import(&mut admin, vec![generic("generic")]).await.unwrap();

    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("record 1") && invalid.message().contains("friendly_name"),
        "{invalid:?}"
    );
    assert_eq!((imported.written, imported.unchanged), (1, 0));
    assert_eq!(
        app.get(ACCOUNT).await.friendly_name.as_deref(),
        Some("generic")
    );
}

/// A `settingsd serve --kinds` on `data_dir`, with `args`.
async fn serve_with_kinds(data_dir: &Path, args: &[&str]) -> BinaryServer {
    let kinds = kinds_file();
    let mut all = vec!["--kinds", kinds.as_str()];
    all.extend_from_slice(args);
    BinaryServer::start_with(data_dir, &all).await
}

async fn stop(mut server: BinaryServer) {
    server.signal("TERM");
    assert!(server.wait().await.success());
}

async fn settings_client(
    server: &BinaryServer,
) -> SettingsServiceClient<tonic::transport::Channel> {
    SettingsServiceClient::new(channel(server.grpc_addr).await)
}

async fn read(server: &BinaryServer, account: &str) -> pb::Settings {
    settings_client(server)
        .await
        .get_settings(get_request(KIND, account))
        .await
        .unwrap()
        .into_inner()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines of `file`.
fn lines(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Sled data directories through the binary.
#[tokio::test]
async fn the_cli_exports_a_declared_kind_as_proto3_json_and_imports_it_into_a_fresh_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target) = (dir.path().join("source"), dir.path().join("target"));
    let (file, online) = (
        dir.path().join("backup.jsonl"),
        dir.path().join("online.jsonl"),
    );
    let (file_arg, online_arg) = (file.to_str().unwrap(), online.to_str().unwrap());
    let kinds = kinds_file();
    let server = serve_with_kinds(&source, &[]).await;
    let written = write(&mut settings_client(&server).await, VALUE, None).await;
    let addr = server.grpc_addr.to_string();
    let exported_online = cli(&[
        "export",
        "--grpc-addr",
        &addr,
        "--kinds",
        &kinds,
        online_arg,
    ])
    .await;
    let online_without_kinds = cli(&["export", "--grpc-addr", &addr]).await;
    stop(server).await;
    let source_arg = source.to_str().unwrap();

    let exported = cli(&[
        "export",
        "--data-dir",
        source_arg,
        "--kinds",
        &kinds,
        file_arg,
    ])
    .await;
    let without_kinds = cli(&["export", "--data-dir", source_arg]).await;
    let import_without_kinds =
        cli(&["import", "--data-dir", target.to_str().unwrap(), file_arg]).await;
    let imported = cli(&[
        "import",
        "--data-dir",
        target.to_str().unwrap(),
        "--kinds",
        &kinds,
        file_arg,
    ])
    .await;
    let restored = serve_with_kinds(&target, &[]).await;
    let read_back = read(&restored, ACCOUNT).await;
    stop(restored).await;

    assert!(exported.status.success(), "{}", stderr(&exported));
    let lines = lines(&file);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let expected = serde_json::json!({
        "resource": KIND,
        "account_sid": ACCOUNT,
        "value": json(&value_of(&written)),
        "revision": written.revision,
        "update_time": written.update_time.as_ref().unwrap().to_string(),
    });
    assert_eq!(lines[0], expected);
    assert_eq!(lines[0]["value"]["quotas"]["calls"], "100", "proto3 JSON");
    assert!(
        exported_online.status.success(),
        "{}",
        stderr(&exported_online)
    );
    assert_eq!(
        std::fs::read_to_string(&online).unwrap(),
        std::fs::read_to_string(&file).unwrap(),
        "the online export writes the same lines"
    );
    assert!(!online_without_kinds.status.success());
    let message = stderr(&online_without_kinds);
    assert!(
        message.contains(KIND) && message.contains("--kinds"),
        "{message}"
    );
    assert!(without_kinds.status.success(), "{}", stderr(&without_kinds));
    let message = stderr(&without_kinds);
    assert!(
        message.contains(KIND) && message.contains("--kinds"),
        "a warning: {message}"
    );
    assert!(
        without_kinds.stdout.is_empty(),
        "no built-in records to write"
    );
    assert!(!import_without_kinds.status.success());
    let message = stderr(&import_without_kinds);
    assert!(
        message.contains("line 1") && message.contains(KIND) && message.contains("--kinds"),
        "{message}"
    );
    assert!(imported.status.success(), "{}", stderr(&imported));
    assert!(read_back.revision > 0);
    assert_eq!(json(&value_of(&read_back)), json(&value_of(&written)));
}

#[tokio::test]
async fn an_online_import_of_declared_lines_loads_them_and_loading_them_again_changes_nothing() {
    let (app, _dir) = serve_kinds().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let value: serde_json::Value = serde_json::from_str(VALUE).unwrap();
    let line = serde_json::json!({"resource": KIND, "account_sid": ACCOUNT, "value": value});
    std::fs::write(file.path(), format!("{line}\n")).unwrap();
    let kinds = kinds_file();
    let addr = app.grpc_addr.to_string();
    let path = file.path().to_str().unwrap();

    let first = cli(&["import", "--grpc-addr", &addr, "--kinds", &kinds, path]).await;
    let loaded = client(&app)
        .await
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();
    let again = cli(&["import", "--grpc-addr", &addr, "--kinds", &kinds, path]).await;
    let without_kinds = cli(&["import", "--grpc-addr", &addr, path]).await;

    assert!(
        stderr(&first).contains("imported 1 records (0 already so)"),
        "{}",
        stderr(&first)
    );
    assert_eq!(json(&value_of(&loaded)), json(&limits(VALUE)));
    assert!(
        stderr(&again).contains("imported 0 records (1 already so)"),
        "{}",
        stderr(&again)
    );
    assert!(!without_kinds.status.success());
    let message = stderr(&without_kinds);
    assert!(
        message.contains(KIND) && message.contains("--kinds"),
        "{message}"
    );
}

#[tokio::test]
async fn a_declared_line_of_the_wrong_shape_fails_the_import_naming_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let kinds = kinds_file();
    let too_big = "x".repeat(70_000);
    let cases = [
        (
            serde_json::json!({"resource": KIND, "account_sid": ACCOUNT, "value": {"nope": 1}}),
            "nope",
        ),
        (
            serde_json::json!({"resource": KIND, "account_sid": ACCOUNT,
                               "value": {"displayName": too_big}}),
            "invalid value: is 70",
        ),
        (
            serde_json::json!({"resource": KIND, "account_sid": ACCOUNT}),
            "value",
        ),
        (
            serde_json::json!({"resource": KIND, "account_sid": ACCOUNT, "value": {},
                               "friendly_name": "x"}),
            "friendly_name",
        ),
        (
            serde_json::json!({"resource": "recording_settings", "account_sid": ACCOUNT,
                               "value": {}}),
            "value",
        ),
        (
            serde_json::json!({"resource": KIND, "account_sid": "AC1", "value": {}}),
            "account_sid",
        ),
    ];
    for (line, named) in cases {
        let file = dir.path().join("in.jsonl");
        let good = serde_json::json!({"resource": KIND, "account_sid": OTHER_ACCOUNT, "value": {}});
        std::fs::write(&file, format!("{good}\n{line}\n")).unwrap();

        let out = cli(&[
            "import",
            "--data-dir",
            data.to_str().unwrap(),
            "--kinds",
            &kinds,
            file.to_str().unwrap(),
        ])
        .await;

        let message = stderr(&out);
        assert!(!out.status.success(), "{line}");
        assert!(message.contains("line 2"), "{line}: {message}");
        assert!(message.contains(named), "{line}: {message}");
    }
    let server = serve_with_kinds(&data, &[]).await;
    assert_eq!(
        read(&server, OTHER_ACCOUNT).await.revision,
        0,
        "nothing imported"
    );
    stop(server).await;
}

#[tokio::test]
async fn serve_seed_loads_a_declared_kinds_line_and_starting_again_with_it_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("fixture.jsonl");
    let value: serde_json::Value = serde_json::from_str(VALUE).unwrap();
    let declared_line =
        serde_json::json!({"resource": KIND, "account_sid": ACCOUNT, "value": value});
    let built_in_line = serde_json::json!({
        "resource": "recording_settings", "account_sid": ACCOUNT, "friendly_name": "seeded",
        "aws_credentials_sid": null, "aws_s3_url": null, "aws_storage_enabled": false,
        "encryption_key_sid": null, "encryption_enabled": false,
    });
    std::fs::write(&seed, format!("{built_in_line}\n{declared_line}\n")).unwrap();
    let data = dir.path().join("data");
    let seed_arg = seed.to_str().unwrap();

    let first = serve_with_kinds(&data, &["--seed", seed_arg]).await;
    let seeded = read(&first, ACCOUNT).await;
    stop(first).await;
    let again = serve_with_kinds(&data, &["--seed", seed_arg]).await;
    let unchanged = read(&again, ACCOUNT).await;
    stop(again).await;
    let without_kinds = finish(
        binary()
            .args(SERVE_ON_PORT_0)
            .arg("--data-dir")
            .arg(dir.path().join("other"))
            .arg("--seed")
            .arg(&seed),
    )
    .await;

    assert_eq!(json(&value_of(&seeded)), json(&limits(VALUE)));
    assert_eq!(unchanged, seeded, "the same seed again writes nothing");
    assert!(!without_kinds.status.success());
    let message = stderr(&without_kinds);
    assert!(
        message.contains("line 2") && message.contains(KIND) && message.contains("--kinds"),
        "{message}"
    );
    assert!(without_kinds.stdout.is_empty(), "it never served");
}

/// A record written before a field was removed (its number reserved since)
/// still carries that field's bytes. An update may not send a field the
/// schema does not define, but a backup of such a record must restore: the
/// import takes it as it was exported.
#[tokio::test]
async fn a_record_carrying_a_removed_fields_bytes_exports_and_imports_after_a_compatible_change() {
    let dir = stopped_with(r#"{"displayName": "Acme", "enforced": true}"#).await;
    let evolved = test_kinds("evolved/compatible/kinds.toml");
    let new = spawn_app_with_kinds(dir.path(), evolved.clone()).await;
    let records = export(&mut admin(new.grpc_addr).await).await;
    let target_dir = tempfile::tempdir().unwrap();
    let target = spawn_app_with_kinds(target_dir.path(), evolved).await;

    let imported = import(&mut admin(target.grpc_addr).await, records.clone()).await;
    let restored = client(&target)
        .await
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();
    let Exported::DeclaredSettings(exported) = &records[0] else {
        panic!("a declared record: {records:?}");
    };

    assert_eq!(imported.unwrap().written, 1);
    assert_eq!(
        restored.value.as_ref().unwrap().value,
        exported.value.as_ref().unwrap().value,
        "restored byte for byte, the removed field's bytes included"
    );
    assert!(
        exported
            .value
            .as_ref()
            .unwrap()
            .value
            .ends_with(&[0x48, 0x01]),
        "field 9 (enforced = true) is still in the stored bytes"
    );
}

/// An offline import that fails (a bad line: nothing is written) leaves the
/// recorded schemas alone, so the server's own kinds file still starts
/// (it would be refused had the import's newer schema been recorded).
#[tokio::test]
async fn a_failed_offline_import_records_no_schema() {
    let dir = stopped_with(r#"{"displayName": "kept"}"#).await;
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not json\n").unwrap();
    let newer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kinds/evolved/compatible/kinds.toml");

    let import = cli(&[
        "import",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--kinds",
        newer.to_str().unwrap(),
        bad.path().to_str().unwrap(),
    ])
    .await;
    let start =
        crate::helpers::start_error_with_kinds(dir.path(), test_kinds("kinds.toml"), false).await;

    assert!(!import.status.success(), "{}", stderr(&import));
    assert!(start.is_none(), "the original kinds still start: {start:?}");
}

/// `settingsd admin reset --resource` and `inject-fault --resource` take
/// a declared kind's name as they take a built-in one (the server checks it).
#[tokio::test]
async fn the_admin_cli_resets_and_injects_faults_into_a_declared_kind_by_name() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    write(&mut grpc, VALUE, None).await;
    let addr = app.grpc_addr.to_string();

    let reset = cli(&["admin", "--grpc-addr", &addr, "reset", "--resource", KIND]).await;
    let unknown = cli(&["admin", "--grpc-addr", &addr, "reset", "--resource", "nope"]).await;
    let after = grpc
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner();

    assert!(reset.status.success(), "{}", stderr(&reset));
    assert_eq!(after.revision, 0, "reset");
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains(KIND),
        "names the kinds: {}",
        stderr(&unknown)
    );

    let fault = cli(&[
        "admin",
        "--grpc-addr",
        &addr,
        "inject-fault",
        "--resource",
        KIND,
        "--method",
        "get",
        "--count",
        "1",
        "--code",
        "14",
    ])
    .await;
    let failed = grpc.get_settings(get_request(KIND, ACCOUNT)).await;
    let then = grpc.get_settings(get_request(KIND, ACCOUNT)).await;

    assert!(fault.status.success(), "{}", stderr(&fault));
    assert_eq!(
        failed.unwrap_err().code(),
        Code::Unavailable,
        "the injected fault"
    );
    assert!(then.is_ok(), "one request only: {then:?}");
}

/// A data directory holding one billing_limits record (`json`), written
/// under tests/kinds/kinds.toml by a server that has stopped since.
async fn stopped_with(json: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("kinds.toml")).await;
    client(&app)
        .await
        .update_settings(update(&limits(json), None))
        .await
        .unwrap();
    app.stop().await.unwrap();
    crate::helpers::wait_until_released(dir.path());
    dir
}
