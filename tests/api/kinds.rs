//! Declared settings kinds (`serve --kinds`) through
//! `settingsd.v1.SettingsService`: values as `google.protobuf.Any` of the
//! kind's message, built and read here with prost-reflect from the same
//! .proto files the server compiled.

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use settingsd::pb::{self, settings_service_client::SettingsServiceClient};
use tonic::{transport::Channel, Code};

use crate::helpers::{channel, spawn_app_with_kinds, test_kinds, TestApp};

const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KIND: &str = "billing_limits";

pub async fn client(app: &TestApp) -> SettingsServiceClient<Channel> {
    SettingsServiceClient::new(channel(app.grpc_addr).await)
}

/// The declared `BillingLimits` message type.
pub fn limits_type() -> MessageDescriptor {
    let kinds = test_kinds("kinds.toml");
    kinds.get(KIND).unwrap().message.clone()
}

/// A `BillingLimits` value from proto3 JSON.
pub fn limits(json: &str) -> DynamicMessage {
    let mut de = serde_json::Deserializer::from_str(json);
    DynamicMessage::deserialize(limits_type(), &mut de).unwrap()
}

pub fn any(message: &DynamicMessage) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{}", message.descriptor().full_name()),
        value: message.encode_to_vec(),
    }
}

/// The value of an answer, decoded as `BillingLimits`.
pub fn value_of(settings: &pb::Settings) -> DynamicMessage {
    let any = settings.value.as_ref().expect("a value");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/acme.billing.v1.BillingLimits"
    );
    DynamicMessage::decode(limits_type(), any.value.as_slice()).unwrap()
}

pub fn update(value: &DynamicMessage, mask: Option<&[&str]>) -> pb::UpdateSettingsRequest {
    pb::UpdateSettingsRequest {
        settings: Some(pb::Settings {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
            value: Some(any(value)),
            ..pb::Settings::default()
        }),
        update_mask: mask.map(|paths| prost_types::FieldMask {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }),
    }
}

#[tokio::test]
async fn a_declared_kind_is_listed_read_as_empty_then_updated_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("kinds.toml")).await;
    let mut grpc = client(&app).await;

    let kinds = grpc
        .list_kinds(pb::ListKindsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = kinds
        .kinds
        .iter()
        .map(|k| (k.name.as_str(), k.message_type.as_str()))
        .collect();
    let empty = grpc
        .get_settings(pb::GetSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let written = grpc
        .update_settings(update(&limits(r#"{"displayName":"Acme","monthlyCapCents":"5000","tiers":[{"name":"gold","limit":"3"}],"quotas":{"sms":"10"}}"#), None))
        .await
        .unwrap()
        .into_inner();
    let read = grpc
        .get_settings(pb::GetSettingsRequest {
            kind: KIND.into(),
            account_sid: ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        names,
        [
            ("recording_settings", "settingsd.v1.RecordingSettings"),
            ("composition_settings", "settingsd.v1.CompositionSettings"),
            ("billing_limits", "acme.billing.v1.BillingLimits"),
            ("feature_flags", "acme.billing.v1.FeatureFlags"),
        ]
    );
    assert_eq!(empty.revision, 0);
    assert!(
        value_of(&empty).encode_to_vec().is_empty(),
        "the empty message"
    );
    assert!(written.revision > 0);
    assert_eq!(written.etag, format!("\"{}\"", written.revision));
    assert_eq!(read, written);
    let value = value_of(&read);
    assert_eq!(
        value.get_field_by_name("display_name").unwrap().as_str(),
        Some("Acme")
    );
    assert_eq!(
        value
            .get_field_by_name("monthly_cap_cents")
            .unwrap()
            .as_i64(),
        Some(5000)
    );
    assert_eq!(
        value
            .get_field_by_name("tiers")
            .unwrap()
            .as_list()
            .map(<[Value]>::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_value_of_another_type_or_an_unknown_kind_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("kinds.toml")).await;
    let mut grpc = client(&app).await;
    let mut wrong = update(&limits(r#"{"displayName":"x"}"#), None);
    wrong
        .settings
        .as_mut()
        .unwrap()
        .value
        .as_mut()
        .unwrap()
        .type_url = "type.googleapis.com/acme.billing.v1.FeatureFlags".into();
    let mut unknown = update(&limits(r#"{"displayName":"x"}"#), None);
    unknown.settings.as_mut().unwrap().kind = "nope".into();

    let wrong = grpc.update_settings(wrong).await.unwrap_err();
    let unknown = grpc.update_settings(unknown).await.unwrap_err();
    let bad_path = grpc
        .update_settings(update(
            &limits(r#"{"displayName":"x"}"#),
            Some(&["default_tier.nope"]),
        ))
        .await
        .unwrap_err();

    assert_eq!(wrong.code(), Code::InvalidArgument);
    assert!(
        wrong.message().contains("acme.billing.v1.BillingLimits"),
        "{}",
        wrong.message()
    );
    assert!(
        wrong.message().contains("settings.value"),
        "{}",
        wrong.message()
    );
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("billing_limits"),
        "{}",
        unknown.message()
    );
    assert_eq!(bad_path.code(), Code::InvalidArgument);
    assert!(
        bad_path.message().contains("default_tier.nope"),
        "{}",
        bad_path.message()
    );
}

#[tokio::test]
async fn an_incompatible_schema_change_stops_the_start_naming_kind_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("kinds.toml")).await;
    client(&app)
        .await
        .update_settings(update(&limits(r#"{"monthlyCapCents":"7"}"#), None))
        .await
        .unwrap();
    app.stop().await.unwrap();
    crate::helpers::wait_until_released(dir.path());

    let refused = crate::helpers::start_error_with_kinds(
        dir.path(),
        test_kinds("evolved/incompatible/kinds.toml"),
        false,
    )
    .await
    .expect("the start is refused");
    crate::helpers::wait_until_released(dir.path());
    let compatible = crate::helpers::start_error_with_kinds(
        dir.path(),
        test_kinds("evolved/compatible/kinds.toml"),
        false,
    )
    .await;

    let refused = format!("{refused:#}");
    assert!(refused.contains("billing_limits"), "{refused}");
    assert!(refused.contains("monthly_cap_cents"), "{refused}");
    assert!(compatible.is_none(), "{compatible:?}");
}
