//! The storage seam: the [`Store`] trait every backend implements, and the
//! contract it is held to. Everything above it (the gRPC services, the HTTP
//! bridge through them, backups, the bench) sees only this trait, so a
//! backend can be swapped without touching them. [`sled`] is the embedded
//! implementation (the default).
//!
//! # The contract
//!
//! Every implementation promises, per resource and account:
//!
//! - **Read-merge-write is atomic.** [`Store::set`] merges its patch into the
//!   state stored at that moment; concurrent Sets of one resource never lose
//!   an update, whichever front end or task each comes from.
//! - **Revisions are store-wide and strictly increasing.** Every write gets a
//!   revision greater than every revision any earlier write got, across all
//!   resources and accounts and across restarts; 0 means "never written".
//!   Writes are applied in revision order.
//! - **Conditional writes are atomic.** A Set with an expected revision
//!   applies only if the stored resource still has it, checked inside the
//!   same atomic read-merge-write.
//! - **Reads see only durable state.** A Get, a scan, a history listing and
//!   a watch never return a write that a crash could still undo.
//! - **Every write is a change.** Each write appends its resulting state to
//!   a store-wide change log in the same atomic, durable write; the log
//!   keeps the last `history_revisions` changes and serves watches
//!   (ordered, unique, reliable, resumable from any retained revision, also
//!   across restarts) and per-resource history.
//! - **A Set returns only once durable.** When [`Store::set`] or
//!   [`Store::replace_many`] returns `Ok`, the write survives a crash of the
//!   process or machine. An `Err` leaves it unknown whether the write took
//!   effect; nothing acknowledged is ever lost.
//! - **A reset is a write.** [`Store::reset`] deletes records with the same
//!   atomicity, ordering and durability as a Set, and logs each deletion as
//!   a change.
//! - **Resources are independent.** Writing one resource of an account never
//!   changes another resource or another account.
//! - **A bad record is contained.** A stored record that does not decode
//!   fails only reads and writes of that resource of that account, with
//!   [`Error::Corrupt`].
//! - **Faults stop writes, not reads.** After a write that could not be made
//!   durable, the backend refuses writes ([`Error::WritesStopped`]) until
//!   [`Store::recover`] brings them back, and says why in [`Store::health`].
//!
//! The integration tests check these promises through the real server
//! (`tests/api/grpc_settings.rs`, `http_bridge.rs`, `backup.rs`, `crash.rs`,
//! `faults.rs`), and they open their store in one place
//! (`tests/api/helpers.rs`, `open_store`), so another backend runs the same
//! suites by opening itself there.

pub mod codec;
pub mod etcd;
mod record;
pub mod sled;

pub use record::{MergeFn, MessagePatch, MessageRecord, Patch, Record, TwilioMerge};

use std::{pin::Pin, sync::Arc, time::Duration};

use tokio_stream::Stream;

use crate::{
    domain::{AccountSid, Etag},
    error::Error,
    resource::Resource,
};

/// A store shared by every service of a server. Cheap to clone.
pub type SharedStore = Arc<dyn Store>;

/// One stored resource, as a scan yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSettings {
    pub resource: Resource,
    pub record: Record,
}

/// A write of [`Store::replace_many`]: this account's resource becomes the
/// default resource with `patch` applied, whatever was stored before.
#[derive(Debug, Clone)]
pub struct Replacement {
    pub resource: Resource,
    pub account: AccountSid,
    pub patch: Patch,
}

/// Every stored record of the resources scanned, resource by resource in
/// the order given, accounts in SID order. A record that does not
/// decode is yielded as [`Error::Corrupt`] and the scan goes on; any other
/// error ends it (a scan that dies part way ends with [`Error::ScanFailed`]).
pub type Scan = Pin<Box<dyn Stream<Item = Result<StoredSettings, Error>> + Send>>;

/// One change of the change log: a resource's state after a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub resource: Resource,
    /// The state written; its revision is the change's.
    pub record: Record,
    /// The write was a [`Store::reset`]: the record was deleted, and
    /// `record` is the default record (with the reset's revision).
    pub reset: bool,
}

/// What a [`Store::watch`] stream yields.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A durable change, in revision order.
    Change(Arc<Change>),
    /// Every change up to this revision has been yielded.
    Progress(u64),
}

/// Which resources of which accounts: the changes a [`Store::watch`] yields
/// (a backend filters as early as it can, so that a watcher wakes only for
/// what it watches), or what a [`Store::reset`] deletes. Unset parts match
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Only this resource, if set.
    pub resource: Option<Resource>,
    /// Only this account, if set.
    pub account: Option<AccountSid>,
}

impl Selector {
    /// The resources of `all` (a store's [`Store::resources`]) it
    /// selects, in that order.
    pub fn resources<'a>(&'a self, all: &'a [Resource]) -> impl Iterator<Item = Resource> + 'a {
        all.iter()
            .copied()
            .filter(|r| self.resource.is_none_or(|s| s == *r))
    }

    /// Whether it selects this account's resource.
    pub fn selects(&self, resource: Resource, account: &AccountSid) -> bool {
        self.resource.is_none_or(|r| r == resource)
            && self.account.as_ref().is_none_or(|a| a == account)
    }

    pub fn matches(&self, change: &Change) -> bool {
        self.selects(change.resource, change.record.account_sid())
    }
}

/// The name [`Selector`] had before resets used it too.
#[deprecated(note = "renamed to Selector")]
pub type WatchFilter = Selector;

/// Every change from a starting revision, then live ones (see
/// [`Store::watch`]).
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Error>> + Send>>;

/// What a store reports as it works, for metrics; it knows nothing of how
/// they are exported.
pub trait StoreObserver: Send + Sync + std::fmt::Debug {
    /// A commit made its writes durable, in `took`.
    fn committed(&self, took: Duration);
    /// A commit failed.
    fn commit_failed(&self);
    /// A commit published `writes` changes (its batch).
    fn published(&self, writes: usize);
}

/// Whether the store takes writes now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Why writes are stopped, if they are (a failed commit, or the store
    /// reopening after one).
    pub write_failure: Option<Arc<str>>,
    /// How long the commit in progress has been running, if one is: seconds
    /// mean a stuck disk with writers waiting on it.
    pub commit_running_for: Option<Duration>,
}

/// A schema recorded by someone else between a check and its record.
pub(crate) fn schema_moved(kind: Resource) -> Error {
    Error::Unavailable(format!(
        "the schema of kind {kind} was recorded by another settingsd while this one checked \
         its own against it: start again to check against that one"
    ))
}

/// How many replacements [`replace_in_batches`] applies per durable commit.
const REPLACE_BATCH: usize = 4096;

/// Applies `records` in durable batches (imports, seeds); returns how many.
///
/// # Errors
/// As [`Store::replace_many`]; the batches before a failure are durable.
pub async fn replace_in_batches(
    store: &dyn Store,
    records: Vec<Replacement>,
) -> Result<usize, Error> {
    let mut written = 0;
    let mut records = records.into_iter();
    loop {
        let batch: Vec<_> = records.by_ref().take(REPLACE_BATCH).collect();
        if batch.is_empty() {
            return Ok(written);
        }
        written += store.replace_many(batch).await?;
    }
}

/// Applies only those of `records` that differ from what is stored, so that
/// loading the same records again changes nothing (no new revisions, no
/// changes for watchers): how a seed or a fixture is loaded. Of several
/// records for one resource of one account, the last counts (as in an
/// import, which applies them in order). A stored record that does not
/// decode counts as different: loading a good one repairs it. Returns
/// (written, already as given), counting every record given.
///
/// A record is compared as the store would write it: its patch merged into
/// the stored record, stamped with the stored revision and time. (A
/// replacement's patch replaces whatever it merges into, so merging into
/// the stored record gives what the store writes; it also lets a declared
/// kind's merge answer the stored encoding when the stored message equals
/// the given one, which bytes alone cannot tell: see
/// `grpc::declared_replacement`.)
///
/// # Errors
/// As [`replace_in_batches`], or a read of the stored state failing.
pub async fn replace_changed(
    store: &dyn Store,
    records: Vec<Replacement>,
) -> Result<(usize, usize), Error> {
    let total = records.len();
    let mut last = std::collections::HashMap::new();
    for (index, record) in records.iter().enumerate() {
        last.insert((record.resource, record.account.clone()), index);
    }
    let mut changed = Vec::new();
    for (index, record) in records.into_iter().enumerate() {
        if last[&(record.resource, record.account.clone())] != index {
            continue; // a later record replaces it
        }
        let stored = match store.get(record.resource, &record.account).await {
            Err(Error::Corrupt { .. }) => {
                changed.push(record);
                continue;
            }
            stored => stored?,
        };
        let mut given = stored.merged(record.patch.clone())?;
        given.stamp(stored.revision(), stored.update_time());
        let same = stored.revision() > 0 && given == stored;
        if !same {
            changed.push(record);
        }
    }
    let written = replace_in_batches(store, changed).await?;
    Ok((written, total - written))
}

/// A settings store. See the module docs for the contract every
/// implementation keeps.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads an account's resource; the default resource (revision 0) if it
    /// was never written.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the stored record does not decode;
    /// [`Error::Storage`], [`Error::Reopening`] if the store cannot read now.
    async fn get(&self, resource: Resource, account: &AccountSid) -> Result<Record, Error>;

    /// Merges `patch` into the account's stored resource, atomically, and
    /// returns the result once it is durable.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the merged resource breaks a cross-field rule
    /// (nothing is written); [`Error::Corrupt`] if the stored record does not
    /// decode; [`Error::WritesStopped`] if the write could not be made
    /// durable or writes are stopped; [`Error::ShuttingDown`] after
    /// [`Store::close`]; [`Error::Storage`], [`Error::Reopening`].
    async fn set(
        &self,
        resource: Resource,
        account: &AccountSid,
        patch: Patch,
        expected: Option<Etag>,
    ) -> Result<Record, Error>;

    /// The account's past changes of `resource` (its states, and its
    /// resets), newest first, from the retained change log: at most `limit`,
    /// all with a revision below `before` if given.
    ///
    /// # Errors
    /// [`Error::Corrupt`], [`Error::Storage`], [`Error::Reopening`].
    async fn history(
        &self,
        resource: Resource,
        account: &AccountSid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Change>, Error>;

    /// The durable changes `filter` selects with revisions in
    /// `from..=through`, in revision order, from the retained log (how a
    /// watch's snapshot learns what changed while it was taken).
    ///
    /// # Errors
    /// [`Error::Compacted`] if changes from `from` on are no longer
    /// retained; as [`Store::history`].
    async fn changes(
        &self,
        from: u64,
        through: u64,
        filter: Selector,
    ) -> Result<Vec<Change>, Error>;

    /// The account's state of `resource` at `revision`, if that change is in
    /// the retained log.
    ///
    /// # Errors
    /// [`Error::RevisionNotFound`] if it is not; as [`Store::history`].
    async fn revision(
        &self,
        resource: Resource,
        account: &AccountSid,
        revision: u64,
    ) -> Result<Record, Error>;

    /// The highest revision that is durable (and so visible to reads).
    fn durable_revision(&self) -> u64;

    /// Every change that `filter` matches with a revision of at least `from`
    /// (> 0), in order, then live ones as they become durable, with a
    /// [`WatchEvent::Progress`] (never lower than the one before) every few
    /// seconds. A consumer that falls behind is caught up from the
    /// stored log, so a slow watcher costs no memory.
    ///
    /// # Errors
    /// [`Error::Compacted`] (at once, or on the stream if the consumer fell
    /// so far behind that its position was compacted meanwhile).
    async fn watch(&self, from: u64, filter: Selector) -> Result<ChangeStream, Error>;

    /// Applies every replacement and returns, once all of them are durable,
    /// how many were given: the bulk path of imports and of the bench's
    /// preload. Of several for one resource of one account, the last wins;
    /// different accounts' replacements may be applied in any order (the
    /// sled store applies them in the order given, the etcd store several at
    /// once). A replacement replaces even a record that does not decode
    /// (importing a good record is how a bad one is repaired).
    ///
    /// # Errors
    /// As [`Store::set`], for a replacement that fails; those applied are
    /// still made durable.
    async fn replace_many(&self, replacements: Vec<Replacement>) -> Result<usize, Error>;

    /// Deletes every stored resource that `selector` selects, so that reads
    /// answer the default resource (revision 0) again, and returns how many
    /// it deleted, and the revision of the last deletion (0 if none), once
    /// that is durable. Each deletion is a change (with
    /// [`Change::reset`] set, and a new revision) that watchers and the
    /// history see; a resource that is not stored has nothing to delete.
    ///
    /// # Errors
    /// As [`Store::set`]; deletions made before a failure are still made
    /// durable.
    async fn reset(&self, selector: Selector) -> Result<(u64, u64), Error>;

    /// The schema that `kind`'s records were last written with, as
    /// [`Store::put_schema`] recorded it (an encoded
    /// `google.protobuf.FileDescriptorSet`); `None` if none was.
    ///
    /// # Errors
    /// [`Error::Storage`], [`Error::Unavailable`].
    async fn schema(&self, kind: Resource) -> Result<Option<Vec<u8>>, Error>;

    /// Records `schema` as the one `kind`'s records are written with from
    /// now on, durably, if the stored one is still `checked` (what
    /// [`Store::schema`] answered when the caller checked the new one
    /// against it): front ends sharing a store that start at once are
    /// each checked against what the other recorded. Called when a server
    /// starts, before it serves, and only for a schema that differs from
    /// `checked` (an unchanged one needs no write).
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the stored schema is no longer `checked`
    /// (check again); as [`Store::set`].
    async fn put_schema(
        &self,
        kind: Resource,
        checked: Option<Vec<u8>>,
        schema: Vec<u8>,
    ) -> Result<(), Error>;

    /// Every resource this store was opened for: the built-in ones, then
    /// the declared kinds given when it opened. A reset or watch of every
    /// resource covers these.
    fn resources(&self) -> &[Resource];

    /// How many resources of `resource` are stored, for metrics; cheap.
    /// `None` until the backend has counted them (a backend may count in
    /// the background after it opens).
    fn stored_count(&self, resource: Resource) -> Option<u64>;

    /// Every stored record of `resources` (see [`Scan`]). Not a
    /// point-in-time snapshot: each record is as it was when read. The scan
    /// reads in the background (a task of the current tokio runtime, which
    /// it must be called within) and waits while its consumer falls behind,
    /// so its memory is bounded.
    fn scan(&self, resources: &[Resource]) -> Scan;

    /// Whether writes work now; cheap (a server polls it for health).
    fn health(&self) -> StoreHealth;

    /// Brings writes back after a failure, if the disk (or cluster) takes
    /// them again. Succeeds at once when there is nothing to recover.
    ///
    /// # Errors
    /// If writes cannot come back yet; a later call tries again.
    async fn recover(&self) -> Result<(), Error>;

    /// Makes every write durable and stops taking writes; reads may go on.
    ///
    /// # Errors
    /// [`Error::Storage`] if the final commit fails or an earlier one failed.
    async fn close(&self) -> Result<(), Error>;
}
