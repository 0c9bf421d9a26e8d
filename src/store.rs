//! The sled-backed store: where settings live on disk, how they are encoded,
//! and when a write counts as durable.
//!
//! Layout: one sled tree per resource kind (`recording_settings`), keyed by
//! account SID. A value is one format-version byte followed by a prost message
//! ([`StoredRecordingSettingsV1`]), so the encoding can evolve without
//! guessing what an old record means.
//!
//! Durability: a Set returns only once its write is on stable storage. sled's
//! `flush()` on Linux ends in `sync_file_range`, which reaches neither the
//! drive's cache nor the file's metadata, so the commit path follows it with a
//! real `fdatasync` of sled's data file. That costs a few milliseconds, so
//! writers share it: see [`GroupCommit`].
//!
//! Faults stop writes: after a failed flush or fdatasync the kernel may have
//! dropped the dirty pages and marked them clean, so a later "successful"
//! sync would prove nothing about the earlier writes (and sled itself keeps
//! failing after an I/O error until it is reopened). The first failure
//! therefore *poisons* the open database: no write is acknowledged after
//! it, new Sets are refused, and reads go on. [`Store::recover`] (which the
//! server calls periodically) brings writes back once the disk takes a
//! probe write again: it closes the database, writes its files back and
//! syncs them (so that pages the kernel dropped from the write path are on
//! disk before sled reads them again), and reopens it, replaying sled's log
//! as a restart would.

use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, PoisonError, RwLock,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prost::Message;
use tokio::sync::watch;

use crate::{
    domain::{
        AccountSid, CredentialSid, Field, FriendlyName, RecordingSettings, RecordingSettingsPatch,
        S3Url, ValidationError,
    },
    error::Error,
};

/// The name of sled's data file inside the data directory (sled 0.34 layout).
const SLED_DATA_FILE: &str = "db";
const RECORDING_SETTINGS_TREE: &[u8] = b"recording_settings";
/// First byte of every stored value; bump it when the encoding changes.
const FORMAT_V1: u8 = 1;

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

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreOptions {
            data_dir: data_dir.into(),
            cache_capacity: Self::DEFAULT_CACHE_CAPACITY,
            sync_mode: SyncMode::Group,
            fail_commits: None,
            stall_commits: None,
        }
    }
}

/// The settings store. Cheap to clone: clones share one database, one write
/// lock and one group committer.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    options: StoreOptions,
    /// The open database; `None` while [`Store::recover`] reopens it.
    current: RwLock<Option<Arc<Inner>>>,
    /// Completed flush+fdatasync commits, across reopens (see [`Store::syncs`]).
    syncs: Arc<AtomicU64>,
    /// One recovery (or close) at a time.
    maintenance: Mutex<()>,
    /// Set by [`Store::close`]: no recovery reopens the database after it.
    closed: AtomicBool,
}

/// One open sled database and its committer.
struct Inner {
    db: sled::Db,
    /// The `recording_settings` tree.
    settings: sled::Tree,
    /// Serialises read-merge-write so that concurrent Sets on one account
    /// never lose an update, and so revisions are assigned in the order
    /// writes reach sled (a later Watch API streams changes in that order).
    /// Held only for in-memory sled operations, never across the fsync.
    write_lock: Mutex<()>,
    sync_mode: SyncMode,
    syncer: Arc<Syncer>,
    commit: GroupCommit,
    /// Scans (exports) running on this database: [`Store::recover`] waits
    /// for them to end rather than take reads down while one holds it.
    scans: AtomicUsize,
}

/// How long [`Store::recover`] waits for in-flight requests to let go of the
/// poisoned database before giving up until the next attempt.
const RELEASE_PATIENCE: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (creating if needed) the store in `options.data_dir`.
    ///
    /// # Errors
    /// [`Error::Open`] naming the directory if it cannot be created or read,
    /// or if another process holds it (sled takes an exclusive file lock; the
    /// second opener fails at once rather than waiting).
    pub fn open(options: &StoreOptions) -> Result<Store, Error> {
        let syncs = Arc::new(AtomicU64::new(0));
        let inner = Inner::open(options, &syncs)?;
        // (No account count here: sled counts by scanning the whole tree.)
        tracing::info!(data_dir = %options.data_dir.display(), "store opened");
        Ok(Store {
            shared: Arc::new(Shared {
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

    /// Reads an account's settings; the default resource if it never set any.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the stored record does not decode,
    /// [`Error::Storage`] if sled fails, [`Error::Reopening`] while the store
    /// recovers from a failed commit.
    pub fn get(&self, account: &AccountSid) -> Result<RecordingSettings, Error> {
        self.current()?.get(account)
    }

    /// Merges `patch` into the account's settings and returns the result once
    /// it is durable.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the merged settings break a cross-field rule
    /// (nothing is written); [`Error::Corrupt`] if the stored record does not
    /// decode; [`Error::WritesStopped`] if this write's commit or an earlier
    /// one failed (this write was not acknowledged; it may or may not survive);
    /// [`Error::Storage`] if sled fails; [`Error::ShuttingDown`] if the store
    /// is closing; [`Error::Reopening`] while it recovers.
    pub async fn set(
        &self,
        account: &AccountSid,
        patch: RecordingSettingsPatch,
    ) -> Result<RecordingSettings, Error> {
        let inner = self.current()?;
        let stored = inner.apply(account, patch, Merge::IntoStored)?;
        inner.wait_durable(stored.revision).await?;
        Ok(stored)
    }

    /// Replaces many accounts' settings and waits for one durable commit
    /// covering them all: the bulk path for imports and preloading. Each
    /// patch is merged into the *default* resource, not the stored one, so
    /// whatever was stored is replaced, even a record that does not decode
    /// (importing a good record is how an operator repairs one). The first
    /// invalid patch stops the batch; the ones before it are still made
    /// durable.
    ///
    /// # Errors
    /// As [`Store::set`], for the first patch that fails.
    pub async fn replace_many(
        &self,
        patches: impl IntoIterator<Item = (AccountSid, RecordingSettingsPatch)>,
    ) -> Result<usize, Error> {
        let inner = self.current()?;
        let mut applied = 0;
        let mut last = None;
        let mut failure = None;
        for (account, patch) in patches {
            match inner.apply(&account, patch, Merge::IntoDefault) {
                Ok(stored) => {
                    last = Some(stored.revision);
                    applied += 1;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(revision) = last {
            inner.wait_durable(revision).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }

    /// Every stored record, in account order. A record that does not decode
    /// is yielded as [`Error::Corrupt`], and the scan goes on. The scan keeps
    /// the database it started on open until it is dropped.
    pub fn scan(&self) -> Box<dyn Iterator<Item = Result<RecordingSettings, Error>> + Send> {
        match self.current() {
            Ok(inner) => Box::new(Scan::new(inner)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    /// How many commits (sled flush, then fdatasync of its data file) have
    /// completed since the store was opened: a durability metric, and how
    /// the tests check that every acknowledged Set waited for one.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// How long the commit in progress has been running, if one is: a
    /// commit that takes seconds means a stuck disk, and writers are waiting.
    pub fn commit_running_for(&self) -> Option<Duration> {
        self.open_db().and_then(|inner| inner.syncer.running_for())
    }

    /// Why writes are stopped, if they are: the failed commit that poisoned
    /// the database, or its reopening (see [`Store::recover`]). The server
    /// polls it to report health and to start recovery.
    pub fn write_failure(&self) -> Option<Arc<str>> {
        match self.open_db() {
            None => Some("reopening the database after a failed commit".into()),
            Some(inner) => inner.syncer.poison(),
        }
    }

    /// Brings writes back after a failed commit, if the disk takes writes
    /// again: probes it with a small fsynced file, and only if that works,
    /// closes the poisoned database (waiting for running exports first),
    /// writes every data file back and syncs it (so the disk holds what the
    /// page cache does, see [`rewrite_and_sync`]), and reopens the database,
    /// replaying sled's log. Requests answer [`Error::Reopening`] meanwhile.
    /// Blocking. Writes that failed may or may not survive; acknowledged
    /// ones do.
    ///
    /// Succeeds at once when there is nothing to recover.
    ///
    /// # Errors
    /// If the probe, the release of the old database or the reopen fails;
    /// the store then stays as it was (or, if the reopen failed, keeps
    /// answering [`Error::Reopening`]) and a later call tries again.
    pub fn recover(&self) -> Result<(), Error> {
        let _one = self
            .shared
            .maintenance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let (healthy, scanning) = self.open_db().map_or((false, false), |inner| {
            (
                inner.syncer.poison().is_none(),
                inner.scans.load(Ordering::SeqCst) > 0,
            )
        });
        if healthy {
            return Ok(());
        }
        if scanning {
            return Err(Error::Storage(
                "an export is reading the failed database; waiting for it to end".into(),
            ));
        }
        probe_disk(&self.shared.options)
            .map_err(|e| Error::Storage(format!("the disk does not take writes yet: {e}")))?;
        let old = self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(old) = old {
            // Its waiting writers fail; its commit thread ends.
            let _ = old.commit.stop();
            if let Err(old) = release(old) {
                *self
                    .shared
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Some(old);
                return Err(Error::Storage(
                    "requests still hold the failed database; will retry".into(),
                ));
            }
        }
        // After a failed fdatasync the page cache may hold pages the kernel
        // marked clean without writing them: the reopened sled would read
        // them (they are in memory), append after them, and later syncs
        // would never write them. Writing every byte back and syncing makes
        // the disk hold what sled is about to read.
        rewrite_and_sync(&self.shared.options.data_dir).map_err(|e| {
            Error::Storage(format!(
                "cannot rewrite the data files after the failure: {e}"
            ))
        })?;
        let inner = Inner::open(&self.shared.options, &self.shared.syncs)?;
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(inner));
        tracing::info!(
            data_dir = %self.shared.options.data_dir.display(),
            "store reopened after a failed commit: writes resume"
        );
        Ok(())
    }

    /// Makes every write so far durable and stops the committer. Later Sets
    /// fail with [`Error::ShuttingDown`]; reads keep working.
    ///
    /// # Errors
    /// [`Error::Storage`] if the final flush fails or an earlier commit
    /// failed.
    pub fn close(&self) -> Result<(), Error> {
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

/// A running [`Store::scan`]: holds its database, and counts itself in
/// [`Inner::scans`] while it lives.
struct Scan {
    inner: Arc<Inner>,
    iter: sled::Iter,
}

impl Scan {
    fn new(inner: Arc<Inner>) -> Scan {
        inner.scans.fetch_add(1, Ordering::SeqCst);
        let iter = inner.settings.iter();
        Scan { inner, iter }
    }
}

impl Iterator for Scan {
    type Item = Result<RecordingSettings, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let entry = self.iter.next()?;
        Some((|| {
            let (key, value) = entry?;
            let key = String::from_utf8_lossy(&key).into_owned();
            let account = AccountSid::parse(&key).map_err(|_| {
                Error::Storage(format!("a stored key is not an account SID: {key:?}"))
            })?;
            decode(&account, &value)
        })())
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.inner.scans.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Drops `inner` once this is its last reference (in-flight requests finish
/// quickly), so sled lets go of the directory; gives it back if requests
/// still hold it after [`RELEASE_PATIENCE`].
fn release(mut inner: Arc<Inner>) -> Result<(), Arc<Inner>> {
    let started = std::time::Instant::now();
    loop {
        match Arc::try_unwrap(inner) {
            Ok(inner) => {
                // sled's log flushes and fsyncs on drop, and unwraps the
                // result: a disk that still fails must not take the
                // recovery thread down with it.
                let dropped =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(inner)));
                if dropped.is_err() {
                    tracing::warn!(
                        "closing the failed database panicked inside sled; reopening anyway"
                    );
                }
                return Ok(());
            }
            Err(still_shared) if started.elapsed() < RELEASE_PATIENCE => {
                inner = still_shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(still_shared) => return Err(still_shared),
        }
    }
}

/// Reads every regular file under `dir` and writes it back in place, then
/// fdatasyncs each file and fsyncs each directory: afterwards the disk holds
/// exactly what the page cache does. Used by [`Store::recover`] only, after
/// the database is closed; it costs one read and one write of the store.
fn rewrite_and_sync(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            rewrite_and_sync(&entry.path())?;
        } else if kind.is_file() {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(entry.path())?;
            let mut buf = vec![0; 1 << 20];
            let mut offset = 0;
            loop {
                let n = file.read_at(&mut buf, offset)?;
                if n == 0 {
                    break;
                }
                file.write_all_at(&buf[..n], offset)?;
                offset += n as u64;
            }
            file.sync_data()?;
        }
    }
    sync_dir(dir)
}

/// Whether the data directory's disk takes a durable write again: writes,
/// fsyncs and removes a small file beside sled's. (Honours
/// [`StoreOptions::fail_commits`], which stands for a full disk.)
fn probe_disk(options: &StoreOptions) -> std::io::Result<()> {
    if is_set(options.fail_commits.as_ref()) {
        return Err(injected_fault());
    }
    let path = options.data_dir.join(".settingsd-probe");
    let result = (|| {
        use std::io::Write;
        let mut file = File::create(&path)?;
        file.write_all(&[0; 4096])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn injected_fault() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "injected fault: no space left on device",
    )
}

impl Inner {
    fn open(options: &StoreOptions, syncs: &Arc<AtomicU64>) -> Result<Inner, Error> {
        let path = options.data_dir.clone();
        let open_err = |source: std::io::Error| Error::Open {
            path: path.clone(),
            source,
        };
        let db = open_sled(options).map_err(|e| match e {
            // sled reports its held file lock as a generic I/O error.
            sled::Error::Io(io) if is_lock_error(&io) => open_err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "it is in use by another settingsd process (the lock on its db file is held)",
            )),
            sled::Error::Io(io) => open_err(io),
            other => open_err(std::io::Error::other(other.to_string())),
        })?;
        let settings = db.open_tree(RECORDING_SETTINGS_TREE)?;
        let data_file = File::open(options.data_dir.join(SLED_DATA_FILE)).map_err(open_err)?;
        // Make the directory entries of sled's files durable once, so the
        // per-commit fdatasync of the data file is enough from here on.
        sync_dir(&options.data_dir).map_err(open_err)?;
        let syncer = Arc::new(Syncer {
            db: db.clone(),
            data_file,
            fail: options.fail_commits.clone(),
            stall: options.stall_commits.clone(),
            running_since: Mutex::new(None),
            poisoned: Mutex::new(None),
            per_write: Mutex::new(()),
            syncs: Arc::clone(syncs),
        });
        let commit = GroupCommit::start(Arc::clone(&syncer));
        Ok(Inner {
            db,
            settings,
            write_lock: Mutex::new(()),
            sync_mode: options.sync_mode,
            syncer,
            commit,
            scans: AtomicUsize::new(0),
        })
    }

    fn get(&self, account: &AccountSid) -> Result<RecordingSettings, Error> {
        match self.settings.get(account.as_str())? {
            Some(bytes) => decode(account, &bytes),
            None => Ok(RecordingSettings::default_for(account.clone())),
        }
    }

    /// Returns once `revision` (already applied to sled) is on stable storage.
    async fn wait_durable(&self, revision: u64) -> Result<(), Error> {
        match self.sync_mode {
            SyncMode::Group => self.commit.wait_durable(revision).await,
            SyncMode::PerWrite => {
                let syncer = Arc::clone(&self.syncer);
                tokio::task::spawn_blocking(move || {
                    let _alone = syncer
                        .per_write
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    syncer.sync()
                })
                .await
                .map_err(|e| Error::Storage(format!("sync task failed: {e}")))?
                .map_err(Error::WritesStopped)
            }
        }
    }

    /// The read-merge-write half of a Set, under the write lock.
    fn apply(
        &self,
        account: &AccountSid,
        patch: RecordingSettingsPatch,
        merge: Merge,
    ) -> Result<RecordingSettings, Error> {
        let _guard = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A poisoned database refuses writes (whether or not a recovery has
        // already stopped its committer); after close, a write could reach
        // sled but never be acknowledged.
        self.syncer.check_healthy()?;
        if self.commit.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        let base = match merge {
            Merge::IntoStored => self.get(account)?,
            Merge::IntoDefault => RecordingSettings::default_for(account.clone()),
        };
        let mut next = base.merged(patch)?;
        // sled's IDs are strictly increasing across restarts (it persists
        // the counter and skips ahead on recovery); +1 keeps 0 for "never set".
        next.revision = self.db.generate_id()? + 1;
        next.update_time = Some(now_micros());
        self.settings.insert(account.as_str(), encode(&next))?;
        // In per-write mode the writer syncs for itself; waking the committer
        // too would run a second sync beside it and skew the comparison.
        if self.sync_mode == SyncMode::Group {
            self.commit.written(next.revision);
        }
        Ok(next)
    }
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
/// (see [`Store::held_by_this_process`]), up to [`REOPEN_PATIENCE`]; a lock
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
                    && Store::held_by_this_process(&options.data_dir) =>
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

/// Group commit: one flush+fdatasync covers every write applied before it.
///
/// Writers apply their change to sled (in memory), report its revision with
/// [`GroupCommit::written`], and wait until a sync that started after that
/// covers it. A dedicated thread loops: take the highest revision written so
/// far, flush sled, fdatasync the data file, publish that revision as durable.
/// A lone writer pays exactly one sync; writers that arrive while a sync runs
/// share the next one, so the sync rate stays bounded however many writers wait.
struct GroupCommit {
    queue: Arc<(Mutex<CommitQueue>, Condvar)>,
    outcome: watch::Receiver<CommitOutcome>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct CommitQueue {
    /// Highest revision applied to sled.
    written: u64,
    stopping: bool,
    /// The committer is asleep on the condvar. Writers only pay for a
    /// wake-up (a futex syscall) when it is; while it syncs, it will see
    /// their revisions when it comes back for more.
    idle: bool,
}

#[derive(Debug, Clone, Default)]
struct CommitOutcome {
    /// Every revision up to this one is on stable storage.
    durable: u64,
    /// A sync failed: no revision beyond `durable` will ever be durable in
    /// this process (see the module docs).
    poisoned: Option<Arc<str>>,
    /// The committer has stopped: no revision beyond `durable` will become durable.
    stopped: bool,
}

impl GroupCommit {
    fn start(syncer: Arc<Syncer>) -> Self {
        let queue = Arc::new((Mutex::new(CommitQueue::default()), Condvar::new()));
        let (tx, rx) = watch::channel(CommitOutcome::default());
        let thread_queue = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("settingsd-commit".into())
            .spawn(move || commit_loop(&syncer, &thread_queue, &tx))
            .expect("spawning the commit thread");
        GroupCommit {
            queue,
            outcome: rx,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Tells the committer that `revision` is in sled and needs a sync.
    fn written(&self, revision: u64) {
        let (lock, wake) = &*self.queue;
        let mut queue = lock.lock().unwrap_or_else(PoisonError::into_inner);
        queue.written = queue.written.max(revision);
        if queue.idle {
            wake.notify_one();
        }
    }

    async fn wait_durable(&self, revision: u64) -> Result<(), Error> {
        let mut outcome = self.outcome.clone();
        let settled = outcome
            .wait_for(|o| o.durable >= revision || o.stopped || o.poisoned.is_some())
            .await
            .map_err(|_| Error::ShuttingDown)?;
        if settled.durable >= revision {
            return Ok(());
        }
        match &settled.poisoned {
            Some(error) => Err(Error::WritesStopped(Arc::clone(error))),
            None => Err(Error::ShuttingDown),
        }
    }

    fn is_stopping(&self) -> bool {
        let (lock, _) = &*self.queue;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stopping
    }

    /// Syncs what is pending, stops the thread and waits for it.
    fn stop(&self) -> Result<(), Error> {
        {
            let (lock, wake) = &*self.queue;
            lock.lock().unwrap_or_else(PoisonError::into_inner).stopping = true;
            wake.notify_one();
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                return Err(Error::Storage("the commit thread panicked".into()));
            }
        }
        match &self.outcome.borrow().poisoned {
            Some(error) => Err(Error::Storage(format!(
                "a commit failed ({error}); writes after it were not acknowledged"
            ))),
            None => Ok(()),
        }
    }
}

fn commit_loop(
    syncer: &Syncer,
    queue: &(Mutex<CommitQueue>, Condvar),
    outcome: &watch::Sender<CommitOutcome>,
) {
    let (lock, wake) = queue;
    // The highest revision a sync has been attempted for.
    let mut attempted = 0;
    loop {
        let (target, stopping) = {
            let mut q = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while q.written <= attempted && !q.stopping {
                q.idle = true;
                q = wake.wait(q).unwrap_or_else(PoisonError::into_inner);
                q.idle = false;
            }
            (q.written, q.stopping)
        };
        if target > attempted || stopping {
            match syncer.sync() {
                Ok(()) => outcome.send_modify(|o| o.durable = o.durable.max(target)),
                Err(error) => outcome.send_modify(|o| {
                    o.poisoned.get_or_insert(error);
                }),
            }
            attempted = target;
        }
        if stopping {
            outcome.send_modify(|o| o.stopped = true);
            return;
        }
    }
}

/// Whether a fault-injection flag is set.
fn is_set(flag: Option<&Arc<AtomicBool>>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Now, truncated to the microseconds the encoding keeps, so that a Set's
/// answer equals what a later Get reads back.
fn now_micros() -> SystemTime {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_micros(u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX))
}

impl Drop for GroupCommit {
    /// A store dropped without [`Store::close`] still syncs what it wrote and
    /// releases its thread (and with it sled's lock on the directory).
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "final commit on drop failed");
        }
    }
}

/// Makes everything written to sled so far durable: the one place that does.
struct Syncer {
    db: sled::Db,
    /// sled's data file, kept open for fdatasync.
    data_file: File,
    /// See [`StoreOptions::fail_commits`].
    fail: Option<Arc<AtomicBool>>,
    /// See [`StoreOptions::stall_commits`].
    stall: Option<Arc<AtomicBool>>,
    /// When the sync in progress started; `None` when none is.
    running_since: Mutex<Option<std::time::Instant>>,
    /// The first failure; once set, every sync fails with it (see the
    /// module docs).
    poisoned: Mutex<Option<Arc<str>>>,
    /// Held across each sync in [`SyncMode::PerWrite`].
    per_write: Mutex<()>,
    /// Counts the fdatasyncs that succeeded.
    syncs: Arc<AtomicU64>,
}

impl Syncer {
    /// sled's flush, then the fdatasync that sled's flush does not do.
    ///
    /// # Errors
    /// The failure that poisoned the store: this one, or an earlier one
    /// (then nothing is tried).
    fn sync(&self) -> Result<(), Arc<str>> {
        if let Some(error) = self.poison() {
            return Err(error);
        }
        *self
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
        let result = self
            .db
            .flush()
            .map_err(std::io::Error::other)
            .and_then(|_| {
                // Injected after sled's flush, where a real fdatasync fails.
                if is_set(self.fail.as_ref()) {
                    return Err(injected_fault());
                }
                while is_set(self.stall.as_ref()) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                self.data_file.sync_data()?;
                self.syncs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        *self
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        result.map_err(|e| {
            let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(poisoned.get_or_insert_with(|| {
                tracing::error!(
                    error = %e,
                    "commit failed: no write after the last good commit is acknowledged, \
                     and settingsd takes no more writes until the disk takes them again and the \
                     store has reopened"
                );
                e.to_string().into()
            }))
        })
    }

    /// How long the sync in progress has been running, if one is.
    fn running_for(&self) -> Option<Duration> {
        self.running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|started| started.elapsed())
    }

    /// The failure that poisoned the store, if one did.
    fn poison(&self) -> Option<Arc<str>> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// # Errors
    /// [`Error::WritesStopped`] if a failed commit poisoned the store.
    fn check_healthy(&self) -> Result<(), Error> {
        self.poison()
            .map_or(Ok(()), |error| Err(Error::WritesStopped(error)))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The on-disk encoding of one account's Recording Settings, version 1. The
/// account SID is the key, so it is not repeated here.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredRecordingSettingsV1 {
    #[prost(string, optional, tag = "1")]
    friendly_name: Option<String>,
    #[prost(string, optional, tag = "2")]
    aws_credentials_sid: Option<String>,
    #[prost(string, optional, tag = "3")]
    aws_s3_url: Option<String>,
    #[prost(bool, tag = "4")]
    aws_storage_enabled: bool,
    #[prost(string, optional, tag = "5")]
    encryption_key_sid: Option<String>,
    #[prost(bool, tag = "6")]
    encryption_enabled: bool,
    #[prost(uint64, tag = "7")]
    revision: u64,
    /// Microseconds since the Unix epoch.
    #[prost(int64, tag = "8")]
    update_time_unix_micros: i64,
}

/// Encodes a record as stored: the format byte, then the prost message.
pub fn encode(settings: &RecordingSettings) -> Vec<u8> {
    let stored = StoredRecordingSettingsV1 {
        friendly_name: settings
            .friendly_name
            .as_ref()
            .map(|v| v.as_str().to_owned()),
        aws_credentials_sid: settings
            .aws_credentials_sid
            .as_ref()
            .map(|v| v.as_str().to_owned()),
        aws_s3_url: settings.aws_s3_url.as_ref().map(|v| v.as_str().to_owned()),
        aws_storage_enabled: settings.aws_storage_enabled,
        encryption_key_sid: settings
            .encryption_key_sid
            .as_ref()
            .map(|v| v.as_str().to_owned()),
        encryption_enabled: settings.encryption_enabled,
        revision: settings.revision,
        update_time_unix_micros: settings
            .update_time
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
    };
    let mut bytes = Vec::with_capacity(1 + stored.encoded_len());
    bytes.push(FORMAT_V1);
    stored
        .encode(&mut bytes)
        .expect("a Vec grows to fit any message");
    bytes
}

/// Decodes a stored value, re-validating every field: a record that decodes
/// but holds something the API would reject is as corrupt as one that does not.
///
/// # Errors
/// [`Error::Corrupt`] naming the account.
pub fn decode(account: &AccountSid, bytes: &[u8]) -> Result<RecordingSettings, Error> {
    let corrupt = |detail: String| Error::Corrupt {
        account: account.clone(),
        detail,
    };
    let invalid = |e: ValidationError| corrupt(e.to_string());
    let (version, body) = bytes
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    if *version != FORMAT_V1 {
        return Err(corrupt(format!("unknown format version {version}")));
    }
    let stored = StoredRecordingSettingsV1::decode(body).map_err(|e| corrupt(e.to_string()))?;
    let credential = |field, v: Option<String>| {
        v.map(|s| CredentialSid::parse(field, &s))
            .transpose()
            .map_err(invalid)
    };
    let micros = u64::try_from(stored.update_time_unix_micros)
        .map_err(|_| corrupt("negative update time".into()))?;
    let settings = RecordingSettings {
        account_sid: account.clone(),
        friendly_name: stored
            .friendly_name
            .map(|s| FriendlyName::parse(&s))
            .transpose()
            .map_err(invalid)?,
        aws_credentials_sid: credential(Field::AwsCredentialsSid, stored.aws_credentials_sid)?,
        aws_s3_url: stored
            .aws_s3_url
            .map(|s| S3Url::parse(&s))
            .transpose()
            .map_err(invalid)?,
        aws_storage_enabled: stored.aws_storage_enabled,
        encryption_key_sid: credential(Field::EncryptionKeySid, stored.encryption_key_sid)?,
        encryption_enabled: stored.encryption_enabled,
        revision: stored.revision,
        update_time: (stored.revision > 0).then(|| UNIX_EPOCH + Duration::from_micros(micros)),
    };
    // A record the API could never have written (say, storage enabled with
    // no URL) would make every later Set fail over a field its caller never
    // sent: call it what it is.
    settings.check_dependencies().map_err(invalid)?;
    Ok(settings)
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

        assert!(Store::held_by_this_process(held.path()));
        assert!(!Store::held_by_this_process(other.path()));
        drop(file);
        assert!(!Store::held_by_this_process(held.path()));
    }

    #[test]
    fn a_record_breaking_a_cross_field_rule_is_corrupt_naming_the_account() {
        let account = AccountSid::parse("ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        let mut record = RecordingSettings::default_for(account.clone());
        record.friendly_name = Some(FriendlyName::parse("x").unwrap());
        record.revision = 1;
        assert!(decode(&account, &encode(&record)).is_ok());
        record.aws_storage_enabled = true;

        let error = decode(&account, &encode(&record)).unwrap_err();

        assert!(
            matches!(&error, Error::Corrupt { account: a, detail } if *a == account && detail.contains("aws_s3_url")),
            "{error:?}"
        );
    }
}
