//! The request log: the last N settings requests the server answered, kept
//! in memory for `AdminService/ListRecentRequests`, so that a developer
//! can see what their code under test actually sent.
//!
//! Each transport records its own requests where it measures them (the
//! gRPC services around each call, the HTTP listener around each bridge
//! request); the account a request acted for is only known deep inside the
//! call, where the core authorizes it, so the core notes it in a task-local
//! slot that the recording transport opened ([`RequestLog::track`]).
//!
//! Secrets never enter it: no headers are kept (so no `Authorization`), and
//! of an HTTP form only the parameters the bridge knows keep their values,
//! minus any user information in a URL (the bridge decides which, see
//! [`crate::bridge::recorded_parameters`]).

use std::{
    borrow::Cow,
    collections::VecDeque,
    future::Future,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::{Duration, SystemTime},
};

use crate::domain::AccountSid;

/// How many requests the log keeps unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 1000;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// When it arrived.
    pub time: SystemTime,
    /// `grpc` or `http`.
    pub transport: &'static str,
    /// The gRPC method as its handler is named (`get_recording_settings`,
    /// as the metrics label it: the contract's spelling is made when the
    /// log is read, off the request path), or the HTTP method and route.
    pub method: Cow<'static, str>,
    /// The account it acted for, if it got that far.
    pub account: Option<AccountSid>,
    /// The gRPC code name, or the HTTP status code.
    pub status: Cow<'static, str>,
    pub latency: Duration,
    /// HTTP form parameters, in order (see the module docs).
    pub parameters: Vec<(String, String)>,
}

/// The last `capacity` requests. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct RequestLog {
    capacity: usize,
    entries: Mutex<VecDeque<RecordedRequest>>,
}

tokio::task_local! {
    /// The account the request being handled on this task acts for.
    static ACTING_FOR: Arc<OnceLock<AccountSid>>;
}

impl RequestLog {
    /// A log keeping the last `capacity` requests (0 keeps none).
    pub fn new(capacity: usize) -> RequestLog {
        RequestLog {
            capacity,
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY))),
        }
    }

    /// Runs `handler` with a slot for [`note_account`], and returns its
    /// output with the account noted, if any.
    pub async fn track<T>(handler: impl Future<Output = T>) -> (T, Option<AccountSid>) {
        let slot = Arc::new(OnceLock::new());
        let output = ACTING_FOR.scope(Arc::clone(&slot), handler).await;
        (output, slot.get().cloned())
    }

    /// Whether it keeps anything (so that a caller can skip building an
    /// entry).
    pub fn is_on(&self) -> bool {
        self.capacity > 0
    }

    /// Keeps `request`, dropping the oldest past the capacity.
    pub fn record(&self, request: RecordedRequest) {
        if self.capacity == 0 {
            return;
        }
        let evicted = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let evicted = (entries.len() >= self.capacity)
                .then(|| entries.pop_front())
                .flatten();
            entries.push_back(request);
            evicted
        };
        // Freed after the lock is let go.
        drop(evicted);
    }

    /// The kept requests that acted for `account` (all, if `None`), newest
    /// first, at most `limit` (0: no limit).
    pub fn recent(&self, account: Option<&AccountSid>, limit: usize) -> Vec<RecordedRequest> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .rev()
            .filter(|r| account.is_none_or(|a| r.account.as_ref() == Some(a)))
            .take(limit)
            .cloned()
            .collect()
    }
}

/// Notes the account the current request acts for (a no-op outside
/// [`RequestLog::track`], or after the first note).
pub fn note_account(account: &AccountSid) {
    let _ = ACTING_FOR.try_with(|slot| slot.set(account.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, account: Option<&AccountSid>) -> RecordedRequest {
        RecordedRequest {
            time: SystemTime::now(),
            transport: "grpc",
            method: Cow::Owned(method.to_owned()),
            account: account.cloned(),
            status: Cow::Borrowed("OK"),
            latency: Duration::from_millis(1),
            parameters: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_up_to_capacity_newest_first_filtered_by_account() {
        let a = AccountSid::parse(&format!("AC{:032x}", 1)).unwrap();
        let b = AccountSid::parse(&format!("AC{:032x}", 2)).unwrap();
        let log = RequestLog::new(3);
        for (i, account) in [&a, &b, &a, &b].into_iter().enumerate() {
            log.record(request(&i.to_string(), Some(account)));
        }
        let methods = |v: Vec<RecordedRequest>| v.into_iter().map(|r| r.method).collect::<Vec<_>>();
        assert_eq!(methods(log.recent(None, 0)), ["3", "2", "1"]);
        assert_eq!(methods(log.recent(Some(&a), 0)), ["2"]);
        assert_eq!(methods(log.recent(Some(&b), 1)), ["3"]);
        assert!(RequestLog::new(0).recent(None, 0).is_empty());
    }

    #[tokio::test]
    async fn track_returns_the_account_noted_inside_and_only_the_first() {
        let a = AccountSid::parse(&format!("AC{:032x}", 1)).unwrap();
        let b = AccountSid::parse(&format!("AC{:032x}", 2)).unwrap();
        let ((), noted) = RequestLog::track(async {
            note_account(&a);
            note_account(&b);
        })
        .await;
        assert_eq!(noted, Some(a.clone()));
        let ((), none) = RequestLog::track(async {}).await;
        assert_eq!(none, None);
        note_account(&a); // outside any request: nothing to note, no panic
    }
}
