//! The gRPC service: proto <-> domain conversions at the edge, and the one
//! mapping from [`Error`] to [`tonic::Status`].

use std::{sync::Arc, time::SystemTime};

use tonic::{metadata::MetadataMap, Code, Request, Response, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{
    auth::{Authenticator, Caller, Unauthenticated},
    domain::{
        AccountSid, CredentialSid, Field, FriendlyName, RecordingSettings, RecordingSettingsPatch,
        S3Url, Update, ValidationError, Violation,
    },
    error::Error,
    limits::InFlight,
    pb::{
        self, admin_service_server::AdminService,
        recording_settings_service_server::RecordingSettingsService,
        ExportRecordingSettingsRequest, GetRecordingSettingsRequest, SetRecordingSettingsRequest,
    },
    store::Store,
};

/// `google.rpc.BadRequest.FieldViolation.reason` for a required field that
/// was absent or empty. The HTTP bridge relies on it to say "Missing
/// required parameter" rather than "Invalid parameter".
pub const REASON_MISSING: &str = "MISSING";
/// `FieldViolation.reason` for any other invalid value.
pub const REASON_INVALID: &str = "INVALID";

/// The `settingsd.v1.RecordingSettingsService` implementation. Cheap to clone.
#[derive(Clone)]
pub struct RecordingSettingsGrpc {
    store: Store,
    /// Decides which account each call may act for.
    auth: Authenticator,
    /// Sheds requests past the in-flight limit (shared with the HTTP
    /// bridge, which calls this service).
    in_flight: InFlight,
    /// What every answer carries in `url`: the resource's REST address under
    /// the configured public base URL.
    resource_url: Arc<str>,
}

impl RecordingSettingsGrpc {
    pub fn new(
        store: Store,
        auth: Authenticator,
        in_flight: InFlight,
        resource_url: impl Into<Arc<str>>,
    ) -> Self {
        RecordingSettingsGrpc {
            store,
            auth,
            in_flight,
            resource_url: resource_url.into(),
        }
    }

    /// Claims an in-flight slot for one request, held until it is dropped.
    fn start(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.in_flight.try_start().ok_or(Error::Overloaded {
            max: self.in_flight.max(),
        })
    }

    /// The account a call acts for: the credentials' account when
    /// `account_sid` is empty, else `account_sid`, which must then be the
    /// caller's own (any account for an anonymous caller in open mode).
    ///
    /// # Errors
    /// [`Error::Unauthenticated`], [`Error::Invalid`] for a malformed
    /// `account_sid`, [`Error::PermissionDenied`] for another account.
    fn authorize(&self, metadata: &MetadataMap, account_sid: &str) -> Result<AccountSid, Error> {
        match (self.caller(metadata)?, account_sid) {
            (Caller::Account(own), "") => Ok(own),
            (Caller::Anonymous, "") => Err(Error::Unauthenticated(Unauthenticated::Missing)),
            (Caller::Anonymous | Caller::Operator(_), named) => Ok(AccountSid::parse(named)?),
            (Caller::Account(own), named) => {
                let requested = AccountSid::parse(named)?;
                if requested == own {
                    Ok(own)
                } else {
                    Err(Error::PermissionDenied {
                        caller: own,
                        requested,
                    })
                }
            }
        }
    }

    /// Who sent a call, from its `authorization` metadata.
    fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Error> {
        let authorization = match metadata.get("authorization") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| Error::Unauthenticated(Unauthenticated::Rejected))?,
            ),
        };
        self.auth.authenticate(authorization)
    }

    fn to_proto(&self, s: RecordingSettings) -> pb::RecordingSettings {
        pb::RecordingSettings {
            account_sid: s.account_sid.as_str().to_owned(),
            friendly_name: s.friendly_name.map(|v| v.as_str().to_owned()),
            aws_credentials_sid: s.aws_credentials_sid.map(|v| v.as_str().to_owned()),
            aws_s3_url: s.aws_s3_url.map(|v| v.as_str().to_owned()),
            aws_storage_enabled: s.aws_storage_enabled,
            encryption_key_sid: s.encryption_key_sid.map(|v| v.as_str().to_owned()),
            encryption_enabled: s.encryption_enabled,
            url: self.resource_url.to_string(),
            revision: s.revision,
            update_time: s.update_time.map(timestamp),
        }
    }
}

#[tonic::async_trait]
impl RecordingSettingsService for RecordingSettingsGrpc {
    #[tracing::instrument(level = "debug", skip_all, fields(account))]
    async fn get_recording_settings(
        &self,
        request: Request<GetRecordingSettingsRequest>,
    ) -> Result<Response<pb::RecordingSettings>, Status> {
        let _slot = self.start()?;
        let account = self.authorize(request.metadata(), &request.get_ref().account_sid)?;
        tracing::Span::current().record("account", account.as_str());
        let settings = self.store.get(&account)?;
        Ok(Response::new(self.to_proto(settings)))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(account))]
    async fn set_recording_settings(
        &self,
        request: Request<SetRecordingSettingsRequest>,
    ) -> Result<Response<pb::RecordingSettings>, Status> {
        let _slot = self.start()?;
        let account = self.authorize(request.metadata(), &request.get_ref().account_sid)?;
        let patch = parse_patch(request.get_ref()).map_err(Error::from)?;
        tracing::Span::current().record("account", account.as_str());
        let stored = self.store.set(&account, patch).await?;
        tracing::debug!(revision = stored.revision, "settings stored");
        Ok(Response::new(self.to_proto(stored)))
    }
}

/// The `settingsd.v1.AdminService` implementation: operator-only RPCs over
/// every account. Shares the settings service's store, credentials and
/// in-flight limit.
#[derive(Clone)]
pub struct AdminGrpc(RecordingSettingsGrpc);

impl AdminGrpc {
    pub fn new(settings: RecordingSettingsGrpc) -> Self {
        AdminGrpc(settings)
    }
}

/// How many exported records may wait for a slow reader before the scan
/// pauses: bounds an export's memory whatever the store's size.
const EXPORT_BUFFER: usize = 256;

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    type ExportRecordingSettingsStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::RecordingSettings, Status>>;

    #[tracing::instrument(skip_all)]
    async fn export_recording_settings(
        &self,
        request: Request<ExportRecordingSettingsRequest>,
    ) -> Result<Response<Self::ExportRecordingSettingsStream>, Status> {
        let slot = self.0.start()?;
        let caller = self.0.caller(request.metadata())?;
        if let Caller::Account(caller) = caller {
            return Err(Error::OperatorOnly { caller }.into());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
        let service = self.0.clone();
        // sled's iterator blocks on disk reads: scan on a blocking thread,
        // which waits whenever the client falls EXPORT_BUFFER records behind.
        let scan_tx = tx.clone();
        let scan = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut exported = 0_u64;
            for record in service.store.scan() {
                let item = record.map(|r| service.to_proto(r)).map_err(Status::from);
                let failed = item.is_err();
                if scan_tx.blocking_send(item).is_err() {
                    tracing::info!(exported, "export abandoned by the client");
                    return;
                }
                if failed {
                    return;
                }
                exported += 1;
            }
            tracing::info!(exported, "export finished");
        });
        // A scan that dies must end the stream with an error: a stream that
        // just ends would read as a complete, shorter backup.
        tokio::spawn(async move {
            if let Err(e) = scan.await {
                tracing::error!(error = %e, "export scan failed");
                let _ = tx
                    .send(Err(Status::internal(
                        "the export failed part way; the records sent are incomplete",
                    )))
                    .await;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// Validates a Set request's fields (all but the account, which
/// `authorize` resolves) into the patch to apply, in the order the proto
/// declares them.
///
/// # Errors
/// The first invalid field.
pub fn parse_patch(
    req: &SetRecordingSettingsRequest,
) -> Result<RecordingSettingsPatch, ValidationError> {
    let friendly_name = FriendlyName::parse(&req.friendly_name)?;
    let aws_credentials_sid = Update::from_wire(req.aws_credentials_sid.as_deref(), |v| {
        CredentialSid::parse(Field::AwsCredentialsSid, v)
    })?;
    let aws_s3_url = Update::from_wire(req.aws_s3_url.as_deref(), S3Url::parse)?;
    let encryption_key_sid = Update::from_wire(req.encryption_key_sid.as_deref(), |v| {
        CredentialSid::parse(Field::EncryptionKeySid, v)
    })?;
    Ok(RecordingSettingsPatch {
        friendly_name,
        aws_credentials_sid,
        aws_s3_url,
        aws_storage_enabled: req.aws_storage_enabled,
        encryption_key_sid,
        encryption_enabled: req.encryption_enabled,
    })
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

impl From<Error> for Status {
    /// The one mapping from the domain error to gRPC. Clients get a safe
    /// message; faults on our side are logged here with their cause.
    fn from(error: Error) -> Status {
        match error {
            Error::Invalid(v) => invalid_argument(&v),
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
            Error::Corrupt { account, detail } => {
                tracing::error!(%account, %detail, "stored record does not decode");
                Status::data_loss(format!(
                    "the stored settings of account {account} cannot be read; \
                     other accounts are unaffected"
                ))
            }
            Error::Storage(detail) => {
                tracing::error!(%detail, "storage failure");
                Status::unavailable("the settings store could not complete the request; retry")
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

/// INVALID_ARGUMENT whose message names the field, with a
/// `google.rpc.BadRequest` detail so programs need not parse the message.
fn invalid_argument(v: &ValidationError) -> Status {
    let reason = match v.violation {
        Violation::Missing => REASON_MISSING,
        Violation::TooLong { .. } | Violation::Malformed(_) | Violation::Requires(_) => {
            REASON_INVALID
        }
    };
    let violation = FieldViolation {
        field: v.field.as_str().to_owned(),
        description: v.describe(Field::as_str),
        reason: reason.to_owned(),
        localized_message: None,
    };
    Status::with_error_details(
        Code::InvalidArgument,
        v.to_string(),
        ErrorDetails::with_bad_request(vec![violation]),
    )
}
