//! Watch: the snapshot, live changes, resuming, compaction, who may watch
//! every account, and a checker that records several watchers' streams under
//! concurrent writers and verifies etcd's guarantees against the
//! acknowledged writes: ordered, unique, reliable, resumable, and ending in
//! the stored state.

use std::collections::{BTreeMap, HashMap};

use settingsd::{pb::SetRecordingSettingsRequest, store::sled::StoreOptions};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::*;

for_each_kind! {
    #[tokio::test]
    async fn a_watch_from_zero_sends_the_state_then_progress_then_every_later_change() {
        let app = spawn_app().await;
        let first = app.set(set_request(ACCOUNT, "first")).await;

        let mut stream = app.watch(ACCOUNT, 0).await;
        let state = next_change(&mut stream).await;
        let progress = next_change(&mut stream).await;
        let second = app.set(set_request(ACCOUNT, "second")).await;
        app.set(set_request(OTHER_ACCOUNT, "someone else")).await;
        let third = app.set(set_request(ACCOUNT, "third")).await;

        assert_eq!(state.settings.as_ref(), Some(&first));
        assert!(progress.progress && progress.settings.is_none());
        assert!(progress.revision >= first.revision);
        assert_eq!(next_settings(&mut stream).await, second);
        assert_eq!(next_settings(&mut stream).await, third, "other accounts are not sent");
        assert_eq!(third.url, TWILIO_URL);
    }

    #[tokio::test]
    async fn a_watch_of_an_account_that_never_set_anything_starts_with_the_default_resource() {
        let app = spawn_app().await;

        let mut stream = app.watch(OTHER_ACCOUNT, 0).await;
        let state = next_change(&mut stream).await;

        assert_eq!(state.revision, 0);
        assert_eq!(state.settings.unwrap(), app.get(OTHER_ACCOUNT).await);
    }

    #[tokio::test]
    async fn resuming_from_a_revision_replays_every_change_from_it_exactly() {
        let app = spawn_app().await;
        let mut written = Vec::new();
        for i in 0..5 {
            written.push(app.set(set_request(ACCOUNT, &format!("v{i}"))).await);
        }

        let mut stream = app.watch(ACCOUNT, written[2].revision).await;

        for expected in &written[2..] {
            assert_eq!(&next_settings(&mut stream).await, expected);
        }
        let live = app.set(set_request(ACCOUNT, "live")).await;
        assert_eq!(next_settings(&mut stream).await, live);
    }
}

#[tokio::test]
async fn a_watch_of_every_account_sees_every_account_and_only_its_resource() {
    let app = spawn_app().await;
    let stored = app.set(set_request(ACCOUNT, "before the watch")).await;
    let mut stream = app.watch("-", 0).await;

    let snapshot = next_settings(&mut stream).await;
    let progress = next_change(&mut stream).await;
    let composition = app.for_resource(Resource::Composition);
    composition.set(set_request(ACCOUNT, "not recording")).await;
    let recording = composition.for_resource(Resource::Recording);
    let other = recording.set(set_request(OTHER_ACCOUNT, "b")).await;

    assert_eq!(snapshot, stored);
    assert!(progress.progress);
    assert_eq!(next_settings(&mut stream).await, other);
}

#[tokio::test]
async fn a_tenant_may_watch_its_own_account_but_not_every_account() {
    let app = spawn_authenticated_app().await;
    let own = app
        .try_watch(with_auth(
            settingsd::pb::WatchRecordingSettingsRequest::default(),
            ACCOUNT,
            TOKEN,
        ))
        .await;
    let all = app
        .try_watch(with_auth(
            settingsd::pb::WatchRecordingSettingsRequest {
                account_sid: "-".into(),
                start_revision: 0,
            },
            ACCOUNT,
            TOKEN,
        ))
        .await;
    let operator = app
        .try_watch(with_auth(
            settingsd::pb::WatchRecordingSettingsRequest {
                account_sid: "-".into(),
                start_revision: 0,
            },
            OPERATOR,
            OPERATOR_SECRET,
        ))
        .await;

    let mut own = own.expect("own account");
    assert_eq!(next_settings(&mut own).await.account_sid, ACCOUNT);
    assert_eq!(all.err().unwrap().code(), Code::PermissionDenied);
    assert!(operator.is_ok());
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_out_of_range_naming_the_oldest_which_works() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with_store(StoreOptions {
        history_revisions: 3,
        ..StoreOptions::new(dir.path())
    })
    .await;
    let mut written = Vec::new();
    for i in 0..8 {
        written.push(app.set(set_request(ACCOUNT, &format!("v{i}"))).await);
    }

    let status = app
        .try_watch(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: written[0].revision,
        })
        .await
        .err()
        .expect("compacted");

    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let info = status
        .get_details_error_info()
        .expect("an ErrorInfo detail");
    assert_eq!(info.reason, "REVISION_COMPACTED");
    let oldest: u64 = info.metadata["oldest_revision"].parse().unwrap();
    assert!(status.message().contains(&oldest.to_string()), "{status:?}");
    assert!(oldest > written[0].revision && oldest <= written[5].revision);
    let mut resumed = app.watch(ACCOUNT, oldest).await;
    let first = next_settings(&mut resumed).await;
    assert!(first.revision >= oldest);
    let rest: Vec<_> = written
        .iter()
        .filter(|w| w.revision >= first.revision)
        .collect();
    assert_eq!(&first, rest[0]);
    for expected in &rest[1..] {
        assert_eq!(&&next_settings(&mut resumed).await, expected);
    }
}

/// What the checker knows of the writes: every acknowledged state per
/// account, by revision.
type Acked = BTreeMap<u64, SettingsMessage>;

/// Checks one watcher's whole record (its streams, one after another, each
/// resumed from the last revision seen + 1) against the acknowledged
/// writes of the accounts it watched, from `start` on.
fn check_watcher(
    name: &str,
    seen: &[SettingsMessage],
    acked: &Acked,
    start: u64,
    accounts: &[&str],
) {
    // Ordered and unique: strictly increasing revisions across every resume.
    for pair in seen.windows(2) {
        assert!(
            pair[0].revision < pair[1].revision,
            "{name}: revision {} after {}",
            pair[1].revision,
            pair[0].revision
        );
    }
    // Reliable: every acknowledged write in scope from `start` on was seen,
    // exactly as it was acknowledged; and nothing was seen that was not written.
    let expected: Vec<_> = acked
        .range(start..)
        .filter(|(_, s)| accounts.contains(&s.account_sid.as_str()))
        .map(|(_, s)| s)
        .collect();
    let seen_refs: Vec<_> = seen.iter().collect();
    assert_eq!(
        seen_refs.len(),
        expected.len(),
        "{name}: saw {} changes, {} were acknowledged",
        seen.len(),
        expected.len()
    );
    assert_eq!(
        seen_refs, expected,
        "{name}: the changes differ from the acknowledged writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_watchers_see_every_acknowledged_write_in_order_once_and_resume_exactly() {
    const ACCOUNTS: [&str; 3] = [ACCOUNT, OTHER_ACCOUNT, "AC0123456789abcdef0123456789abcdef"];
    const WRITES: usize = 60;
    let app = spawn_app().await;
    let start = app.set(set_request(ACCOUNT, "start")).await.revision + 1;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);

    // Watchers: one per account, one on every account; each disconnects at
    // random points and resumes from its last revision + 1.
    let scopes: Vec<(&str, Vec<&str>)> = ACCOUNTS
        .iter()
        .map(|a| (*a, vec![*a]))
        .chain([("-", ACCOUNTS.to_vec())])
        .collect();
    let watchers: Vec<_> = scopes
        .iter()
        .map(|(scope, accounts)| {
            let settings = app.settings.clone();
            let scope = scope.to_string();
            let expected_writes = WRITES * accounts.len() / ACCOUNTS.len();
            let mut disconnects: Vec<usize> = (0..3)
                .map(|_| rng.usize(1..expected_writes.max(2)))
                .collect();
            disconnects.sort_unstable();
            tokio::spawn(async move {
                let mut seen: Vec<SettingsMessage> = Vec::new();
                let mut next = start;
                loop {
                    let request = tonic::Request::new(WatchSettingsMessage {
                        account_sid: scope.clone(),
                        start_revision: next,
                    });
                    let mut stream = settings.watch(Resource::Recording, request).await.unwrap();
                    loop {
                        let settings = next_settings(&mut stream).await;
                        next = settings.revision + 1;
                        seen.push(settings);
                        if seen.len() >= expected_writes {
                            return seen;
                        }
                        if disconnects.first() == Some(&seen.len()) {
                            disconnects.remove(0);
                            break; // drop the stream: resume from `next`
                        }
                    }
                }
            })
        })
        .collect();

    let writers: Vec<_> = ACCOUNTS
        .iter()
        .map(|account| {
            let settings = app.settings.clone();
            let account = account.to_string();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..WRITES / ACCOUNTS.len() {
                    let request = tonic::Request::new(SetSettingsMessage::from(set_request(
                        &account,
                        &format!("{account} write {i}"),
                    )));
                    acked.push(settings.set(Resource::Recording, request).await.unwrap());
                }
                acked
            })
        })
        .collect();
    let mut acked = Acked::new();
    for writer in writers {
        for state in writer.await.unwrap() {
            acked.insert(state.revision, state);
        }
    }
    for ((scope, accounts), watcher) in scopes.iter().zip(watchers) {
        let seen = watcher.await.unwrap();
        check_watcher(
            &format!("watcher {scope} (seed {seed})"),
            &seen,
            &acked,
            start,
            accounts,
        );
    }
    // The stored state is each account's last acknowledged write.
    let mut last: HashMap<&str, &SettingsMessage> = HashMap::new();
    for state in acked.values() {
        last.insert(
            ACCOUNTS.iter().find(|a| **a == state.account_sid).unwrap(),
            state,
        );
    }
    for (account, state) in last {
        assert_eq!(&app.get(account).await, state);
    }
}

/// Watchers across SIGKILL restarts of the real server: each reconnects
/// from its last revision + 1 to the restarted server; at the end every
/// acknowledged write was seen by every watcher in scope, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_resume_exactly_across_sigkill_restarts() {
    use std::{
        net::SocketAddr,
        sync::{
            atomic::{AtomicU64, Ordering},
            Arc, Mutex,
        },
        time::Duration,
    };
    const CYCLES: usize = 4;
    const ACCOUNTS: [&str; 2] = [ACCOUNT, OTHER_ACCOUNT];
    let dir = tempfile::tempdir().unwrap();
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let (addr_tx, addr_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    // Set once the writing is over: the highest revision a watcher must reach.
    let target = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Acked>> = Arc::default();

    let scopes = [ACCOUNT, "-"];
    let watchers: Vec<_> = scopes
        .iter()
        .map(|scope| {
            let mut addresses = addr_rx.clone();
            let target = Arc::clone(&target);
            let scope = scope.to_string();
            tokio::spawn(async move {
                let mut seen: Vec<SettingsMessage> = Vec::new();
                let mut next = 1;
                let mut connected_to = None;
                loop {
                    let addr = *addresses
                        .wait_for(|a| a.is_some() && *a != connected_to)
                        .await
                        .unwrap();
                    connected_to = addr;
                    let Ok(channel) =
                        tonic::transport::Channel::from_shared(format!("http://{}", addr.unwrap()))
                            .unwrap()
                            .connect()
                            .await
                    else {
                        continue;
                    };
                    let client = SettingsClient::new(channel);
                    let request = tonic::Request::new(WatchSettingsMessage {
                        account_sid: scope.clone(),
                        start_revision: next,
                    });
                    let Ok(mut stream) = client.watch(Resource::Recording, request).await else {
                        continue;
                    };
                    while let Ok(Some(Ok(message))) = tokio::time::timeout(
                        Duration::from_secs(30),
                        tokio_stream::StreamExt::next(&mut stream),
                    )
                    .await
                    {
                        if let Some(settings) = message.settings {
                            next = settings.revision + 1;
                            seen.push(settings);
                        }
                        let done = target.load(Ordering::SeqCst);
                        if done > 0 && message.revision >= done {
                            return seen;
                        }
                    }
                }
            })
        })
        .collect();

    for cycle in 0..CYCLES {
        let mut server = BinaryServer::start(dir.path()).await;
        addr_tx.send_replace(Some(server.grpc_addr));
        let writers: Vec<_> = ACCOUNTS
            .iter()
            .map(|account| {
                let addr = server.grpc_addr;
                let acked = Arc::clone(&acked);
                let account = account.to_string();
                tokio::spawn(async move {
                    let client = SettingsClient::new(channel(addr).await);
                    for i in 0.. {
                        let request = tonic::Request::new(SetSettingsMessage::from(set_request(
                            &account,
                            &format!("cycle {cycle} write {i}"),
                        )));
                        let Ok(state) = client.set(Resource::Recording, request).await else {
                            return; // the server is gone
                        };
                        acked.lock().unwrap().insert(state.revision, state);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.u64(200..600))).await;
        server.signal("KILL");
        server.wait().await;
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let server = BinaryServer::start(dir.path()).await;
    let acked = acked.lock().unwrap().clone();
    // Watchers finish once they reach the newest stored state: writes in
    // flight at a kill may have survived unacknowledged, past the last
    // acknowledged one.
    let client = SettingsClient::new(channel(server.grpc_addr).await);
    let mut newest = *acked.keys().last().unwrap();
    for account in ACCOUNTS {
        let request = tonic::Request::new(GetSettingsMessage {
            account_sid: account.to_string(),
        });
        newest = newest.max(
            client
                .get(Resource::Recording, request)
                .await
                .unwrap()
                .revision,
        );
    }
    target.store(newest, Ordering::SeqCst);
    addr_tx.send_replace(Some(server.grpc_addr));

    for (scope, watcher) in scopes.iter().zip(watchers) {
        let seen = tokio::time::timeout(GUARD, watcher)
            .await
            .expect("the watcher finishes")
            .unwrap();
        let name = format!("watcher {scope} (seed {seed})");
        for pair in seen.windows(2) {
            assert!(
                pair[0].revision < pair[1].revision,
                "{name}: {} after {}",
                pair[1].revision,
                pair[0].revision
            );
        }
        let by_revision: HashMap<u64, &SettingsMessage> =
            seen.iter().map(|s| (s.revision, s)).collect();
        let in_scope = acked
            .values()
            .filter(|s| *scope == "-" || s.account_sid == *scope);
        let mut checked = 0;
        for state in in_scope {
            assert_eq!(
                by_revision.get(&state.revision),
                Some(&state),
                "{name}: acknowledged revision {} missing or different",
                state.revision
            );
            checked += 1;
        }
        assert!(
            checked > CYCLES,
            "{name}: the load was real ({checked} writes)"
        );
        // The stream ends in the stored state.
        let client = SettingsClient::new(channel(server.grpc_addr).await);
        for account in ACCOUNTS.iter().filter(|a| *scope == "-" || **a == *scope) {
            let last_seen = seen
                .iter()
                .rev()
                .find(|s| s.account_sid == *account)
                .unwrap();
            let stored = client
                .get(
                    Resource::Recording,
                    tonic::Request::new(GetSettingsMessage {
                        account_sid: account.to_string(),
                    }),
                )
                .await
                .unwrap();
            assert_eq!(&stored, last_seen, "{name}: {account}");
        }
    }
}

/// The server's resident memory, in KiB.
fn rss_kb(server: &BinaryServer) -> u64 {
    let pid = server.child.id().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `WRITERS` x `each` Sets of ~2.3 KB each (a 2000-character URL);
/// returns the highest revision acknowledged.
async fn write_big_records(client: &SettingsClient, each: usize) -> u64 {
    let long_url = format!("https://b.s3.amazonaws.com/{}", "p".repeat(2000));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            let url = long_url.clone();
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..each {
                    let request = SetRecordingSettingsRequest {
                        aws_s3_url: Some(url.clone()),
                        ..set_request(&format!("AC{w:032x}"), &format!("{i:0>250}"))
                    };
                    let request = tonic::Request::new(SetSettingsMessage::from(request));
                    last = client
                        .set(Resource::Recording, request)
                        .await
                        .unwrap()
                        .revision;
                }
                last
            })
        })
        .collect();
    let mut last = 0;
    for writer in writers {
        last = last.max(writer.await.unwrap());
    }
    last
}

const WRITERS: usize = 8;

/// The same volume of writes twice, the second time with a watcher that
/// reads nothing: if the server buffered the ~22 MB of changes it cannot
/// send, the second run would grow by that much more than the first (whose
/// growth is sled's own); it must not. Then the watcher reads, and gets
/// every change, caught up from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reads_nothing_costs_no_memory_and_later_gets_every_change() {
    const EACH: usize = 1200;
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path()).await;
    let client = SettingsClient::new(channel(server.grpc_addr).await);

    let at_start = rss_kb(&server);
    let first_last = write_big_records(&client, EACH).await;
    let without_watcher = rss_kb(&server).saturating_sub(at_start);
    let request = tonic::Request::new(WatchSettingsMessage {
        account_sid: "-".into(),
        start_revision: first_last + 1,
    });
    let mut slow = client.watch(Resource::Recording, request).await.unwrap();
    let before = rss_kb(&server);
    let last = write_big_records(&client, EACH).await;
    let with_watcher = rss_kb(&server).saturating_sub(before);

    eprintln!(
        "growth: {without_watcher} KiB without a watcher, {with_watcher} KiB with a stalled one"
    );
    assert!(
        with_watcher < without_watcher + 12 * 1024,
        "a stalled watch held memory: the server grew {with_watcher} KiB with it, \
         {without_watcher} KiB for the same writes without it"
    );
    let mut revisions = Vec::new();
    while revisions.last() != Some(&last) {
        revisions.push(next_settings(&mut slow).await.revision);
    }
    assert_eq!(
        revisions.len(),
        WRITERS * EACH,
        "every change, caught up from disk"
    );
    assert!(revisions.windows(2).all(|p| p[0] < p[1]), "in order");
}

/// A store written before the change log existed: its old writes are not
/// in the log, so a watch from before the upgrade is out of range (not a
/// silently empty stream), and one from the oldest revision it names works.
#[tokio::test]
async fn a_store_from_before_the_change_log_says_its_older_revisions_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_on(dir.path()).await;
    let old = app.set(set_request(ACCOUNT, "before the upgrade")).await;
    app.stop().await.unwrap();
    {
        // What an older settingsd left: records, no log.
        let db = sled::open(dir.path()).unwrap();
        db.drop_tree("changes").unwrap();
        db.drop_tree("meta").unwrap();
        db.flush().unwrap();
    }
    wait_until_released(dir.path());

    let app = spawn_app_on(dir.path()).await;
    let status = app
        .try_watch(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: old.revision,
        })
        .await
        .err()
        .expect("out of range");
    let oldest: u64 = status.get_details_error_info().unwrap().metadata["oldest_revision"]
        .parse()
        .unwrap();
    let mut watch = app.watch(ACCOUNT, oldest).await;
    let new = app.set(set_request(ACCOUNT, "after the upgrade")).await;

    assert_eq!(status.code(), Code::OutOfRange);
    assert!(oldest > old.revision);
    assert_eq!(app.get(ACCOUNT).await, new);
    assert_eq!(next_settings(&mut watch).await, new);
}

/// A watch of every account from 0 while writers run: the snapshot holds
/// only states up to its progress revision, and everything after comes in
/// revision order, so a client can resume from the last revision it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_every_account_under_writes_is_followed_by_changes_in_order() {
    let app = spawn_app().await;
    for i in 0..20 {
        app.set(set_request(&format!("AC{i:032x}"), "initial"))
            .await;
    }
    let settings = app.settings.clone();
    let writer = tokio::spawn(async move {
        let mut last = 0;
        for round in 0..10 {
            for i in 0..20 {
                let request = tonic::Request::new(SetSettingsMessage::from(set_request(
                    &format!("AC{i:032x}"),
                    &format!("round {round}"),
                )));
                last = settings
                    .set(Resource::Recording, request)
                    .await
                    .unwrap()
                    .revision;
            }
        }
        last
    });

    let mut stream = app.watch("-", 0).await;
    let mut snapshot = Vec::new();
    let progress = loop {
        let message = next_change(&mut stream).await;
        match message.settings {
            Some(state) => snapshot.push(state),
            None => break message.revision,
        }
    };
    let last = writer.await.unwrap();
    let mut after = Vec::new();
    while after.last() != Some(&last) {
        after.push(next_settings(&mut stream).await.revision);
    }

    assert_eq!(snapshot.len(), 20, "every stored account once");
    assert!(
        snapshot.iter().all(|s| s.revision <= progress),
        "the snapshot is the state as of its progress revision"
    );
    assert!(after.first().is_some_and(|r| *r > progress));
    assert!(
        after.windows(2).all(|p| p[0] < p[1]),
        "changes in order after it"
    );
}

/// One account cannot open more watches than its limit, others still can,
/// and a watch its client drops frees its slot at once (the stream is idle:
/// nothing but the client going away ends it).
#[tokio::test]
async fn watches_past_the_per_account_limit_are_refused_and_a_dropped_watch_frees_its_slot() {
    let app = spawn_app_with_limits(settingsd::server::Limits {
        max_watches: 5,
        max_watches_per_account: 2,
        ..settingsd::server::Limits::default()
    })
    .await;
    let first = app.watch(ACCOUNT, 0).await;
    let _second = app.watch(ACCOUNT, 0).await;

    let third = app
        .try_watch(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: 0,
        })
        .await
        .map(|_| ())
        .unwrap_err();
    let _other = app.watch(OTHER_ACCOUNT, 0).await;
    let _all = app.watch("-", 0).await;
    let _other_again = app.watch(OTHER_ACCOUNT, 0).await;
    let server_full = app
        .try_watch(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: "-".into(),
            start_revision: 0,
        })
        .await
        .map(|_| ())
        .unwrap_err();
    drop(first);
    let freed = tokio::time::timeout(GUARD, async {
        loop {
            match app
                .try_watch(settingsd::pb::WatchRecordingSettingsRequest {
                    account_sid: ACCOUNT.into(),
                    start_revision: 0,
                })
                .await
            {
                Ok(stream) => return stream,
                Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the dropped watch's slot is freed");

    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(third.message().contains(ACCOUNT), "{third:?}");
    assert!(third.message().contains('2'), "{third:?}");
    assert_eq!(server_full.code(), Code::ResourceExhausted);
    assert!(server_full.message().contains('5'), "{server_full:?}");
    drop(freed);
}
