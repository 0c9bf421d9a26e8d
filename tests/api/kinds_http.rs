//! The JSON HTTP API of every kind: `GET` and `PATCH
//! /v1/accounts/{account_sid}/settings/{kind}` on the HTTP port, with
//! Basic auth, proto3 JSON, ETag, If-Match and If-None-Match.

use reqwest::{header, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    spawn_authenticated_app_with_kinds, test_kinds, TestApp, ACCOUNT, OTHER_ACCOUNT, TOKEN,
};
use crate::kinds::serve_kinds;

fn url(app: &TestApp, account: &str, kind: &str) -> String {
    format!(
        "http://{}/v1/accounts/{account}/settings/{kind}",
        app.http_addr
    )
}

async fn get(app: &TestApp, kind: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url(app, ACCOUNT, kind))
        .send()
        .await
        .unwrap()
}

async fn patch(
    app: &TestApp,
    query: &str,
    body: &str,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .patch(format!("{}{query}", url(app, ACCOUNT, "billing_limits")))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_owned());
    if let Some(etag) = if_match {
        request = request.header(header::IF_MATCH, etag);
    }
    request.send().await.unwrap()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, etag, response.json().await.unwrap())
}

#[tokio::test]
async fn get_of_a_never_set_kind_is_the_empty_value_at_revision_0_with_its_etag() {
    let (app, _dir) = serve_kinds().await;

    let (status, etag, body) = json_of(get(&app, "billing_limits").await).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(etag.as_deref(), Some("\"0\""));
    assert_eq!(
        body,
        json!({
            "kind": "billing_limits",
            "accountSid": ACCOUNT,
            "revision": 0,
            "etag": "\"0\"",
            "updateTime": null,
            "value": {"@type": "type.googleapis.com/acme.billing.v1.BillingLimits"},
        })
    );
}

#[tokio::test]
async fn patch_merges_proto3_json_and_get_reads_it_back_with_the_same_etag() {
    let (app, _dir) = serve_kinds().await;

    let (status, etag, written) = json_of(
        patch(
            &app,
            "",
            r#"{"displayName": "Acme", "plan": "PLAN_PRO", "tiers": [{"name": "gold", "limit": "3"}], "quotas": {"sms": "10"}}"#,
            None,
        )
        .await,
    )
    .await;
    let (_, _, merged) = json_of(patch(&app, "", r#"{"graceDays": 0}"#, None).await).await;
    let (_, read_etag, read) = json_of(get(&app, "billing_limits").await).await;

    assert_eq!(status, StatusCode::OK);
    let revision = written["revision"].as_u64().unwrap();
    assert!(revision > 0);
    assert_eq!(etag, Some(format!("\"{revision}\"")));
    assert_eq!(
        merged["value"],
        json!({
            "@type": "type.googleapis.com/acme.billing.v1.BillingLimits",
            "displayName": "Acme",
            "plan": "PLAN_PRO",
            "tiers": [{"name": "gold", "limit": "3"}],
            "quotas": {"sms": "10"},
            "graceDays": 0,
        }),
        "a merge keeps what it does not send; proto3 optional 0 is present"
    );
    assert_eq!(read, merged);
    assert_eq!(read_etag.as_deref(), merged["etag"].as_str());
}

#[tokio::test]
async fn an_update_mask_sets_and_clears_exactly_its_paths() {
    let (app, _dir) = serve_kinds().await;
    patch(&app, "", r#"{"displayName": "Acme", "monthlyCapCents": "500", "defaultTier": {"name": "a", "limit": "1"}}"#, None).await;

    let (status, _, body) = json_of(
        patch(
            &app,
            "?updateMask=displayName,default_tier.limit",
            r#"{"monthlyCapCents": "999", "defaultTier": {"limit": "7"}}"#,
            None,
        )
        .await,
    )
    .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["value"],
        json!({
            "@type": "type.googleapis.com/acme.billing.v1.BillingLimits",
            "monthlyCapCents": "500",
            "defaultTier": {"name": "a", "limit": "7"},
        }),
        "displayName cleared (in the mask, not in the body), monthlyCapCents kept (not in the mask)"
    );
}

#[tokio::test]
async fn if_match_makes_a_patch_conditional_and_if_none_match_answers_304() {
    let (app, _dir) = serve_kinds().await;
    let (_, first, _) = json_of(patch(&app, "", r#"{"displayName": "one"}"#, None).await).await;
    let first = first.unwrap();

    let (second_status, second, _) =
        json_of(patch(&app, "", r#"{"displayName": "two"}"#, Some(&first)).await).await;
    let stale = patch(&app, "", r#"{"displayName": "three"}"#, Some(&first)).await;
    let stale_status = stale.status();
    let stale_body: Value = stale.json().await.unwrap();
    let not_modified = reqwest::Client::new()
        .get(url(&app, ACCOUNT, "billing_limits"))
        .header(header::IF_NONE_MATCH, second.clone().unwrap())
        .send()
        .await
        .unwrap();
    let (_, _, after) = json_of(get(&app, "billing_limits").await).await;

    assert_eq!(second_status, StatusCode::OK);
    assert_eq!(stale_status, StatusCode::PRECONDITION_FAILED);
    assert!(
        stale_body["message"]
            .as_str()
            .unwrap()
            .contains(second.as_deref().unwrap()),
        "{stale_body}"
    );
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        after["value"]["displayName"], "two",
        "the stale patch changed nothing"
    );
}

#[tokio::test]
async fn bad_input_is_a_400_naming_what_is_wrong_and_changes_nothing() {
    let (app, _dir) = serve_kinds().await;
    patch(&app, "", r#"{"displayName": "kept"}"#, None).await;

    let unknown_field = patch(&app, "", r#"{"displayNam": "x"}"#, None).await;
    let bad_path = patch(&app, "?updateMask=nope", r#"{}"#, None).await;
    let wrong_type = reqwest::Client::new()
        .patch(url(&app, ACCOUNT, "billing_limits"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("displayName=x")
        .send()
        .await
        .unwrap();
    let unknown_kind = get(&app, "nope").await;
    let (_, _, after) = json_of(get(&app, "billing_limits").await).await;

    for (response, names) in [
        (unknown_field, "displayNam"),
        (bad_path, "nope"),
        (wrong_type, "application/json"),
    ] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains(names), "{body}");
    }
    assert_eq!(unknown_kind.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown_kind.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("billing_limits"),
        "lists the kinds: {body}"
    );
    assert_eq!(after["value"]["displayName"], "kept");
}

#[tokio::test]
async fn a_built_in_kind_keeps_its_rules_through_the_json_api() {
    let (app, _dir) = serve_kinds().await;

    let bad = reqwest::Client::new()
        .patch(url(&app, ACCOUNT, "recording_settings"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"friendlyName": "x", "awsS3Url": "not a url"}"#)
        .send()
        .await
        .unwrap();
    let good = reqwest::Client::new()
        .patch(url(&app, ACCOUNT, "recording_settings"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"friendlyName": "through json"}"#)
        .send()
        .await
        .unwrap();
    let typed = app.get(ACCOUNT).await;

    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("aws_s3_url"),
        "{body}"
    );
    let (status, _, good) = json_of(good).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(typed.friendly_name.as_deref(), Some("through json"));
    assert_eq!(good["revision"].as_u64(), Some(typed.revision));
}

#[tokio::test]
async fn basic_auth_decides_the_account_as_on_the_twilio_paths() {
    let app = spawn_authenticated_app_with_kinds(test_kinds("kinds.toml")).await;
    let client = reqwest::Client::new();

    let anonymous = client
        .get(url(&app, ACCOUNT, "billing_limits"))
        .send()
        .await
        .unwrap();
    let own = client
        .patch(url(&app, ACCOUNT, "billing_limits"))
        .basic_auth(ACCOUNT, Some(TOKEN))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"displayName": "mine"}"#)
        .send()
        .await
        .unwrap();
    let other = client
        .get(url(&app, OTHER_ACCOUNT, "billing_limits"))
        .basic_auth(ACCOUNT, Some(TOKEN))
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
}

/// Credentials come first: a caller the service refuses learns neither
/// which kinds exist nor what their fields are, whatever its body says.
#[tokio::test]
async fn a_caller_without_credentials_learns_nothing_from_a_bad_patch() {
    let app = spawn_authenticated_app_with_kinds(test_kinds("kinds.toml")).await;
    let client = reqwest::Client::new();
    let patch = |kind: &str, body: &'static str| {
        client
            .patch(url(&app, ACCOUNT, kind))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
    };

    let bad_field = patch("billing_limits", r#"{"nope": 1}"#)
        .send()
        .await
        .unwrap();
    let unknown_kind = patch("nope", r#"{}"#).send().await.unwrap();
    let own_bad_field = patch("billing_limits", r#"{"nope": 1}"#)
        .basic_auth(ACCOUNT, Some(TOKEN))
        .send()
        .await
        .unwrap();

    for response in [bad_field, unknown_kind] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body = response.text().await.unwrap();
        assert!(!body.contains("nope") && !body.contains("acme"), "{body}");
    }
    assert_eq!(
        own_bad_field.status(),
        StatusCode::BAD_REQUEST,
        "with credentials, the error"
    );
}

/// A standalone bridge has the built-in kinds' schemas only: a declared
/// kind served upstream is a clear 501, not a 500 or a misleading 400.
#[tokio::test]
async fn a_standalone_bridge_answers_501_for_a_declared_kind_and_serves_built_in_ones() {
    let (app, _dir) = serve_kinds().await;
    let bridge = crate::helpers::BinaryServer::start_bridge(app.grpc_addr).await;
    let base = |kind: &str| {
        format!(
            "http://{}/v1/accounts/{ACCOUNT}/settings/{kind}",
            bridge.http_addr
        )
    };
    let client = reqwest::Client::new();

    let get = client.get(base("billing_limits")).send().await.unwrap();
    let patch = client
        .patch(base("billing_limits"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"displayName": "x"}"#)
        .send()
        .await
        .unwrap();
    let built_in = client.get(base("recording_settings")).send().await.unwrap();

    for response in [get, patch] {
        assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("billing_limits"),
            "{body}"
        );
    }
    assert_eq!(built_in.status(), StatusCode::OK);
}
