//! Twilio's error body, and how the bridge answers every failure with it:
//! its own (a bad form, a limit) and the gRPC service's, mapped from the
//! status code and its `google.rpc.BadRequest` detail.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::{form::Param, MAX_BODY_BYTES};
use crate::contract::REASON_MISSING;

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
    pub(super) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            header: None,
        }
    }

    pub(super) fn bad_request(message: String) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, 20001, message)
    }

    pub(super) fn invalid_parameter(param: Param, why: &str) -> Self {
        ApiError::bad_request(format!("Invalid parameter {param}: {why}"))
    }

    pub(super) fn unauthenticated(message: &str) -> Self {
        ApiError {
            header: Some((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"settingsd\""),
            )),
            ..ApiError::new(StatusCode::UNAUTHORIZED, 20003, message)
        }
    }

    pub(super) fn too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            20001,
            format!("Request body too large: the limit is {MAX_BODY_BYTES} bytes"),
        )
    }

    pub(super) fn precondition_failed(why: &str) -> Self {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            20412,
            format!("Precondition Failed: {why}"),
        )
    }

    pub(super) fn not_found(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    pub(super) fn method_not_allowed(method: &axum::http::Method) -> Self {
        ApiError {
            header: Some((header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"))),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                20004,
                format!("Method not allowed: {method} is not supported here; use GET or POST"),
            )
        }
    }

    /// Maps a gRPC status from the service to Twilio's error for it.
    pub fn from_status(status: &Status) -> Self {
        match status.code() {
            Code::InvalidArgument => invalid_argument(status),
            _ => ApiError::mapped(status, |http| {
                match http {
                    StatusCode::FORBIDDEN => "Forbidden",
                    StatusCode::NOT_FOUND => "The requested resource was not found",
                    StatusCode::TOO_MANY_REQUESTS => "Too Many Requests",
                    StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable: retry the request",
                    _ => "Internal Server Error",
                }
                .to_owned()
            }),
        }
    }

    /// Maps a gRPC status to its HTTP status and error code, worded by
    /// `message` (from the HTTP status; the JSON API uses the service's own
    /// message instead). Authentication failures and lost conditional
    /// writes have their own bodies.
    pub(super) fn mapped(status: &Status, message: impl Fn(StatusCode) -> String) -> Self {
        let (http, code) = match status.code() {
            Code::Unauthenticated => return ApiError::unauthenticated("Authenticate"),
            // A conditional write lost (If-Match): Twilio has no such error,
            // so the code is settingsd's own, in Twilio's style.
            Code::Aborted => return ApiError::precondition_failed(status.message()),
            Code::InvalidArgument => (StatusCode::BAD_REQUEST, 20001),
            Code::PermissionDenied => (StatusCode::FORBIDDEN, 20403),
            // UNIMPLEMENTED: a standalone bridge in front of a settingsd
            // that predates the resource.
            Code::NotFound | Code::Unimplemented => (StatusCode::NOT_FOUND, 20404),
            Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, 20429),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                (StatusCode::SERVICE_UNAVAILABLE, 20503)
            }
            Code::Ok
            | Code::Unknown
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Internal
            | Code::DataLoss => {
                tracing::error!(code = ?status.code(), message = status.message(), "upstream fault");
                (StatusCode::INTERNAL_SERVER_ERROR, 20500)
            }
        };
        ApiError::new(http, code, message(http))
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
    let Some(param) = Param::for_proto_field(&violation.field) else {
        return ApiError::bad_request(status.message().to_owned());
    };
    if violation.reason == REASON_MISSING {
        return ApiError::bad_request(format!(
            "Missing required parameter {param} in the post body"
        ));
    }
    let mut why = violation.description;
    for other in Param::ALL {
        why = why.replace(other.proto_field(), other.as_str());
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

/// Twilio's error body: `{"code", "message", "more_info", "status"}`. The
/// helper libraries raise their usual exception (`TwilioRestException` with
/// `code` and `status`) from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioError {
    pub code: u32,
    pub message: String,
    pub more_info: String,
    pub status: u16,
}

impl TwilioError {
    pub fn new(code: u32, message: impl Into<String>, status: u16) -> Self {
        TwilioError {
            code,
            message: message.into(),
            more_info: format!("https://www.twilio.com/docs/errors/{code}"),
            status,
        }
    }
}
