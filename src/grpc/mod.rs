//! The gRPC API: one core ([`SettingsApi`]) that every settings resource's
//! service calls, the per-resource services themselves ([`services`]), the
//! conversions between the contract and the domain ([`convert`]), and the one
//! mapping from [`Error`] to [`tonic::Status`] ([`status`]).
//!
//! The core does everything a call needs once, for any resource: the
//! in-flight limit, authentication, which account a caller may act for,
//! validation into a patch, the store call, and the answer's `url`.

mod convert;
mod faults;
mod generic;
mod in_flight;
mod services;
mod status;
mod watch;

use std::sync::Arc;

use tonic::metadata::MetadataMap;

use self::faults::{Faults, Method};
pub use self::{
    convert::{parse_etag, parse_patch, replacement, to_message},
    generic::{declared_replacement, decode_value, SettingsGrpc},
    in_flight::InFlight,
    services::{AdminGrpc, CompositionSettingsGrpc, RecordingSettingsGrpc, WatchStream},
    watch::WatchSlots,
};
use crate::{
    auth::{Authenticator, Caller},
    contract::{
        GetSettingsMessage, ListRevisionsMessage, RevisionsPageMessage, RollbackMessage,
        SetSettingsMessage, SettingsMessage,
    },
    domain::{AccountSid, Field, ValidationError, Violation},
    error::{Error, Unauthenticated},
    metrics::Metrics,
    request_log::{self, RecordedRequest, RequestLog},
    resource::Resource,
    store::{Patch, SharedStore},
};

/// The public base URL that resources report in their `url` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(Arc<str>);

impl PublicUrl {
    /// What the real API answers.
    pub const TWILIO: &'static str = "https://video.twilio.com";

    /// # Errors
    /// A message if `value` is not an absolute http(s) URL without query or fragment.
    pub fn parse(value: &str) -> Result<Self, String> {
        let url =
            url::Url::parse(value).map_err(|e| format!("invalid public URL {value:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "invalid public URL {value:?}: must be an http or https URL with a host"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "invalid public URL {value:?}: must not have a query or fragment"
            ));
        }
        Ok(PublicUrl(value.trim_end_matches('/').into()))
    }

    /// `resource`'s REST address under this base.
    pub fn resource_url(&self, resource: Resource) -> String {
        format!("{}{}", self.0, resource.spec().rest_path)
    }
}

impl Default for PublicUrl {
    fn default() -> Self {
        PublicUrl(Self::TWILIO.into())
    }
}

/// A gRPC code as a metric label (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// History pages: the default and the largest size.
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

fn invalid(field: Field, why: &str) -> ValidationError {
    ValidationError {
        field,
        violation: Violation::Malformed(why.to_owned()),
    }
}

/// What every settings service does, for any resource. Cheap to clone.
#[derive(Clone)]
pub struct SettingsApi {
    store: SharedStore,
    /// Decides which account each call may act for.
    auth: Authenticator,
    /// Sheds requests past the in-flight limit (shared with the HTTP
    /// bridge, which calls these services).
    in_flight: InFlight,
    /// Each built-in resource's `url`, in [`Resource::ALL`] order: answers carry
    /// it on every call, so it is formatted once.
    urls: Arc<[Arc<str>]>,
    /// Request counts and latencies; `None` with the admin listener off.
    metrics: Option<Metrics>,
    /// Operators' fault rules (`InjectFault`), applied to Gets and Sets.
    faults: Arc<Faults>,
    /// The last requests answered (`ListRecentRequests`), shared with the
    /// HTTP bridge's listener.
    requests: Arc<RequestLog>,
    /// Open watches against their limits.
    watch_slots: Arc<WatchSlots>,
}

impl SettingsApi {
    pub fn new(
        store: SharedStore,
        auth: Authenticator,
        in_flight: InFlight,
        public_url: &PublicUrl,
        metrics: Option<Metrics>,
        requests: Arc<RequestLog>,
        watch_slots: Arc<WatchSlots>,
    ) -> Self {
        let urls = Resource::ALL
            .iter()
            .map(|r| Arc::from(public_url.resource_url(*r)))
            .collect();
        SettingsApi {
            store,
            auth,
            in_flight,
            urls,
            metrics,
            faults: Arc::default(),
            requests,
            watch_slots,
        }
    }

    /// Applies the fault rule this request matches, if one fires: waits its
    /// delay, then fails with its code (before the store is touched, so a
    /// failed Set stores nothing).
    async fn inject(
        &self,
        resource: Resource,
        method: Method,
        account: &AccountSid,
    ) -> Result<(), Error> {
        let Some(action) = self.faults.check(resource, method, account) else {
            return Ok(());
        };
        if !action.delay.is_zero() {
            tokio::time::sleep(action.delay).await;
        }
        match action.code {
            None => Ok(()),
            Some(code) => {
                if let Some(metrics) = &self.metrics {
                    metrics.injected(code_name(tonic::Code::from_i32(code)));
                }
                Err(Error::Injected { code })
            }
        }
    }

    /// Counts a finished request (see [`crate::metrics`]) and keeps it in
    /// the request log.
    pub(crate) fn observe(
        &self,
        method: &'static str,
        code: tonic::Code,
        arrived: std::time::SystemTime,
        took: std::time::Duration,
        account: Option<AccountSid>,
    ) {
        if let Some(metrics) = &self.metrics {
            metrics.request("grpc", method, code_name(code), took);
        }
        if !self.requests.is_on() {
            return;
        }
        self.requests.record(RecordedRequest {
            time: arrived,
            transport: "grpc",
            method: std::borrow::Cow::Borrowed(method),
            account,
            status: std::borrow::Cow::Borrowed(code_name(code)),
            latency: took,
            parameters: Vec::new(),
        });
    }

    /// Reads the resource of the account a call may act for.
    ///
    /// # Errors
    /// Overload, authentication and authorization failures, an invalid
    /// `account_sid`, and the store's errors.
    pub async fn get(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        request: GetSettingsMessage,
    ) -> Result<SettingsMessage, Error> {
        let _slot = self.start()?;
        let account = self.authorize(metadata, &request.account_sid)?;
        tracing::Span::current().record("account", account.as_str());
        self.inject(resource, Method::Get, &account).await?;
        let settings = self.store.get(resource, &account).await?.into_twilio()?;
        Ok(to_message(settings, self.url(resource)))
    }

    /// Validates a Set and merges it into the resource of the account the
    /// call may act for; answers once it is durable.
    ///
    /// # Errors
    /// As [`SettingsApi::get`], and [`Error::Invalid`] naming the first
    /// invalid field (nothing is written).
    pub async fn set(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        request: SetSettingsMessage,
    ) -> Result<SettingsMessage, Error> {
        let _slot = self.start()?;
        let account = self.authorize(metadata, &request.account_sid)?;
        let patch = parse_patch(&request)?;
        let expected = parse_etag(&request.etag)?;
        tracing::Span::current().record("account", account.as_str());
        self.inject(resource, Method::Set, &account).await?;
        let stored = self
            .store
            .set(resource, &account, patch.into(), expected)
            .await?
            .into_twilio()?;
        tracing::debug!(revision = stored.revision, "settings stored");
        Ok(to_message(stored, self.url(resource)))
    }

    /// A page of the account's past states of `resource`, newest first.
    ///
    /// # Errors
    /// As [`SettingsApi::get`]; [`Error::Invalid`] for a bad page size or
    /// token.
    pub async fn list_revisions(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        request: ListRevisionsMessage,
    ) -> Result<RevisionsPageMessage, Error> {
        let (states, next_page_token) = self
            .history_page(
                resource,
                metadata,
                &request.account_sid,
                request.page_size,
                &request.page_token,
            )
            .await?;
        let url = self.url(resource);
        Ok(RevisionsPageMessage {
            // A reset is listed as the default resource at its revision.
            revisions: states
                .into_iter()
                .map(|record| Ok(to_message(record.into_twilio()?, url.clone())))
                .collect::<Result<_, Error>>()?,
            next_page_token,
        })
    }

    /// A page of the account's past states of `resource`, newest first (a
    /// reset as the default record at its revision), and the next page's
    /// token ("" on the last page): any kind's history listing.
    ///
    /// # Errors
    /// As [`SettingsApi::get`]; [`Error::Invalid`] for a bad page size or
    /// token.
    pub(crate) async fn history_page(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        account_sid: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<(Vec<crate::store::Record>, String), Error> {
        let _slot = self.start()?;
        let account = self.authorize(metadata, account_sid)?;
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => return Err(invalid(Field::PageSize, "must not be negative").into()),
            n => usize::try_from(n)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let before = match page_token {
            "" => None,
            token => Some(token.parse::<u64>().map_err(|_| {
                invalid(
                    Field::PageToken,
                    "must be the next_page_token of a previous page",
                )
            })?),
        };
        let mut states = self
            .store
            .history(resource, &account, before, size + 1)
            .await?;
        let next_page_token = if states.len() > size {
            states.truncate(size);
            states
                .last()
                .map_or(String::new(), |c| c.record.revision().to_string())
        } else {
            String::new()
        };
        Ok((
            states.into_iter().map(|c| c.record).collect(),
            next_page_token,
        ))
    }

    /// Writes a new revision equal to the account's state at a past one.
    ///
    /// # Errors
    /// As [`SettingsApi::set`]; [`Error::RevisionNotFound`].
    pub async fn rollback(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        request: RollbackMessage,
    ) -> Result<SettingsMessage, Error> {
        let stored = self
            .rollback_record(
                resource,
                metadata,
                &request.account_sid,
                request.revision,
                &request.etag,
            )
            .await?
            .into_twilio()?;
        Ok(to_message(stored, self.url(resource)))
    }

    /// Any kind's rollback: writes a new revision equal to the account's
    /// state at `revision`.
    ///
    /// # Errors
    /// As [`SettingsApi::set`]; [`Error::RevisionNotFound`].
    pub(crate) async fn rollback_record(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        account_sid: &str,
        revision: u64,
        etag: &str,
    ) -> Result<crate::store::Record, Error> {
        let _slot = self.start()?;
        let account = self.authorize(metadata, account_sid)?;
        if revision == 0 {
            return Err(ValidationError {
                field: Field::Revision,
                violation: Violation::Missing,
            }
            .into());
        }
        let expected = parse_etag(etag)?;
        tracing::Span::current().record("account", account.as_str());
        let past = self.store.revision(resource, &account, revision).await?;
        let patch = Patch::replacing(&past)?;
        let stored = self.store.set(resource, &account, patch, expected).await?;
        tracing::info!(from = revision, revision = stored.revision(), "rolled back");
        Ok(stored)
    }

    /// The in-flight limit the services share.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// A built-in resource's `url`.
    fn url(&self, resource: Resource) -> String {
        Resource::ALL
            .iter()
            .position(|r| *r == resource)
            .map_or_else(String::new, |i| self.urls[i].to_string())
    }

    /// Claims an in-flight slot for one request, held until it is dropped.
    fn start(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        self.in_flight.try_start().ok_or_else(|| {
            if let Some(metrics) = &self.metrics {
                metrics.shed();
            }
            Error::Overloaded {
                max: self.in_flight.max(),
            }
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
        let account = self.authorized(metadata, account_sid)?;
        request_log::note_account(&account);
        Ok(account)
    }

    fn authorized(&self, metadata: &MetadataMap, account_sid: &str) -> Result<AccountSid, Error> {
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
}
