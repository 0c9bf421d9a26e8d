//! The change log: every write's resulting state, keyed by revision, in the
//! `changes` tree, written just before the record it changes (a crash
//! between the two is repaired when the store opens: [`ChangeLog::repair`]). It serves watches (catch-up from disk, then live changes pushed
//! to each watcher that wants them), per-resource history and rollback, and keeps only the last
//! `history_revisions` changes (older ones are compacted away as writes
//! commit).
//!
//! Changes reach watchers only once durable: a write's change waits in
//! `pending` (in revision order: it is queued under the store's write lock)
//! until the commit that covers it has synced, and [`ChangeLog::publish`]
//! then hands it to every subscribed watcher whose filter matches (so an
//! idle watcher costs a writer a filter check, not a wake-up). A watcher
//! that falls behind its bounded queue does not hold memory: it is marked
//! lagged and re-reads what it missed from the tree.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use tokio::sync::{mpsc, Notify};
use tokio_stream::wrappers::ReceiverStream;

use crate::store::codec::decode;
use crate::{
    domain::AccountSid,
    error::Error,
    resource::Resource,
    store::{Change, ChangeStream, Record, Selector, StoreObserver, WatchEvent},
};

/// The tree holding the log: big-endian revision -> the resource (see
/// [`resource_header`]; [`RESET_FLAG`] in its first byte for a reset),
/// account SID length and SID, encoded record.
pub(super) const CHANGES_TREE: &str = "changes";
/// Set in a change's resource byte when the change is a reset (the record
/// was deleted).
const RESET_FLAG: u8 = 0x80;
/// A change's resource byte for a declared kind, whose name (its length,
/// then the name) follows: a built-in resource is its index in
/// [`Resource::ALL`], a declared kind is written by name, since which kinds
/// a server declares changes from one start to the next.
const DECLARED_KIND: u8 = 0x7f;
/// Bookkeeping that must survive restarts.
const META_TREE: &str = "meta";
/// In `meta`: the highest revision compaction has removed (big-endian).
const COMPACTED_THROUGH: &str = "compacted_through";
/// In `meta`: a revision every record up to which is known durable (it
/// reaches the disk with the commit after the one it describes).
const DURABLE_THROUGH: &str = "durable_through";
/// Changes a live watcher may fall behind before it re-reads from disk.
const SUBSCRIBER_CAPACITY: usize = 256;
/// Changes one catch-up read takes from the tree at a time.
const CATCH_UP_CHUNK: usize = 256;
/// Messages waiting for a slow watcher's client before its reader pauses.
const WATCH_BUFFER: usize = 64;
/// How often an idle watch stream says how far it has got.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Changes compaction removes per commit at most, so one commit never
/// stalls on a large backlog (after the limit was lowered, say).
const COMPACT_PER_COMMIT: usize = 1024;

/// The change log of one open database. Shared by the writers (who queue
/// changes), the commit thread (which publishes and compacts) and watchers.
pub(super) struct ChangeLog {
    changes: sled::Tree,
    meta: sled::Tree,
    /// Written but not yet durable, in revision order.
    pending: Mutex<VecDeque<Arc<Change>>>,
    /// Live watchers: each gets the published changes its filter matches.
    subscribers: Mutex<Vec<Subscriber>>,
    /// Set when the database is closed under the watchers (recovery): they
    /// end at once, letting go of it, and their clients resume.
    closed: tokio::sync::watch::Sender<bool>,
    /// Every revision up to this is durable (and so readable).
    durable: AtomicU64,
    /// The highest revision broadcast; every change up to it was sent.
    published: AtomicU64,
    /// Changes in the tree (kept in step by appends and compaction).
    retained: AtomicU64,
    /// Whether `retained` includes the changes from before this open yet:
    /// they are counted on a thread of their own, off the start-up path
    /// (sled counts by scanning), and compaction waits for it.
    counted: std::sync::atomic::AtomicBool,
    /// The highest revision compaction removed; 0 if none.
    compacted_through: AtomicU64,
    /// How many changes to keep.
    limit: u64,
    /// The `changes` tree was created by this open.
    fresh: bool,
    /// Told each commit's batch size.
    observer: Option<Arc<dyn StoreObserver>>,
}

impl ChangeLog {
    /// Opens the log in `db`; [`ChangeLog::opened`] completes it.
    pub(super) fn open(
        db: &sled::Db,
        limit: u64,
        observer: Option<Arc<dyn StoreObserver>>,
    ) -> sled::Result<ChangeLog> {
        let fresh = !db.tree_names().iter().any(|n| n == CHANGES_TREE.as_bytes());
        let changes = db.open_tree(CHANGES_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let compacted_through = meta
            .get(COMPACTED_THROUGH)?
            .map_or(0, |v| be_u64(&v).unwrap_or(0));
        Ok(ChangeLog {
            changes,
            meta,
            pending: Mutex::new(VecDeque::new()),
            subscribers: Mutex::new(Vec::new()),
            closed: tokio::sync::watch::Sender::new(false),
            durable: AtomicU64::new(0),
            published: AtomicU64::new(0),
            retained: AtomicU64::new(0),
            counted: std::sync::atomic::AtomicBool::new(false),
            compacted_through: AtomicU64::new(compacted_through),
            limit: limit.max(1),
            fresh,
            observer,
        })
    }

    /// Everything on disk is durable, up to `durable` (a revision at least
    /// as high as every record's). A log new to this database (a store from
    /// before the log existed) holds none of the writes before it: a watch
    /// from before `durable` is then out of range, not silently empty.
    pub(super) fn opened(&self, durable: u64) -> sled::Result<()> {
        self.durable.fetch_max(durable, Ordering::SeqCst);
        self.published.fetch_max(durable, Ordering::SeqCst);
        if self.fresh {
            let through = durable.saturating_sub(1);
            self.meta
                .insert(COMPACTED_THROUGH, &through.to_be_bytes())?;
            self.compacted_through.fetch_max(through, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Counts the changes from before this open (every one up to
    /// `durable`; later ones count themselves as they are published) on a
    /// thread of its own, then lets compaction run.
    pub(super) fn count_retained(self: &Arc<Self>, durable: u64) {
        if self.changes.is_empty() {
            self.counted.store(true, Ordering::SeqCst);
            return;
        }
        let log = Arc::clone(self);
        let counted = std::thread::Builder::new()
            .name("settingsd-count".into())
            .spawn(move || {
                let before = log.changes.range(..=durable.to_be_bytes()).count() as u64;
                log.retained.fetch_add(before, Ordering::SeqCst);
                log.counted.store(true, Ordering::SeqCst);
            });
        if let Err(e) = counted {
            tracing::warn!(error = %e, "cannot count the change log; it is not compacted until a restart");
        }
    }

    /// Whether the log holds every change ever made (nothing compacted, no
    /// writes from before the log).
    pub(super) fn is_complete(&self) -> bool {
        self.compacted_through.load(Ordering::SeqCst) == 0
    }

    pub(super) fn changes(&self) -> &sled::Tree {
        &self.changes
    }

    /// The key and value of `settings`' change, whose encoded record is
    /// `record` (for a reset, the default record it leaves).
    pub(super) fn entry(
        resource: Resource,
        settings: &Record,
        record: &[u8],
        reset: bool,
    ) -> ([u8; 8], Vec<u8>) {
        let account = settings.account_sid();
        let mut value = Vec::with_capacity(header_len(resource, account) + record.len());
        write_header(&mut value, resource, account);
        if reset {
            value[0] |= RESET_FLAG;
        }
        value.extend_from_slice(record);
        (settings.revision().to_be_bytes(), value)
    }

    /// Makes every record at least as new as its latest change: a crash
    /// between a write's change and its record (written in that order)
    /// leaves the change alone, and this writes its record (or, for a
    /// reset, deletes it). Only changes after the last commit recorded as
    /// durable can be in that state.
    pub(super) fn repair(&self, db: &sled::Db) -> Result<(), Error> {
        let after = self
            .meta
            .get(DURABLE_THROUGH)?
            .map_or(0, |v| be_u64(&v).unwrap_or(0));
        let mut repaired = 0;
        for entry in self.changes.range(after.saturating_add(1).to_be_bytes()..) {
            let (key, value) = entry?;
            let revision = be_u64(&key).unwrap_or(0);
            let change = decode_change(revision, &value)?;
            // Opened here, not taken from the store's: the change may be of
            // a kind this start does not declare.
            let tree = db.open_tree(super::tree_name(change.resource))?;
            let account = change.record.account_sid();
            let stored = match tree.get(account.as_str())? {
                Some(bytes) => decode(change.resource, account, &bytes).map_or(0, |s| s.revision()),
                None => 0,
            };
            if stored < revision {
                if !change.reset {
                    // The header as `entry` wrote it (start-up only: the
                    // allocation does not matter here).
                    let header = resource_header(change.resource, account).len();
                    tree.insert(account.as_str(), &value[header..])?;
                    repaired += 1;
                } else if tree.remove(account.as_str())?.is_some() {
                    repaired += 1;
                }
            }
        }
        if repaired > 0 {
            tracing::warn!(
                repaired,
                "replayed changes whose records a crash had cut off"
            );
        }
        Ok(())
    }

    /// Queues a change that was just written (under the write lock, so in
    /// revision order) until its commit makes it durable.
    pub(super) fn written(&self, change: Change) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Arc::new(change));
    }

    /// The revision of a reset of this account's `resource` that is
    /// written but not yet durable, if there is one. (A reset's change is
    /// queued before its record is removed, and leaves the queue only once
    /// durable: a reader that found no record and finds no pending reset
    /// may answer the default.)
    pub(super) fn pending_reset(&self, resource: Resource, account: &AccountSid) -> Option<u64> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|c| c.reset && c.resource == resource && c.record.account_sid() == account)
            .map(|c| c.record.revision())
    }

    pub(super) fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// Called once every revision up to `durable` is on stable storage:
    /// makes those changes readable and sends them to watchers, in order,
    /// then compacts the log.
    /// Callers are serialised (the commit thread; in per-write mode, the
    /// per-write lock), so changes reach each watcher in revision order.
    pub(super) fn publish(&self, durable: u64) {
        // Taken out under the lock writers queue under, handed out after,
        // so no writer waits for the fan-out.
        let batch: Vec<Arc<Change>> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            self.durable.fetch_max(durable, Ordering::SeqCst);
            let ready = pending
                .iter()
                .take_while(|c| c.record.revision() <= durable)
                .count();
            pending.drain(..ready).collect()
        };
        if let Some(observer) = &self.observer {
            observer.published(batch.len());
        }
        if !batch.is_empty() {
            let mut subscribers = self
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            subscribers.retain(|s| !s.tx.is_closed());
            for change in batch {
                for subscriber in subscribers.iter().filter(|s| s.filter.matches(&change)) {
                    if subscriber.tx.try_send(Arc::clone(&change)).is_err() {
                        subscriber.lag.mark();
                    }
                }
                self.published
                    .fetch_max(change.record.revision(), Ordering::SeqCst);
                self.retained.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.published.fetch_max(durable, Ordering::SeqCst);
    }

    /// Bookkeeping after a commit's writers have their answers: records the
    /// durable revision for the next open's repair.
    pub(super) fn after_commit(&self) {
        let durable = self.durable();
        if durable > 0 {
            if let Err(e) = self.meta.insert(DURABLE_THROUGH, &durable.to_be_bytes()) {
                tracing::warn!(error = %e, "cannot record the durable revision; a restart replays more changes");
            }
        }
    }

    /// Removes the oldest changes beyond the limit. Not synced on its own:
    /// the next commit's flush covers it, and a compaction lost in a crash
    /// is simply redone.
    ///
    /// One `meta` write per call, for the highest revision it is about to
    /// remove, not one per change: in a log at its limit every commit
    /// compacts as many changes as it added, and the per-change write was a
    /// third sled write per Set, on the commit thread before the writers
    /// are told.
    fn compact(&self) -> sled::Result<()> {
        if !self.counted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let excess = self
            .retained
            .load(Ordering::SeqCst)
            .saturating_sub(self.limit);
        let take = usize::try_from(excess)
            .unwrap_or(usize::MAX)
            .min(COMPACT_PER_COMMIT);
        if take == 0 {
            return Ok(());
        }
        // Only what watchers already had: a change not yet published must
        // still be there for the watchers it is about to reach.
        let published = self.published.load(Ordering::SeqCst);
        let mut doomed = Vec::with_capacity(take);
        for key in self.changes.iter().keys().take(take) {
            let key = key?;
            if be_u64(&key).unwrap_or(u64::MAX) > published {
                break;
            }
            doomed.push(key);
        }
        let Some(last) = doomed.last() else {
            return Ok(());
        };
        // Recorded before the removals, so a crash between them never
        // leaves a gap that looks retained.
        let through = self
            .compacted_through
            .fetch_max(be_u64(last).unwrap_or(0), Ordering::SeqCst)
            .max(be_u64(last).unwrap_or(0));
        self.meta
            .insert(COMPACTED_THROUGH, &through.to_be_bytes())?;
        for key in doomed {
            if self.changes.remove(&key)?.is_some() {
                self.retained.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// The oldest revision a watch can start from.
    fn oldest_resumable(&self) -> u64 {
        self.compacted_through.load(Ordering::SeqCst) + 1
    }

    /// # Errors
    /// [`Error::Compacted`] if changes at or after `from` were compacted.
    fn check_retained(&self, from: u64) -> Result<(), Error> {
        let oldest = self.oldest_resumable();
        if from < oldest {
            return Err(Error::Compacted {
                requested: from,
                oldest,
            });
        }
        Ok(())
    }

    /// Durable changes with revisions in `from..` (at most `limit`).
    fn read_from(&self, from: u64, limit: usize) -> Result<Vec<Arc<Change>>, Error> {
        let durable = self.durable();
        let mut out = Vec::new();
        for entry in self.changes.range(from.to_be_bytes()..) {
            let (key, value) = entry?;
            let revision = be_u64(&key).unwrap_or(u64::MAX);
            if revision > durable || out.len() >= limit {
                break;
            }
            out.push(Arc::new(decode_change(revision, &value)?));
        }
        // Compaction may have removed part of what was asked for meanwhile.
        self.check_retained(from)?;
        Ok(out)
    }

    /// See [`crate::store::Store::changes`].
    pub(super) fn changes_between(
        &self,
        from: u64,
        through: u64,
        filter: &Selector,
    ) -> Result<Vec<Change>, Error> {
        let through = through.min(self.durable());
        let mut out = Vec::new();
        if from > through {
            return Ok(out);
        }
        for entry in self
            .changes
            .range(from.to_be_bytes()..=through.to_be_bytes())
        {
            let (key, value) = entry?;
            let change = decode_change(be_u64(&key).unwrap_or(0), &value)?;
            if filter.matches(&change) {
                out.push(change);
            }
        }
        self.check_retained(from)?;
        Ok(out)
    }

    /// Past durable states of one account's resource, newest first.
    pub(super) fn history(
        &self,
        resource: Resource,
        account: &AccountSid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Change>, Error> {
        let end = before
            .unwrap_or(u64::MAX)
            .min(self.durable().saturating_add(1));
        let header = resource_header(resource, account);
        let mut out = Vec::new();
        for entry in self.changes.range(..end.to_be_bytes()).rev() {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if is_for(&value, &header) {
                let revision = be_u64(&key).unwrap_or(0);
                out.push(decode_change(revision, &value)?);
            }
        }
        Ok(out)
    }

    /// One account's resource as it was at `revision`, if retained.
    pub(super) fn at(
        &self,
        resource: Resource,
        account: &AccountSid,
        revision: u64,
    ) -> Result<Record, Error> {
        let not_found = || Error::RevisionNotFound {
            resource,
            account: account.clone(),
            revision,
        };
        if revision > self.durable() {
            return Err(not_found());
        }
        match self.changes.get(revision.to_be_bytes())? {
            Some(value) if is_for(&value, &resource_header(resource, account)) => {
                Ok(decode_change(revision, &value)?.record)
            }
            _ => Err(not_found()),
        }
    }

    /// See [`crate::store::Store::watch`].
    pub(super) fn watch(
        self: &Arc<Self>,
        from: u64,
        filter: Selector,
    ) -> Result<ChangeStream, Error> {
        self.check_retained(from)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let log = Arc::clone(self);
        let mut closed = self.closed.subscribe();
        tokio::spawn(async move {
            let result = tokio::select! {
                result = Arc::clone(&log).feed(from, &filter, &tx) => result,
                _ = closed.wait_for(|closed| *closed) => Err(Error::Reopening),
            };
            // Let go of the database before telling the client.
            drop(log);
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Registers a live watcher for the changes `filter` matches.
    fn subscribe(&self, filter: &Selector) -> (mpsc::Receiver<Arc<Change>>, Arc<Lag>) {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let lag = Arc::new(Lag::default());
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Subscriber {
                filter: filter.clone(),
                tx,
                lag: Arc::clone(&lag),
            });
        (rx, lag)
    }

    /// Ends every live watch of this log (its database is being closed):
    /// their streams end with [`Error::Reopening`], and clients resume on
    /// the reopened store.
    pub(super) fn close(&self) {
        self.closed.send_replace(true);
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Sends every change from `next` on to `tx` until the consumer goes
    /// away: catches up from the tree, then follows the live changes, and
    /// goes back to the tree whenever it fell behind them.
    async fn feed(
        self: Arc<Self>,
        mut next: u64,
        filter: &Selector,
        tx: &mpsc::Sender<Result<WatchEvent, Error>>,
    ) -> Result<(), Error> {
        let (mut live, lag) = self.subscribe(filter);
        // Progress never promises less than it already did.
        let mut promised = next.saturating_sub(1);
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        progress.tick().await;
        loop {
            // Catch up from disk: subscribed first, so nothing published
            // after the read is missed (it is in `live`, and skipped there
            // if the read already had it).
            loop {
                let log = Arc::clone(&self);
                let chunk =
                    tokio::task::spawn_blocking(move || log.read_from(next, CATCH_UP_CHUNK))
                        .await
                        .map_err(|e| Error::Storage(format!("a watch read failed: {e}")))??;
                if chunk.is_empty() {
                    break;
                }
                for change in chunk {
                    next = change.record.revision() + 1;
                    if filter.matches(&change)
                        && tx.send(Ok(WatchEvent::Change(change))).await.is_err()
                    {
                        return Ok(());
                    }
                }
            }
            // Live.
            loop {
                tokio::select! {
                    // A lag first: changes after a dropped one must not be
                    // taken before the dropped one is read back from disk.
                    biased;
                    () = lag.notify.notified() => {
                        if lag.lagged.swap(false, Ordering::SeqCst) {
                            break; // changes were dropped: read them from disk
                        }
                    }
                    received = live.recv() => match received {
                        Some(change) => {
                            if lag.lagged.swap(false, Ordering::SeqCst) {
                                break; // dropped before this one: disk first
                            }
                            if change.record.revision() < next {
                                continue;
                            }
                            next = change.record.revision() + 1;
                            if tx.send(Ok(WatchEvent::Change(change))).await.is_err() {
                                return Ok(());
                            }
                        }
                        None => return Err(Error::Reopening),
                    },
                    _ = progress.tick() => {
                        // Everything before `next` has been sent. With
                        // nothing queued, so has everything published: read
                        // `published` before looking at the queue, so that
                        // what it covers is either received or still queued.
                        let published = self.published.load(Ordering::SeqCst);
                        let sent = next.saturating_sub(1);
                        let caught_up = live.is_empty() && !lag.lagged.load(Ordering::SeqCst);
                        let upto = if caught_up { published.max(sent) } else { sent };
                        promised = promised.max(upto);
                        if tx.send(Ok(WatchEvent::Progress(promised))).await.is_err() {
                            return Ok(());
                        }
                    }
                    () = tx.closed() => return Ok(()),
                }
            }
        }
    }
}

impl super::commit::CommitHooks for ChangeLog {
    fn durable(&self, revision: u64) {
        self.publish(revision);
        // Before the writers are told, so that what a client learns after
        // its write (the oldest revision a watch can start from) holds.
        if let Err(e) = self.compact() {
            tracing::warn!(error = %e, "change log compaction failed; it is retried after the next commit");
        }
    }

    fn committed(&self) {
        self.after_commit();
    }
}

/// A live watcher, as the publisher sees it.
struct Subscriber {
    filter: Selector,
    tx: mpsc::Sender<Arc<Change>>,
    lag: Arc<Lag>,
}

/// Set by the publisher when a watcher's queue was full and a change was
/// dropped; the watcher then catches up from disk.
#[derive(Default)]
struct Lag {
    lagged: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Lag {
    fn mark(&self) {
        self.lagged.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// What a change entry starts with (before its record): the resource (a
/// built-in one's index, or [`DECLARED_KIND`] and the kind's name), then
/// the account SID's length and the SID.
fn resource_header(resource: Resource, account: &AccountSid) -> Vec<u8> {
    let mut header = Vec::with_capacity(header_len(resource, account));
    write_header(&mut header, resource, account);
    header
}

/// How long [`resource_header`] is: a capacity hint, so that a change
/// entry is one allocation (what the header is, and where a stored change's
/// record starts, is `write_header`'s alone).
fn header_len(resource: Resource, account: &AccountSid) -> usize {
    let kind = if resource.is_built_in() {
        1
    } else {
        2 + resource.name().len()
    };
    kind + 1 + account.as_str().len()
}

/// Appends [`resource_header`] to `out`.
fn write_header(out: &mut Vec<u8>, resource: Resource, account: &AccountSid) {
    let account = account.as_str().as_bytes();
    let header = out;
    match Resource::ALL.iter().position(|r| *r == resource) {
        Some(index) => header.push(u8::try_from(index).unwrap_or(DECLARED_KIND)),
        None => {
            let name = resource.name().as_bytes();
            header.push(DECLARED_KIND);
            header.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            header.extend_from_slice(name);
        }
    }
    header.push(u8::try_from(account.len()).unwrap_or(u8::MAX));
    header.extend_from_slice(account);
}

/// Whether a change entry is for the resource and account whose
/// [`resource_header`] is `header` (made once per listing, not per entry).
fn is_for(value: &[u8], header: &[u8]) -> bool {
    value.len() >= header.len()
        && value[0] & !RESET_FLAG == header[0]
        && value[1..header.len()] == header[1..]
}

/// Decodes a change entry.
fn decode_change(revision: u64, value: &[u8]) -> Result<Change, Error> {
    let bad = |what: &str| Error::Storage(format!("change {revision} is malformed: {what}"));
    let (&kind, rest) = value.split_first().ok_or_else(|| bad("empty"))?;
    let reset = kind & RESET_FLAG != 0;
    let (resource, rest) = match kind & !RESET_FLAG {
        DECLARED_KIND => {
            let (&len, rest) = rest.split_first().ok_or_else(|| bad("no kind"))?;
            let (name, rest) = rest
                .split_at_checked(usize::from(len))
                .ok_or_else(|| bad("short kind"))?;
            let name = std::str::from_utf8(name).map_err(|_| bad("kind not UTF-8"))?;
            (Resource::declared(name), rest)
        }
        index => (
            Resource::ALL
                .get(usize::from(index))
                .copied()
                .ok_or_else(|| bad("unknown resource"))?,
            rest,
        ),
    };
    let (&len, rest) = rest.split_first().ok_or_else(|| bad("no account"))?;
    let (account, record) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(|| bad("short account"))?;
    let account = AccountSid::parse(&String::from_utf8_lossy(account))
        .map_err(|_| bad("not an account SID"))?;
    let record = decode(resource, &account, record)?;
    Ok(Change {
        resource,
        record,
        reset,
    })
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}
