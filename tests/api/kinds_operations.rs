//! Declared kinds across accounts, over time and as operators meet them:
//! isolation between accounts and kinds; watch, history and rollback of a
//! declared kind; grpcurl through reflection; restarts with an
//! evolved schema (compatible, incompatible, forced); and the kinds file
//! through the real binary (`serve --kinds`), whose every mistake stops the
//! start naming the file and line or the kind.

use std::path::{Path, PathBuf};

use prost_reflect::ReflectMessage;
use serde_json::json;
use settingsd::pb::{self, settings_service_client::SettingsServiceClient};
use tonic::{transport::Channel, Code, Streaming};

use crate::{
    helpers::{
        binary, cli, finish, run_grpcurl, spawn_app_with_kinds, spawn_authenticated_app_with_kinds,
        start_error_with_kinds, test_kinds, wait_until_released, with_auth, BinaryServer, GUARD,
        OTHER_ACCOUNT, OTHER_TOKEN, SERVE_ON_PORT_0, TOKEN,
    },
    kinds::{
        bytes_of, client, decoded, from_json, get_request, json_of, limits, message_type, read,
        serve_kinds, update, update_of, value_of, write, ACCOUNT, FULL, KIND,
    },
};

/// A kinds file under `tests/kinds`, as an absolute path.
fn kinds_file(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kinds")
        .join(file)
}

// --- Isolation ------------------------------------------------------------

#[tokio::test]
async fn an_account_can_neither_read_nor_update_another_accounts_declared_settings() {
    let app = spawn_authenticated_app_with_kinds(test_kinds("kinds.toml")).await;
    let mut grpc = client(&app).await;
    let secret = limits(r#"{"displayName": "A's secret"}"#);

    // "" is the caller's own account.
    let own = grpc
        .update_settings(with_auth(update_of("", &secret), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();
    let own_read = grpc
        .get_settings(with_auth(get_request(KIND, ""), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();
    let b_reads_a = grpc
        .get_settings(with_auth(
            get_request(KIND, ACCOUNT),
            OTHER_ACCOUNT,
            OTHER_TOKEN,
        ))
        .await
        .unwrap_err();
    let b_writes_a = grpc
        .update_settings(with_auth(
            update_of(ACCOUNT, &limits(r#"{"displayName": "B was here"}"#)),
            OTHER_ACCOUNT,
            OTHER_TOKEN,
        ))
        .await
        .unwrap_err();
    let a_reads_b = grpc
        .get_settings(with_auth(get_request(KIND, OTHER_ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap_err();
    let b_own = grpc
        .get_settings(with_auth(get_request(KIND, ""), OTHER_ACCOUNT, OTHER_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let a_after = grpc
        .get_settings(with_auth(get_request(KIND, ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(own.account_sid, ACCOUNT);
    assert_eq!(own_read, own);
    for (what, status) in [
        ("B reads A", &b_reads_a),
        ("B updates A", &b_writes_a),
        ("A reads B", &a_reads_b),
    ] {
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    }
    assert_eq!(b_own.account_sid, OTHER_ACCOUNT);
    assert_eq!(b_own.revision, 0, "A's write is not in B's read");
    assert!(bytes_of(&b_own).is_empty());
    assert_eq!(a_after, own, "B's refused update changed nothing");
}

#[tokio::test]
async fn without_credentials_every_generic_rpc_is_unauthenticated() {
    let app = spawn_authenticated_app_with_kinds(test_kinds("kinds.toml")).await;
    let mut grpc = client(&app).await;

    let list = grpc.list_kinds(pb::ListKindsRequest {}).await.unwrap_err();
    let get = grpc
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap_err();
    let update = grpc
        .update_settings(update_of(ACCOUNT, &limits(r#"{"displayName": "x"}"#)))
        .await
        .unwrap_err();
    let watch = grpc
        .watch_settings(pb::WatchSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
            start_revision: 0,
        })
        .await
        .expect_err("the watch is refused");
    let history = grpc
        .list_settings_revisions(pb::ListSettingsRevisionsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let rollback = grpc
        .rollback_settings(pb::RollbackSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
            revision: 1,
            etag: String::new(),
        })
        .await
        .unwrap_err();
    let wrong = grpc
        .get_settings(with_auth(
            get_request(KIND, ACCOUNT),
            ACCOUNT,
            "wrong token",
        ))
        .await
        .unwrap_err();
    let stored = grpc
        .get_settings(with_auth(get_request(KIND, ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();

    for (what, status) in [
        ("ListKinds", list),
        ("GetSettings", get),
        ("UpdateSettings", update),
        ("WatchSettings", watch),
        ("ListSettingsRevisions", history),
        ("RollbackSettings", rollback),
        ("a wrong token", wrong),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    assert_eq!(stored.revision, 0, "nothing was written");
}

/// Kinds are told only to callers the server knows (as ListKinds does):
/// a caller without valid credentials learns nothing from a kind's name.
#[tokio::test]
async fn an_unknown_kind_without_credentials_is_unauthenticated_and_names_no_kinds() {
    let app = spawn_authenticated_app_with_kinds(test_kinds("kinds.toml")).await;
    let mut grpc = client(&app).await;

    let get = grpc
        .get_settings(get_request("no_such_kind", ACCOUNT))
        .await
        .unwrap_err();
    let mut request = update_of(ACCOUNT, &limits(r#"{"displayName": "x"}"#));
    request.settings.as_mut().unwrap().kind = "no_such_kind".into();
    let update = grpc
        .update_settings(with_auth(request, ACCOUNT, "wrong token"))
        .await
        .unwrap_err();

    for (what, status) in [("GetSettings", get), ("UpdateSettings", update)] {
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            !status.message().contains(KIND),
            "{what}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn writing_one_kind_leaves_the_accounts_other_kinds_unset() {
    let app = spawn_authenticated_app_with_kinds(test_kinds("kinds.toml")).await;
    let mut grpc = client(&app).await;

    let written = grpc
        .update_settings(with_auth(update_of(ACCOUNT, &limits(FULL)), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();
    let mut others = Vec::new();
    for kind in [
        "feature_flags",
        "recording_settings",
        "composition_settings",
    ] {
        let settings = grpc
            .get_settings(with_auth(get_request(kind, ACCOUNT), ACCOUNT, TOKEN))
            .await
            .unwrap()
            .into_inner();
        others.push((kind, settings));
    }

    assert!(written.revision > 0);
    for (kind, settings) in others {
        assert_eq!(settings.kind, kind);
        assert_eq!(settings.revision, 0, "{kind}: {settings:?}");
        assert_eq!(settings.update_time, None, "{kind}");
    }
}

// --- Watch, history, rollback -------------------------------------------

/// The next message of a watch, within [`GUARD`].
async fn next(stream: &mut Streaming<pb::SettingsChange>) -> pb::SettingsChange {
    tokio::time::timeout(GUARD, stream.message())
        .await
        .expect("a watch message within the guard")
        .expect("a watch message, not an error")
        .expect("the watch stream is open")
}

/// The next change of a watch, skipping progress messages.
async fn next_settings(stream: &mut Streaming<pb::SettingsChange>) -> pb::Settings {
    loop {
        let change = next(stream).await;
        if let Some(settings) = change.settings {
            assert_eq!(change.revision, settings.revision);
            assert!(!change.progress);
            return settings;
        }
        assert!(change.progress, "{change:?}");
    }
}

async fn watch(
    grpc: &mut SettingsServiceClient<Channel>,
    start_revision: u64,
) -> Streaming<pb::SettingsChange> {
    grpc.watch_settings(pb::WatchSettingsRequest {
        kind: KIND.into(),
        account_sid: ACCOUNT.into(),
        start_revision,
    })
    .await
    .unwrap()
    .into_inner()
}

#[tokio::test]
async fn a_watch_from_zero_sends_the_state_then_progress_then_each_change_of_the_account_and_kind()
{
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let current = write(&mut grpc, r#"{"displayName": "current"}"#, None).await;

    let mut stream = watch(&mut grpc, 0).await;
    let state = next(&mut stream).await;
    let progress = next(&mut stream).await;
    let second = write(&mut grpc, r#"{"monthlyCapCents": "2"}"#, None).await;
    grpc.update_settings(update_of(
        OTHER_ACCOUNT,
        &limits(r#"{"displayName": "other"}"#),
    ))
    .await
    .unwrap();
    let mut flags = update(
        &from_json(
            message_type("kinds.toml", "feature_flags"),
            r#"{"flags": {"beta": true}}"#,
        ),
        None,
    );
    flags.settings.as_mut().unwrap().kind = "feature_flags".into();
    grpc.update_settings(flags).await.unwrap();
    let third = write(&mut grpc, r#"{"tags": ["t"]}"#, Some(&["tags"])).await;

    assert_eq!(state.revision, current.revision);
    assert_eq!(state.settings.as_ref(), Some(&current));
    assert!(progress.progress && progress.settings.is_none());
    assert!(progress.revision >= current.revision);
    assert_eq!(next_settings(&mut stream).await, second);
    assert_eq!(
        next_settings(&mut stream).await,
        third,
        "another account's and another kind's changes are not sent"
    );
    assert!(second.revision < third.revision);
    assert_eq!(
        json_of(&third),
        json!({"displayName": "current", "monthlyCapCents": "2", "tags": ["t"]})
    );
}

#[tokio::test]
async fn a_resumed_watch_replays_every_change_from_its_revision_then_live_ones() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let mut written = Vec::new();
    for cap in 1..=4 {
        written.push(
            write(
                &mut grpc,
                &format!(r#"{{"monthlyCapCents": "{cap}"}}"#),
                None,
            )
            .await,
        );
    }

    let mut stream = watch(&mut grpc, written[1].revision).await;

    for expected in &written[1..] {
        assert_eq!(&next_settings(&mut stream).await, expected);
    }
    let live = write(&mut grpc, r#"{"displayName": "live"}"#, None).await;
    assert_eq!(next_settings(&mut stream).await, live);
}

fn history_request(
    account: &str,
    page_size: i32,
    page_token: &str,
) -> pb::ListSettingsRevisionsRequest {
    pb::ListSettingsRevisionsRequest {
        kind: KIND.into(),
        account_sid: account.into(),
        page_size,
        page_token: page_token.into(),
    }
}

#[tokio::test]
async fn history_lists_past_states_newest_first_in_pages() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let mut written = Vec::new();
    for cap in 1..=5 {
        written.push(
            write(
                &mut grpc,
                &format!(r#"{{"monthlyCapCents": "{cap}"}}"#),
                None,
            )
            .await,
        );
        grpc.update_settings(update_of(
            OTHER_ACCOUNT,
            &limits(r#"{"displayName": "other"}"#),
        ))
        .await
        .unwrap();
    }
    written.reverse();
    let page = |token: String| {
        let mut grpc = grpc.clone();
        async move {
            grpc.list_settings_revisions(history_request(ACCOUNT, 2, &token))
                .await
                .unwrap()
                .into_inner()
        }
    };

    let first = page(String::new()).await;
    let second = page(first.next_page_token.clone()).await;
    let third = page(second.next_page_token.clone()).await;
    let all = grpc
        .list_settings_revisions(history_request(ACCOUNT, 0, ""))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(first.revisions, written[0..2]);
    assert_eq!(second.revisions, written[2..4]);
    assert_eq!(third.revisions, written[4..]);
    assert_eq!(third.next_page_token, "");
    assert_eq!(all.revisions, written, "the default page holds them all");
    assert_eq!(all.next_page_token, "");
}

#[tokio::test]
async fn rollback_writes_a_new_revision_equal_to_the_past_state() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let good = write(&mut grpc, FULL, None).await;
    let bad = write(
        &mut grpc,
        r#"{"displayName": "bad", "tiers": [{"name": "oops"}]}"#,
        Some(&["*"]),
    )
    .await;
    let mut watcher = watch(&mut grpc, bad.revision + 1).await;

    let restored = grpc
        .rollback_settings(pb::RollbackSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
            revision: good.revision,
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    assert!(
        restored.revision > bad.revision,
        "a rollback is a new revision"
    );
    assert_eq!(bytes_of(&restored), bytes_of(&good));
    assert_eq!(restored.etag, format!("\"{}\"", restored.revision));
    assert_eq!(read(&mut grpc).await, restored);
    assert_eq!(next_settings(&mut watcher).await, restored);
    let history = grpc
        .list_settings_revisions(history_request(ACCOUNT, 3, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.revisions, [restored, bad, good]);
}

#[tokio::test]
async fn rollback_to_a_revision_not_in_the_accounts_history_is_not_found_and_changes_nothing() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let other = grpc
        .update_settings(update_of(
            OTHER_ACCOUNT,
            &limits(r#"{"displayName": "other"}"#),
        ))
        .await
        .unwrap()
        .into_inner();
    let own = write(&mut grpc, r#"{"displayName": "own"}"#, None).await;
    let rollback = |revision: u64| {
        let mut grpc = grpc.clone();
        async move {
            grpc.rollback_settings(pb::RollbackSettingsRequest {
                kind: KIND.into(),
                account_sid: ACCOUNT.into(),
                revision,
                etag: String::new(),
            })
            .await
            .unwrap_err()
        }
    };

    let unknown = rollback(own.revision + 1000).await;
    let foreign = rollback(other.revision).await;

    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    assert!(
        unknown
            .message()
            .contains(&(own.revision + 1000).to_string()),
        "{}",
        unknown.message()
    );
    assert_eq!(
        foreign.code(),
        Code::NotFound,
        "another account's revision: {foreign:?}"
    );
    assert_eq!(read(&mut grpc).await, own, "nothing changed");
}

// --- grpcurl --------------------------------------------------------------

#[tokio::test]
async fn grpcurl_lists_describes_and_updates_a_declared_kind_with_json_through_reflection() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("kinds.toml")).await;
    let addr = app.grpc_addr.to_string();
    let body = json!({
        "settings": {
            "kind": KIND,
            "account_sid": ACCOUNT,
            "value": {
                "@type": "type.googleapis.com/acme.billing.v1.BillingLimits",
                "displayName": "from grpcurl",
                "monthlyCapCents": "4200",
                "plan": "PLAN_PRO",
                "quotas": {"sms": "3"}
            }
        }
    })
    .to_string();

    let list = run_grpcurl(&[&addr, "list"]).await;
    let describe = run_grpcurl(&[&addr, "describe", "acme.billing.v1.BillingLimits"]).await;
    let updated = run_grpcurl(&[
        "-d",
        &body,
        &addr,
        "settingsd.v1.SettingsService/UpdateSettings",
    ])
    .await;
    let got = run_grpcurl(&[
        "-d",
        &format!(r#"{{"kind": "{KIND}", "account_sid": "{ACCOUNT}"}}"#),
        &addr,
        "settingsd.v1.SettingsService/GetSettings",
    ])
    .await;
    let stored = client(&app)
        .await
        .get_settings(pb::GetSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert!(list.contains("settingsd.v1.SettingsService"), "{list}");
    for field in [
        "display_name",
        "monthly_cap_cents",
        "grace_days",
        "default_tier",
        "tiers",
        "quotas",
        "enforced",
    ] {
        assert!(describe.contains(field), "{field}: {describe}");
    }
    let updated: serde_json::Value = serde_json::from_str(&updated).unwrap();
    let got: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(got, updated);
    assert_eq!(got["kind"], KIND);
    assert_eq!(got["accountSid"], ACCOUNT);
    assert_eq!(got["revision"], stored.revision.to_string());
    assert_eq!(
        got["value"],
        json!({
            "@type": "type.googleapis.com/acme.billing.v1.BillingLimits",
            "displayName": "from grpcurl",
            "monthlyCapCents": "4200",
            "plan": "PLAN_PRO",
            "quotas": {"sms": "3"}
        })
    );
    assert_eq!(
        serde_json::to_value(value_of(&stored)).unwrap(),
        json!({
            "displayName": "from grpcurl",
            "monthlyCapCents": "4200",
            "plan": "PLAN_PRO",
            "quotas": {"sms": "3"}
        }),
        "what grpcurl wrote is what a gRPC client reads"
    );
}

// --- Schema evolution across restarts ---------------------------------------

/// Writes a `BillingLimits` record of every field shape on `dir` with the
/// original schema, and stops the server; returns the answer.
async fn write_with_the_original_schema(dir: &Path) -> pb::Settings {
    let app = spawn_app_with_kinds(dir, test_kinds("kinds.toml")).await;
    let written = client(&app)
        .await
        .update_settings(update(
            &limits(
                r#"{"displayName": "Acme", "monthlyCapCents": "7", "graceDays": 0,
                    "plan": "PLAN_PRO", "tiers": [{"name": "a", "limit": "1"}],
                    "enforced": true}"#,
            ),
            None,
        ))
        .await
        .unwrap()
        .into_inner();
    app.stop().await.unwrap();
    wait_until_released(dir);
    written
}

#[tokio::test]
async fn after_a_compatible_schema_change_a_stored_record_reads_under_the_new_names() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_with_the_original_schema(dir.path()).await;
    let evolved = message_type("evolved/compatible/kinds.toml", KIND);

    let app = spawn_app_with_kinds(dir.path(), test_kinds("evolved/compatible/kinds.toml")).await;
    let mut grpc = client(&app).await;
    let read = grpc
        .get_settings(pb::GetSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let updated = grpc
        .update_settings(update(
            &from_json(evolved.clone(), r#"{"currency": "EUR"}"#),
            None,
        ))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(read.revision, written.revision, "the same record");
    let value = decoded(&read, evolved.clone());
    assert_eq!(
        value.get_field_by_name("label").unwrap().as_str(),
        Some("Acme"),
        "the renamed field keeps its value"
    );
    assert!(value.descriptor().get_field_by_name("enforced").is_none());
    assert!(
        !value.has_field_by_name("currency"),
        "the added field is empty"
    );
    assert_eq!(
        serde_json::to_value(&value).unwrap(),
        json!({
            "label": "Acme", "monthlyCapCents": "7", "graceDays": 0,
            "plan": "PLAN_PRO", "tiers": [{"name": "a", "limit": "1"}]
        }),
        "the removed field is gone"
    );
    assert_eq!(
        serde_json::to_value(decoded(&updated, evolved)).unwrap(),
        json!({
            "label": "Acme", "monthlyCapCents": "7", "graceDays": 0,
            "plan": "PLAN_PRO", "tiers": [{"name": "a", "limit": "1"}],
            "currency": "EUR"
        }),
        "the new field is written and merged with the stored record"
    );
}

#[tokio::test]
async fn an_incompatible_schema_change_stops_the_start_naming_kind_and_field() {
    let dir = tempfile::tempdir().unwrap();
    write_with_the_original_schema(dir.path()).await;

    let refused = start_error_with_kinds(
        dir.path(),
        test_kinds("evolved/incompatible/kinds.toml"),
        false,
    )
    .await
    .expect("the start is refused");
    wait_until_released(dir.path());
    let compatible = start_error_with_kinds(
        dir.path(),
        test_kinds("evolved/compatible/kinds.toml"),
        false,
    )
    .await;

    let refused = format!("{refused:#}");
    assert!(refused.contains("billing_limits"), "{refused}");
    assert!(refused.contains("monthly_cap_cents"), "{refused}");
    assert!(
        refused.contains("--allow-incompatible-kinds"),
        "says how to serve it anyway: {refused}"
    );
    assert!(compatible.is_none(), "{compatible:?}");
}

#[tokio::test]
async fn an_incompatible_schema_change_starts_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    write_with_the_original_schema(dir.path()).await;

    let allowed = start_error_with_kinds(
        dir.path(),
        test_kinds("evolved/incompatible/kinds.toml"),
        true,
    )
    .await;

    assert!(allowed.is_none(), "{allowed:?}");
}

// --- The kinds file through the binary ------------------------------------

const PROTO: &str = r#"syntax = "proto3";
package acme.v1;
message Limits {
  string name = 1;
}
"#;

/// `settingsd serve --kinds` on a kinds file `toml` next to a `schemas/`
/// directory holding `acme/v1/limits.proto` with `proto`; returns the kinds
/// file's path, the exit status and stderr.
async fn serve_with_kinds_file(toml: &str, proto: &str) -> (String, bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas/acme/v1");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(schemas.join("limits.proto"), proto).unwrap();
    let path = dir.path().join("kinds.toml");
    std::fs::write(&path, toml).unwrap();
    let data = dir.path().join("data");
    let path = path.to_str().unwrap().to_owned();
    let mut args = SERVE_ON_PORT_0.to_vec();
    args.extend(["--data-dir", data.to_str().unwrap(), "--kinds", &path]);
    let out = cli(&args).await;
    (
        path,
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HEADER: &str = "proto_path = [\"schemas\"]\nfiles = [\"acme/v1/limits.proto\"]\n";

#[tokio::test]
async fn a_kinds_file_with_a_toml_syntax_error_stops_serve_naming_file_and_line() {
    let toml = format!("{HEADER}\n[[kinds]\nname = \"limits\"\nmessage = \"acme.v1.Limits\"\n");

    let (path, ok, stderr) = serve_with_kinds_file(&toml, PROTO).await;

    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&format!("{path}:4:")), "{stderr}");
}

#[tokio::test]
async fn a_kinds_file_naming_an_unknown_message_stops_serve_naming_file_line_and_kind() {
    let toml = format!("{HEADER}\n[[kinds]]\nname = \"limits\"\nmessage = \"acme.v1.Limit\"\n");

    let (path, ok, stderr) = serve_with_kinds_file(&toml, PROTO).await;

    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&format!("{path}:6:")), "{stderr}");
    assert!(stderr.contains("limits"), "{stderr}");
    assert!(stderr.contains("acme.v1.Limit\""), "{stderr}");
    assert!(
        stderr.contains("acme.v1.Limits"),
        "suggests the message there is: {stderr}"
    );
}

#[tokio::test]
async fn a_kinds_file_declaring_a_name_twice_stops_serve_naming_file_line_and_kind() {
    let toml = format!(
        "{HEADER}\n[[kinds]]\nname = \"limits\"\nmessage = \"acme.v1.Limits\"\n\n\
         [[kinds]]\nname = \"limits\"\nmessage = \"acme.v1.Limits\"\n"
    );

    let (path, ok, stderr) = serve_with_kinds_file(&toml, PROTO).await;

    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&format!("{path}:9:")), "{stderr}");
    assert!(stderr.contains("limits"), "{stderr}");
    assert!(stderr.contains("already declared"), "{stderr}");
}

#[tokio::test]
async fn a_kinds_file_whose_proto_does_not_compile_stops_serve_naming_both_files_and_the_line() {
    let toml = format!("{HEADER}\n[[kinds]]\nname = \"limits\"\nmessage = \"acme.v1.Limits\"\n");
    let broken = "syntax = \"proto3\";\npackage acme.v1;\nmessage Limits {\n  string name = 1\n}\n";

    let (path, ok, stderr) = serve_with_kinds_file(&toml, broken).await;

    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("acme/v1/limits.proto:5:"), "{stderr}");
}

#[tokio::test]
async fn serve_help_documents_the_kinds_flags() {
    let out = cli(&["serve", "--help"]).await;

    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(help.contains("--kinds <FILE>"), "{help}");
    assert!(help.contains("--allow-incompatible-kinds"), "{help}");
}

#[tokio::test]
async fn the_binary_serves_a_kinds_file_and_refuses_an_incompatible_restart_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let original = kinds_file("kinds.toml");
    let incompatible = kinds_file("evolved/incompatible/kinds.toml");
    let (original, incompatible) = (original.to_str().unwrap(), incompatible.to_str().unwrap());
    let new_type = message_type("evolved/incompatible/kinds.toml", KIND);
    let mut server = BinaryServer::start_with(dir.path(), &["--kinds", original]).await;
    let mut grpc = SettingsServiceClient::new(crate::helpers::channel(server.grpc_addr).await);
    let kinds = grpc
        .list_kinds(pb::ListKindsRequest {})
        .await
        .unwrap()
        .into_inner();
    grpc.update_settings(update(&limits(r#"{"monthlyCapCents": "7"}"#), None))
        .await
        .unwrap();
    server.signal("TERM");
    assert!(server.wait().await.success());

    let mut refused = binary();
    refused
        .args(SERVE_ON_PORT_0)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--kinds", incompatible]);
    let refused = finish(&mut refused).await;
    let mut allowed = BinaryServer::start_with(
        dir.path(),
        &["--kinds", incompatible, "--allow-incompatible-kinds"],
    )
    .await;
    let mut request = update(
        &from_json(new_type.clone(), r#"{"monthlyCapCents": "seven"}"#),
        None,
    );
    request.settings.as_mut().unwrap().account_sid = OTHER_ACCOUNT.into();
    let written = SettingsServiceClient::new(crate::helpers::channel(allowed.grpc_addr).await)
        .update_settings(request)
        .await
        .unwrap()
        .into_inner();
    allowed.signal("TERM");
    let allowed = allowed.wait().await;

    let names: Vec<_> = kinds.kinds.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "recording_settings",
            "composition_settings",
            "billing_limits",
            "feature_flags"
        ]
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("billing_limits"), "{stderr}");
    assert!(stderr.contains("monthly_cap_cents"), "{stderr}");
    assert!(allowed.success(), "{allowed:?}");
    assert_eq!(
        decoded(&written, new_type)
            .get_field_by_name("monthly_cap_cents")
            .unwrap()
            .as_str(),
        Some("seven"),
        "the new schema is served"
    );
}

/// The emulator's controls name a declared kind as they name a built-in
/// resource: a reset of that kind only, a fault on its Get only.
#[tokio::test]
async fn reset_and_fault_injection_name_a_declared_kind() {
    use settingsd::pb::admin_service_client::AdminServiceClient;
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let mut admin = AdminServiceClient::new(crate::helpers::channel(app.grpc_addr).await);
    write(&mut grpc, FULL, None).await;
    let recording = app.set(crate::helpers::set_request(ACCOUNT, "kept")).await;

    let reset = admin
        .reset_settings(pb::ResetSettingsRequest {
            account_sid: String::new(),
            resource: KIND.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let after_reset = read(&mut grpc).await;
    admin
        .inject_fault(pb::InjectFaultRequest {
            resource: KIND.into(),
            method: "get".into(),
            grpc_code: Code::Unavailable as i32,
            count: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let faulted = grpc
        .get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap_err();
    let unknown = admin
        .reset_settings(pb::ResetSettingsRequest {
            account_sid: String::new(),
            resource: "nope".into(),
        })
        .await
        .unwrap_err();

    assert_eq!(reset.reset_count, 1, "{reset:?}");
    assert_eq!(after_reset.revision, 0, "reset to the empty message");
    assert_eq!(
        app.get(ACCOUNT).await,
        recording,
        "another resource is left alone"
    );
    assert_eq!(faulted.code(), Code::Unavailable, "{faulted:?}");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains(KIND),
        "lists the kinds: {}",
        unknown.message()
    );
}

/// A schema is recorded only over the one it was checked against: two
/// front ends of one store starting at once with different kinds files
/// cannot both pass against the same old schema (the second is told to
/// start again, and is then checked against the first's).
#[tokio::test]
async fn a_schema_is_recorded_only_over_the_one_it_was_checked_against() {
    let dir = tempfile::tempdir().unwrap();
    let kind = settingsd::resource::Resource::declared(KIND);
    let options = settingsd::store::sled::StoreOptions {
        declared: vec![kind],
        ..settingsd::store::sled::StoreOptions::new(dir.path())
    };
    let store = crate::helpers::open_store(options).await;

    let first = store.put_schema(kind, None, b"v1".to_vec()).await;
    let racing = store.put_schema(kind, None, b"v2".to_vec()).await;
    let after_check = store
        .put_schema(kind, Some(b"v1".to_vec()), b"v3".to_vec())
        .await;
    let stored = store.schema(kind).await.unwrap();
    store.close().await.unwrap();

    assert!(first.is_ok(), "{first:?}");
    let racing = racing.unwrap_err();
    assert!(
        matches!(&racing, settingsd::Error::Unavailable(m) if m.contains(KIND) && m.contains("start again")),
        "{racing:?}"
    );
    assert!(after_check.is_ok(), "{after_check:?}");
    assert_eq!(stored.as_deref(), Some(&b"v3"[..]));
}
