//! The Twilio-shaped HTTP bridge: `GET`/`POST` of each settings resource's
//! REST path (`/v1/RecordingSettings/Default`,
//! `/v1/CompositionSettings/Default`) as Twilio's REST API serves them, so the
//! official helper libraries work against settingsd unchanged.
//!
//! The bridge is thin on purpose. It holds no storage, validation or auth
//! logic, and knows only the contract and Twilio's shapes: each request
//! becomes the resource's Get or Set RPC (the caller's `Authorization` passed
//! on as metadata, `account_sid` left empty so the credentials decide the
//! account) and the gRPC status is mapped back to Twilio's error body. The
//! same code serves both deployments, through [`SettingsBackend`]: in-process
//! (the server's wiring calls the services directly), and standalone
//! ([`crate::contract::SettingsClient`], calling a remote server).
//!
//! Layout: [`form`] decodes POST bodies, [`error`] renders every failure as
//! Twilio's error body, [`json`] renders the resource, [`backend`] is what the
//! routes call.

mod backend;
mod error;
mod form;
mod json;
mod kinds;

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tonic::{metadata::MetadataValue, Code, Request, Status};

pub use self::{
    backend::SettingsBackend,
    error::{ApiError, TwilioError},
    form::{parse_form, recorded_parameters},
    json::SettingsJson,
};
use crate::{
    contract::{GetSettingsMessage, SetSettingsMessage, SettingsMessage},
    kinds::Catalog,
    resource::Resource,
};

/// The JSON API's route, as metrics label it (one label for every
/// account and kind).
pub const KINDS_ROUTE: &str = kinds::ROUTE;

/// Whether `path` is one of the JSON API's (`/v1/accounts/A/settings/K`).
pub fn is_kinds_path(path: &str) -> bool {
    let mut parts = path.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(""), Some("v1"), Some("accounts"), Some(a), Some("settings"), Some(k), None)
            if !a.is_empty() && !k.is_empty()
    )
}

/// The largest POST body accepted, in bytes. Twilio's form for a settings
/// resource is well under 1 KiB even with a 2048-character URL; 16 KiB leaves
/// room for unknown parameters without letting a client make the server
/// buffer much.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

type Backend = Arc<dyn SettingsBackend>;

/// The bridge's routes, over `backend`: every resource's REST path, and
/// the JSON API of `catalog`'s kinds (see [`kinds`]). Unknown paths answer
/// Twilio's 404, other methods on a resource Twilio's 405. A request not
/// answered within `request_timeout` (for example, a client trickling its
/// body) gets Twilio's 503.
pub fn router(
    backend: Arc<dyn SettingsBackend>,
    catalog: Arc<Catalog>,
    request_timeout: Duration,
    max_header_bytes: usize,
) -> Router {
    let mut router = Router::new();
    for resource in Resource::ALL {
        router = router.route(
            resource.spec().rest_path,
            get(move |backend: State<Backend>, headers: HeaderMap| {
                fetch(backend, resource, headers)
            })
            .post(
                move |backend: State<Backend>, headers: HeaderMap, body: Body| {
                    create(backend, resource, headers, body)
                },
            )
            .fallback(method_not_allowed),
        );
    }
    router
        .fallback(not_found)
        .with_state(Arc::clone(&backend))
        .merge(kinds::routes(backend, catalog))
        .layer(middleware::from_fn_with_state(request_timeout, time_limit))
        .layer(middleware::from_fn_with_state(
            max_header_bytes,
            header_limit,
        ))
}

/// Refuses a request whose headers exceed `max` bytes with a Twilio 431
/// body. (hyper reads up to a few times `max` before this runs; beyond
/// that, it answers 431 itself, without a body.)
async fn header_limit(
    State(max): State<usize>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let size: usize = request
        .headers()
        .iter()
        // "name: value\r\n"
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > max {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            20001,
            format!("Request header fields too large: the limit is {max} bytes"),
        )
        .into_response();
    }
    next.run(request).await
}

async fn time_limit(
    State(limit): State<Duration>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            20503,
            format!("Request timed out after {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

async fn fetch(State(backend): State<Backend>, resource: Resource, headers: HeaderMap) -> Response {
    let request = match with_credentials(GetSettingsMessage::default(), &headers) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    match backend.get(resource, request).await {
        // If-None-Match naming the current state: the client has it.
        Ok(settings) if none_match(&headers, &settings.etag) => {
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            insert_etag(&mut response, &settings.etag);
            response
        }
        result => respond(result, &headers),
    }
}

/// Whether `If-None-Match` lists `etag` (or is `*`: the resource always
/// exists). Weak comparison, as RFC 7232 asks for If-None-Match.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The `If-Match` of a POST as the Set's etag; `*` (or none) is no
/// condition: the resource always exists. If-Match compares strongly (RFC
/// 7232), so a weak tag never matches: 412 at once. One entity tag only:
/// a list is a 400 naming the header.
fn if_match(headers: &HeaderMap) -> Result<String, ApiError> {
    match headers.get(header::IF_MATCH).map(|v| v.to_str()) {
        None => Ok(String::new()),
        Some(Ok(v)) if v.trim() == "*" => Ok(String::new()),
        Some(Ok(v)) if v.trim().starts_with("W/") => Err(ApiError::precondition_failed(
            "If-Match compares entity tags strongly; a weak tag never matches",
        )),
        Some(Ok(v)) if v.contains(',') || headers.get_all(header::IF_MATCH).iter().count() > 1 => {
            Err(ApiError::bad_request(
                "Invalid header If-Match: settingsd takes one entity tag (or *)".to_owned(),
            ))
        }
        Some(Ok(v)) => Ok(v.trim().to_owned()),
        Some(Err(_)) => Err(ApiError::bad_request(
            "Invalid header If-Match: not visible ASCII".to_owned(),
        )),
    }
}

fn insert_etag(response: &mut Response, etag: &str) {
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

async fn create(
    State(backend): State<Backend>,
    resource: Resource,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let form = match read_form(&headers, body).await.and_then(|form| {
        Ok(SetSettingsMessage {
            etag: if_match(&headers)?,
            ..form
        })
    }) {
        Ok(form) => form,
        Err(e) => return reject_form(&backend, resource, &headers, e).await,
    };
    match with_credentials(form, &headers) {
        Ok(request) => respond(backend.set(resource, request).await, &headers),
        Err(e) => e.into_response(),
    }
}

/// Answers a body that could not be read as a form. Credentials come first,
/// as at Twilio: a caller that fails them gets 401 and learns nothing about
/// its input. The gRPC service decides, through a Get of the caller's own
/// account (the bridge has no auth rule of its own); this costs a call only
/// on this error path.
async fn reject_form(
    backend: &Backend,
    resource: Resource,
    headers: &HeaderMap,
    form_error: ApiError,
) -> Response {
    match with_credentials(GetSettingsMessage::default(), headers) {
        Err(auth) => auth.into_response(),
        Ok(probe) => match backend.get(resource, probe).await {
            Err(status) if status.code() == Code::Unauthenticated => respond(Err(status), headers),
            _ => form_error.into_response(),
        },
    }
}

fn respond(result: Result<SettingsMessage, Status>, headers: &HeaderMap) -> Response {
    match result {
        Ok(settings) => {
            let etag = settings.etag.clone();
            let mut response = Json(SettingsJson::from(settings)).into_response();
            insert_etag(&mut response, &etag);
            response
        }
        Err(status) if status.code() == Code::Unauthenticated => {
            // Twilio words the two cases differently; which one it is, the
            // request itself says.
            if headers.contains_key(header::AUTHORIZATION) {
                ApiError::unauthenticated("Authenticate").into_response()
            } else {
                ApiError::unauthenticated("Authentication Error - No credentials provided")
                    .into_response()
            }
        }
        Err(status) => ApiError::from_status(&status).into_response(),
    }
}

/// Wraps `message` in a gRPC request carrying the caller's `Authorization`.
fn with_credentials<T>(message: T, headers: &HeaderMap) -> Result<Request<T>, ApiError> {
    let mut request = Request::new(message);
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = MetadataValue::try_from(value.as_bytes())
            .map_err(|_| ApiError::unauthenticated("Authenticate"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// Reads a form body into a Set request, with Twilio's parameter names.
async fn read_form(headers: &HeaderMap, body: Body) -> Result<SetSettingsMessage, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large())?;
    if !bytes.is_empty() {
        require_content_type(
            headers,
            "application/x-www-form-urlencoded",
            "the parameters",
        )?;
    }
    parse_form(&bytes)
}

/// Refuses a body whose `Content-Type` is not `expected` (parameters
/// ignored), saying what to send (`what`).
fn require_content_type(headers: &HeaderMap, expected: &str, what: &str) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "Unsupported Content-Type {content_type:?}: send {what} as {expected}"
    )))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::method_not_allowed(&method)
}
