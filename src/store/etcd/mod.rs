//! The etcd backend: settingsd front ends that keep no state of their own,
//! on an etcd cluster that does (`serve --store etcd`). Several front ends on
//! one cluster serve the same data with the same guarantees, and survive the
//! loss of any of them and of any minority of etcd members.
//!
//! # How the contract maps onto etcd
//!
//! - **Layout**: one key per resource and account (see [`keys`]); the
//!   value is the sled store's record encoding; a reset puts an empty value
//!   (a tombstone) so that it has a revision and a place in the key's
//!   history.
//! - **Revisions** are etcd's: a record's revision is its key's
//!   `mod_revision`, store-wide and strictly increasing. Every write is its
//!   own transaction, so no two changes share a revision.
//! - **Read-merge-write** is a transaction that compares the key's
//!   `mod_revision` with the one the merge started from, and puts the merged
//!   record only if it still holds; otherwise it reads the key back in the
//!   same transaction and merges again (bounded). A conditional Set compares
//!   against the revision its etag names. So no update is lost, whichever
//!   front end each writer uses. Within one front end, writes to one key
//!   take turns (a lock per key stripe) and start from the state this front
//!   end wrote last, so they do not fight each other, and a Set costs one
//!   round trip when nobody else wrote the key meanwhile.
//! - **Durability and reads**: etcd answers a write once a quorum has it on
//!   disk, and serves reads linearizably (through the leader's read index):
//!   every Get sees every write acknowledged before it began, on any front
//!   end. Nothing here caches reads.
//! - **Watch, history, rollback** come from etcd's MVCC history: a watch is
//!   an etcd watch from the same revision (so it is ordered, unique and
//!   resumable, and fails with `Compacted` where etcd compacted), and a
//!   history walks a key's past values a revision at a time. They reach back
//!   as far as etcd keeps history: etcd keeps every revision until it is
//!   compacted (`--auto-compaction-retention`, or `etcdctl compact`), not
//!   settingsd's `--history-revisions`.
//! - **Faults**: a member that cannot be reached is skipped (see
//!   [`client`]); when no member answers within `--etcd-timeout` (no
//!   quorum, or all down), requests fail with [`Error::Unavailable`] and
//!   health says NOT_SERVING until a probe gets through again, with no
//!   restart.

mod client;
mod keys;
mod reads;
mod watch;

use std::{
    collections::HashMap,
    hash::BuildHasher,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::{sync::mpsc, task::JoinSet};
use tokio_stream::wrappers::ReceiverStream;

use self::{
    client::{
        first_range, is_compacted, is_future_revision, mod_revision_is, pb, put_op, range_op,
        range_request, CallError, Members,
    },
    keys::Keys,
};
use super::{
    codec::{decode_at, encode, now_micros},
    Change, ChangeStream, Patch, Record, Replacement, Scan, Selector, Store, StoreHealth,
    StoreObserver, StoredSettings,
};
use crate::{
    domain::{AccountSid, Etag},
    error::Error,
    resource::Resource,
};
use pb::{
    etcdserverpb::{RangeResponse, TxnRequest},
    mvccpb::KeyValue,
};

/// How a settingsd front end reaches its etcd cluster.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Client URLs of the members (`http://host:port`).
    pub endpoints: Vec<String>,
    /// Every key settingsd writes starts with it.
    pub prefix: String,
    /// The most one request to etcd may take, moving between members
    /// included; past it the request fails with [`Error::Unavailable`].
    pub timeout: Duration,
    /// Told about every write, for metrics.
    pub observer: Option<Arc<dyn StoreObserver>>,
    /// The declared kinds to serve besides the built-in resources.
    pub declared: Vec<Resource>,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    pub const DEFAULT_PREFIX: &'static str = "/settingsd/";
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    /// Checks the endpoints and the prefix, for an error that names the
    /// flag before anything starts.
    ///
    /// # Errors
    /// A message naming `--etcd-endpoints` or `--etcd-prefix`.
    pub fn check(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("--etcd-endpoints: no endpoint given".into());
        }
        for endpoint in &self.endpoints {
            client::check_endpoint(endpoint).map_err(|e| format!("--etcd-endpoints: {e}"))?;
        }
        Keys::new(&self.prefix).map(|_| ())
    }

    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            observer: None,
            declared: Vec::new(),
        }
    }
}

/// How many times a Set merges again after another front end's write won
/// the key first, before it gives up with [`Error::Unavailable`].
const MAX_ATTEMPTS: usize = 64;
/// Lock stripes for the per-key turn taking of one front end's writes.
const LOCK_STRIPES: usize = 1024;
/// Keys whose last written state a front end remembers (as the base of its
/// next Set); past it, it forgets them all and reads again.
const KNOWN_KEYS: usize = 20_000;
/// Records per Range page of scans, counts and resets.
const PAGE: i64 = 512;
/// How often a front end checks that etcd answers (health) and recounts
/// the stored records (metrics).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const COUNT_INTERVAL: Duration = Duration::from_secs(10);
/// Writes of one reset or import in flight at once.
const WRITES_IN_FLIGHT: usize = 32;
/// Records a scan reads ahead of its consumer.
const SCAN_BUFFER: usize = 256;

/// The last state a front end wrote or read of a key: the base of its
/// next Set, checked by the transaction's compare.
#[derive(Debug, Clone)]
struct Known {
    /// 0: the key did not exist.
    mod_revision: i64,
    record: Record,
}

/// How many records of each resource are stored (the gauge): recounted
/// at a pinned revision every few seconds (which picks up every front
/// end's writes), and moved by this front end's own writes at once.
#[derive(Debug, Default)]
struct Counts {
    /// `None` until the first count; per resource, in the order of
    /// [`Shared::resources`].
    stored: Option<Vec<i64>>,
    /// While a recount runs: this front end's writes since it began, as
    /// (revision, resource, +1 or -1), to add to what it counts if they
    /// came after the revision it reads at.
    during_recount: Option<Vec<(i64, Resource, i64)>>,
}

/// What the store's tasks and methods share.
struct Shared {
    /// Every resource it serves: the built-in ones, then the declared.
    resources: Vec<Resource>,
    members: Members,
    keys: Keys,
    /// The highest revision etcd has told this front end of.
    durable: AtomicU64,
    /// Why etcd does not answer, while it does not.
    failure: Mutex<Option<Arc<str>>>,
    closed: AtomicBool,
    known: Mutex<HashMap<Vec<u8>, Known>>,
    /// Single-key reads, batched (see [`reads`]).
    reads: reads::Reads,
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::hash::RandomState,
    counts: Mutex<Counts>,
    observer: Option<Arc<dyn StoreObserver>>,
}

/// The etcd backend. See the module docs.
pub struct EtcdStore {
    shared: Arc<Shared>,
    /// The health probe and the record count: stopped by `close`.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The read batcher: reads go on after `close`, until the store drops.
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.shared.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster (within the runtime it is called in) and
    /// starts the health probe and the record count. A cluster that does
    /// not answer yet is not an error: the store starts with health
    /// NOT_SERVING and serves once etcd answers.
    ///
    /// # Errors
    /// [`Error::Storage`] for invalid options (an endpoint that is not an
    /// `http://` URL, an empty prefix; see [`EtcdOptions::check`]).
    pub async fn connect(options: &EtcdOptions) -> Result<Self, Error> {
        options.check().map_err(Error::Storage)?;
        let members = Members::new(&options.endpoints, options.timeout).map_err(Error::Storage)?;
        let mut resources = Resource::ALL.to_vec();
        for kind in &options.declared {
            if !resources.contains(kind) {
                resources.push(*kind);
            }
        }
        let keys = Keys::new(&options.prefix)
            .map_err(Error::Storage)?
            .serving(resources.clone());
        let (reads, batcher) = reads::Reads::new();
        let shared = Arc::new(Shared {
            resources,
            reads,
            members,
            keys,
            durable: AtomicU64::new(0),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            known: Mutex::new(HashMap::new()),
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            hasher: std::hash::RandomState::new(),
            counts: Mutex::new(Counts::default()),
            observer: options.observer.clone(),
        });
        match shared.probe().await {
            Ok(()) => tracing::info!(endpoints = ?options.endpoints, prefix = shared.keys.prefix(),
                "connected to etcd"),
            Err(e) => tracing::warn!(error = %e, endpoints = ?options.endpoints,
                "etcd does not answer yet: health is NOT_SERVING until it does"),
        }
        let tasks = vec![
            tokio::spawn(Arc::clone(&shared).probe_forever()),
            tokio::spawn(Arc::clone(&shared).count_forever()),
        ];
        let reader = tokio::spawn(batcher.run(Arc::clone(&shared)));
        Ok(EtcdStore {
            shared,
            tasks: Mutex::new(tasks),
            reader,
        })
    }
}

impl EtcdStore {
    /// Stops the probe and the count.
    fn stop_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.stop_tasks();
        self.reader.abort();
    }
}

impl Shared {
    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        Ok(())
    }

    /// Notes the revision an etcd answer carried.
    fn saw(&self, header: Option<&pb::etcdserverpb::ResponseHeader>) -> u64 {
        let revision = header.map_or(0, |h| u64::try_from(h.revision).unwrap_or(0));
        self.durable.fetch_max(revision, Ordering::AcqRel);
        revision
    }

    /// Notes what a failed call says about etcd: unavailable means health
    /// goes NOT_SERVING now, not at the next probe.
    fn note(&self, error: &Error) {
        if let Error::Unavailable(detail) = error {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if failure.is_none() {
                tracing::warn!(%detail, "etcd unavailable: health is NOT_SERVING");
            }
            *failure = Some(detail.as_str().into());
        }
    }

    /// One linearizable read of the prefix: does the cluster answer, with
    /// a quorum?
    async fn probe(&self) -> Result<(), Error> {
        // One key (the prefix itself, which settingsd never writes): a
        // linearizable read that costs etcd the same at any data size (a
        // Range over the prefix would walk every key in 3.4).
        let request = range_request(self.keys.prefix().as_bytes().to_vec(), Vec::new());
        let answered = match self.members.range(request).await {
            Ok(response) => {
                self.saw(response.header.as_ref());
                // Reads work; writes also need no alarm (a member out of
                // space refuses every write while reads go on).
                self.members
                    .alarms()
                    .await
                    .map_err(Error::from)
                    .and_then(|alarms| {
                        if alarms.is_empty() {
                            Ok(())
                        } else {
                            Err(Error::Unavailable(format!(
                                "etcd refuses writes: alarm {} (for NOSPACE: compact, defragment \
                             and disarm etcd)",
                                alarms.join(", ")
                            )))
                        }
                    })
            }
            Err(e) => Err(Error::from(e)),
        };
        match answered {
            Ok(()) => {
                let was = self
                    .failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if was.is_some() {
                    tracing::info!("etcd answers again");
                }
                Ok(())
            }
            Err(e) => {
                self.note(&e);
                Err(e)
            }
        }
    }

    async fn probe_forever(self: Arc<Self>) {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            let _ = self.probe().await;
        }
    }

    async fn count_forever(self: Arc<Self>) {
        loop {
            self.counts().during_recount = Some(Vec::new());
            let mut counted = vec![0_i64; self.resources.len()];
            let mut at = 0; // the first page's revision, then pinned
            let mut complete = true;
            for (slot, resource) in self.resources.iter().enumerate() {
                let (start, end) = self.keys.resource_range(*resource);
                let pages = self.pages(start, end, at, |kv| {
                    if !kv.value.is_empty() {
                        counted[slot] += 1;
                    }
                });
                match pages.await {
                    Ok(revision) => at = revision,
                    Err(_) => complete = false,
                }
            }
            {
                let mut counts = self.counts();
                let during = counts.during_recount.take().unwrap_or_default();
                if complete {
                    for (revision, resource, delta) in during {
                        if let Some(slot) = self.slot(resource).filter(|_| revision > at) {
                            counted[slot] += delta;
                        }
                    }
                    counts.stored = Some(counted);
                }
            }
            tokio::time::sleep(COUNT_INTERVAL).await;
        }
    }

    /// `resource`'s place in [`Shared::resources`].
    fn slot(&self, resource: Resource) -> Option<usize> {
        self.resources.iter().position(|r| *r == resource)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the gauge for a write of this front end.
    fn counted(&self, resource: Resource, revision: i64, delta: i64) {
        let mut counts = self.counts();
        if let (Some(stored), Some(slot)) = (&mut counts.stored, self.slot(resource)) {
            stored[slot] += delta;
        }
        if let Some(during) = &mut counts.during_recount {
            during.push((revision, resource, delta));
        }
    }

    /// One page of `[from, end)` as of revision `at` (0: the current one),
    /// and where the next page starts, if there is one.
    async fn page(
        &self,
        from: Vec<u8>,
        end: &[u8],
        at: i64,
    ) -> Result<(RangeResponse, Option<Vec<u8>>), CallError> {
        let request = pb::etcdserverpb::RangeRequest {
            limit: PAGE,
            revision: at,
            ..range_request(from, end.to_vec())
        };
        let page = self.members.range(request).await?;
        self.saw(page.header.as_ref());
        let next = page.kvs.last().filter(|_| page.more).map(|last| {
            let mut next = last.key.clone();
            next.push(0);
            next
        });
        Ok((page, next))
    }

    /// Calls `each` for every key in `[start, end)`, a page at a time, as
    /// of revision `at` (0: as of the first page's); returns the revision
    /// it read at.
    async fn pages(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        mut at: i64,
        mut each: impl FnMut(&KeyValue),
    ) -> Result<i64, Error> {
        let mut from = Some(start);
        while let Some(start) = from {
            let (page, next) = self.page(start, &end, at).await?;
            if at == 0 {
                at = page.header.as_ref().map_or(0, |h| h.revision);
            }
            page.kvs.iter().for_each(&mut each);
            from = next;
        }
        Ok(at)
    }

    fn stripe(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        let hash = self.hasher.hash_one(key);
        &self.stripes[usize::try_from(hash % LOCK_STRIPES as u64).unwrap_or(0)]
    }

    fn known(&self, key: &[u8]) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &[u8], known: Option<Known>) {
        let mut map = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        match known {
            Some(known) => {
                if map.len() >= KNOWN_KEYS && !map.contains_key(key) {
                    map.clear();
                }
                map.insert(key.to_vec(), known);
            }
            None => {
                map.remove(key);
            }
        }
    }

    /// A stored key-value as the account's resource: the default resource
    /// for a reset's tombstone.
    fn decode(resource: Resource, account: &AccountSid, kv: &KeyValue) -> Result<Known, Error> {
        let record = if kv.value.is_empty() {
            Record::default_for(resource, account.clone())
        } else {
            decode_at(
                resource,
                account,
                &kv.value,
                Some(u64::try_from(kv.mod_revision).unwrap_or(0)),
            )?
        };
        Ok(Known {
            mod_revision: kv.mod_revision,
            record,
        })
    }

    /// A key-value of the history as a change.
    fn change(resource: Resource, account: &AccountSid, kv: &KeyValue) -> Result<Change, Error> {
        let mut known = Self::decode(resource, account, kv)?;
        let reset = kv.value.is_empty();
        let time = known.record.update_time();
        known
            .record
            .stamp(u64::try_from(kv.mod_revision).unwrap_or(0), time);
        Ok(Change {
            resource,
            record: known.record,
            reset,
        })
    }

    /// Reads an account's resource (linearizably).
    async fn read(&self, resource: Resource, account: &AccountSid) -> Result<Known, Error> {
        let key = self.keys.key(resource, account);
        let (kv, revision) = self
            .reads
            .read(key.clone())
            .await
            .inspect_err(|e| self.note(e))?;
        self.durable.fetch_max(revision, Ordering::AcqRel);
        let known = match kv {
            None => Known {
                mod_revision: 0,
                record: Record::default_for(resource, account.clone()),
            },
            Some(kv) => Self::decode(resource, account, &kv)?,
        };
        self.remember(&key, Some(known.clone()));
        Ok(known)
    }

    /// Puts `value` at `key` if its mod revision is still `base`; otherwise
    /// answers what the key holds now. `Ok(Ok(revision))`: written.
    async fn put_if(
        &self,
        key: &[u8],
        base: i64,
        value: Vec<u8>,
    ) -> Result<Result<i64, Option<KeyValue>>, Error> {
        let request = TxnRequest {
            compare: vec![mod_revision_is(key, base)],
            success: vec![put_op(key, value.clone())],
            failure: vec![range_op(key)],
        };
        let started = Instant::now();
        let (response, resent) = match self.members.txn_counted(request).await {
            Ok(answer) => answer,
            Err(e) => {
                let e = Error::from(e);
                self.note(&e);
                self.remember(key, None);
                if let Some(observer) = &self.observer {
                    observer.commit_failed();
                }
                return Err(e);
            }
        };
        let revision = i64::try_from(self.saw(response.header.as_ref())).unwrap_or(i64::MAX);
        if response.succeeded {
            if let Some(observer) = &self.observer {
                observer.committed(started.elapsed());
                observer.published(1);
            }
            return Ok(Ok(revision));
        }
        let now = first_range(&response).and_then(|r| r.kvs.first()).cloned();
        match now {
            // Our own put, from an attempt whose answer was lost (the same
            // bytes, update time included): it was written.
            Some(kv) if kv.value == value && kv.mod_revision > base => Ok(Ok(kv.mod_revision)),
            // Sent more than once: an earlier attempt may have been written
            // and then overwritten by someone else. Merging again would
            // apply this write twice, over a write that already saw it.
            Some(kv) if resent && kv.mod_revision > base => {
                match self.find_own(key, base, kv.mod_revision, &value).await? {
                    Some(revision) => Ok(Ok(revision)),
                    None => Ok(Err(Some(kv))),
                }
            }
            now => Ok(Err(now)),
        }
    }

    /// The revision at which `value` was put at `key` after `base` and
    /// before `now`, if it was: walks the key's versions back from `now`.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if that history is compacted (whether the
    /// write was applied cannot be told), as a Range.
    async fn find_own(
        &self,
        key: &[u8],
        base: i64,
        now: i64,
        value: &[u8],
    ) -> Result<Option<i64>, Error> {
        let mut at = now - 1;
        while at > base {
            let request = pb::etcdserverpb::RangeRequest {
                revision: at,
                ..range_request(key.to_vec(), Vec::new())
            };
            let response = match self.members.range(request).await {
                Ok(response) => response,
                Err(CallError::Status(_, status)) if is_compacted(&status) => {
                    return Err(Error::Unavailable(
                        "a write sent twice may have been applied, and etcd compacted the \
                         history that would tell"
                            .into(),
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            let Some(old) = response.kvs.into_iter().next() else {
                return Ok(None);
            };
            if old.mod_revision <= base {
                return Ok(None);
            }
            if old.value == value {
                return Ok(Some(old.mod_revision));
            }
            at = old.mod_revision - 1;
        }
        Ok(None)
    }

    /// The read-merge-write of a Set. See the module docs.
    async fn set(
        &self,
        resource: Resource,
        account: &AccountSid,
        patch: Patch,
        expected: Option<Etag>,
    ) -> Result<Record, Error> {
        self.check_open()?;
        let key = self.keys.key(resource, account);
        let _turn = self.stripe(&key).lock().await;
        let mut base = self.known(&key);
        let mut fresh = false;
        for attempt in 0..MAX_ATTEMPTS {
            let known = match base.take() {
                Some(known) => known,
                None => {
                    fresh = true;
                    self.read(resource, account).await?
                }
            };
            if let Some(expected) = expected {
                let current = Etag::of_revision(known.record.revision());
                if current != expected {
                    if !fresh {
                        continue; // what this front end knew may be old: read
                    }
                    return Err(Error::EtagMismatch {
                        resource,
                        account: account.clone(),
                        expected,
                        current,
                    });
                }
            }
            let mut next = known.record.merged(patch.clone())?;
            let time = Some(now_micros());
            next.stamp(0, time);
            match self.put_if(&key, known.mod_revision, encode(&next)).await? {
                Ok(revision) => {
                    if known.record.revision() == 0 {
                        self.counted(resource, revision, 1); // stored anew
                    }
                    next.stamp(u64::try_from(revision).unwrap_or(0), time);
                    self.remember(
                        &key,
                        Some(Known {
                            mod_revision: revision,
                            record: next.clone(),
                        }),
                    );
                    return Ok(next);
                }
                Err(now) => {
                    // Another writer won: merge into what it wrote, at once
                    // the first times; after that, back off (another front
                    // end keeps writing this key) and read afresh after the
                    // pause, since what `now` says is older by then.
                    fresh = true;
                    if attempt < 2 {
                        base = Some(match now {
                            None => Known {
                                mod_revision: 0,
                                record: Record::default_for(resource, account.clone()),
                            },
                            Some(kv) => Self::decode(resource, account, &kv)?,
                        });
                    } else {
                        let pause = fastrand::u64(1..=(2 << attempt.min(5)));
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
            }
        }
        Err(Error::Unavailable(format!(
            "the {resource} of account {account} changed under {MAX_ATTEMPTS} attempts to \
             write it in a row"
        )))
    }

    /// Replaces an account's resource with `next` whatever is stored (a
    /// record that does not decode included), through the same compare as
    /// a Set: an unguarded put sent twice could land late, over a newer
    /// write.
    async fn replace(
        &self,
        resource: Resource,
        key: Vec<u8>,
        mut next: Record,
    ) -> Result<u64, Error> {
        let _turn = self.stripe(&key).lock().await;
        let time = Some(now_micros());
        next.stamp(0, time);
        let value = encode(&next);
        let (mut base, mut stored_before) = match self.known(&key) {
            Some(known) => (known.mod_revision, known.record.revision() != 0),
            None => {
                let (kv, revision) = self.reads.read(key.clone()).await?;
                self.durable.fetch_max(revision, Ordering::AcqRel);
                kv.map_or((0, false), |kv| (kv.mod_revision, !kv.value.is_empty()))
            }
        };
        for _ in 0..MAX_ATTEMPTS {
            match self.put_if(&key, base, value.clone()).await? {
                Ok(revision) => {
                    if !stored_before {
                        self.counted(resource, revision, 1);
                    }
                    next.stamp(u64::try_from(revision).unwrap_or(0), time);
                    self.remember(
                        &key,
                        Some(Known {
                            mod_revision: revision,
                            record: next.clone(),
                        }),
                    );
                    return Ok(next.revision());
                }
                Err(now) => {
                    base = now.as_ref().map_or(0, |kv| kv.mod_revision);
                    stored_before = now.is_some_and(|kv| !kv.value.is_empty());
                }
            }
        }
        Err(Error::Unavailable(format!(
            "the {resource} of {} changed under {MAX_ATTEMPTS} attempts to import it",
            String::from_utf8_lossy(&key)
        )))
    }

    /// Resets one record: puts its tombstone, unless it is reset already.
    /// Returns the tombstone's revision if this reset wrote it.
    async fn reset_one(
        &self,
        resource: Resource,
        account: AccountSid,
        mut seen: KeyValue,
    ) -> Result<Option<u64>, Error> {
        let key = seen.key.clone();
        let _turn = self.stripe(&key).lock().await;
        for _ in 0..MAX_ATTEMPTS {
            if seen.value.is_empty() {
                return Ok(None);
            }
            match self.put_if(&key, seen.mod_revision, Vec::new()).await? {
                Ok(revision) => {
                    self.counted(resource, revision, -1);
                    self.remember(
                        &key,
                        Some(Known {
                            mod_revision: revision,
                            record: Record::default_for(resource, account),
                        }),
                    );
                    return Ok(Some(u64::try_from(revision).unwrap_or(0)));
                }
                Err(None) => return Ok(None), // deleted by hand meanwhile
                Err(Some(now)) => seen = now,
            }
        }
        Err(Error::Unavailable(format!(
            "the {resource} of account {account} changed under {MAX_ATTEMPTS} attempts to reset it"
        )))
    }

    /// A key's past values, newest first, from before `before` (if given),
    /// down to revision `down_to`, at most `limit`.
    async fn history(
        &self,
        resource: Resource,
        account: &AccountSid,
        before: Option<u64>,
        down_to: u64,
        limit: usize,
    ) -> Result<Vec<Change>, Error> {
        let key = self.keys.key(resource, account);
        let mut changes = Vec::new();
        let mut at = match before {
            Some(0 | 1) => return Ok(changes),
            Some(before) => i64::try_from(before - 1).unwrap_or(i64::MAX),
            None => 0,
        };
        while changes.len() < limit {
            let request = pb::etcdserverpb::RangeRequest {
                revision: at,
                ..range_request(key.clone(), Vec::new())
            };
            let response = match self.members.range(request).await {
                Ok(response) => response,
                // Asked about a revision etcd has not reached: as of now.
                Err(CallError::Status(_, status)) if is_future_revision(&status) && at > 0 => {
                    at = 0;
                    continue;
                }
                // The rest of the history is compacted away.
                Err(CallError::Status(_, status)) if is_compacted(&status) => break,
                Err(e) => return Err(e.into()),
            };
            self.saw(response.header.as_ref());
            let Some(kv) = response.kvs.first() else {
                break;
            };
            if u64::try_from(kv.mod_revision).unwrap_or(0) < down_to {
                break;
            }
            changes.push(Self::change(resource, account, kv)?);
            at = kv.mod_revision - 1;
            if at < 1 {
                break;
            }
        }
        Ok(changes)
    }

    /// Whether etcd still has history from `from` on for what `filter`
    /// selects (`false`: `from` is after the current revision).
    ///
    /// # Errors
    /// [`Error::Compacted`] if `from` is compacted away.
    async fn retained(&self, from: u64, filter: &Selector) -> Result<bool, Error> {
        let (start, end) = self.keys.selector_range(filter);
        let request = pb::etcdserverpb::RangeRequest {
            count_only: true,
            revision: i64::try_from(from).unwrap_or(i64::MAX),
            ..range_request(start, end)
        };
        match self.members.range(request).await {
            Ok(response) => {
                self.saw(response.header.as_ref());
                Ok(true)
            }
            Err(CallError::Status(_, status)) if is_compacted(&status) => Err(Error::Compacted {
                requested: from,
                oldest: self.compacted_at(from).await,
            }),
            Err(CallError::Status(_, status)) if is_future_revision(&status) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The revision etcd compacted history up to, found by asking for a
    /// watch from `from` (used only to word a `Compacted` error).
    async fn compacted_at(&self, from: u64) -> u64 {
        watch::compact_revision(self, from).await.unwrap_or(from)
    }
}

/// Runs `writes`, at most [`WRITES_IN_FLIGHT`] at once, passing each
/// result to `each`; returns the first failure (a write task that panicked
/// counts as one).
async fn write_all<T, W>(
    writes: impl IntoIterator<Item = W>,
    mut each: impl FnMut(T),
) -> Option<Error>
where
    T: Send + 'static,
    W: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut failure = None;
    let mut done = |result: Result<Result<T, Error>, tokio::task::JoinError>| match result {
        Ok(Ok(value)) => each(value),
        Ok(Err(e)) => {
            failure.get_or_insert(e);
        }
        Err(e) => {
            failure.get_or_insert(Error::Storage(format!("a write task failed: {e}")));
        }
    };
    for write in writes {
        if running.len() >= WRITES_IN_FLIGHT {
            if let Some(result) = running.join_next().await {
                done(result);
            }
        }
        running.spawn(write);
    }
    while let Some(result) = running.join_next().await {
        done(result);
    }
    failure
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, resource: Resource, account: &AccountSid) -> Result<Record, Error> {
        Ok(self.shared.read(resource, account).await?.record)
    }

    async fn set(
        &self,
        resource: Resource,
        account: &AccountSid,
        patch: Patch,
        expected: Option<Etag>,
    ) -> Result<Record, Error> {
        // The whole Set within --etcd-timeout: its turn on the key's lock
        // included. Concurrent Sets of one key take turns, and without
        // quorum each would otherwise spend a whole timeout in its turn.
        let timeout = self.shared.members.timeout();
        tokio::time::timeout(timeout, self.shared.set(resource, account, patch, expected))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(format!(
                    "the {resource} of account {account} could not be written within {timeout:?}"
                )))
            })
    }

    async fn history(
        &self,
        resource: Resource,
        account: &AccountSid,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Change>, Error> {
        self.shared
            .history(resource, account, before, 0, limit)
            .await
    }

    async fn changes(
        &self,
        from: u64,
        through: u64,
        filter: Selector,
    ) -> Result<Vec<Change>, Error> {
        let shared = &self.shared;
        if !shared.retained(from, &filter).await? {
            return Ok(Vec::new());
        }
        let (start, end) = shared.keys.selector_range(&filter);
        // Every key written since `from` has a mod revision of at least
        // `from` now; walk each one's history back to `from`.
        let mut touched = Vec::new();
        let request = pb::etcdserverpb::RangeRequest {
            keys_only: true,
            min_mod_revision: i64::try_from(from).unwrap_or(i64::MAX),
            ..range_request(start, end)
        };
        let response = shared.members.range(request).await?;
        for kv in &response.kvs {
            if let Some((resource, account)) = shared.keys.parse(&kv.key) {
                if filter.selects(resource, &account) {
                    touched.push((resource, account));
                }
            }
        }
        let mut changes = Vec::new();
        for (resource, account) in touched {
            let before = through.checked_add(1);
            changes.extend(
                shared
                    .history(resource, &account, before, from, usize::MAX)
                    .await?,
            );
        }
        changes.sort_by_key(|c| c.record.revision());
        Ok(changes)
    }

    async fn revision(
        &self,
        resource: Resource,
        account: &AccountSid,
        revision: u64,
    ) -> Result<Record, Error> {
        let shared = &self.shared;
        let not_found = || Error::RevisionNotFound {
            resource,
            account: account.clone(),
            revision,
        };
        let request = pb::etcdserverpb::RangeRequest {
            revision: i64::try_from(revision).map_err(|_| not_found())?,
            ..range_request(shared.keys.key(resource, account), Vec::new())
        };
        let response = match shared.members.range(request).await {
            Ok(response) => response,
            Err(CallError::Status(_, status))
                if is_compacted(&status) || is_future_revision(&status) =>
            {
                return Err(not_found())
            }
            Err(e) => return Err(e.into()),
        };
        match response.kvs.first() {
            Some(kv) if u64::try_from(kv.mod_revision).ok() == Some(revision) => {
                Ok(Shared::change(resource, account, kv)?.record)
            }
            _ => Err(not_found()),
        }
    }

    fn durable_revision(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
    }

    async fn watch(&self, from: u64, filter: Selector) -> Result<ChangeStream, Error> {
        // Compaction is found out now, as the sled store does, not as the
        // stream's first item (a compaction between this check and the
        // watch's start still ends the stream with `Compacted`).
        self.shared.retained(from.max(1), &filter).await?;
        Ok(watch::start(Arc::clone(&self.shared), from, filter))
    }

    async fn replace_many(&self, replacements: Vec<Replacement>) -> Result<usize, Error> {
        self.shared.check_open()?;
        let total = replacements.len();
        // Validate every one before writing any; of several for one key,
        // the last counts (writes to different keys have no order to keep).
        let mut last = HashMap::new();
        for r in replacements {
            let next = Record::default_for(r.resource, r.account.clone()).merged(r.patch)?;
            last.insert(
                self.shared.keys.key(r.resource, &r.account),
                (r.resource, next),
            );
        }
        let writes = last.into_iter().map(|(key, (resource, next))| {
            let shared = Arc::clone(&self.shared);
            async move { shared.replace(resource, key, next).await }
        });
        match write_all(writes, |_| {}).await {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }

    async fn reset(&self, selector: Selector) -> Result<(u64, u64), Error> {
        let shared = &self.shared;
        shared.check_open()?;
        // A page of records at a time: a reset of everything holds one page.
        let (start, end) = shared.keys.selector_range(&selector);
        let (mut count, mut last, mut failure) = (0, 0, None);
        let mut from = Some(start);
        while let Some(start) = from {
            let (page, next) = shared.page(start, &end, 0).await?;
            let selected = page
                .kvs
                .iter()
                .filter(|kv| !kv.value.is_empty())
                .filter_map(|kv| {
                    let (resource, account) = shared.keys.parse(&kv.key)?;
                    selector.selects(resource, &account).then(|| {
                        let (shared, kv) = (Arc::clone(shared), kv.clone());
                        async move { shared.reset_one(resource, account, kv).await }
                    })
                });
            let writes: Vec<_> = selected.collect();
            let failed = write_all(writes, |reset: Option<u64>| {
                if let Some(revision) = reset {
                    count += 1;
                    last = revision.max(last);
                }
            })
            .await;
            if let Some(e) = failed {
                failure = Some(e);
                break;
            }
            from = next;
        }
        tracing::info!(deleted = count, revision = last, "settings reset");
        match failure {
            Some(e) => Err(e),
            None => Ok((count, last)),
        }
    }

    async fn schema(&self, kind: Resource) -> Result<Option<Vec<u8>>, Error> {
        let key = self.shared.keys.schema_key(kind);
        let (kv, _) = self.shared.reads.read(key).await?;
        Ok(kv.map(|kv| kv.value))
    }

    async fn put_schema(
        &self,
        kind: Resource,
        checked: Option<Vec<u8>>,
        schema: Vec<u8>,
    ) -> Result<(), Error> {
        let key = self.shared.keys.schema_key(kind);
        let (seen, _) = self.shared.reads.read(key.clone()).await?;
        // Put only over the schema that was checked, at the revision it was
        // read at: another front end's record in between fails the compare.
        if seen.as_ref().map(|kv| kv.value.as_slice()) != checked.as_deref() {
            return Err(super::schema_moved(kind));
        }
        let base = seen.as_ref().map_or(0, |kv| kv.mod_revision);
        match self.shared.put_if(&key, base, schema).await? {
            Ok(_) => Ok(()),
            Err(_) => Err(super::schema_moved(kind)),
        }
    }

    fn resources(&self) -> &[Resource] {
        &self.shared.resources
    }

    fn stored_count(&self, resource: Resource) -> Option<u64> {
        self.shared
            .counts()
            .stored
            .as_ref()
            .zip(self.shared.slot(resource))
            .map(|(stored, slot)| u64::try_from(stored[slot]).unwrap_or(0))
    }

    fn scan(&self, resources: &[Resource]) -> Scan {
        let (tx, rx) = mpsc::channel(SCAN_BUFFER);
        let shared = Arc::clone(&self.shared);
        let resources = resources.to_vec();
        tokio::spawn(async move {
            for resource in resources {
                let (start, end) = shared.keys.resource_range(resource);
                let mut from = Some(start);
                while let Some(start) = from {
                    // The page tells the store the revision it read at: a
                    // watch snapshot that follows the scan must know (see
                    // `deleted_since` in grpc::watch).
                    let (page, next) = match shared.page(start, &end, 0).await {
                        Ok(page) => page,
                        Err(e) => {
                            let _ = tx
                                .send(Err(Error::ScanFailed(Error::from(e).to_string())))
                                .await;
                            return;
                        }
                    };
                    for kv in &page.kvs {
                        let Some((_, account)) = shared.keys.parse(&kv.key) else {
                            continue;
                        };
                        if kv.value.is_empty() {
                            continue; // reset
                        }
                        let record =
                            Shared::decode(resource, &account, kv).map(|known| StoredSettings {
                                resource,
                                record: known.record,
                            });
                        if tx.send(record).await.is_err() {
                            return; // the consumer went away
                        }
                    }
                    from = next;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    fn health(&self) -> StoreHealth {
        StoreHealth {
            write_failure: self
                .shared
                .failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            commit_running_for: None,
        }
    }

    async fn recover(&self) -> Result<(), Error> {
        self.shared.probe().await
    }

    async fn close(&self) -> Result<(), Error> {
        self.shared.closed.store(true, Ordering::Release);
        self.stop_tasks();
        Ok(())
    }
}
