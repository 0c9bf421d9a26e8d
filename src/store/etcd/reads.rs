//! Reads of single keys, batched: the reads that arrive while earlier ones
//! are in flight go to etcd together, as one read-only transaction of
//! Ranges, instead of one Range each. etcd serves a linearizable read by
//! asking the leader for its commit index (a round of heartbeats); a batch
//! pays for that once, which is most of what a read costs etcd.
//!
//! Linearizability holds: a read joins a batch only after it was asked for,
//! and the batch's transaction starts after that, so it sees every write
//! acknowledged before the read began.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    client::{pb, range_op, Members},
    Shared,
};
use crate::error::Error;
use pb::{
    etcdserverpb::{response_op, TxnRequest},
    mvccpb::KeyValue,
};

/// Most operations etcd takes in one transaction (its `--max-txn-ops`
/// default).
const MAX_BATCH: usize = 128;
/// Batches in flight at once.
const BATCHES_IN_FLIGHT: usize = 4;
/// Reads waiting for a batch; past it, readers wait to be queued.
const QUEUE: usize = 4096;

/// What a read answers: the key's value (if stored) and the revision the
/// cluster was at.
pub(super) type Answer = Result<(Option<KeyValue>, u64), Error>;

type Request = (Vec<u8>, oneshot::Sender<Answer>);

/// The queue reads wait in for their batch.
#[derive(Debug, Clone)]
pub(super) struct Reads {
    queue: mpsc::Sender<Request>,
}

impl Reads {
    /// The queue, and the loop that batches it (to run as a task).
    pub(super) fn new() -> (Reads, Batcher) {
        let (queue, requests) = mpsc::channel(QUEUE);
        (Reads { queue }, Batcher { requests })
    }

    /// Reads `key`, linearizably.
    ///
    /// # Errors
    /// As a Range; [`Error::ShuttingDown`] once the batcher has stopped.
    pub(super) async fn read(&self, key: Vec<u8>) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((key, tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// The batching loop's end of the queue.
pub(super) struct Batcher {
    requests: mpsc::Receiver<Request>,
}

impl Batcher {
    /// Forever: takes every read queued (up to [`MAX_BATCH`]) as one batch,
    /// while at most [`BATCHES_IN_FLIGHT`] batches are at etcd.
    pub(super) async fn run(mut self, shared: Arc<Shared>) {
        let permits = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let Some(first) = self.requests.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                answer(&shared.members, batch).await;
                drop(permit);
            });
        }
    }
}

/// Reads one batch and answers each of its readers.
async fn answer(members: &Members, batch: Vec<Request>) {
    // One Range per distinct key.
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut slot = HashMap::new();
    for (key, _) in &batch {
        slot.entry(key.clone()).or_insert_with(|| {
            keys.push(key.clone());
            keys.len() - 1
        });
    }
    let request = TxnRequest {
        compare: Vec::new(),
        success: keys.iter().map(|key| range_op(key)).collect(),
        failure: Vec::new(),
    };
    match members.txn(request).await {
        Ok(response) => {
            let revision = response
                .header
                .as_ref()
                .map_or(0, |h| u64::try_from(h.revision).unwrap_or(0));
            for (key, reader) in batch {
                let range = response
                    .responses
                    .get(slot[&key])
                    .and_then(|r| match &r.response {
                        Some(response_op::Response::ResponseRange(range)) => Some(range),
                        _ => None,
                    });
                let answer = match range {
                    Some(range) => Ok((range.kvs.first().cloned(), revision)),
                    None => Err(Error::Storage(
                        "etcd answered a read transaction without its Range".into(),
                    )),
                };
                let _ = reader.send(answer);
            }
        }
        Err(e) => {
            // Every reader gets the error (the domain error is not Clone).
            let error = Error::from(e);
            for (_, reader) in batch {
                let _ = reader.send(Err(match &error {
                    Error::Unavailable(detail) => Error::Unavailable(detail.clone()),
                    Error::Storage(detail) => Error::Storage(detail.clone()),
                    other => Error::Storage(other.to_string()),
                }));
            }
        }
    }
}
