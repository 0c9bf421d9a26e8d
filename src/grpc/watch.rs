//! Watch, for every resource: the store's change stream, narrowed to one
//! resource and one account (or every account), after an optional snapshot
//! of the current state.
//!
//! The guarantees come from the store's stream (ordered by revision, only
//! durable changes, resumable from any retained revision, caught up from
//! disk when a watcher falls behind); this layer only filters, so it keeps
//! them, and adds the snapshot of `start_revision` 0.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;

use super::{convert::to_message, SettingsApi};
use crate::{
    auth::Caller,
    contract::{SettingsChangeMessage, WatchSettingsMessage},
    domain::AccountSid,
    error::Error,
    resource::Resource,
    store::{ChangeStream, Record, Selector, WatchEvent},
};

/// `account_sid` that watches every account (AIP-159's wildcard).
pub const ALL_ACCOUNTS: &str = "-";

/// Messages waiting for a slow client before the watch pauses (and the
/// store's stream behind it catches up from disk later).
const WATCH_BUFFER: usize = 64;

/// A watch stream's messages, as the services send them.
pub type WatchMessages<M = SettingsChangeMessage> = mpsc::Receiver<Result<M, Error>>;

/// How a watch renders what it sends: the typed services and the generic
/// one answer in different messages, over the same stream of records.
pub(crate) trait WatchRender: Send + Sync + 'static {
    type Message: Send + 'static;
    /// A change to `record` (for a reset, the default record that reads
    /// answer after it, revision 0), at `revision`.
    ///
    /// # Errors
    /// A record that cannot be rendered (its kind's message does not
    /// decode, say): the stream ends with it.
    fn change(&self, record: Record, revision: u64, reset: bool) -> Result<Self::Message, Error>;
    /// Every change up to `revision` has been sent.
    fn progress(&self, revision: u64) -> Self::Message;
}

/// The typed services' rendering: a built-in resource's message with its
/// `url`.
pub(crate) struct TypedRender {
    pub url: String,
}

impl WatchRender for TypedRender {
    type Message = SettingsChangeMessage;

    fn change(&self, record: Record, revision: u64, reset: bool) -> Result<Self::Message, Error> {
        Ok(SettingsChangeMessage {
            revision,
            settings: Some(to_message(record.into_twilio()?, self.url.clone())),
            progress: false,
            reset,
        })
    }

    fn progress(&self, revision: u64) -> Self::Message {
        SettingsChangeMessage {
            revision,
            progress: true,
            ..SettingsChangeMessage::default()
        }
    }
}

/// The client went away: stop quietly.
struct Gone;

impl SettingsApi {
    /// The states as of `durable` of the accounts that resets since have
    /// deleted, leaving out those in `sent`.
    async fn deleted_since(
        &self,
        resource: Resource,
        filter: &Selector,
        durable: u64,
        sent: &HashSet<AccountSid>,
    ) -> Result<Vec<Record>, Error> {
        let now = self.store.durable_revision();
        let mut states = Vec::new();
        if now <= durable {
            return Ok(states);
        }
        let mut seen = HashSet::new();
        for reset in self.store.changes(durable + 1, now, filter.clone()).await? {
            let account = reset.record.account_sid().clone();
            if !reset.reset || sent.contains(&account) || !seen.insert(account.clone()) {
                continue;
            }
            let then = self
                .store
                .history(resource, &account, Some(durable + 1), 1)
                .await?;
            if let Some(then) = then.into_iter().next().filter(|c| !c.reset) {
                states.push(then.record);
            }
        }
        Ok(states)
    }
}

/// How many watches are open, in all and per account, against their
/// limits. Shared by every service of a server.
#[derive(Debug)]
pub struct WatchSlots {
    max: usize,
    per_account: usize,
    open: Mutex<OpenWatches>,
}

#[derive(Debug, Default)]
struct OpenWatches {
    total: usize,
    /// Watches acting for each account (not those of every account, `-`).
    by_account: HashMap<AccountSid, usize>,
}

/// One open watch, counted until dropped (when its stream ends).
pub struct WatchSlot {
    slots: Arc<WatchSlots>,
    account: Option<AccountSid>,
}

impl WatchSlots {
    pub fn new(max: usize, per_account: usize) -> Arc<WatchSlots> {
        Arc::new(WatchSlots {
            max,
            per_account,
            open: Mutex::default(),
        })
    }

    /// A slot for a watch acting for `account` (`None`: every account).
    ///
    /// # Errors
    /// [`Error::TooManyWatches`] at either limit.
    fn claim(self: &Arc<Self>, account: Option<&AccountSid>) -> Result<WatchSlot, Error> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(account) = account {
            if open.by_account.get(account).copied().unwrap_or(0) >= self.per_account {
                return Err(Error::TooManyWatches {
                    max: self.per_account,
                    account: Some(account.clone()),
                });
            }
        }
        if open.total >= self.max {
            return Err(Error::TooManyWatches {
                max: self.max,
                account: None,
            });
        }
        open.total += 1;
        if let Some(account) = account {
            *open.by_account.entry(account.clone()).or_default() += 1;
        }
        Ok(WatchSlot {
            slots: Arc::clone(self),
            account: account.cloned(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(account) = &self.account {
            if let Some(n) = open.by_account.get_mut(account) {
                *n -= 1;
                if *n == 0 {
                    open.by_account.remove(account);
                }
            }
        }
    }
}

impl SettingsApi {
    /// Starts a watch of `resource` (see the proto's WatchRecordingSettings).
    ///
    /// # Errors
    /// As [`SettingsApi::get`]; [`Error::OperatorOnly`] for `-` from a
    /// tenant; [`Error::Compacted`] for a start revision no longer retained.
    pub async fn watch(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        request: WatchSettingsMessage,
    ) -> Result<WatchMessages, Error> {
        let render = TypedRender {
            url: self.url(resource),
        };
        self.watch_with(resource, metadata, request, render).await
    }

    /// [`SettingsApi::watch`], rendering with `render`.
    ///
    /// # Errors
    /// As [`SettingsApi::watch`].
    pub(crate) async fn watch_with<R: WatchRender>(
        &self,
        resource: Resource,
        metadata: &MetadataMap,
        request: WatchSettingsMessage,
        render: R,
    ) -> Result<WatchMessages<R::Message>, Error> {
        // A slot while the watch starts, not for its life: a watch is a
        // subscription, not a request in progress.
        let _slot = self.start()?;
        // One account, or every account (`-`).
        let account = match request.account_sid.as_str() {
            ALL_ACCOUNTS => match self.caller(metadata)? {
                Caller::Account(caller) => return Err(Error::OperatorOnly { caller }),
                Caller::Anonymous | Caller::Operator(_) => None,
            },
            named => Some(self.authorize(metadata, named)?),
        };
        if let Some(account) = &account {
            tracing::Span::current().record("account", account.as_str());
        }
        let slot = self.watch_slots.claim(account.as_ref())?;
        let filter = Selector {
            resource: Some(resource),
            account,
        };
        let resumed = match request.start_revision {
            0 => None,
            from => Some(self.store.watch(from, filter.clone()).await?),
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let api = self.clone();
        let watching = self.metrics.as_ref().map(crate::metrics::Metrics::watcher);
        tokio::spawn(async move {
            let _watching = watching;
            let _slot = slot;
            // Ends as soon as the client goes, even on an idle stream: its
            // slot and subscription are freed at once.
            let followed = tokio::select! {
                followed = api.follow(resource, filter, resumed, &render, &tx) => followed,
                () = tx.closed() => Ok(Err(Gone)),
            };
            match followed {
                Ok(Ok(())) | Ok(Err(Gone)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        Ok(rx)
    }

    /// Sends the snapshot (if not resuming), then the store's stream, which
    /// yields only what `filter` matches.
    async fn follow<R: WatchRender>(
        &self,
        resource: Resource,
        filter: Selector,
        resumed: Option<ChangeStream>,
        render: &R,
        tx: &mpsc::Sender<Result<R::Message, Error>>,
    ) -> Result<Result<(), Gone>, Error> {
        let metrics = self.metrics.as_ref();
        let send = |message: R::Message| async move {
            tx.send(Ok(message)).await.map_err(|_| Gone)?;
            if let Some(metrics) = metrics {
                metrics.watch_event();
            }
            Ok::<(), Gone>(())
        };
        let change = |record: Record| {
            let revision = record.revision();
            render.change(record, revision, false)
        };
        // A reset's resource is what reads answer after it: the default,
        // revision 0 (so its etag is the one a Get gives); the message's
        // revision is the reset's.
        let reset = |mut record: Record| {
            let revision = record.revision();
            record.stamp(0, None);
            render.change(record, revision, true)
        };
        let progress = |revision| render.progress(revision);
        let mut changes = match resumed {
            Some(changes) => changes,
            None => {
                let durable = self.store.durable_revision();
                let upto = match &filter.account {
                    Some(account) => {
                        let state = self.store.get(resource, account).await?;
                        // Every change of this account up to here is in it.
                        let mut upto = durable.max(state.revision());
                        if state.revision() == 0 {
                            // A default: never written, or reset. A reset's
                            // revision may be past `durable` (written through
                            // another front end of a shared store): the
                            // stream starts after it, not before.
                            let newest = self.store.history(resource, account, None, 1).await?;
                            if let Some(reset) = newest.first().filter(|c| c.reset) {
                                upto = upto.max(reset.record.revision());
                            }
                        }
                        if send(change(state)?).await.is_err() {
                            return Ok(Err(Gone));
                        }
                        upto
                    }
                    None => {
                        // The state as of `durable`: a record written since
                        // is sent as it was then (from the history), and its
                        // newer state comes as a change on the stream from
                        // `durable + 1`, in revision order. (Sending the
                        // newer state here would put it before older changes
                        // of other accounts.) An account created since has no
                        // state then: it comes on the stream only.
                        let mut scan = self.store.scan(&[resource]);
                        let mut sent = HashSet::new();
                        while let Some(record) = scan.next().await {
                            let mut state = record?.record;
                            if state.revision() > durable {
                                let account = state.account_sid().clone();
                                let then = self
                                    .store
                                    .history(resource, &account, Some(durable + 1), 1)
                                    .await?;
                                // Not stored then (created since, or reset
                                // before and set again since): it comes on
                                // the stream only.
                                match then.into_iter().next() {
                                    Some(then) if !then.reset => state = then.record,
                                    _ => continue,
                                }
                            }
                            sent.insert(state.account_sid().clone());
                            if send(change(state)?).await.is_err() {
                                return Ok(Err(Gone));
                            }
                        }
                        // A record a reset deleted while the scan ran was
                        // stored as of `durable` but not there to scan: it
                        // is sent as it was then (its reset follows on the
                        // stream).
                        for state in self
                            .deleted_since(resource, &filter, durable, &sent)
                            .await?
                        {
                            if send(change(state)?).await.is_err() {
                                return Ok(Err(Gone));
                            }
                        }
                        durable
                    }
                };
                if send(progress(upto)).await.is_err() {
                    return Ok(Err(Gone));
                }
                self.store.watch(upto + 1, filter).await?
            }
        };
        while let Some(event) = changes.next().await {
            let message = match event? {
                WatchEvent::Progress(revision) => progress(revision),
                WatchEvent::Change(c) if c.reset => reset(c.record.clone())?,
                WatchEvent::Change(c) => change(c.record.clone())?,
            };
            if send(message).await.is_err() {
                return Ok(Err(Gone));
            }
        }
        Ok(Ok(()))
    }
}
