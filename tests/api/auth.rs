//! Authentication and isolation with an accounts file, over HTTP and gRPC:
//! a caller acts only for its own account.

use serde_json::Value;
use settingsd::pb::GetRecordingSettingsRequest;
use tonic::Code;

use crate::{
    helpers::*,
    http_bridge::{assert_twilio_error, fetch, post},
};

#[tokio::test]
async fn an_auth_token_and_an_api_key_both_act_for_their_account() {
    let app = spawn_authenticated_app().await;

    let created = post(&app.url(), API_KEY, API_SECRET, "FriendlyName=via+key").await;
    let fetched = fetch(&app.url(), ACCOUNT, TOKEN).await;

    assert_eq!(created.status(), 200);
    assert_eq!(fetched.status(), 200);
    let body: Value = fetched.json().await.unwrap();
    assert_eq!(body["account_sid"], ACCOUNT);
    assert_eq!(body["friendly_name"], "via key");
}

#[tokio::test]
async fn wrong_token_unknown_key_and_foreign_sid_with_own_token_are_401() {
    let app = spawn_authenticated_app().await;

    for (user, secret) in [
        (ACCOUNT, "wrong-token"),
        ("SKffffffffffffffffffffffffffffffff", API_SECRET),
        (API_KEY, TOKEN),
        (OTHER_ACCOUNT, TOKEN),
        ("ACcccccccccccccccccccccccccccccccc", TOKEN),
    ] {
        let message = assert_twilio_error(fetch(&app.url(), user, secret).await, 401, 20003).await;
        assert_eq!(message, "Authenticate", "{user}");
        assert_twilio_error(
            post(&app.url(), user, secret, "FriendlyName=x").await,
            401,
            20003,
        )
        .await;
    }
    let stored = app
        .client
        .clone()
        .get_recording_settings(with_auth(get_request(ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.revision, 0, "nothing was written");
}

#[tokio::test]
async fn a_malformed_form_is_401_for_bad_credentials_and_400_for_good_ones() {
    let app = spawn_authenticated_app().await;
    let bad_form = "FriendlyName=x&AwsStorageEnabled=maybe";

    let stranger = post(&app.url(), ACCOUNT, "wrong-token", bad_form).await;
    let owner = post(&app.url(), ACCOUNT, TOKEN, bad_form).await;

    assert_twilio_error(stranger, 401, 20003).await;
    let message = assert_twilio_error(owner, 400, 20001).await;
    assert!(message.contains("AwsStorageEnabled"), "{message}");
}

#[tokio::test]
async fn account_b_can_neither_read_nor_change_a_over_http() {
    let app = spawn_authenticated_app().await;
    post(&app.url(), ACCOUNT, TOKEN, "FriendlyName=secret+of+A").await;

    let b_reads = fetch(&app.url(), OTHER_ACCOUNT, OTHER_TOKEN).await;
    let b_writes = post(
        &app.url(),
        OTHER_ACCOUNT,
        OTHER_TOKEN,
        "FriendlyName=B+was+here",
    )
    .await;

    let b_reads: Value = b_reads.json().await.unwrap();
    assert_eq!(b_reads["account_sid"], OTHER_ACCOUNT);
    assert_eq!(b_reads["friendly_name"], Value::Null);
    assert_eq!(b_writes.status(), 200);
    let a: Value = fetch(&app.url(), ACCOUNT, TOKEN)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["friendly_name"], "secret of A");
}

#[tokio::test]
async fn account_b_can_neither_read_nor_change_a_over_grpc() {
    let app = spawn_authenticated_app().await;
    let mut client = app.client.clone();
    client
        .set_recording_settings(with_auth(set_request(ACCOUNT, "A's"), ACCOUNT, TOKEN))
        .await
        .unwrap();

    let read = client
        .get_recording_settings(with_auth(get_request(ACCOUNT), OTHER_ACCOUNT, OTHER_TOKEN))
        .await
        .unwrap_err();
    let write = client
        .set_recording_settings(with_auth(
            set_request(ACCOUNT, "B's"),
            OTHER_ACCOUNT,
            OTHER_TOKEN,
        ))
        .await
        .unwrap_err();
    let by_key_for_b = client
        .get_recording_settings(with_auth(get_request(OTHER_ACCOUNT), API_KEY, API_SECRET))
        .await
        .unwrap_err();

    assert_eq!(read.code(), Code::PermissionDenied);
    assert_eq!(write.code(), Code::PermissionDenied);
    assert_eq!(by_key_for_b.code(), Code::PermissionDenied);
    let a = client
        .get_recording_settings(with_auth(get_request(ACCOUNT), ACCOUNT, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.friendly_name.as_deref(), Some("A's"));
}

#[tokio::test]
async fn grpc_without_or_with_wrong_credentials_is_unauthenticated() {
    let app = spawn_authenticated_app().await;
    let mut client = app.client.clone();

    let none = client
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .unwrap_err();
    let wrong = client
        .get_recording_settings(with_auth(get_request(ACCOUNT), ACCOUNT, "wrong"))
        .await
        .unwrap_err();

    assert_eq!(none.code(), Code::Unauthenticated);
    assert_eq!(wrong.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_empty_account_sid_over_grpc_means_the_callers_own_account() {
    let app = spawn_authenticated_app().await;
    let mut client = app.client.clone();

    let got = client
        .get_recording_settings(with_auth(
            GetRecordingSettingsRequest::default(),
            API_KEY,
            API_SECRET,
        ))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(got.account_sid, ACCOUNT);
}

#[tokio::test]
async fn open_mode_refuses_a_non_loopback_address_without_allow_open() {
    let dir = tempfile::tempdir().unwrap();

    let out = finish(
        binary()
            .args([
                "serve",
                "--grpc-addr",
                "0.0.0.0:0",
                "--http-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path()),
    )
    .await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
    assert!(stderr.contains("--allow-open"), "{stderr}");
}

#[tokio::test]
async fn the_server_loads_an_accounts_file_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start_with_accounts(dir.path()).await;
    let url = format!("http://{}/v1/RecordingSettings/Default", server.http_addr);

    assert_eq!(fetch(&url, ACCOUNT, TOKEN).await.status(), 200);
    assert_twilio_error(fetch(&url, ACCOUNT, "wrong").await, 401, 20003).await;
    server.signal("TERM");
    assert!(server.wait().await.success());
}

/// The same requests against the in-process bridge and against
/// `settingsd bridge` in front of a separate server answer the same.
#[tokio::test]
async fn the_standalone_bridge_answers_exactly_as_the_in_process_one() {
    let in_process = spawn_authenticated_app().await;
    let upstream = spawn_authenticated_app().await;
    let bridge = BinaryServer::start_bridge(upstream.grpc_addr).await;
    let standalone_url = format!("http://{}/v1/RecordingSettings/Default", bridge.http_addr);
    let mut answers = Vec::new();
    for url in [in_process.url(), standalone_url] {
        let mut seen = Vec::new();
        for response in [
            fetch(&url, ACCOUNT, TOKEN).await,
            post(&url, ACCOUNT, TOKEN, "FriendlyName=My+Settings").await,
            post(
                &url,
                API_KEY,
                API_SECRET,
                &format!("FriendlyName=k&EncryptionKeySid={KEY}&EncryptionEnabled=true"),
            )
            .await,
            post(&url, ACCOUNT, TOKEN, "AwsS3Url=ftp%3A%2F%2Fx").await,
            post(
                &url,
                ACCOUNT,
                TOKEN,
                "FriendlyName=x&AwsS3Url=ftp%3A%2F%2Fx",
            )
            .await,
            post(&url, ACCOUNT, "wrong", "FriendlyName=x").await,
            reqwest::Client::new().get(&url).send().await.unwrap(),
            fetch(
                &url.replace("RecordingSettings/Default", "Nothing"),
                ACCOUNT,
                TOKEN,
            )
            .await,
            reqwest::Client::new().put(&url).send().await.unwrap(),
            fetch(&url, OTHER_ACCOUNT, OTHER_TOKEN).await,
        ] {
            let status = response.status();
            let www = response.headers().get("www-authenticate").cloned();
            let body: Value = response.json().await.unwrap();
            seen.push((status, www, body));
        }
        answers.push(seen);
    }

    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0][2].1, None);
    assert_eq!(answers[0][2].2["encryption_enabled"], true);
}

#[tokio::test]
async fn the_standalone_bridge_answers_503_when_its_upstream_is_down() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let bridge = BinaryServer::start_bridge(closed).await;
    let url = format!("http://{}/v1/RecordingSettings/Default", bridge.http_addr);

    assert_twilio_error(fetch(&url, ACCOUNT, TOKEN).await, 503, 20503).await;
    assert_twilio_error(fetch(&url, ACCOUNT, TOKEN).await, 503, 20503).await;
}
