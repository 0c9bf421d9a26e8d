//! The one domain error. Each edge maps it exhaustively (no wildcard arm), so
//! adding a variant forces a decision at every transport: see
//! `impl From<Error> for tonic::Status` in `grpc`.

use std::path::PathBuf;

use crate::{
    auth::Unauthenticated,
    domain::{AccountSid, ValidationError},
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

    /// A tenant (account or API key credentials) called an operator-only RPC.
    #[error("account {caller} is not an operator")]
    OperatorOnly { caller: AccountSid },

    /// A stored record could not be decoded. Only that account is affected.
    #[error("stored settings of account {account} are unreadable: {detail}")]
    Corrupt { account: AccountSid, detail: String },

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

    /// A commit failed, so the store takes no writes until it has reopened
    /// its database (see `store`'s module docs). Holds that failure.
    #[error("writes stopped after a failed commit ({0})")]
    WritesStopped(std::sync::Arc<str>),

    /// The store is reopening its database after a failed commit.
    #[error("the store is reopening after a storage failure")]
    Reopening,

    /// Too many requests are in flight; this one was shed without being run.
    #[error("at the limit of {max} requests in flight")]
    Overloaded { max: usize },

    /// The store is closing and takes no more writes.
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
