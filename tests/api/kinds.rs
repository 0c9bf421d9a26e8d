//! Declared settings kinds (`serve --kinds`) through
//! `settingsd.v1.SettingsService`, one request at a time: values as
//! `google.protobuf.Any` of the kind's message, built and read here with
//! prost-reflect from the same .proto files the server compiled. Update
//! semantics (AIP-134), refusals, conditional updates, and the built-in
//! kinds through the generic API. Isolation, watch, history, rollback and
//! what operators see (grpcurl, restarts with an evolved schema, the kinds
//! file through the binary) are in `kinds_operations`.

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage};
use serde_json::json;
use settingsd::pb::{self, settings_service_client::SettingsServiceClient};
use tonic::{transport::Channel, Code};
use tonic_types::StatusExt;

use crate::helpers::{channel, spawn_app_with_kinds, test_kinds, TestApp, OTHER_ACCOUNT};

pub const ACCOUNT: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const KIND: &str = "billing_limits";

/// A `BillingLimits` with every field populated (shared with the mask's
/// unit tests).
pub const FULL: &str = include_str!("../kinds/billing_limits_full.json");

pub async fn client(app: &TestApp) -> SettingsServiceClient<Channel> {
    SettingsServiceClient::new(channel(app.grpc_addr).await)
}

/// The message type of `kind` as `file` (under `tests/kinds`) declares it.
pub fn message_type(file: &str, kind: &str) -> MessageDescriptor {
    test_kinds(file).get(kind).unwrap().message.clone()
}

/// The declared `BillingLimits` message type.
pub fn limits_type() -> MessageDescriptor {
    message_type("kinds.toml", KIND)
}

/// A message of type `descriptor` from proto3 JSON.
pub fn from_json(descriptor: MessageDescriptor, json: &str) -> DynamicMessage {
    let mut de = serde_json::Deserializer::from_str(json);
    DynamicMessage::deserialize(descriptor, &mut de).unwrap()
}

/// A `BillingLimits` value from proto3 JSON.
pub fn limits(json: &str) -> DynamicMessage {
    from_json(limits_type(), json)
}

pub fn any(message: &DynamicMessage) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{}", message.descriptor().full_name()),
        value: message.encode_to_vec(),
    }
}

/// The value of an answer, decoded as `descriptor` (whose type it must name).
pub fn decoded(settings: &pb::Settings, descriptor: MessageDescriptor) -> DynamicMessage {
    let any = settings.value.as_ref().expect("a value");
    assert_eq!(
        any.type_url,
        format!("type.googleapis.com/{}", descriptor.full_name())
    );
    DynamicMessage::decode(descriptor, any.value.as_slice()).unwrap()
}

/// The value of an answer, decoded as `BillingLimits`.
pub fn value_of(settings: &pb::Settings) -> DynamicMessage {
    decoded(settings, limits_type())
}

/// The value of an answer as proto3 JSON (default-valued fields left out).
pub fn json_of(settings: &pb::Settings) -> serde_json::Value {
    serde_json::to_value(value_of(settings)).unwrap()
}

/// The encoded value of an answer.
pub fn bytes_of(settings: &pb::Settings) -> &[u8] {
    &settings.value.as_ref().expect("a value").value
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

/// [`update`] of `account`.
pub fn update_of(account: &str, value: &DynamicMessage) -> pb::UpdateSettingsRequest {
    let mut request = update(value, None);
    request.settings.as_mut().unwrap().account_sid = account.into();
    request
}

pub fn get_request(kind: &str, account: &str) -> pb::GetSettingsRequest {
    pb::GetSettingsRequest {
        kind: kind.into(),
        account_sid: account.into(),
    }
}

/// ACCOUNT's billing limits.
pub async fn read(grpc: &mut SettingsServiceClient<Channel>) -> pb::Settings {
    grpc.get_settings(get_request(KIND, ACCOUNT))
        .await
        .unwrap()
        .into_inner()
}

/// Updates ACCOUNT's billing limits with the value `json`.
pub async fn write(
    grpc: &mut SettingsServiceClient<Channel>,
    json: &str,
    mask: Option<&[&str]>,
) -> pb::Settings {
    grpc.update_settings(update(&limits(json), mask))
        .await
        .unwrap()
        .into_inner()
}

/// A server with the test kinds (its data directory lives as long as it).
pub async fn serve_kinds() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("kinds.toml")).await;
    (app, dir)
}

#[tokio::test]
async fn a_declared_kind_is_listed_read_as_empty_then_updated_and_read_back() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;

    let kinds = grpc
        .list_kinds(pb::ListKindsRequest {})
        .await
        .unwrap()
        .into_inner();
    let empty = read(&mut grpc).await;
    let written = write(
        &mut grpc,
        r#"{"displayName": "Acme", "monthlyCapCents": "5000",
            "tiers": [{"name": "gold", "limit": "3"}], "quotas": {"sms": "10"}}"#,
        None,
    )
    .await;
    let read = read(&mut grpc).await;

    let names: Vec<_> = kinds
        .kinds
        .iter()
        .map(|k| (k.name.as_str(), k.message_type.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("recording_settings", "settingsd.v1.RecordingSettings"),
            ("composition_settings", "settingsd.v1.CompositionSettings"),
            ("billing_limits", "acme.billing.v1.BillingLimits"),
            ("feature_flags", "acme.billing.v1.FeatureFlags"),
        ]
    );
    assert_eq!(
        (empty.kind.as_str(), empty.account_sid.as_str()),
        (KIND, ACCOUNT)
    );
    assert_eq!(empty.revision, 0);
    assert_eq!(empty.update_time, None);
    assert!(bytes_of(&empty).is_empty(), "the empty message");
    assert!(written.revision > 0 && written.update_time.is_some());
    assert_eq!(written.etag, format!("\"{}\"", written.revision));
    assert_eq!(read, written);
    assert_eq!(
        json_of(&read),
        json!({"displayName": "Acme", "monthlyCapCents": "5000",
               "tiers": [{"name": "gold", "limit": "3"}], "quotas": {"sms": "10"}})
    );
}

// --- Updates (AIP-134) ---------------------------------------------------

#[tokio::test]
async fn an_update_without_a_mask_merges_populated_fields_and_replaces_lists_and_maps() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let first = write(&mut grpc, FULL, None).await;

    let merged = write(
        &mut grpc,
        r#"{
            "displayName": "Acme 2",
            "plan": "PLAN_FREE",
            "defaultTier": {"limit": "20"},
            "tiers": [{"name": "c", "limit": "3"}],
            "quotas": {"sms": "1"},
            "tags": ["z"]
        }"#,
        None,
    )
    .await;
    let read = read(&mut grpc).await;

    assert!(merged.revision > first.revision);
    assert_eq!(read, merged);
    assert_eq!(
        json_of(&read),
        json!({
            "displayName": "Acme 2",
            "monthlyCapCents": "5000",
            "graceDays": 3,
            "plan": "PLAN_FREE",
            "defaultTier": {"name": "base", "limit": "20"},
            "tiers": [{"name": "c", "limit": "3"}],
            "quotas": {"sms": "1"},
            "tags": ["z"],
            "enforced": true
        }),
        "nested message merged field by field, repeated and map fields replaced, \
         unpopulated fields kept"
    );
}

#[tokio::test]
async fn an_update_mask_writes_exactly_its_paths_setting_or_clearing_each() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    write(&mut grpc, FULL, None).await;

    // display_name is set; monthly_cap_cents, tiers and quotas, unset in
    // the value, are cleared; default_tier, a message named whole, is
    // replaced (not merged); plan and tags, populated but not in the mask,
    // are not written. JSON names are accepted as well.
    let updated = write(
        &mut grpc,
        r#"{"displayName": "Masked", "plan": "PLAN_FREE", "tags": ["ignored"],
            "defaultTier": {"limit": "20"}}"#,
        Some(&[
            "display_name",
            "monthlyCapCents",
            "tiers",
            "quotas",
            "default_tier",
        ]),
    )
    .await;

    assert_eq!(read(&mut grpc).await, updated);
    assert_eq!(
        json_of(&updated),
        json!({
            "displayName": "Masked",
            "graceDays": 3,
            "plan": "PLAN_PRO",
            "defaultTier": {"limit": "20"},
            "tags": ["x", "y"],
            "enforced": true
        })
    );
}

#[tokio::test]
async fn a_nested_mask_path_creates_its_parent_and_writes_only_that_field() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    write(&mut grpc, r#"{"displayName": "Acme"}"#, None).await;

    let created = write(
        &mut grpc,
        r#"{"defaultTier": {"name": "not in the mask", "limit": "7"}}"#,
        Some(&["default_tier.limit"]),
    )
    .await;
    write(&mut grpc, r#"{"defaultTier": {"name": "base"}}"#, None).await;
    let cleared = write(&mut grpc, "{}", Some(&["default_tier.limit"])).await;

    assert_eq!(
        json_of(&created),
        json!({"displayName": "Acme", "defaultTier": {"limit": "7"}})
    );
    assert_eq!(
        json_of(&cleared),
        json!({"displayName": "Acme", "defaultTier": {"name": "base"}}),
        "clearing a nested field keeps its siblings"
    );
    assert_eq!(read(&mut grpc).await, cleared);
}

#[tokio::test]
async fn a_star_mask_replaces_the_whole_message() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    write(&mut grpc, FULL, None).await;

    let replaced = write(
        &mut grpc,
        r#"{"displayName": "Only this", "plan": "PLAN_FREE"}"#,
        Some(&["*"]),
    )
    .await;

    assert_eq!(
        json_of(&read(&mut grpc).await),
        json!({"displayName": "Only this", "plan": "PLAN_FREE"})
    );
    assert_eq!(
        bytes_of(&replaced),
        limits(r#"{"displayName": "Only this", "plan": "PLAN_FREE"}"#).encode_to_vec()
    );
}

#[tokio::test]
async fn an_optional_field_set_to_zero_is_present_and_an_absent_one_is_kept() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    write(
        &mut grpc,
        r#"{"graceDays": 5, "monthlyCapCents": "9"}"#,
        None,
    )
    .await;

    // Zero, present: written (a plain int64 zero is not populated, so kept).
    let zero = write(
        &mut grpc,
        r#"{"graceDays": 0, "monthlyCapCents": "0"}"#,
        None,
    )
    .await;
    // Absent: kept.
    let absent = write(&mut grpc, r#"{"displayName": "x"}"#, None).await;
    // Masked and absent: cleared.
    let cleared = write(&mut grpc, "{}", Some(&["grace_days"])).await;

    let zero = value_of(&zero);
    assert!(zero.has_field_by_name("grace_days"), "0 is a present value");
    assert_eq!(
        zero.get_field_by_name("grace_days").unwrap().as_i32(),
        Some(0)
    );
    assert_eq!(
        zero.get_field_by_name("monthly_cap_cents")
            .unwrap()
            .as_i64(),
        Some(9)
    );
    let absent = value_of(&absent);
    assert!(absent.has_field_by_name("grace_days"), "kept when absent");
    assert_eq!(
        absent.get_field_by_name("grace_days").unwrap().as_i32(),
        Some(0)
    );
    assert!(!value_of(&cleared).has_field_by_name("grace_days"));
}

#[tokio::test]
async fn an_enum_field_is_written_by_name_and_read_back_as_its_number() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;

    let pro = write(&mut grpc, r#"{"plan": "PLAN_PRO"}"#, None).await;
    let free = write(&mut grpc, r#"{"plan": "PLAN_FREE"}"#, Some(&["plan"])).await;
    let unspecified = write(&mut grpc, "{}", Some(&["plan"])).await;

    let plan = |s: &pb::Settings| {
        value_of(s)
            .get_field_by_name("plan")
            .unwrap()
            .as_enum_number()
    };
    assert_eq!(plan(&pro), Some(2));
    assert_eq!(plan(&free), Some(1));
    assert_eq!(plan(&unspecified), Some(0));
    assert_eq!(json_of(&read(&mut grpc).await), json!({}));
}

/// An update that must be refused, the code, what the message must say, and
/// the field of the `google.rpc.BadRequest` detail (INVALID_ARGUMENT only).
struct Refused {
    what: &'static str,
    request: pb::UpdateSettingsRequest,
    code: Code,
    says: &'static [&'static str],
    field: Option<&'static str>,
}

fn refused_updates() -> Vec<Refused> {
    let value = || limits(r#"{"displayName": "refused", "monthlyCapCents": "1"}"#);
    let masked = |paths: &[&str]| update(&value(), Some(paths));
    let with_settings = |change: &dyn Fn(&mut pb::Settings)| {
        let mut request = update(&value(), None);
        change(request.settings.as_mut().unwrap());
        request
    };
    // The value's encoding plus fields its schema does not define: field
    // 99 (varint 1) at the top, and inside `default_tier` (field 5).
    let with_unknown = |extra: &[u8]| {
        let mut request = update(&value(), None);
        let any = request.settings.as_mut().unwrap().value.as_mut().unwrap();
        any.value.extend_from_slice(extra);
        request
    };
    vec![
        Refused {
            what: "a field the schema does not define",
            request: with_unknown(&[0x98, 0x06, 0x01]),
            code: Code::InvalidArgument,
            says: &["field number 99", "acme.billing.v1.BillingLimits"],
            field: Some("settings.value"),
        },
        Refused {
            what: "a field the schema does not define, in a nested message",
            request: with_unknown(&[0x2a, 0x03, 0x98, 0x06, 0x01]),
            code: Code::InvalidArgument,
            says: &["field number 99", "default_tier"],
            field: Some("settings.value"),
        },
        Refused {
            what: "an unknown path",
            request: masked(&["display_name", "nope"]),
            code: Code::InvalidArgument,
            says: &["\"nope\"", "acme.billing.v1.BillingLimits"],
            field: Some("update_mask"),
        },
        Refused {
            what: "an unknown nested path",
            request: masked(&["default_tier.nope"]),
            code: Code::InvalidArgument,
            says: &["default_tier.nope", "acme.billing.v1.Tier"],
            field: Some("update_mask"),
        },
        Refused {
            what: "a path through a repeated field",
            request: masked(&["tiers.limit"]),
            code: Code::InvalidArgument,
            says: &["tiers.limit", "repeated"],
            field: Some("update_mask"),
        },
        Refused {
            what: "a path through a map",
            request: masked(&["quotas.calls"]),
            code: Code::InvalidArgument,
            says: &["quotas.calls", "map"],
            field: Some("update_mask"),
        },
        Refused {
            what: "a path through a scalar",
            request: masked(&["display_name.x"]),
            code: Code::InvalidArgument,
            says: &["display_name.x"],
            field: Some("update_mask"),
        },
        Refused {
            what: "* with another path",
            request: masked(&["*", "display_name"]),
            code: Code::InvalidArgument,
            says: &["\"*\""],
            field: Some("update_mask"),
        },
        Refused {
            what: "no value",
            request: with_settings(&|s| s.value = None),
            code: Code::InvalidArgument,
            says: &["settings.value"],
            field: Some("settings.value"),
        },
        Refused {
            what: "a value of another type",
            request: with_settings(&|s| {
                s.value.as_mut().unwrap().type_url =
                    "type.googleapis.com/acme.billing.v1.FeatureFlags".into();
            }),
            code: Code::InvalidArgument,
            says: &[
                "settings.value",
                "type.googleapis.com/acme.billing.v1.BillingLimits",
                "acme.billing.v1.FeatureFlags",
            ],
            field: Some("settings.value"),
        },
        Refused {
            what: "bytes that do not decode",
            request: with_settings(&|s| s.value.as_mut().unwrap().value = vec![0x0a, 0xff, 0x01]),
            code: Code::InvalidArgument,
            says: &["settings.value", "acme.billing.v1.BillingLimits"],
            field: Some("settings.value"),
        },
        Refused {
            what: "no settings",
            request: pb::UpdateSettingsRequest {
                settings: None,
                update_mask: None,
            },
            code: Code::InvalidArgument,
            says: &["settings"],
            field: Some("settings"),
        },
        Refused {
            what: "an empty kind",
            request: with_settings(&|s| s.kind = String::new()),
            code: Code::InvalidArgument,
            says: &["settings.kind"],
            field: Some("settings.kind"),
        },
        Refused {
            what: "an unknown kind",
            request: with_settings(&|s| s.kind = "billing_limit".into()),
            code: Code::NotFound,
            says: &[
                "billing_limit\"",
                "recording_settings",
                "composition_settings",
                "billing_limits",
                "feature_flags",
            ],
            field: None,
        },
        Refused {
            what: "a malformed account",
            request: with_settings(&|s| s.account_sid = "AC123".into()),
            code: Code::InvalidArgument,
            says: &["settings.account_sid"],
            field: Some("settings.account_sid"),
        },
        Refused {
            what: "a malformed etag",
            request: with_settings(&|s| s.etag = "not an etag".into()),
            code: Code::InvalidArgument,
            says: &["settings.etag"],
            field: Some("settings.etag"),
        },
    ]
}

#[tokio::test]
async fn a_refused_update_names_what_is_wrong_and_changes_nothing() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let before = write(&mut grpc, FULL, None).await;

    for refused in refused_updates() {
        let what = refused.what;
        let status = grpc.update_settings(refused.request).await.expect_err(what);

        assert_eq!(status.code(), refused.code, "{what}: {status:?}");
        for says in refused.says {
            assert!(
                status.message().contains(says),
                "{what}: {:?} must say {says}",
                status.message()
            );
        }
        if let Some(field) = refused.field {
            let details = status.get_details_bad_request().expect("a BadRequest");
            assert_eq!(details.field_violations[0].field, field, "{what}");
        }
        assert_eq!(read(&mut grpc).await, before, "{what} changed the record");
    }
}

#[tokio::test]
async fn an_update_with_the_current_etag_applies_and_one_with_a_stale_etag_is_aborted() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let first = write(&mut grpc, r#"{"displayName": "first"}"#, None).await;
    let conditional = |json: &str, etag: &str| {
        let mut request = update(&limits(json), None);
        request.settings.as_mut().unwrap().etag = etag.into();
        request
    };

    let second = grpc
        .update_settings(conditional(r#"{"displayName": "second"}"#, &first.etag))
        .await
        .unwrap()
        .into_inner();
    let stale = grpc
        .update_settings(conditional(r#"{"displayName": "stale"}"#, &first.etag))
        .await
        .unwrap_err();

    assert!(second.revision > first.revision);
    assert_eq!(
        json_of(&second),
        json!({"displayName": "second"}),
        "a matching etag applies"
    );
    assert_eq!(stale.code(), Code::Aborted, "{stale:?}");
    assert!(
        stale.message().contains(&second.etag),
        "names the current etag: {}",
        stale.message()
    );
    assert_eq!(
        read(&mut grpc).await,
        second,
        "the stale update changed nothing"
    );
}

// --- Built-in kinds through the generic API ------------------------------

/// An update of ACCOUNT's recording_settings to `value`.
pub fn recording_update(value: &pb::RecordingSettings) -> pb::UpdateSettingsRequest {
    pb::UpdateSettingsRequest {
        settings: Some(pb::Settings {
            kind: "recording_settings".into(),
            account_sid: ACCOUNT.into(),
            value: Some(prost_types::Any {
                type_url: "type.googleapis.com/settingsd.v1.RecordingSettings".into(),
                value: value.encode_to_vec(),
            }),
            ..pb::Settings::default()
        }),
        update_mask: None,
    }
}

/// The typed Set clears an optional field sent as "": so does a merge of a
/// built-in kind through the generic service.
#[tokio::test]
async fn an_empty_string_clears_a_built_in_field_through_the_generic_api_as_in_the_typed_set() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    grpc.update_settings(recording_update(&pb::RecordingSettings {
        friendly_name: Some("with url".into()),
        aws_s3_url: Some("https://bucket.s3.amazonaws.com/r/".into()),
        ..Default::default()
    }))
    .await
    .unwrap();

    grpc.update_settings(recording_update(&pb::RecordingSettings {
        aws_s3_url: Some(String::new()),
        ..Default::default()
    }))
    .await
    .unwrap();
    let typed = app.get(ACCOUNT).await;

    assert_eq!(typed.aws_s3_url, None, "cleared");
    assert_eq!(typed.friendly_name.as_deref(), Some("with url"), "kept");
}

#[tokio::test]
async fn a_built_in_kind_updated_generically_is_refused_as_its_typed_set_refuses() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let mut typed = app.client.clone();
    let cases = [
        (
            "a malformed aws_s3_url",
            pb::RecordingSettings {
                friendly_name: Some("bad url".into()),
                aws_s3_url: Some("http://bucket.s3.amazonaws.com/".into()),
                ..Default::default()
            },
            "aws_s3_url",
        ),
        (
            "storage enabled without a URL",
            pb::RecordingSettings {
                friendly_name: Some("no url".into()),
                aws_credentials_sid: Some(crate::helpers::CREDENTIAL.into()),
                aws_storage_enabled: true,
                ..Default::default()
            },
            "aws_storage_enabled",
        ),
    ];

    for (what, value, field) in cases {
        let generic = grpc
            .update_settings(recording_update(&value))
            .await
            .expect_err(what);
        let typed = typed
            .set_recording_settings(pb::SetRecordingSettingsRequest {
                account_sid: ACCOUNT.into(),
                friendly_name: value.friendly_name.clone().unwrap(),
                aws_credentials_sid: value.aws_credentials_sid.clone(),
                aws_s3_url: value.aws_s3_url.clone(),
                aws_storage_enabled: Some(value.aws_storage_enabled),
                ..Default::default()
            })
            .await
            .expect_err(what);

        assert_eq!(generic.code(), Code::InvalidArgument, "{what}: {generic:?}");
        assert_eq!(generic.code(), typed.code(), "{what}");
        assert!(
            generic.message().contains(field),
            "{what}: {}",
            generic.message()
        );
        assert_eq!(generic.message(), typed.message(), "{what}");
        let details = generic.get_details_bad_request().expect("a BadRequest");
        assert_eq!(details.field_violations[0].field, field, "{what}");
    }
    let stored = grpc
        .get_settings(get_request("recording_settings", ACCOUNT))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.revision, 0, "nothing was written");
}

#[tokio::test]
async fn a_built_in_kind_updated_generically_is_what_its_typed_get_reads_output_only_fields_ignored(
) {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let value = pb::RecordingSettings {
        friendly_name: Some("generic".into()),
        aws_credentials_sid: Some(crate::helpers::CREDENTIAL.into()),
        aws_s3_url: Some(crate::helpers::S3_URL.into()),
        aws_storage_enabled: true,
        // Output only: ignored.
        account_sid: OTHER_ACCOUNT.into(),
        url: "https://example.com/not/the/url".into(),
        revision: 999_999,
        etag: "\"999999\"".into(),
        ..Default::default()
    };

    let updated = grpc
        .update_settings(recording_update(&value))
        .await
        .unwrap()
        .into_inner();
    let typed = app
        .client
        .clone()
        .get_recording_settings(pb::GetRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let other = app
        .client
        .clone()
        .get_recording_settings(pb::GetRecordingSettingsRequest {
            account_sid: OTHER_ACCOUNT.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let answered =
        pb::RecordingSettings::decode(bytes_of(&updated)).expect("a RecordingSettings value");

    assert!(updated.revision > 0 && updated.revision != 999_999);
    assert_eq!(typed.revision, updated.revision);
    assert_eq!(typed.etag, updated.etag);
    assert_eq!(typed.account_sid, ACCOUNT);
    assert_eq!(typed.friendly_name.as_deref(), Some("generic"));
    assert_eq!(typed.aws_s3_url.as_deref(), Some(crate::helpers::S3_URL));
    assert!(typed.aws_storage_enabled);
    assert_eq!(typed.url, crate::helpers::TWILIO_URL);
    assert_eq!(answered, typed, "the generic answer is the typed resource");
    assert_eq!(other.revision, 0, "the value's account_sid is ignored");
}

/// A value whose encoding is fine but whose proto3 JSON is not (an `Any`
/// of a type the schema does not have) is refused: stored, the JSON API
/// and backups could not show it. One that renders is stored.
#[tokio::test]
async fn a_value_that_cannot_be_written_as_json_is_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_kinds(dir.path(), test_kinds("notes.toml")).await;
    let mut grpc = client(&app).await;
    let note = |extra: Option<prost_types::Any>| {
        #[derive(Clone, PartialEq, prost::Message)]
        struct Note {
            #[prost(string, tag = "1")]
            text: String,
            #[prost(message, optional, tag = "2")]
            remind_at: Option<prost_types::Timestamp>,
            #[prost(message, optional, tag = "3")]
            extra: Option<prost_types::Any>,
        }
        let value = Note {
            text: "call back".into(),
            remind_at: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            extra,
        };
        pb::UpdateSettingsRequest {
            settings: Some(pb::Settings {
                kind: "notes".into(),
                account_sid: ACCOUNT.into(),
                value: Some(prost_types::Any {
                    type_url: "type.googleapis.com/acme.notes.v1.Note".into(),
                    value: value.encode_to_vec(),
                }),
                ..pb::Settings::default()
            }),
            update_mask: None,
        }
    };

    let refused = grpc
        .update_settings(note(Some(prost_types::Any {
            type_url: "type.googleapis.com/acme.unknown.v1.Thing".into(),
            value: vec![8, 1],
        })))
        .await
        .unwrap_err();
    let stored = grpc.update_settings(note(None)).await.unwrap().into_inner();
    let json = reqwest::get(format!(
        "http://{}/v1/accounts/{ACCOUNT}/settings/notes",
        app.http_addr
    ))
    .await
    .unwrap();

    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("proto3 JSON"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("settings.value"),
        "{}",
        refused.message()
    );
    assert!(stored.revision > 0);
    assert_eq!(json.status(), reqwest::StatusCode::OK);
    let json: serde_json::Value = json.json().await.unwrap();
    assert_eq!(json["value"]["remindAt"], "2027-01-15T08:00:00Z", "{json}");
}

/// A conditional update of a built-in kind applies only to the state its
/// etag names, even though the update is computed outside the store's
/// lock: a stale etag is ABORTED naming the current one.
#[tokio::test]
async fn a_built_in_kinds_conditional_generic_update_with_a_stale_etag_is_aborted() {
    let (app, _dir) = serve_kinds().await;
    let mut grpc = client(&app).await;
    let first = app.set(crate::helpers::set_request(ACCOUNT, "first")).await;
    let second = app
        .set(crate::helpers::set_request(ACCOUNT, "second"))
        .await;
    let mut stale = recording_update(&pb::RecordingSettings {
        friendly_name: Some("stale".into()),
        ..Default::default()
    });
    stale.settings.as_mut().unwrap().etag = first.etag.clone();

    let aborted = grpc.update_settings(stale).await.unwrap_err();

    assert_eq!(aborted.code(), Code::Aborted, "{aborted:?}");
    assert!(
        aborted.message().contains(&second.etag),
        "{}",
        aborted.message()
    );
    assert_eq!(app.get(ACCOUNT).await, second, "nothing written");
}
