//! The Twilio-shaped HTTP bridge: `GET`/`POST /v1/RecordingSettings/Default`
//! as Twilio's REST API serves them, so the official helper libraries work
//! against settingsd unchanged.
//!
//! The bridge is thin on purpose. It holds no storage, validation or auth
//! logic: each request becomes a `GetRecordingSettings` or
//! `SetRecordingSettings` call (the caller's `Authorization` passed on as
//! metadata, `account_sid` left empty so the credentials decide the account)
//! and the gRPC status is mapped back to Twilio's error body. The same code
//! serves both deployments, through [`SettingsBackend`]: in-process, calling
//! the service directly, and standalone, calling a remote server.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

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
use tonic_types::StatusExt;

use crate::{
    domain::Field,
    grpc::{RecordingSettingsGrpc, REASON_MISSING},
    pb::{
        recording_settings_service_client::RecordingSettingsServiceClient,
        recording_settings_service_server::RecordingSettingsService, GetRecordingSettingsRequest,
        RecordingSettings, SetRecordingSettingsRequest,
    },
    twilio::{RecordingSettingsJson, TwilioError},
};

/// The largest POST body accepted, in bytes. Twilio's form for this resource
/// is well under 1 KiB even with a 2048-character URL; 16 KiB leaves room for
/// unknown parameters without letting a client make the server buffer much.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The path of the one resource.
pub const RECORDING_SETTINGS_PATH: &str = "/v1/RecordingSettings/Default";

/// What the bridge calls: the two RPCs, with metadata. Implemented by the
/// in-process service and by a gRPC client to a remote server.
#[tonic::async_trait]
pub trait SettingsBackend: Send + Sync + 'static {
    async fn get(
        &self,
        request: Request<GetRecordingSettingsRequest>,
    ) -> Result<RecordingSettings, Status>;
    async fn set(
        &self,
        request: Request<SetRecordingSettingsRequest>,
    ) -> Result<RecordingSettings, Status>;
}

#[tonic::async_trait]
impl SettingsBackend for RecordingSettingsGrpc {
    async fn get(
        &self,
        request: Request<GetRecordingSettingsRequest>,
    ) -> Result<RecordingSettings, Status> {
        self.get_recording_settings(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn set(
        &self,
        request: Request<SetRecordingSettingsRequest>,
    ) -> Result<RecordingSettings, Status> {
        self.set_recording_settings(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tonic::async_trait]
impl SettingsBackend for RecordingSettingsServiceClient<tonic::transport::Channel> {
    async fn get(
        &self,
        request: Request<GetRecordingSettingsRequest>,
    ) -> Result<RecordingSettings, Status> {
        // Clones of a tonic client share one channel (one connection pool).
        self.clone()
            .get_recording_settings(request)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn set(
        &self,
        request: Request<SetRecordingSettingsRequest>,
    ) -> Result<RecordingSettings, Status> {
        self.clone()
            .set_recording_settings(request)
            .await
            .map(tonic::Response::into_inner)
    }
}

type Backend = Arc<dyn SettingsBackend>;

/// The bridge's routes, over `backend`. Unknown paths answer Twilio's 404,
/// other methods on the resource Twilio's 405.
/// A request not answered within `request_timeout` (for example, a client
/// trickling its body) gets Twilio's 503.
pub fn router(
    backend: Arc<dyn SettingsBackend>,
    request_timeout: Duration,
    max_header_bytes: usize,
) -> Router {
    Router::new()
        .route(
            RECORDING_SETTINGS_PATH,
            get(fetch).post(create).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(backend)
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

async fn fetch(State(backend): State<Backend>, headers: HeaderMap) -> Response {
    let request = match with_credentials(GetRecordingSettingsRequest::default(), &headers) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    respond(backend.get(request).await, &headers)
}

async fn create(State(backend): State<Backend>, headers: HeaderMap, body: Body) -> Response {
    let form = match read_form(&headers, body).await {
        Ok(form) => form,
        Err(e) => return reject_form(&backend, &headers, e).await,
    };
    match with_credentials(form, &headers) {
        Ok(request) => respond(backend.set(request).await, &headers),
        Err(e) => e.into_response(),
    }
}

/// Answers a body that could not be read as a form. Credentials come first,
/// as at Twilio: a caller that fails them gets 401 and learns nothing about
/// its input. The gRPC service decides, through a Get of the caller's own
/// account (the bridge has no auth rule of its own); this costs a call only
/// on this error path.
async fn reject_form(backend: &Backend, headers: &HeaderMap, form_error: ApiError) -> Response {
    match with_credentials(GetRecordingSettingsRequest::default(), headers) {
        Err(auth) => auth.into_response(),
        Ok(probe) => match backend.get(probe).await {
            Err(status) if status.code() == Code::Unauthenticated => respond(Err(status), headers),
            _ => form_error.into_response(),
        },
    }
}

fn respond(result: Result<RecordingSettings, Status>, headers: &HeaderMap) -> Response {
    match result {
        Ok(settings) => Json(RecordingSettingsJson::from(settings)).into_response(),
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
async fn read_form(
    headers: &HeaderMap,
    body: Body,
) -> Result<SetRecordingSettingsRequest, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large())?;
    if !bytes.is_empty() {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(ApiError::bad_request(format!(
                "Unsupported Content-Type {content_type:?}: \
                 send the parameters as application/x-www-form-urlencoded"
            )));
        }
    }
    parse_form(&bytes)
}

/// Decodes `application/x-www-form-urlencoded` into a Set request: `+` and
/// `%20` are both spaces, booleans are `true`/`false` in any case, an empty
/// string clears an optional field, unknown parameters are ignored (as
/// Twilio does).
///
/// # Errors
/// A 400/20001 naming the parameter for invalid UTF-8, a repeated
/// parameter, or a boolean that is neither `true` nor `false`.
pub fn parse_form(body: &[u8]) -> Result<SetRecordingSettingsRequest, ApiError> {
    let mut request = SetRecordingSettingsRequest::default();
    let mut seen = Vec::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let key = form_decode(raw_key).map_err(|()| {
            ApiError::bad_request("Invalid parameter name: not valid UTF-8".to_owned())
        })?;
        let Some(param) = Param::from_str(&key).ok() else {
            continue;
        };
        if seen.contains(&param) {
            return Err(ApiError::invalid_parameter(param, "given more than once"));
        }
        seen.push(param);
        let value = form_decode(raw_value)
            .map_err(|()| ApiError::invalid_parameter(param, "not valid UTF-8"))?;
        match param {
            Param::FriendlyName => request.friendly_name = value,
            Param::AwsCredentialsSid => request.aws_credentials_sid = Some(value),
            Param::AwsS3Url => request.aws_s3_url = Some(value),
            Param::EncryptionKeySid => request.encryption_key_sid = Some(value),
            Param::AwsStorageEnabled => {
                request.aws_storage_enabled = Some(parse_bool(param, &value)?)
            }
            Param::EncryptionEnabled => {
                request.encryption_enabled = Some(parse_bool(param, &value)?)
            }
        }
    }
    Ok(request)
}

/// `+` to space, then percent-decoding, then strict UTF-8.
fn form_decode(raw: &[u8]) -> Result<String, ()> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus_as_space)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| ())
}

fn parse_bool(param: Param, value: &str) -> Result<bool, ApiError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::invalid_parameter(
            param,
            &format!("must be true or false, not {value:?}"),
        ))
    }
}

/// Twilio's PascalCase parameters for this resource's POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    FriendlyName,
    AwsCredentialsSid,
    AwsS3Url,
    AwsStorageEnabled,
    EncryptionKeySid,
    EncryptionEnabled,
}

impl Param {
    const ALL: [Param; 6] = [
        Param::FriendlyName,
        Param::AwsCredentialsSid,
        Param::AwsS3Url,
        Param::AwsStorageEnabled,
        Param::EncryptionKeySid,
        Param::EncryptionEnabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Param::FriendlyName => "FriendlyName",
            Param::AwsCredentialsSid => "AwsCredentialsSid",
            Param::AwsS3Url => "AwsS3Url",
            Param::AwsStorageEnabled => "AwsStorageEnabled",
            Param::EncryptionKeySid => "EncryptionKeySid",
            Param::EncryptionEnabled => "EncryptionEnabled",
        }
    }

    /// The parameter that carries `field`, if any (`account_sid` comes
    /// from the credentials, not the form).
    fn for_field(field: Field) -> Option<Param> {
        match field {
            Field::AccountSid => None,
            Field::FriendlyName => Some(Param::FriendlyName),
            Field::AwsCredentialsSid => Some(Param::AwsCredentialsSid),
            Field::AwsS3Url => Some(Param::AwsS3Url),
            Field::AwsStorageEnabled => Some(Param::AwsStorageEnabled),
            Field::EncryptionKeySid => Some(Param::EncryptionKeySid),
            Field::EncryptionEnabled => Some(Param::EncryptionEnabled),
        }
    }
}

impl FromStr for Param {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Param::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered as Twilio's JSON error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: u32,
    message: String,
    /// Extra headers: `WWW-Authenticate` on 401, `Allow` on 405.
    header: Option<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    fn bad_request(message: String) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, 20001, message)
    }

    fn invalid_parameter(param: Param, why: &str) -> Self {
        ApiError::bad_request(format!("Invalid parameter {param}: {why}"))
    }

    fn unauthenticated(message: &str) -> Self {
        ApiError {
            header: Some((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"settingsd\""),
            )),
            ..ApiError::new(StatusCode::UNAUTHORIZED, 20003, message)
        }
    }

    fn too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            20001,
            format!("Request body too large: the limit is {MAX_BODY_BYTES} bytes"),
        )
    }

    /// Maps a gRPC status from the service to Twilio's error for it.
    pub fn from_status(status: &Status) -> Self {
        match status.code() {
            Code::InvalidArgument => invalid_argument(status),
            Code::Unauthenticated => ApiError::unauthenticated("Authenticate"),
            Code::PermissionDenied => ApiError::new(StatusCode::FORBIDDEN, 20403, "Forbidden"),
            Code::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                20404,
                "The requested resource was not found",
            ),
            Code::ResourceExhausted => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests")
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    20503,
                    "Service Unavailable: retry the request",
                )
            }
            Code::Ok
            | Code::Unknown
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => {
                tracing::error!(code = ?status.code(), message = status.message(), "upstream fault");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    20500,
                    "Internal Server Error",
                )
            }
        }
    }
}

/// INVALID_ARGUMENT: name the HTTP parameter, from the status's
/// `google.rpc.BadRequest` detail, re-worded with Twilio's parameter names.
fn invalid_argument(status: &Status) -> ApiError {
    let violation = status
        .get_details_bad_request()
        .and_then(|d| d.field_violations.into_iter().next());
    let Some(violation) = violation else {
        return ApiError::bad_request(status.message().to_owned());
    };
    let Some(param) = Field::from_name(&violation.field).and_then(Param::for_field) else {
        return ApiError::bad_request(status.message().to_owned());
    };
    if violation.reason == REASON_MISSING {
        return ApiError::bad_request(format!(
            "Missing required parameter {param} in the post body"
        ));
    }
    let mut why = violation.description;
    for field in Field::ALL {
        if let Some(other) = Param::for_field(field) {
            why = why.replace(field.as_str(), other.as_str());
        }
    }
    ApiError::invalid_parameter(param, &why)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = TwilioError::new(self.code, self.message, self.status.as_u16());
        let mut response = (self.status, Json(body)).into_response();
        if let Some((name, value)) = self.header {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        20404,
        format!("The requested resource {} was not found", uri.path()),
    )
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError {
        header: Some((header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"))),
        ..ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            20004,
            format!("Method not allowed: {method} is not supported here; use GET or POST"),
        )
    }
}
