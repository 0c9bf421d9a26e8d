//! The one domain error. Each edge maps it exhaustively (no wildcard arm), so
//! adding a variant forces a decision at every transport: see
//! `impl From<Error> for tonic::Status` in `grpc`.
//!
//! It depends only on the domain, so every layer can return it: the store
//! without knowing about auth, auth without knowing about transports.

use std::{fmt, path::PathBuf};

use crate::{
    domain::{AccountSid, Etag, ValidationError},
    resource::Resource,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something invalid; nothing was changed.
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// The caller did not prove who it is.
    #[error("authentication failed: {0}")]
    Unauthenticated(Unauthenticated),

    /// The caller named an account other than its own.
    #[error("credentials for account {caller} cannot act for account {requested}")]
    PermissionDenied {
        caller: AccountSid,
        requested: AccountSid,
    },

    /// A record of an import is invalid (`index` counts from 1). Nothing
    /// was written.
    #[error("record {index}: {error}")]
    InvalidRecord {
        index: usize,
        error: ValidationError,
    },

    /// A tenant (account or API key credentials) called an operator-only RPC.
    #[error("account {caller} is not an operator")]
    OperatorOnly { caller: AccountSid },

    /// A stored record could not be decoded. Only that account's resource
    /// is affected.
    #[error("stored {resource} of account {account} are unreadable: {detail}")]
    Corrupt {
        resource: Resource,
        account: AccountSid,
        detail: String,
    },

    /// The data directory could not be opened (missing permissions, held by
    /// another settingsd, not a sled database...).
    #[error("cannot open data directory {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Reading or writing the store failed; for a Set, it was not acknowledged.
    #[error("storage failure: {0}")]
    Storage(String),

    /// A commit failed, so the store takes no writes until it has recovered
    /// (see the `Store` contract in `store`). Holds that failure.
    #[error("writes stopped after a failed commit ({0})")]
    WritesStopped(std::sync::Arc<str>),

    /// The store's cluster (etcd) cannot be reached, or has no quorum, within
    /// the request timeout. For a write, it is unknown whether it took
    /// effect; it was not acknowledged. Holds what the backend said.
    #[error("the settings store is unavailable: {0}")]
    Unavailable(String),

    /// The store is reopening its database after a failed commit.
    #[error("the store is reopening after a storage failure")]
    Reopening,

    /// Too many requests are in flight; this one was shed without being run.
    #[error("at the limit of {max} requests in flight")]
    Overloaded { max: usize },

    /// Too many watch streams are open: for this account (`account` set),
    /// or on the server. The watch was not started.
    #[error("at the limit of {max} open watches")]
    TooManyWatches {
        max: usize,
        account: Option<AccountSid>,
    },

    /// A conditional write's etag no longer matches: someone changed the
    /// resource since the caller read it. Nothing was written.
    #[error("the stored {resource} of account {account} has etag {current}, not {expected}")]
    EtagMismatch {
        resource: Resource,
        account: AccountSid,
        expected: Etag,
        current: Etag,
    },

    /// A rollback named a revision that is not in this account's retained
    /// history of the resource.
    #[error(
        "revision {revision} is not in the retained history of account {account}'s {resource}"
    )]
    RevisionNotFound {
        resource: Resource,
        account: AccountSid,
        revision: u64,
    },

    /// A request named a settings kind the server does not serve.
    #[error("unknown settings kind {kind:?}; this server serves {}", known.join(", "))]
    UnknownKind { kind: String, known: Vec<String> },

    /// A watch asked to start before the oldest retained change.
    #[error("revision {requested} is compacted; the oldest a watch can start from is {oldest}")]
    Compacted { requested: u64, oldest: u64 },

    /// An operator's fault rule made this request fail (see `InjectFault`);
    /// `code` is the gRPC status code it asked for.
    #[error("a fault injected by an operator (gRPC code {code})")]
    Injected { code: i32 },

    /// A scan (an export) died part way: the records it yielded are
    /// incomplete.
    #[error("the scan failed part way: {0}")]
    ScanFailed(String),

    /// The store is closing and takes no more writes.
    #[error("the store is shutting down")]
    ShuttingDown,
}

/// Why authentication failed; the edges word their answers from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No credentials were sent.
    Missing,
    /// Credentials were sent but are malformed, unknown or wrong.
    Rejected,
}

impl fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unauthenticated::Missing => "no credentials provided",
            Unauthenticated::Rejected => "the credentials are malformed or incorrect",
        })
    }
}
