//! Watches on etcd: each `Store::watch` is one etcd watch of the selector's
//! key range from the same revision, so etcd's guarantees carry over
//! (ordered, unique, atomic per revision, resumable, compaction reported).
//! When the member serving it goes away, the watch is opened again on
//! another member from the revision after the last one it yielded, so the
//! consumer sees no gap and no repeat.
//!
//! Progress is not etcd's: etcd 3.4.23 (Debian's) can answer a progress
//! request for a watcher still replaying history with the current revision,
//! before the replayed events (fixed in 3.4.24), which would let a consumer
//! skip them. Instead, every few seconds the watch asks etcd (one Range of
//! at most one key, keys only, with `min_mod_revision`; a count-only Range
//! ignores `min_mod_revision` in 3.4) whether any key it watches changed at
//! or after the next revision it would yield; if none did as of revision P,
//! nothing up to P is still to come, and it yields `Progress(P)`. (A key
//! deleted by hand, outside settingsd, is not seen: its event may come
//! after such a progress.) etcd 3.4 walks the watched range for that Range,
//! so on a range of very many keys it costs a scan every few seconds.
//!
//! While no member answers, a watch keeps trying (with backoff) and yields
//! nothing; the consumer sees no error, only no progress.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    client::pb::{
        etcdserverpb::{
            watch_client::WatchClient, watch_request, RangeRequest, WatchCreateRequest,
            WatchRequest, WatchResponse,
        },
        mvccpb::event::EventType,
    },
    client::range_request,
    Shared,
};
use crate::{
    error::Error,
    store::{Change, ChangeStream, Record, Selector, WatchEvent},
};

/// How often a watch checks for progress it can report.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);
/// Events a watch holds for a consumer that is behind; past it, the watch
/// stops reading etcd, which then holds the rest (etcd catches a slow
/// watcher up from its own store).
const BUFFER: usize = 256;
/// The longest pause before opening a watch again on another member.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

type Sender = mpsc::Sender<Result<WatchEvent, Error>>;

/// Starts the watch in a task of the current runtime; it ends when the
/// consumer drops the stream.
pub(super) fn start(shared: Arc<Shared>, from: u64, filter: Selector) -> ChangeStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(shared, from.max(1), filter, tx));
    Box::pin(ReceiverStream::new(rx))
}

/// What one etcd watch stream ended with.
enum Ended {
    /// The consumer went away, or the watch failed for good (told it).
    Done,
    /// The member went away: open the watch again elsewhere.
    Lost,
}

async fn run(shared: Arc<Shared>, mut next: u64, filter: Selector, tx: Sender) {
    let (mut member, mut channel) = shared.members.preferred();
    let mut last_progress = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        let (requests, request_rx) = mpsc::channel(4);
        let (start, end) = shared.keys.selector_range(&filter);
        let _ = requests.send(create(start, end, next)).await;
        let mut client = WatchClient::new(channel.clone());
        // A member cut off from the quorum would keep the stream open and
        // send nothing; with "hasleader" it cancels the watch, which then
        // moves to another member.
        let mut request = tonic::Request::new(ReceiverStream::new(request_rx));
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let opened = tokio::select! {
            opened = client.watch(request) => opened,
            () = tx.closed() => return,
        };
        let ended = match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut ticker = tokio::time::interval_at(
                    tokio::time::Instant::now() + PROGRESS_EVERY,
                    PROGRESS_EVERY,
                );
                loop {
                    let message = tokio::select! {
                        () = tx.closed() => return,
                        _ = ticker.tick() => {
                            match progress(&shared, &filter, next).await {
                                Some(revision) if revision > last_progress => {
                                    last_progress = revision;
                                    next = next.max(revision + 1);
                                    if tx.send(Ok(WatchEvent::Progress(revision))).await.is_err() {
                                        return;
                                    }
                                }
                                _ => {}
                            }
                            continue;
                        }
                        message = stream.message() => message,
                    };
                    let response = match message {
                        Ok(Some(response)) => response,
                        Ok(None) | Err(_) => break Ended::Lost,
                    };
                    backoff = Duration::from_millis(50);
                    match deliver(&shared, &filter, &tx, response, &mut next).await {
                        Ok(()) => {}
                        Err(ended) => break ended,
                    }
                }
            }
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(),
                    "etcd watch could not open; trying the next member");
                Ended::Lost
            }
        };
        if let Ended::Done = ended {
            return;
        }
        (member, channel) = shared.members.after(member);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Passes one etcd watch response on to the consumer.
async fn deliver(
    shared: &Shared,
    filter: &Selector,
    tx: &Sender,
    response: WatchResponse,
    next: &mut u64,
) -> Result<(), Ended> {
    if response.compact_revision > 0 {
        let oldest = u64::try_from(response.compact_revision).unwrap_or(0);
        let _ = tx
            .send(Err(Error::Compacted {
                requested: *next,
                oldest,
            }))
            .await;
        return Err(Ended::Done);
    }
    if response.canceled {
        let _ = tx
            .send(Err(Error::Storage(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason
            ))))
            .await;
        return Err(Ended::Done);
    }
    shared.saw(response.header.as_ref());
    // A response without events (created, or etcd's own progress, which
    // is not trusted: see the module docs) says nothing to pass on.
    for event in response.events {
        let Some(kv) = event.kv else { continue };
        let revision = u64::try_from(kv.mod_revision).unwrap_or(0);
        if revision < *next {
            continue; // already yielded before the watch moved members
        }
        *next = revision + 1;
        let Some((resource, account)) = shared.keys.parse(&kv.key) else {
            continue;
        };
        if !filter.selects(resource, &account) {
            continue;
        }
        let change = if event.r#type == EventType::Delete as i32 {
            // Deleted by hand (etcdctl): to a reader, the same as a reset.
            let mut record = Record::default_for(resource, account);
            record.stamp(revision, None);
            Change {
                resource,
                record,
                reset: true,
            }
        } else {
            match Shared::change(resource, &account, &kv) {
                Ok(change) => change,
                Err(e) => {
                    tracing::error!(error = %e, revision, "watched record does not decode; skipped");
                    continue;
                }
            }
        };
        if tx
            .send(Ok(WatchEvent::Change(Arc::new(change))))
            .await
            .is_err()
        {
            return Err(Ended::Done);
        }
    }
    Ok(())
}

fn create(key: Vec<u8>, range_end: Vec<u8>, start_revision: u64) -> WatchRequest {
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                start_revision: i64::try_from(start_revision).unwrap_or(i64::MAX),
                ..WatchCreateRequest::default()
            },
        )),
    }
}

/// The revision P as of which no key the watch selects has changed at or
/// after `next` (so everything up to P has been yielded), if that is so.
async fn progress(shared: &Shared, filter: &Selector, next: u64) -> Option<u64> {
    let (start, end) = shared.keys.selector_range(filter);
    let request = RangeRequest {
        keys_only: true,
        limit: 1,
        min_mod_revision: i64::try_from(next).ok()?,
        ..range_request(start, end)
    };
    let response = shared.members.range(request).await.ok()?;
    let revision = shared.saw(response.header.as_ref());
    (response.kvs.is_empty() && revision + 1 >= next).then_some(revision)
}

/// The revision etcd has compacted up to, if `from` is before it: asked of
/// a watch from `from`, whose first answer says so.
pub(super) async fn compact_revision(shared: &Shared, from: u64) -> Option<u64> {
    let (start, end) = shared.keys.selector_range(&Selector::default());
    let (_, channel) = shared.members.preferred();
    let request = tokio_stream::once(create(start, end, from));
    let ask = async {
        let mut stream = WatchClient::new(channel)
            .watch(request)
            .await
            .ok()?
            .into_inner();
        // etcd answers "created" first, then cancels a compacted watch.
        loop {
            let response = stream.message().await.ok()??;
            if response.compact_revision > 0 {
                return u64::try_from(response.compact_revision).ok();
            }
            if response.canceled || !response.events.is_empty() {
                return None;
            }
        }
    };
    tokio::time::timeout(shared.members.timeout(), ask)
        .await
        .ok()
        .flatten()
}
