//! The one mapping from the domain [`Error`] to a gRPC [`Status`]. Every
//! variant is matched (no wildcard), so a new one forces a decision here.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{
    contract::{REASON_INVALID, REASON_MISSING},
    domain::{Field, ValidationError, Violation},
    error::{Error, Unauthenticated},
};

impl From<Error> for Status {
    /// The one mapping from the domain error to gRPC. Clients get a safe
    /// message; faults on our side are logged here with their cause.
    fn from(error: Error) -> Status {
        match error {
            Error::Invalid(v) => invalid_argument(&v, None),
            Error::InvalidRecord { index, error } => invalid_argument(&error, Some(index)),
            Error::Unauthenticated(why) => Status::unauthenticated(match why {
                Unauthenticated::Missing => {
                    "no credentials: send `authorization: Basic base64(AccountSid:AuthToken)` \
                     (or ApiKeySid:Secret); in open mode, name the account in account_sid instead"
                }
                Unauthenticated::Rejected => "the credentials are malformed or incorrect",
            }),
            Error::PermissionDenied { caller, requested } => Status::permission_denied(format!(
                "credentials for account {caller} cannot act for account {requested}"
            )),
            Error::OperatorOnly { caller } => Status::permission_denied(format!(
                "credentials for account {caller} cannot call operator RPCs; \
                 use an [[operators]] entry of the accounts file"
            )),
            Error::Corrupt {
                resource,
                account,
                detail,
            } => {
                tracing::error!(%resource, %account, %detail, "stored record does not decode");
                Status::data_loss(format!(
                    "the stored {} of account {account} cannot be read; \
                     other accounts are unaffected",
                    resource.title()
                ))
            }
            Error::Storage(detail) => {
                tracing::error!(%detail, "storage failure");
                Status::unavailable("the settings store could not complete the request; retry")
            }
            Error::EtagMismatch {
                resource,
                account,
                expected,
                current,
            } => Status::aborted(format!(
                "the {} of account {account} changed since it was read: its etag is {current}, \
                 not {expected}; read it again and retry",
                resource.title()
            )),
            Error::RevisionNotFound {
                resource,
                account,
                revision,
            } => Status::not_found(format!(
                "revision {revision} is not in the retained history of the {} of account \
                 {account}",
                resource.title()
            )),
            Error::Compacted { requested, oldest } => compacted(requested, oldest),
            e @ Error::UnknownKind { .. } => Status::not_found(e.to_string()),
            Error::Injected { code } => Status::new(
                Code::from_i32(code),
                "a fault injected by an operator (InjectFault); ClearFaults removes it",
            ),
            Error::ScanFailed(detail) => {
                tracing::error!(%detail, "scan failed part way");
                Status::internal("the export failed part way; the records sent are incomplete")
            }
            Error::Unavailable(detail) => {
                // The detail names the cluster's members: for the logs, not
                // for callers.
                tracing::warn!(%detail, "store unavailable");
                Status::unavailable(
                    "the settings store is unreachable or has no quorum: retry with backoff \
                     (a write that failed so may or may not have been applied)",
                )
            }
            Error::ShuttingDown => Status::unavailable("settingsd is shutting down; retry"),
            Error::Reopening => Status::unavailable(
                "settingsd is reopening its store after a storage failure; retry shortly",
            ),
            Error::WritesStopped(cause) => {
                tracing::error!(%cause, "write refused: writes stopped after a failed commit");
                Status::unavailable(
                    "settingsd stopped taking writes after a storage failure; it resumes once \
                     the disk takes writes again (its health is NOT_SERVING until then): retry \
                     with backoff",
                )
            }
            Error::TooManyWatches { max, account } => {
                tracing::warn!(max, account = ?account, "watch refused: too many open");
                Status::resource_exhausted(match account {
                    Some(account) => format!(
                        "account {account} has {max} watches open, the limit per account; \
                         close one first"
                    ),
                    None => format!("settingsd has {max} watches open, its limit; retry later"),
                })
            }
            Error::Overloaded { max } => {
                tracing::warn!(max, "request shed: too many in flight");
                Status::unavailable(format!(
                    "settingsd is at its limit of {max} requests in flight; retry with backoff"
                ))
            }
            Error::Open { .. } => {
                tracing::error!(error = %error, "store unavailable");
                Status::internal("the settings store is unavailable")
            }
        }
    }
}

/// `google.rpc.ErrorInfo.reason` of a watch from a compacted revision.
pub const REASON_REVISION_COMPACTED: &str = "REVISION_COMPACTED";

/// OUT_OF_RANGE naming the oldest revision a watch can start from, in the
/// message and in a `google.rpc.ErrorInfo` (reason `REVISION_COMPACTED`,
/// metadata `oldest_revision`), so a client can resume without parsing text.
fn compacted(requested: u64, oldest: u64) -> Status {
    let metadata =
        std::collections::HashMap::from([("oldest_revision".to_owned(), oldest.to_string())]);
    Status::with_error_details(
        Code::OutOfRange,
        format!(
            "revision {requested} is older than the retained history; the oldest revision a \
             watch can start from is {oldest}"
        ),
        ErrorDetails::with_error_info(REASON_REVISION_COMPACTED, "settingsd", metadata),
    )
}

/// INVALID_ARGUMENT naming the field (of the `record`-th record of a
/// stream, counted from 1, if given) in the message and in a
/// `google.rpc.BadRequest` detail, so programs need not parse the message.
fn invalid_argument(v: &ValidationError, record: Option<usize>) -> Status {
    let reason = match v.violation {
        Violation::Missing => REASON_MISSING,
        Violation::TooLong { .. } | Violation::Malformed(_) | Violation::Requires(_) => {
            REASON_INVALID
        }
    };
    let (field, message) = match record {
        None => (v.field.as_str().to_owned(), v.to_string()),
        Some(n) if v.field == Field::Record => (format!("record[{n}]"), format!("record {n}: {v}")),
        Some(n) => (
            format!("record[{n}].{}", v.field.as_str()),
            format!("record {n}: {v}"),
        ),
    };
    let violation = FieldViolation {
        field,
        description: v.describe(Field::as_str),
        reason: reason.to_owned(),
        localized_message: None,
    };
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(vec![violation]),
    )
}
