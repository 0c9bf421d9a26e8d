//! The Twilio-shaped HTTP bridge over real HTTP: routes, form decoding,
//! Twilio error bodies, limits; written once and run for every resource's
//! REST path (see `for_each_resource!`).

use reqwest::{header, Response, StatusCode};
use serde_json::{json, Value};
use settingsd::pb::SetRecordingSettingsRequest;

use crate::helpers::*;

/// Open mode takes any well-formed account SID with any password.
const ANY_PASSWORD: &str = "anything";

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub async fn fetch(app_url: &str, user: &str, secret: &str) -> Response {
    http()
        .get(app_url)
        .basic_auth(user, Some(secret))
        .send()
        .await
        .unwrap()
}

/// POSTs `body` exactly as given, form-encoded, as the helper libraries do.
pub async fn post(app_url: &str, user: &str, secret: &str, body: &str) -> Response {
    http()
        .post(app_url)
        .basic_auth(user, Some(secret))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Asserts a Twilio error body and returns its message.
pub async fn assert_twilio_error(response: Response, status: u16, code: u64) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/json",
        "error bodies are JSON"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["more_info"],
        format!("https://www.twilio.com/docs/errors/{code}"),
        "{body}"
    );
    body["message"].as_str().expect("message").to_owned()
}

async fn json_ok(response: Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    response.json().await.unwrap()
}

for_each_resource! {
#[tokio::test]
async fn get_before_any_post_returns_the_default_resource_with_exactly_eight_fields() {
    let app = spawn_app().await;

    let body = json_ok(fetch(&app.url(), ACCOUNT, ANY_PASSWORD).await).await;

    assert_eq!(
        body,
        json!({
            "account_sid": ACCOUNT,
            "friendly_name": null,
            "aws_credentials_sid": null,
            "aws_s3_url": null,
            "aws_storage_enabled": false,
            "encryption_key_sid": null,
            "encryption_enabled": false,
            "url": TWILIO_URL,
        })
    );
}

#[tokio::test]
async fn post_answers_200_with_the_resource_and_get_and_grpc_read_it_back() {
    let app = spawn_app().await;
    let form = format!(
        "FriendlyName=friendly_name&AwsCredentialsSid={CREDENTIAL}&EncryptionKeySid={KEY}\
         &AwsS3Url=https%3A%2F%2Fmy-super-duper-bucket.s3.amazonaws.com%2Fmy%2Fpath%2F\
         &AwsStorageEnabled=true&EncryptionEnabled=true"
    );

    let created = json_ok(post(&app.url(), ACCOUNT, ANY_PASSWORD, &form).await).await;
    let fetched = json_ok(fetch(&app.url(), ACCOUNT, ANY_PASSWORD).await).await;
    let over_grpc = app.get(ACCOUNT).await;

    // The spec's own create example.
    assert_eq!(
        created,
        json!({
            "account_sid": ACCOUNT,
            "friendly_name": "friendly_name",
            "aws_credentials_sid": CREDENTIAL,
            "encryption_key_sid": KEY,
            "aws_s3_url": S3_URL,
            "aws_storage_enabled": true,
            "encryption_enabled": true,
            "url": TWILIO_URL,
        })
    );
    assert_eq!(fetched, created);
    assert_eq!(over_grpc.friendly_name.as_deref(), Some("friendly_name"));
    assert_eq!(over_grpc.aws_s3_url.as_deref(), Some(S3_URL));
}

#[tokio::test]
async fn plus_and_percent_20_both_decode_as_a_space() {
    let app = spawn_app().await;

    // twilio-python sends `+`, twilio-node `%20`.
    let python = json_ok(
        post(
            &app.url(),
            ACCOUNT,
            ANY_PASSWORD,
            "FriendlyName=My+Settings",
        )
        .await,
    )
    .await;
    let node = json_ok(
        post(
            &app.url(),
            OTHER_ACCOUNT,
            ANY_PASSWORD,
            "FriendlyName=My%20Settings",
        )
        .await,
    )
    .await;

    assert_eq!(python["friendly_name"], "My Settings");
    assert_eq!(node["friendly_name"], "My Settings");
}

#[tokio::test]
async fn booleans_are_accepted_in_any_case() {
    let app = spawn_app().await;

    let body = json_ok(
        post(
            &app.url(),
            ACCOUNT,
            ANY_PASSWORD,
            &format!("FriendlyName=x&EncryptionKeySid={KEY}&EncryptionEnabled=TRUE&AwsStorageEnabled=False"),
        )
        .await,
    )
    .await;

    assert_eq!(body["encryption_enabled"], true);
    assert_eq!(body["aws_storage_enabled"], false);
}

#[tokio::test]
async fn post_without_friendly_name_is_rejected_with_20001() {
    let app = spawn_app().await;

    // What the libraries send for create() with no arguments: an empty body.
    let message = assert_twilio_error(
        post(&app.url(), ACCOUNT, ANY_PASSWORD, "").await,
        400,
        20001,
    )
    .await;

    assert_eq!(
        message,
        "Missing required parameter FriendlyName in the post body"
    );
}

#[tokio::test]
async fn every_invalid_parameter_is_a_400_naming_the_http_parameter_and_changes_nothing() {
    let app = spawn_app().await;
    let before =
        json_ok(post(&app.url(), ACCOUNT, ANY_PASSWORD, "FriendlyName=before").await).await;
    let cases = [
        (
            "FriendlyName=",
            "Missing required parameter FriendlyName in the post body",
        ),
        (
            "FriendlyName=x&AwsS3Url=http%3A%2F%2Fb.example.com%2F",
            "Invalid parameter AwsS3Url: ",
        ),
        (
            "FriendlyName=x&AwsS3Url=https%3A%2F%2Fb.example.com%2Fa%20b",
            "Invalid parameter AwsS3Url: ",
        ),
        (
            "FriendlyName=x&AwsCredentialsSid=CR12",
            "Invalid parameter AwsCredentialsSid: ",
        ),
        (
            "FriendlyName=x&EncryptionKeySid=nope",
            "Invalid parameter EncryptionKeySid: ",
        ),
        (
            "FriendlyName=x&EncryptionEnabled=yes",
            "Invalid parameter EncryptionEnabled: must be true or false",
        ),
        (
            "FriendlyName=x&AwsStorageEnabled=1",
            "Invalid parameter AwsStorageEnabled: must be true or false",
        ),
        (
            "FriendlyName=x&AwsStorageEnabled=",
            "Invalid parameter AwsStorageEnabled: must be true or false",
        ),
        (
            "FriendlyName=x&AwsStorageEnabled=true",
            "Invalid parameter AwsStorageEnabled: cannot be true while AwsS3Url is unset",
        ),
        (
            "FriendlyName=x&EncryptionEnabled=true",
            "Invalid parameter EncryptionEnabled: cannot be true while EncryptionKeySid is unset",
        ),
        (
            "FriendlyName=x&FriendlyName=y",
            "Invalid parameter FriendlyName: given more than once",
        ),
        (
            "FriendlyName=%FF",
            "Invalid parameter FriendlyName: not valid UTF-8",
        ),
    ];

    for (form, expected) in cases {
        let message = assert_twilio_error(
            post(&app.url(), ACCOUNT, ANY_PASSWORD, form).await,
            400,
            20001,
        )
        .await;
        assert!(
            message.starts_with(expected),
            "{form}: {message:?} should start with {expected:?}"
        );
        let after = json_ok(fetch(&app.url(), ACCOUNT, ANY_PASSWORD).await).await;
        assert_eq!(after, before, "{form} changed the stored settings");
    }
    let long_name = format!("FriendlyName={}", "n".repeat(256));
    let message = assert_twilio_error(
        post(&app.url(), ACCOUNT, ANY_PASSWORD, &long_name).await,
        400,
        20001,
    )
    .await;
    assert_eq!(
        message,
        "Invalid parameter FriendlyName: must be at most 255 characters"
    );
}

#[tokio::test]
async fn an_empty_value_clears_the_field() {
    let app = spawn_app().await;
    app.set(SetRecordingSettingsRequest {
        aws_s3_url: Some(S3_URL.into()),
        ..set_request(ACCOUNT, "with url")
    })
    .await;

    let body = json_ok(
        post(
            &app.url(),
            ACCOUNT,
            ANY_PASSWORD,
            "FriendlyName=x&AwsS3Url=",
        )
        .await,
    )
    .await;

    assert_eq!(body["aws_s3_url"], Value::Null);
    assert_eq!(app.get(ACCOUNT).await.aws_s3_url, None);
}

#[tokio::test]
async fn a_non_form_body_is_rejected_with_20001() {
    let app = spawn_app().await;

    let response = http()
        .post(app.url())
        .basic_auth(ACCOUNT, Some(ANY_PASSWORD))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"FriendlyName": "x"}"#)
        .send()
        .await
        .unwrap();

    let message = assert_twilio_error(response, 400, 20001).await;
    assert!(
        message.contains("application/x-www-form-urlencoded"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_path_is_a_twilio_404() {
    let app = spawn_app().await;
    let url = format!("http://{}/v1/RecordingSettings/Other", app.http_addr);

    let message = assert_twilio_error(fetch(&url, ACCOUNT, ANY_PASSWORD).await, 404, 20404).await;

    assert!(message.contains("/v1/RecordingSettings/Other"), "{message}");
}

#[tokio::test]
async fn a_wrong_method_is_a_twilio_405_with_allow() {
    let app = spawn_app().await;

    let response = http()
        .delete(app.url())
        .basic_auth(ACCOUNT, Some(ANY_PASSWORD))
        .send()
        .await
        .unwrap();

    let allow = response.headers()[header::ALLOW]
        .to_str()
        .unwrap()
        .to_owned();
    assert_twilio_error(response, 405, 20004).await;
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let huge = format!(
        "FriendlyName=x&Padding={}",
        "a".repeat(settingsd::bridge::MAX_BODY_BYTES)
    );

    let response = post(&app.url(), ACCOUNT, ANY_PASSWORD, &huge).await;

    let message = assert_twilio_error(response, 413, 20001).await;
    assert!(
        message.contains(&settingsd::bridge::MAX_BODY_BYTES.to_string()),
        "{message}"
    );
    let after = json_ok(fetch(&app.url(), ACCOUNT, ANY_PASSWORD).await).await;
    assert_eq!(
        after["friendly_name"],
        Value::Null,
        "the rejected POST changed nothing"
    );
}

#[tokio::test]
async fn no_credentials_is_a_401_with_www_authenticate() {
    let app = spawn_app().await;

    let response = http().get(app.url()).send().await.unwrap();

    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    let message = assert_twilio_error(response, 401, 20003).await;
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert_eq!(message, "Authentication Error - No credentials provided");
}

#[tokio::test]
async fn open_mode_does_not_know_api_keys_or_malformed_account_sids() {
    let app = spawn_app().await;

    assert_twilio_error(fetch(&app.url(), API_KEY, API_SECRET).await, 401, 20003).await;
    assert_twilio_error(fetch(&app.url(), "AC123", ANY_PASSWORD).await, 401, 20003).await;
}
}
