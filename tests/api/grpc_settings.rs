//! The settings RPCs of every resource: defaults, merge, clear, validation,
//! restarts and concurrency, written once and run for each resource and a
//! declared kind (see `for_each_kind!`), and the independence of the
//! resources.

use std::collections::HashMap;

use settingsd::pb::SetRecordingSettingsRequest;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

#[tokio::test]
async fn setting_one_resource_never_changes_another() {
    let app = spawn_app().await;
    let recording = app.for_resource(Resource::Recording);
    let stored = recording.set(full_set_request(ACCOUNT)).await;
    let composition = recording.for_resource(Resource::Composition);

    let untouched = composition.get(ACCOUNT).await;
    let other = composition.set(set_request(ACCOUNT, "compositions")).await;
    let recording = composition.for_resource(Resource::Recording);
    let still = recording.get(ACCOUNT).await;

    assert_eq!(
        untouched.revision, 0,
        "the composition resource was never set"
    );
    assert_eq!(untouched.friendly_name, None);
    assert_eq!(untouched.url, COMPOSITION_URL);
    assert!(!other.aws_storage_enabled && other.aws_s3_url.is_none());
    assert!(other.revision > stored.revision, "revisions are store-wide");
    assert_eq!(still, stored, "the composition Set left recording alone");
}

for_each_kind! {

#[tokio::test]
async fn get_before_any_set_returns_the_default_resource() {
    let app = spawn_app().await;

    let got = app.get(ACCOUNT).await;

    assert_eq!(
        got,
        SettingsMessage {
            account_sid: ACCOUNT.into(),
            url: TWILIO_URL.into(),
            etag: "\"0\"".into(),
            ..Default::default()
        }
    );
}

#[tokio::test]
async fn set_then_get_returns_the_merged_values() {
    let app = spawn_app().await;
    let first = app.set(full_set_request(ACCOUNT)).await;

    let second = app.set(set_request(ACCOUNT, "renamed")).await;
    let got = app.get(ACCOUNT).await;

    assert!(first.revision > 0 && first.update_time.is_some());
    assert!(second.revision > first.revision);
    assert_eq!(got, second);
    assert_eq!(got.friendly_name.as_deref(), Some("renamed"));
    assert_eq!(got.aws_credentials_sid.as_deref(), Some(CREDENTIAL));
    assert_eq!(got.aws_s3_url.as_deref(), Some(S3_URL));
    assert_eq!(got.encryption_key_sid.as_deref(), Some(KEY));
    assert!(got.aws_storage_enabled && got.encryption_enabled);
    assert_eq!(got.url, TWILIO_URL);
}

#[tokio::test]
async fn a_field_sent_empty_is_cleared() {
    let app = spawn_app().await;
    app.set(full_set_request(ACCOUNT)).await;

    let cleared = app
        .set(SetRecordingSettingsRequest {
            encryption_enabled: Some(false),
            encryption_key_sid: Some(String::new()),
            ..set_request(ACCOUNT, "no encryption")
        })
        .await;
    let got = app.get(ACCOUNT).await;

    assert_eq!(got, cleared);
    assert_eq!(got.encryption_key_sid, None);
    assert!(!got.encryption_enabled);
    assert_eq!(got.aws_credentials_sid.as_deref(), Some(CREDENTIAL));
}

#[tokio::test]
async fn accounts_do_not_see_each_others_settings() {
    let app = spawn_app().await;
    app.set(full_set_request(ACCOUNT)).await;

    let other = app.get(OTHER_ACCOUNT).await;

    assert_eq!(other.account_sid, OTHER_ACCOUNT);
    assert_eq!(other.revision, 0);
    assert_eq!(other.friendly_name, None);
}

built_in_only! {
// Twilio's validation rules (SIDs, the S3 URL, the friendly name, the
// cross-field rules): a declared kind has none of them.

/// Every validation rule, as (what the Set breaks, the field named).
fn invalid_sets() -> Vec<(SetRecordingSettingsRequest, &'static str)> {
    let base = || set_request(ACCOUNT, "valid");
    let url = |u: &str| SetRecordingSettingsRequest {
        aws_s3_url: Some(u.to_owned()),
        ..base()
    };
    vec![
        (set_request("AC123", "x"), "account_sid"),
        (
            set_request("CRaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "x"),
            "account_sid",
        ),
        (
            set_request("ACzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "x"),
            "account_sid",
        ),
        (set_request(ACCOUNT, ""), "friendly_name"),
        (set_request(ACCOUNT, &"n".repeat(256)), "friendly_name"),
        (
            SetRecordingSettingsRequest {
                aws_credentials_sid: Some("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
                ..base()
            },
            "aws_credentials_sid",
        ),
        (
            SetRecordingSettingsRequest {
                encryption_key_sid: Some("CR123".into()),
                ..base()
            },
            "encryption_key_sid",
        ),
        (url("http://bucket.s3.amazonaws.com/"), "aws_s3_url"),
        (url("bucket.s3.amazonaws.com/path"), "aws_s3_url"),
        (url("https://"), "aws_s3_url"),
        (url("https://bucket.s3.amazonaws.com/a b"), "aws_s3_url"),
        (url("https://bucket.s3.amazonaws.com/ü"), "aws_s3_url"),
        (url("https://bucket.s3.amazonaws.com/%zz"), "aws_s3_url"),
        (
            SetRecordingSettingsRequest {
                aws_storage_enabled: Some(true),
                aws_credentials_sid: Some(CREDENTIAL.into()),
                ..base()
            },
            "aws_storage_enabled",
        ),
        (
            SetRecordingSettingsRequest {
                aws_storage_enabled: Some(true),
                aws_s3_url: Some(S3_URL.into()),
                ..base()
            },
            "aws_storage_enabled",
        ),
        (
            SetRecordingSettingsRequest {
                encryption_enabled: Some(true),
                ..base()
            },
            "encryption_enabled",
        ),
    ]
}

#[tokio::test]
async fn every_invalid_set_is_rejected_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let before = app
        .set(SetRecordingSettingsRequest {
            friendly_name: "before".into(),
            ..set_request(ACCOUNT, "before")
        })
        .await;

    for (request, field) in invalid_sets() {
        let status = app
            .try_set(request.clone())
            .await
            .expect_err(&format!("{request:?} must be rejected"));

        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert!(
            status.message().contains(field),
            "message {:?} must name {field}",
            status.message()
        );
        let details = status.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(details.field_violations[0].field, field, "{request:?}");
        let after = app.get(ACCOUNT).await;
        assert_eq!(after, before, "{request:?} changed the stored settings");
    }
}

#[tokio::test]
async fn clearing_a_value_an_enabled_flag_needs_is_rejected() {
    let app = spawn_app().await;
    app.set(full_set_request(ACCOUNT)).await;

    let status = app
        .try_set(SetRecordingSettingsRequest {
            aws_s3_url: Some(String::new()),
            ..set_request(ACCOUNT, "x")
        })
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("aws_storage_enabled"));
    assert!(status.message().contains("aws_s3_url"));
}

}

#[tokio::test]
async fn an_empty_account_without_credentials_is_unauthenticated_naming_account_sid() {
    let app = spawn_app().await;

    let status = app
        .try_set(set_request("", "x"))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("account_sid"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn get_with_a_malformed_account_is_invalid_argument() {
    let app = spawn_app().await;

    let status = app
        .try_get(get_request("AC-not-a-sid"))
        .await
        .unwrap_err();

    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("account_sid"));
}

#[tokio::test]
async fn values_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await.for_resource(RESOURCE);
    let stored = app.set(full_set_request(ACCOUNT)).await;
    app.stop().await.unwrap();

    let restarted = spawn_app_on(dir.path()).await.for_resource(RESOURCE);
    let got = restarted.get(ACCOUNT).await;
    let next = restarted.set(set_request(ACCOUNT, "after restart")).await;

    assert_eq!(got, stored);
    assert!(
        next.revision > stored.revision,
        "revisions keep increasing across restarts"
    );
    restarted.stop().await.unwrap();
}

#[tokio::test]
async fn fifty_concurrent_sets_to_different_fields_of_one_account_all_land() {
    let app = spawn_app().await;
    // Each Set writes one of three fields with a value unique to it. With an
    // atomic read-merge-write, each field ends with the value of the highest
    // revision that wrote it; a lost update would leave an older one.
    let requests: Vec<(usize, SetRecordingSettingsRequest)> = (0..50)
        .map(|i| {
            let mut req = set_request(ACCOUNT, &format!("writer {i}"));
            let hex = format!("{i:032x}");
            match i % 3 {
                0 => req.aws_credentials_sid = Some(format!("CR{hex}")),
                1 => req.encryption_key_sid = Some(format!("CR{hex}")),
                _ => req.aws_s3_url = Some(format!("https://b.s3.amazonaws.com/{i}/")),
            }
            (i, req)
        })
        .collect();

    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|(i, req)| {
            let client = app.resource_client();
            tokio::spawn(async move {
                let request = tonic::Request::new(req.into());
                let res = client.set(request).await.unwrap();
                (i, res.revision)
            })
        })
        .collect();
    let mut revisions = HashMap::new();
    for task in tasks {
        let (i, revision) = task.await.unwrap();
        revisions.insert(i, revision);
    }
    let got = app.get(ACCOUNT).await;

    let mut distinct: Vec<u64> = revisions.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 50, "every Set got its own revision");
    let last_of = |field: usize| {
        (0..50)
            .filter(|i| i % 3 == field)
            .max_by_key(|i| revisions[i])
            .unwrap()
    };
    let expected_field = |i: usize| &requests[i].1;
    assert_eq!(
        got.aws_credentials_sid,
        expected_field(last_of(0)).aws_credentials_sid
    );
    assert_eq!(
        got.encryption_key_sid,
        expected_field(last_of(1)).encryption_key_sid
    );
    assert_eq!(got.aws_s3_url, expected_field(last_of(2)).aws_s3_url);
    let newest = (0..50).max_by_key(|i| revisions[i]).unwrap();
    assert_eq!(got.revision, revisions[&newest]);
    assert_eq!(
        got.friendly_name.as_deref(),
        Some(format!("writer {newest}").as_str())
    );
}
}
