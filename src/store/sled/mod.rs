//! The embedded store: settings in a sled database in one data directory.
//!
//! Layout: one sled tree per resource (see [`tree_name`]: the built-in
//! `recording_settings` and `composition_settings`, and `kind:NAME` for a
//! declared kind), keyed by account SID; values in the versioned encoding
//! of [`crate::store::codec`].
//!
//! Durability: a Set returns only once its write is on stable storage. sled's
//! `flush()` on Linux ends in `sync_file_range`, which reaches neither the
//! drive's cache nor the file's metadata, so the commit path follows it with a
//! real `fdatasync` of sled's data file. That costs a few milliseconds, so
//! writers share it: see [`commit`].
//!
//! Faults stop writes: after a failed flush or fdatasync the kernel may have
//! dropped the dirty pages and marked them clean, so a later "successful"
//! sync would prove nothing about the earlier writes (and sled itself keeps
//! failing after an I/O error until it is reopened). The first failure
//! therefore *poisons* the open database: no write is acknowledged after
//! it, new Sets are refused, and reads go on. [`Store::recover`] (which the
//! server calls periodically) brings writes back once the disk takes a
//! probe write again: see [`recover`].
//!
//! Threads: the rule is "microseconds inline, milliseconds on the blocking
//! pool". A Get and a Set's read-merge-write run inline on the async worker:
//! they touch memory (sled's cache, the OS page cache), take microseconds,
//! and the write lock that orders revisions is contended only by the threads
//! running them, each holding it for one in-memory apply; the wait for the
//! group commit is a channel, so a Set never blocks a worker on the disk.
//! Everything that takes milliseconds or more (opening, scans, bulk
//! replacements, a per-write sync, recovery, closing) runs on tokio's blocking
//! pool. Running the point operations on the blocking pool too halved Get
//! throughput and cost 30% on Set (BENCHMARKS.md has the A/B), and it would
//! let a cancelled Set apply after the client gave up on it; inline, a Set
//! is applied within its request or not at all.

mod commit;
mod count;
mod log;
mod recover;

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError, RwLock,
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use self::{
    commit::{GroupCommit, Syncer},
    count::StoredCounts,
    log::ChangeLog,
    recover::{create_dir_durably, repair_zeroed_conf, sync_sled_files},
};
use super::{
    codec::{decode, encode, now_micros},
    Change, ChangeStream, Patch, Record, Replacement, Scan, Selector, Store, StoreHealth,
    StoreObserver, StoredSettings,
};
use crate::{
    domain::{AccountSid, Etag},
    error::Error,
    resource::Resource,
};

/// The name of sled's data file inside the data directory (sled 0.34 layout).
const SLED_DATA_FILE: &str = "db";

/// How many scanned records may wait for a slow consumer before the scan
/// pauses: bounds a scan's memory whatever the store's size.
const SCAN_BUFFER: usize = 256;

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    /// sled's page cache, in bytes. sled's own default (1 GB) is far more
    /// than a settings store needs; see [`StoreOptions::DEFAULT_CACHE_CAPACITY`].
    pub cache_capacity: u64,
    /// How writes are made durable; [`SyncMode::Group`] unless measuring.
    pub sync_mode: SyncMode,
    /// Fault injection for tests: while set, every commit fails as a full
    /// disk would, without touching the disk.
    pub fail_commits: Option<Arc<AtomicBool>>,
    /// Fault injection for tests: while set, every commit hangs after
    /// sled's flush, as an fdatasync on a stuck disk would.
    pub stall_commits: Option<Arc<AtomicBool>>,
    /// How many changes the change log keeps for watches and history
    /// ([`StoreOptions::DEFAULT_HISTORY_REVISIONS`]).
    pub history_revisions: u64,
    /// Told about commits, for metrics.
    pub observer: Option<Arc<dyn StoreObserver>>,
    /// The declared kinds to serve besides the built-in resources (which
    /// are always there). A kind left out keeps its records on disk, unread.
    pub declared: Vec<Resource>,
}

/// How a Set's write reaches stable storage. Both modes flush sled and
/// fdatasync its data file before acknowledging; they differ in how many
/// writes one sync covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Concurrent writers share one flush+fdatasync (see [`GroupCommit`]).
    #[default]
    Group,
    /// Every write pays its own flush+fdatasync, one at a time (a sync lock
    /// keeps them from overlapping, where sled's flush and the filesystem's
    /// journal would merge concurrent ones into a group commit of their
    /// own). The design without group commit; only for measuring what group
    /// commit buys.
    PerWrite,
}

impl StoreOptions {
    /// 8 MiB: sled holds several times its cache budget in memory (decoded
    /// nodes, page table), so at a million accounts 8 MiB gives ~110 MB
    /// resident where 64 MiB gave ~200-250 MB, with no loss in read latency
    /// measured (BENCHMARKS.md): the OS page cache keeps the data file warm.
    pub const DEFAULT_CACHE_CAPACITY: u64 = 8 * 1024 * 1024;

    /// 100,000 changes: at a few hundred bytes each, tens of MB on disk.
    pub const DEFAULT_HISTORY_REVISIONS: u64 = 100_000;

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            data_dir: data_dir.into(),
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
            sync_mode: SyncMode::Group,
            fail_commits: None,
            stall_commits: None,
            history_revisions: Self::DEFAULT_HISTORY_REVISIONS,
            observer: None,
            declared: Vec::new(),
        }
    }
}

/// The sled store. Cheap to clone: clones share one database, one write
/// lock and one group committer.
#[derive(Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}
struct Shared {
    options: StoreOptions,
    /// Every resource it serves (as each open [`Inner`] has them).
    resources: Vec<Resource>,
    /// The open database; `None` while [`Store::recover`] reopens it.
    current: RwLock<Option<Arc<Inner>>>,
    /// Completed flush+fdatasync commits, across reopens (see [`SledStore::syncs`]).
    syncs: Arc<AtomicU64>,
    /// One recovery (or close) at a time.
    maintenance: Mutex<()>,
    /// Set by [`Store::close`]: no recovery reopens the database after it.
    closed: AtomicBool,
}

/// One open sled database and its committer.
struct Inner {
    db: sled::Db,
    /// Every resource it serves: the built-in ones, then the declared.
    resources: Vec<Resource>,
    /// Each resource's tree, in the order of `resources`.
    trees: Vec<sled::Tree>,
    /// Serialises read-merge-write so that concurrent Sets of one resource
    /// never lose an update, and so revisions are assigned in the order
    /// writes reach sled (a later Watch API streams changes in that order).
    /// Held only for in-memory sled operations, never across the fsync.
    /// (Shared with the thread that counts the stored records.)
    write_lock: Arc<Mutex<()>>,
    /// Stored records per resource, for metrics.
    stored: Arc<StoredCounts>,
    /// The revision of the latest reset's last deletion: a read that finds
    /// no record must wait for it to be durable before it may say so.
    last_reset: AtomicU64,
    sync_mode: SyncMode,
    syncer: Arc<Syncer>,
    commit: GroupCommit,
    /// Every write's change: watches, history, what reads may see.
    log: Arc<ChangeLog>,
    /// Scans (exports) running on this database: recovery waits for them to
    /// end rather than take reads down while one holds it.
    scans: AtomicUsize,
}

impl SledStore {
    /// Opens (creating if needed) the store in `options.data_dir`.
    ///
    /// # Errors
    /// [`Error::Open`] naming the directory if it cannot be created or read,
    /// or if another process holds it (sled takes an exclusive file lock; the
    /// second opener fails at once rather than waiting).
    pub fn open(options: &StoreOptions) -> Result<SledStore, Error> {
        let syncs = Arc::new(AtomicU64::new(0));
        let inner = Inner::open(options, &syncs)?;
        // (No account count here: sled counts by scanning the whole tree.)
        tracing::info!(data_dir = %options.data_dir.display(), "store opened");
        Ok(SledStore {
            shared: Arc::new(Shared {
                resources: inner.resources.clone(),
                options: options.clone(),
                current: RwLock::new(Some(Arc::new(inner))),
                syncs,
                maintenance: Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Whether this process still has `data_dir`'s sled data file open. sled
    /// finishes some log writes on its own threads, which keep the file (and
    /// its lock) open for a moment after the last handle is dropped; another
    /// process opening the directory meanwhile finds it locked. (Linux, via
    /// /proc/self/fd; elsewhere, always false.)
    pub fn held_by_this_process(data_dir: &Path) -> bool {
        let (Ok(file), Ok(fds)) = (
            data_dir.join(SLED_DATA_FILE).canonicalize(),
            std::fs::read_dir("/proc/self/fd"),
        ) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
    }

    /// Whether `data_dir` holds a store (so that opening it would not create
    /// an empty one).
    pub fn exists(data_dir: &Path) -> bool {
        data_dir.join(SLED_DATA_FILE).is_file()
    }

    /// The open database.
    ///
    /// # Errors
    /// [`Error::Reopening`] while [`Store::recover`] reopens it.
    fn current(&self) -> Result<Arc<Inner>, Error> {
        self.open_db().ok_or(Error::Reopening)
    }

    /// The open database, or `None` while [`Store::recover`] reopens it.
    fn open_db(&self) -> Option<Arc<Inner>> {
        self.shared
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many commits (sled flush, then fdatasync of its data file) have
    /// completed since the store was opened: a durability metric, and how
    /// the tests check that every acknowledged Set waited for one.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// The declared kinds whose records the data directory holds but that
    /// this store was not opened with ([`StoreOptions::declared`]): their
    /// trees stay on disk, unread, so an offline export without them would
    /// leave them out unnoticed. A kind whose tree is empty is not listed.
    ///
    /// # Errors
    /// [`Error::Reopening`], or sled failing to read its trees.
    pub fn unopened_kinds(&self) -> Result<Vec<String>, Error> {
        let inner = self.current()?;
        let mut kinds = Vec::new();
        for tree in inner.db.tree_names() {
            let Some(kind) = tree.strip_prefix(DECLARED_TREE_PREFIX.as_bytes()) else {
                continue;
            };
            let kind = String::from_utf8_lossy(kind).into_owned();
            let opened = inner.resources.iter().any(|r| r.name() == kind);
            if !opened && !inner.db.open_tree(&tree)?.is_empty() {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }

    /// Makes every write so far durable and stops the committer. Later Sets
    /// fail with [`Error::ShuttingDown`]; reads keep working.
    ///
    /// # Errors
    /// [`Error::Storage`] if the final flush fails or an earlier commit
    /// failed.
    fn close_blocking(&self) -> Result<(), Error> {
        let _one = self
            .shared
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.closed.store(true, Ordering::SeqCst);
        match self.current() {
            Ok(inner) => inner.commit.stop(),
            Err(_) => Err(Error::Storage(
                "closed while reopening after a failed commit".into(),
            )),
        }
    }
}

impl Inner {
    fn open(options: &StoreOptions, syncs: &Arc<AtomicU64>) -> Result<Inner, Error> {
        let path = options.data_dir.clone();
        let open_err = |source: std::io::Error| Error::Open {
            path: path.clone(),
            source,
        };
        create_dir_durably(&options.data_dir).map_err(open_err)?;
        repair_zeroed_conf(&options.data_dir).map_err(open_err)?;
        let db = open_sled(options).map_err(|e| match e {
            // sled reports its held file lock as a generic I/O error.
            sled::Error::Io(io) if is_lock_error(&io) => open_err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "it is in use by another settingsd process (the lock on its db file is held)",
            )),
            sled::Error::Io(io) => open_err(io),
            other => open_err(std::io::Error::other(other.to_string())),
        })?;
        let mut resources = Resource::ALL.to_vec();
        for kind in &options.declared {
            if !resources.contains(kind) {
                resources.push(*kind);
            }
        }
        let trees = resources
            .iter()
            .map(|r| db.open_tree(tree_name(*r)))
            .collect::<Result<Vec<_>, _>>()?;
        let data_file = File::open(options.data_dir.join(SLED_DATA_FILE)).map_err(open_err)?;
        // Make the directory entries of sled's files (and its configuration)
        // durable once, so the per-commit fdatasync of the data file is
        // enough from here on.
        sync_sled_files(&options.data_dir).map_err(open_err)?;
        let syncer = Arc::new(Syncer::new(
            db.clone(),
            data_file,
            options,
            Arc::clone(syncs),
        ));
        let log = Arc::new(ChangeLog::open(
            &db,
            options.history_revisions,
            options.observer.clone(),
        )?);
        log.repair(&db)?;
        // What sled read back may be only in the page cache (after a
        // SIGKILL between a flush and its fdatasync): sync it (and the
        // repair) before calling any of it durable.
        syncer
            .sync()
            .map_err(|e| open_err(std::io::Error::other(e.to_string())))?;
        // Everything on disk is now durable: a revision above every record's.
        let durable = db.generate_id()? + 1;
        log.opened(durable)?;
        log.count_retained(durable);
        let commit = GroupCommit::start(Arc::clone(&syncer), Arc::clone(&log) as _);
        let write_lock = Arc::new(Mutex::new(()));
        let stored = Arc::new(StoredCounts::new(resources.clone()));
        stored.count_in_background(trees.clone(), Arc::clone(&write_lock));
        Ok(Inner {
            db,
            resources,
            trees,
            write_lock,
            stored,
            last_reset: AtomicU64::new(0),
            sync_mode: options.sync_mode,
            syncer,
            commit,
            log,
            scans: AtomicUsize::new(0),
        })
    }

    /// `settings`, as read from the tree, once durable: a write whose
    /// commit is still running is not shown until it is (a watcher would
    /// not see it before either); nor is a default resource (no record)
    /// while a reset that may have deleted the record commits. If that
    /// commit failed, the newest durable state from the log instead: faults
    /// stop writes, not reads.
    async fn durable_state(&self, resource: Resource, settings: Record) -> Result<Record, Error> {
        let written = match settings.revision() {
            0 if self.last_reset.load(Ordering::SeqCst) > self.log.durable() => self
                .log
                .pending_reset(resource, settings.account_sid())
                .unwrap_or(0),
            0 => 0,
            revision => revision,
        };
        if written <= self.log.durable() {
            return Ok(settings);
        }
        match self.wait_durable(written).await {
            Ok(()) => Ok(settings),
            Err(failed) => {
                let durable = self.log.durable();
                let account = settings.account_sid().clone();
                let before = self.log.history(resource, &account, Some(durable + 1), 1)?;
                match before.into_iter().next() {
                    Some(change) if change.reset => Ok(Record::default_for(resource, account)),
                    Some(change) => Ok(change.record),
                    None if self.log.is_complete() => Ok(Record::default_for(resource, account)),
                    None => Err(failed),
                }
            }
        }
    }

    /// `resource`'s tree.
    ///
    /// # Errors
    /// A kind the store was not opened for (the services check the kind
    /// first, so this is a bug, reported rather than panicked on).
    fn tree(&self, resource: Resource) -> Result<&sled::Tree, Error> {
        self.resources
            .iter()
            .position(|r| *r == resource)
            .map(|i| &self.trees[i])
            .ok_or_else(|| Error::Storage(format!("the store was not opened for {resource}")))
    }

    fn get(&self, resource: Resource, account: &AccountSid) -> Result<Record, Error> {
        match self.tree(resource)?.get(account.as_str())? {
            Some(bytes) => decode(resource, account, &bytes),
            None => Ok(Record::default_for(resource, account.clone())),
        }
    }

    /// Returns once `revision` (already applied to sled) is on stable storage.
    async fn wait_durable(&self, revision: u64) -> Result<(), Error> {
        match self.sync_mode {
            SyncMode::Group => self.commit.wait_durable(revision).await,
            SyncMode::PerWrite => {
                let syncer = Arc::clone(&self.syncer);
                let log = Arc::clone(&self.log);
                blocking(move || {
                    syncer
                        .sync_alone(revision, &*log)
                        .map_err(Error::WritesStopped)
                })
                .await
            }
        }
    }

    /// The write lock, if writes may go on.
    ///
    /// # Errors
    /// A poisoned database refuses writes (whether or not a recovery has
    /// already stopped its committer); after close, a write could reach
    /// sled but never be acknowledged ([`Error::ShuttingDown`]).
    fn lock_for_writes(&self) -> Result<std::sync::MutexGuard<'_, ()>, Error> {
        let guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.syncer.check_healthy()?;
        if self.commit.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        Ok(guard)
    }

    /// The read-merge-write half of a Set, under the write lock.
    fn apply(
        &self,
        resource: Resource,
        account: &AccountSid,
        patch: Patch,
        merge: Merge,
        expected: Option<Etag>,
    ) -> Result<Record, Error> {
        let tree = self.tree(resource)?;
        let _guard = self.lock_for_writes()?;
        let base = match merge {
            Merge::IntoStored => self.get(resource, account)?,
            Merge::IntoDefault => Record::default_for(resource, account.clone()),
        };
        if let Some(expected) = expected {
            let current = Etag::of_revision(base.revision());
            if current != expected {
                return Err(Error::EtagMismatch {
                    resource,
                    account: account.clone(),
                    expected,
                    current,
                });
            }
        }
        let mut next = base.merged(patch)?;
        // sled's IDs are strictly increasing across restarts (it persists
        // the counter and skips ahead on recovery); +1 keeps 0 for "never set".
        next.stamp(self.db.generate_id()? + 1, Some(now_micros()));
        // The change first, then the record. sled recovers a prefix of its
        // log, so a crash can keep the change without the record, never the
        // reverse; opening the store replays such a change into its record
        // (see `ChangeLog::repair`), so the two are one atomic write. (A
        // sled transaction over both trees cost 3x in Set throughput.)
        let record = encode(&next);
        let (key, change) = ChangeLog::entry(resource, &next, &record, false);
        self.log.changes().insert(key, change)?;
        // Queued before the record is visible, so a reader that sees the
        // record and waits for its commit finds its change published.
        self.log.written(Change {
            resource,
            record: next.clone(),
            reset: false,
        });
        match tree.insert(account.as_str(), record) {
            Ok(None) => self
                .stored
                .changed(resource, account.as_str().as_bytes(), true),
            Ok(Some(_)) => {}
            Err(e) => return Err(self.cut_off(&e)),
        }
        // In per-write mode the writer syncs for itself; waking the committer
        // too would run a second sync beside it and skew the comparison.
        if self.sync_mode == SyncMode::Group {
            self.commit.written(next.revision());
        }
        Ok(next)
    }
}

impl Inner {
    /// The record write after a logged change failed: stops writes (the
    /// reopen replays the change) rather than let them go on past it.
    fn cut_off(&self, e: &sled::Error) -> Error {
        Error::WritesStopped(self.syncer.poison_with(&format!(
            "a record write failed after its change was logged: {e}"
        )))
    }

    /// The deletions of a reset: each selected record, in key order,
    /// becomes a reset change (written first, as in [`Inner::apply`]) and is
    /// then removed, under the write lock, taken a chunk at a time so that a
    /// large reset does not hold Sets (and the workers they run on) for its
    /// whole length. Returns how many it deleted, the last one's revision
    /// (0 if none), and the error that stopped it, if one did.
    fn reset(&self, selector: &Selector) -> (u64, u64, Option<Error>) {
        let mut deleted = 0;
        let mut last = 0;
        for resource in selector.resources(&self.resources) {
            let tree = match self.tree(resource) {
                Ok(tree) => tree,
                Err(e) => return (deleted, last, Some(e)),
            };
            let mut after: Option<sled::IVec> = None;
            loop {
                // Listed before taking the lock (the reads may go to disk),
                // a chunk at a time (a reset of a million accounts does not
                // hold them all); each is checked again under the lock.
                let keys = match (&selector.account, &after) {
                    (Some(account), None) => vec![account.as_str().as_bytes().into()],
                    (Some(_), Some(_)) => break,
                    (None, after) => match keys_after(tree, after.as_deref(), RESET_CHUNK) {
                        Ok(keys) => keys,
                        Err(e) => return (deleted, last, Some(e.into())),
                    },
                };
                let chunk = self.reset_chunk(resource, &keys, &mut deleted, &mut last);
                // Whatever the chunk did is told to the committer, also when
                // it failed part way: its writers wait for that commit.
                if last > 0 && self.sync_mode == SyncMode::Group {
                    self.commit.written(last);
                }
                if let Err(e) = chunk {
                    return (deleted, last, Some(e));
                }
                match keys.last() {
                    Some(end) if keys.len() == RESET_CHUNK => after = Some(end.clone()),
                    _ => break,
                }
            }
        }
        (deleted, last, None)
    }

    /// Deletes those of `keys` still stored, under the write lock.
    fn reset_chunk(
        &self,
        resource: Resource,
        keys: &[sled::IVec],
        deleted: &mut u64,
        last: &mut u64,
    ) -> Result<(), Error> {
        let _guard = self.lock_for_writes()?;
        for key in keys {
            // Deleted since the keys were listed: nothing to do.
            if !self.tree(resource)?.contains_key(key)? {
                continue;
            }
            *last = self.delete(resource, key)?;
            *deleted += 1;
        }
        Ok(())
    }

    /// One deletion of a reset, under the write lock; returns its revision.
    fn delete(&self, resource: Resource, key: &[u8]) -> Result<u64, Error> {
        let mut default = Record::default_for(resource, key_account(resource, key)?);
        let revision = self.db.generate_id()? + 1;
        default.stamp(revision, Some(now_micros()));
        let record = encode(&default);
        let (change_key, change) = ChangeLog::entry(resource, &default, &record, true);
        self.log.changes().insert(change_key, change)?;
        self.last_reset.store(revision, Ordering::SeqCst);
        self.log.written(Change {
            resource,
            record: default,
            reset: true,
        });
        match self.tree(resource)?.remove(key) {
            Ok(Some(_)) => self.stored.changed(resource, key, false),
            Ok(None) => {}
            Err(e) => return Err(self.cut_off(&e)),
        }
        Ok(revision)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The record count's walk holds the database open.
        self.stored.stop();
    }
}

/// The tree of each declared kind's schema (see [`Store::schema`]), by
/// kind name.
const SCHEMAS_TREE: &str = "schemas";

/// What a declared kind's tree name starts with (see [`tree_name`]).
const DECLARED_TREE_PREFIX: &str = "kind:";

/// The sled tree of `resource`'s records. A declared kind's tree is
/// prefixed so that no kind name can collide with the store's own trees
/// (`changes`, `meta`) or a built-in resource.
pub(super) fn tree_name(resource: Resource) -> String {
    if resource.is_built_in() {
        resource.name().to_owned()
    } else {
        format!("{DECLARED_TREE_PREFIX}{}", resource.name())
    }
}

/// Deletions a reset makes per hold of the write lock.
const RESET_CHUNK: usize = 256;

/// Up to `limit` keys of `tree` after `after` (from the first if `None`).
pub(super) fn keys_after(
    tree: &sled::Tree,
    after: Option<&[u8]>,
    limit: usize,
) -> sled::Result<Vec<sled::IVec>> {
    match after {
        None => tree.iter(),
        Some(after) => {
            tree.range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
        }
    }
    .keys()
    .take(limit)
    .collect()
}

/// The account a stored key names.
fn key_account(resource: Resource, key: &[u8]) -> Result<AccountSid, Error> {
    let key = String::from_utf8_lossy(key);
    AccountSid::parse(&key).map_err(|_| {
        Error::Storage(format!(
            "a stored {resource} key is not an account SID: {key:?}"
        ))
    })
}

/// What a write's patch is merged into.
#[derive(Debug, Clone, Copy)]
enum Merge {
    /// The stored resource (a Set).
    IntoStored,
    /// The default resource, replacing whatever is stored (an import).
    IntoDefault,
}

/// How long a reopen in this process waits for sled to let go of the
/// directory it just closed.
const REOPEN_PATIENCE: Duration = Duration::from_secs(5);

/// Opens sled in `options.data_dir`.
///
/// A reopen by this same process (close then open, as the tests, recovery
/// and an embedding program do) waits for sled to let go of the directory
/// (see [`SledStore::held_by_this_process`]), up to [`REOPEN_PATIENCE`]; a lock
/// held by another process fails at once.
fn open_sled(options: &StoreOptions) -> sled::Result<sled::Db> {
    let config = sled::Config::new()
        .path(&options.data_dir)
        .cache_capacity(options.cache_capacity)
        // Our own committer flushes when a write needs it; sled's
        // background flusher would only add fsync-less flushes.
        .flush_every_ms(None)
        // sled persists its ID counter every this many IDs and skips
        // twice as many on recovery: revisions jump by ~8k per restart.
        .idgen_persist_interval(4096);
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Err(sled::Error::Io(io))
                if is_lock_error(&io)
                    && started.elapsed() < REOPEN_PATIENCE
                    && SledStore::held_by_this_process(&options.data_dir) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            result => return result,
        }
    }
}

fn is_lock_error(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

#[async_trait::async_trait]
impl Store for SledStore {
    async fn get(&self, resource: Resource, account: &AccountSid) -> Result<Record, Error> {
        let inner = self.current()?;
        let settings = inner.get(resource, account)?;
        inner.durable_state(resource, settings).await
    }

    async fn set(
        &self,
        resource: Resource,
        account: &AccountSid,
        patch: Patch,
        expected: Option<Etag>,
    ) -> Result<Record, Error> {
        let inner = self.current()?;
        let stored = inner.apply(resource, account, patch, Merge::IntoStored, expected)?;
        inner.wait_durable(stored.revision()).await?;
        Ok(stored)
    }

    async fn replace_many(&self, replacements: Vec<Replacement>) -> Result<usize, Error> {
        let inner = self.current()?;
        let writer = Arc::clone(&inner);
        let (applied, last, failure) = blocking(move || {
            let mut applied = 0;
            let mut last = None;
            for r in replacements {
                match writer.apply(r.resource, &r.account, r.patch, Merge::IntoDefault, None) {
                    Ok(stored) => {
                        last = Some(stored.revision());
                        applied += 1;
                    }
                    Err(e) => return Ok((applied, last, Some(e))),
                }
            }
            Ok((applied, last, None))
        })
        .await?;
        if let Some(revision) = last {
            inner.wait_durable(revision).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    async fn reset(&self, selector: Selector) -> Result<(u64, u64), Error> {
        let inner = self.current()?;
        let writer = Arc::clone(&inner);
        let (deleted, last, failure) = blocking(move || Ok(writer.reset(&selector))).await?;
        if last > 0 {
            inner.wait_durable(last).await?;
        }
        tracing::info!(deleted, revision = last, "settings reset");
        match failure {
            Some(e) => Err(e),
            None => Ok((deleted, last)),
        }
    }

    async fn schema(&self, kind: Resource) -> Result<Option<Vec<u8>>, Error> {
        let inner = self.current()?;
        blocking(move || {
            let schemas = inner.db.open_tree(SCHEMAS_TREE)?;
            Ok(schemas.get(kind.name())?.map(|v| v.to_vec()))
        })
        .await
    }

    async fn put_schema(
        &self,
        kind: Resource,
        checked: Option<Vec<u8>>,
        schema: Vec<u8>,
    ) -> Result<(), Error> {
        let inner = self.current()?;
        blocking(move || {
            let schemas = inner.db.open_tree(SCHEMAS_TREE)?;
            schemas
                .compare_and_swap(kind.name(), checked, Some(schema))?
                .map_err(|_| super::schema_moved(kind))?;
            // Before serving, so no commit is running beside this one.
            inner.syncer.sync().map_err(Error::WritesStopped)
        })
        .await
    }

    fn resources(&self) -> &[Resource] {
        &self.shared.resources
    }

    fn stored_count(&self, resource: Resource) -> Option<u64> {
        self.open_db()?.stored.get(resource)
    }

    fn scan(&self, resources: &[Resource]) -> Scan {
        let (tx, rx) = mpsc::channel(SCAN_BUFFER);
        match self.current() {
            Ok(inner) => {
                // Counted from now, so a recovery never closes the database
                // under a scan that has not started reading yet.
                let scanner = Scanner::new(inner, resources);
                let scan_tx = tx.clone();
                let task = tokio::task::spawn_blocking(move || {
                    for record in scanner {
                        if scan_tx.blocking_send(record).is_err() {
                            return; // the consumer went away
                        }
                    }
                });
                // A scan that dies must end the stream with an error: a
                // stream that just ends would read as a complete, shorter one.
                tokio::spawn(async move {
                    if let Err(e) = task.await {
                        tracing::error!(error = %e, "store scan failed");
                        let _ = tx.send(Err(Error::ScanFailed(e.to_string()))).await;
                    }
                });
            }
            Err(e) => {
                let _ = tx.try_send(Err(e));
            }
        }
        Box::pin(ReceiverStream::new(rx))
    }

    async fn history(
        &self,
        resource: Resource,
        account: &AccountSid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Change>, Error> {
        let inner = self.current()?;
        let account = account.clone();
        blocking(move || inner.log.history(resource, &account, before, limit)).await
    }

    async fn changes(
        &self,
        from: u64,
        through: u64,
        filter: Selector,
    ) -> Result<Vec<Change>, Error> {
        let inner = self.current()?;
        blocking(move || inner.log.changes_between(from, through, &filter)).await
    }

    async fn revision(
        &self,
        resource: Resource,
        account: &AccountSid,
        revision: u64,
    ) -> Result<Record, Error> {
        self.current()?.log.at(resource, account, revision)
    }

    fn durable_revision(&self) -> u64 {
        self.open_db().map_or(0, |inner| inner.log.durable())
    }

    async fn watch(&self, from: u64, filter: Selector) -> Result<ChangeStream, Error> {
        self.current()?.log.watch(from, filter)
    }

    fn health(&self) -> StoreHealth {
        match self.open_db() {
            None => StoreHealth {
                write_failure: Some("reopening the database after a failed commit".into()),
                commit_running_for: None,
            },
            Some(inner) => StoreHealth {
                write_failure: inner.syncer.poison(),
                commit_running_for: inner.syncer.running_for(),
            },
        }
    }

    async fn recover(&self) -> Result<(), Error> {
        let store = self.clone();
        blocking(move || store.recover_blocking()).await
    }

    async fn close(&self) -> Result<(), Error> {
        let store = self.clone();
        blocking(move || store.close_blocking()).await
    }
}

/// Runs sled work that may take milliseconds on tokio's blocking pool, off
/// the async workers (see the module docs).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Storage(format!("a store task failed: {e}")))?
}

/// A running scan: holds its database, and counts itself in
/// [`Inner::scans`] while it lives.
struct Scanner {
    inner: Arc<Inner>,
    /// The resources still to scan after the current one.
    remaining: std::vec::IntoIter<Resource>,
    current: Option<(Resource, sled::Iter)>,
    /// An error other than a corrupt record ended the scan.
    done: bool,
}

impl Scanner {
    fn new(inner: Arc<Inner>, resources: &[Resource]) -> Scanner {
        inner.scans.fetch_add(1, Ordering::SeqCst);
        let mut resources = resources.to_vec();
        resources.sort_unstable();
        resources.dedup();
        Scanner {
            inner,
            remaining: resources.into_iter(),
            current: None,
            done: false,
        }
    }
}

impl Scanner {
    /// `record` once it is durable: a scan, like a Get, never shows a write
    /// that a crash could undo (it waits for the commit in flight). Runs on
    /// the scan's blocking thread, inside the runtime that spawned it.
    fn durable(&self, record: StoredSettings) -> Result<StoredSettings, Error> {
        if record.record.revision() <= self.inner.log.durable() {
            return Ok(record);
        }
        let durable = tokio::runtime::Handle::current()
            .block_on(self.inner.durable_state(record.resource, record.record))?;
        Ok(StoredSettings {
            resource: record.resource,
            record: durable,
        })
    }
}

impl Scanner {
    /// Waits until every reset so far is durable.
    fn resets_durable(&self) -> Result<(), Error> {
        let reset = self.inner.last_reset.load(Ordering::SeqCst);
        if reset <= self.inner.log.durable() {
            return Ok(());
        }
        tokio::runtime::Handle::current().block_on(self.inner.wait_durable(reset))
    }
}

impl Iterator for Scanner {
    type Item = Result<StoredSettings, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some((resource, iter)) = &mut self.current {
                let resource = *resource;
                if let Some(entry) = iter.next() {
                    let record = decode_entry(resource, entry).and_then(|r| self.durable(r));
                    self.done = matches!(&record, Err(e) if !matches!(e, Error::Corrupt { .. }));
                    return Some(record);
                }
                // A record a reset removed while the scan ran was simply not
                // there: that may be shown only once the reset is durable.
                if let Err(e) = self.resets_durable() {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let resource = self.remaining.next()?;
            match self.inner.tree(resource) {
                Ok(tree) => self.current = Some((resource, tree.iter())),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

fn decode_entry(
    resource: Resource,
    entry: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<StoredSettings, Error> {
    let (key, value) = entry?;
    let account = key_account(resource, &key)?;
    let record = decode(resource, &account, &value)?;
    Ok(StoredSettings { resource, record })
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.inner.scans.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_by_this_process_sees_only_a_data_file_it_holds() {
        let held = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join(SLED_DATA_FILE), b"").unwrap();
        let file = File::create(held.path().join(SLED_DATA_FILE)).unwrap();

        assert!(SledStore::held_by_this_process(held.path()));
        assert!(!SledStore::held_by_this_process(other.path()));
        drop(file);
        assert!(!SledStore::held_by_this_process(held.path()));
    }
}
