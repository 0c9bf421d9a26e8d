//! Group commit: when a write counts as durable, and the one place that
//! makes it so ([`Syncer`]).

use std::{
    fs::File,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::Duration,
};

use tokio::sync::watch;

use crate::error::Error;

#[cfg(all(feature = "unsafe-skip-fdatasync", not(debug_assertions)))]
compile_error!("unsafe-skip-fdatasync loses acknowledged writes on power loss: test builds only");

/// Group commit: one flush+fdatasync covers every write applied before it.
///
/// Writers apply their change to sled (in memory), report its revision with
/// [`GroupCommit::written`], and wait until a sync that started after that
/// covers it. A dedicated thread loops: take the highest revision written so
/// far, flush sled, fdatasync the data file, publish that revision as durable.
/// A lone writer pays exactly one sync; writers that arrive while a sync runs
/// share the next one, so the sync rate stays bounded however many writers wait.
pub(super) struct GroupCommit {
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
    /// Starts the commit thread, which calls `hooks` around each successful
    /// sync (see [`CommitHooks`]).
    pub(super) fn start(syncer: Arc<Syncer>, hooks: Arc<dyn CommitHooks>) -> Self {
        let queue = Arc::new((Mutex::new(CommitQueue::default()), Condvar::new()));
        let (tx, rx) = watch::channel(CommitOutcome::default());
        let thread_queue = Arc::clone(&queue);
        let thread = std::thread::Builder::new()
            .name("settingsd-commit".into())
            .spawn(move || commit_loop(&syncer, &thread_queue, &tx, &*hooks))
            .expect("spawning the commit thread");
        GroupCommit {
            queue,
            outcome: rx,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Tells the committer that `revision` is in sled and needs a sync.
    pub(super) fn written(&self, revision: u64) {
        let (lock, wake) = &*self.queue;
        let mut queue = lock.lock().unwrap_or_else(PoisonError::into_inner);
        queue.written = queue.written.max(revision);
        if queue.idle {
            wake.notify_one();
        }
    }

    pub(super) async fn wait_durable(&self, revision: u64) -> Result<(), Error> {
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

    pub(super) fn is_stopping(&self) -> bool {
        let (lock, _) = &*self.queue;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stopping
    }

    /// Syncs what is pending, stops the thread and waits for it.
    pub(super) fn stop(&self) -> Result<(), Error> {
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

/// What runs around a successful commit (the change log's).
pub(super) trait CommitHooks: Send + Sync {
    /// Every revision up to `revision` is durable; runs before any writer
    /// it covers is told.
    fn durable(&self, revision: u64);
    /// The commit's writers have been told: bookkeeping that need not
    /// delay them.
    fn committed(&self);
}

fn commit_loop(
    syncer: &Syncer,
    queue: &(Mutex<CommitQueue>, Condvar),
    outcome: &watch::Sender<CommitOutcome>,
    hooks: &dyn CommitHooks,
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
                Ok(()) => {
                    hooks.durable(target);
                    outcome.send_modify(|o| o.durable = o.durable.max(target));
                    hooks.committed();
                }
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
pub(super) fn is_set(flag: Option<&Arc<AtomicBool>>) -> bool {
    flag.is_some_and(|f| f.load(Ordering::SeqCst))
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
pub(super) struct Syncer {
    db: sled::Db,
    /// sled's data file, kept open for fdatasync.
    #[cfg_attr(feature = "unsafe-skip-fdatasync", allow(dead_code))] // see Cargo.toml
    data_file: File,
    /// See [`super::StoreOptions::fail_commits`].
    fail: Option<Arc<AtomicBool>>,
    /// See [`super::StoreOptions::stall_commits`].
    stall: Option<Arc<AtomicBool>>,
    /// When the sync in progress started; `None` when none is.
    running_since: Mutex<Option<std::time::Instant>>,
    /// The first failure; once set, every sync fails with it (see the
    /// module docs).
    poisoned: Mutex<Option<Arc<str>>>,
    /// Held across each sync in [`super::SyncMode::PerWrite`].
    per_write: Mutex<()>,
    /// Counts the fdatasyncs that succeeded.
    syncs: Arc<AtomicU64>,
    /// Told about each commit, for metrics.
    observer: Option<Arc<dyn crate::store::StoreObserver>>,
}

impl Syncer {
    /// A syncer for `db`, whose data file is `data_file`; counts its
    /// successful syncs in `syncs`.
    pub(super) fn new(
        db: sled::Db,
        data_file: File,
        options: &super::StoreOptions,
        syncs: Arc<AtomicU64>,
    ) -> Syncer {
        #[cfg(feature = "unsafe-skip-fdatasync")]
        tracing::error!("built with unsafe-skip-fdatasync: acknowledged writes do not survive power loss (a test build)");
        Syncer {
            db,
            data_file,
            fail: options.fail_commits.clone(),
            stall: options.stall_commits.clone(),
            running_since: Mutex::new(None),
            poisoned: Mutex::new(None),
            per_write: Mutex::new(()),
            syncs,
            observer: options.observer.clone(),
        }
    }

    /// A sync of its own, never overlapping another (see
    /// [`super::SyncMode::PerWrite`]), then `hooks` for everything it made
    /// durable (up to `revision`), still alone, so that changes are
    /// published in order.
    pub(super) fn sync_alone(
        &self,
        revision: u64,
        hooks: &dyn CommitHooks,
    ) -> Result<(), Arc<str>> {
        let _alone = self
            .per_write
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.sync()?;
        hooks.durable(revision);
        hooks.committed();
        Ok(())
    }

    /// sled's flush, then the fdatasync that sled's flush does not do.
    ///
    /// # Errors
    /// The failure that poisoned the store: this one, or an earlier one
    /// (then nothing is tried).
    pub(super) fn sync(&self) -> Result<(), Arc<str>> {
        if let Some(error) = self.poison() {
            return Err(error);
        }
        let started = std::time::Instant::now();
        *self
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(started);
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
                #[cfg(not(feature = "unsafe-skip-fdatasync"))] // see Cargo.toml
                self.data_file.sync_data()?;
                self.syncs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            });
        *self
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if let Some(observer) = &self.observer {
            match &result {
                Ok(()) => observer.committed(started.elapsed()),
                Err(_) => observer.commit_failed(),
            }
        }
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

    /// Stops writes: a write reached sled only in part, so no later commit
    /// may vouch for the database (see the module docs of `sled`).
    pub(super) fn poison_with(&self, error: &str) -> Arc<str> {
        let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(poisoned.get_or_insert_with(|| {
            tracing::error!(
                error,
                "a write failed part way: settingsd takes no more writes until the store has reopened"
            );
            error.into()
        }))
    }

    /// How long the sync in progress has been running, if one is.
    pub(super) fn running_for(&self) -> Option<Duration> {
        self.running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|started| started.elapsed())
    }

    /// The failure that poisoned the store, if one did.
    pub(super) fn poison(&self) -> Option<Arc<str>> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// # Errors
    /// [`Error::WritesStopped`] if a failed commit poisoned the store.
    pub(super) fn check_healthy(&self) -> Result<(), Error> {
        self.poison()
            .map_or(Ok(()), |error| Err(Error::WritesStopped(error)))
    }
}

pub(super) fn injected_fault() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "injected fault: no space left on device",
    )
}
