//! The JSON HTTP API for every settings kind, declared or built-in:
//! `GET` and `PATCH /v1/accounts/{account_sid}/settings/{kind}`, beside
//! (and never colliding with) Twilio's paths.
//!
//! Thin, like the rest of the bridge: a request becomes
//! `SettingsService/GetSettings` or `UpdateSettings` with the caller's
//! `Authorization`, and the answer is the gRPC one rendered as JSON. What
//! it adds is the value's conversion between the kind's proto3 JSON and the
//! `google.protobuf.Any` the service takes, with the kind's descriptor from
//! the server's [`Catalog`].
//!
//! - `GET` answers `{"kind", "accountSid", "revision", "etag",
//!   "updateTime", "value"}`, the value as the kind's proto3 JSON with its
//!   `@type`, and the `ETag` header; with `If-None-Match` naming the
//!   current etag, 304.
//! - `PATCH` takes the kind's proto3 JSON (the message's fields, no
//!   `@type`), merged as `UpdateSettings` merges it, or exactly the paths of
//!   `?updateMask=a,b.c` (proto or JSON field names; `*` replaces the whole
//!   message). `If-Match` makes it conditional (412 on a mismatch).
//! - Errors have the bridge's JSON error body, with the service's message
//!   (which names the field, the path or the kind).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use tonic::Status;

use super::{
    error::ApiError, if_match, insert_etag, none_match, require_content_type, with_credentials,
    Backend, MAX_BODY_BYTES,
};
use crate::{
    contract::pb,
    kinds::{mask, Catalog, Kind},
};

/// The route of one account's settings of one kind.
pub(super) const ROUTE: &str = "/v1/accounts/{account_sid}/settings/{kind}";

#[derive(Clone)]
struct KindsState {
    backend: Backend,
    catalog: Arc<Catalog>,
}

/// The JSON API's routes, over `backend`, for `catalog`'s kinds.
pub(super) fn routes(backend: Backend, catalog: Arc<Catalog>) -> Router {
    Router::new()
        .route(ROUTE, get(fetch).patch(update).fallback(method_not_allowed))
        .with_state(KindsState { backend, catalog })
}

async fn method_not_allowed(method: axum::http::Method) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        20004,
        format!("Method not allowed: {method} is not supported here; use GET or PATCH"),
    )
    .into_response();
    response.headers_mut().insert(
        header::ALLOW,
        header::HeaderValue::from_static("GET, HEAD, PATCH"),
    );
    response
}

async fn fetch(
    State(state): State<KindsState>,
    Path((account_sid, kind)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = pb::GetSettingsRequest { kind, account_sid };
    let request = match with_credentials(request, &headers) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    match state.backend.get_settings(request).await {
        Ok(settings) if none_match(&headers, &settings.etag) => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            insert_etag(&mut response, &settings.etag);
            response
        }
        result => respond(&state.catalog, result),
    }
}

async fn update(
    State(state): State<KindsState>,
    Path((account_sid, kind)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let built = match state.catalog.get(&kind) {
        Ok(found) => build_update(found, account_sid.clone(), query, &headers, body).await,
        Err(_) => Err(unknown_here(&kind)),
    };
    match built {
        Ok(update) => match with_credentials(update, &headers) {
            Ok(request) => respond(&state.catalog, state.backend.update_settings(request).await),
            Err(e) => e.into_response(),
        },
        Err(problem) => reject(&state, account_sid, kind, &headers, problem).await,
    }
}

/// Answers a PATCH that could not become an update (a body that does not
/// parse, a kind this bridge has no schema for). Credentials come first,
/// as on the Twilio paths: the service decides, through a Get of the same
/// account and kind, so that a caller it refuses learns nothing about
/// which kinds exist or what their fields are.
async fn reject(
    state: &KindsState,
    account_sid: String,
    kind: String,
    headers: &HeaderMap,
    problem: ApiError,
) -> Response {
    let probe = pb::GetSettingsRequest { kind, account_sid };
    let probe = match with_credentials(probe, headers) {
        Ok(probe) => probe,
        Err(e) => return e.into_response(),
    };
    match state.backend.get_settings(probe).await {
        Err(status) => error(&status).into_response(),
        Ok(_) => problem.into_response(),
    }
}

/// A kind the service serves but this bridge has no schema for: a
/// standalone bridge (`settingsd bridge`) knows the built-in kinds only.
fn unknown_here(kind: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        20501,
        format!(
            "kind {kind} is served upstream, but this bridge has no schema for it (a standalone \
             bridge knows the built-in kinds only): use the settingsd server's own HTTP port"
        ),
    )
}

/// A PATCH as the `UpdateSettings` request it becomes.
async fn build_update(
    found: &Kind,
    account_sid: String,
    query: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<pb::UpdateSettingsRequest, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large())?;
    require_content_type(headers, "application/json", "the kind's proto3 JSON")?;
    let mut json = serde_json::Deserializer::from_slice(&bytes);
    let value = DynamicMessage::deserialize(found.message.clone(), &mut json)
        .and_then(|value| json.end().map(|()| value))
        .map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid body: not a {} in proto3 JSON: {e}",
                found.message.full_name()
            ))
        })?;
    let paths = query
        .as_deref()
        .and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(name, _)| name == "updateMask" || name == "update_mask")
                .map(|(_, value)| mask::parse_query(&value))
        })
        .filter(|paths| !paths.is_empty());
    Ok(pb::UpdateSettingsRequest {
        settings: Some(pb::Settings {
            kind: found.name().to_owned(),
            account_sid,
            value: Some(prost_types::Any {
                type_url: found.type_url(),
                value: value.encode_to_vec(),
            }),
            etag: if_match(headers)?,
            ..pb::Settings::default()
        }),
        update_mask: paths.map(|paths| prost_types::FieldMask { paths }),
    })
}

/// The service's answer as the API's JSON (or its error body).
fn respond(catalog: &Catalog, result: Result<pb::Settings, Status>) -> Response {
    let settings = match result {
        Ok(settings) => settings,
        Err(status) => return error(&status).into_response(),
    };
    if catalog.get(&settings.kind).is_err() {
        return unknown_here(&settings.kind).into_response();
    }
    let json = match render(catalog, &settings) {
        Ok(json) => json,
        Err(e) => {
            tracing::error!(error = %e, kind = settings.kind, "an answer does not render as JSON");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                20500,
                "Internal Server Error",
            )
            .into_response();
        }
    };
    let mut response = Json(json).into_response();
    insert_etag(&mut response, &settings.etag);
    response
}

/// `settings` as the API's JSON.
fn render(catalog: &Catalog, settings: &pb::Settings) -> Result<serde_json::Value, String> {
    let kind = catalog.get(&settings.kind).map_err(|e| e.to_string())?;
    let any = settings.value.clone().unwrap_or_default();
    let value = DynamicMessage::decode(kind.message.clone(), any.value.as_slice())
        .map_err(|e| e.to_string())?;
    let mut value = serde_json::to_value(&value).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(fields) = &mut value {
        fields.insert("@type".into(), serde_json::Value::String(any.type_url));
    }
    Ok(serde_json::json!({
        "kind": settings.kind,
        "accountSid": settings.account_sid,
        "revision": settings.revision,
        "etag": settings.etag,
        "updateTime": settings.update_time.as_ref().map(ToString::to_string),
        "value": value,
    }))
}

/// A status as the API's error: the service's own message, which names
/// the field, the path or the kind.
fn error(status: &Status) -> ApiError {
    ApiError::mapped(status, |_| status.message().to_owned())
}
