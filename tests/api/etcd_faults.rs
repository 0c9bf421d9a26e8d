//! Faults under load on the etcd backend: real settingsd front ends on a
//! real 3-member etcd cluster, writers running all the time, and one thing
//! killed with SIGKILL while they run (an etcd member, the leader, two
//! members, a front end). What clients see is recorded per request; what
//! is stored afterwards is checked against every acknowledged Set.
//!
//! "Acknowledged" means the Set answered OK with a revision. A Set that
//! failed (or whose front end died under it) has an unknown outcome: it may
//! or may not be stored, and the checks allow either, but nothing else.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use settingsd::pb::{ListRecordingSettingsRevisionsRequest, RecordingSettings};
use tokio::sync::watch;
use tonic::Code;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    etcd::{front_end, front_end_with},
    etcd_cluster::{etcd_available, EtcdCluster},
    faults::health_at_becomes,
    helpers::*,
    http_bridge::{assert_twilio_error, post},
};

/// Accounts the writers spread over.
const ACCOUNTS: usize = 8;
/// Writer tasks per test.
const WRITERS: usize = 8;
/// Acknowledged Sets (per front end) before a fault is injected.
const WARM_UP: usize = 20;
/// Acknowledged Sets each live front end must complete after a fault.
const AFTER_FAULT: usize = 50;
/// The most a writer waits for one answer before it records the request as
/// hung (a failure with DEADLINE_EXCEEDED, which fails the checks of a front
/// end that stays up): the default --etcd-timeout is 3 s and a Set makes at
/// most a read and a transaction, so an answer later than this is a hang,
/// not slowness.
const HUNG: Duration = Duration::from_secs(10);

fn account(i: usize) -> String {
    format!("AC{:032x}", 0xfa_0000 + i)
}

/// One Set a writer sent, and what came of it.
#[derive(Debug, Clone)]
struct Outcome {
    writer: usize,
    front_end: usize,
    account: String,
    name: String,
    started: Instant,
    latency: Duration,
    /// The acknowledged revision, or the failure.
    result: Result<u64, (Code, String)>,
}

impl Outcome {
    fn answered(&self) -> Instant {
        self.started + self.latency
    }
}

/// Every writer's outcomes, and counts of acknowledged Sets per front end
/// (watched, so a test waits on a count instead of sleeping).
struct Log {
    outcomes: Mutex<Vec<Outcome>>,
    acked: watch::Sender<[usize; 2]>,
    /// Acknowledgements whose settings did not match the request.
    wrong_answers: Mutex<Vec<String>>,
}

impl Log {
    fn new() -> Arc<Log> {
        Arc::new(Log {
            outcomes: Mutex::new(Vec::new()),
            acked: watch::Sender::new([0, 0]),
            wrong_answers: Mutex::new(Vec::new()),
        })
    }

    fn acked(&self) -> [usize; 2] {
        *self.acked.borrow()
    }

    /// Waits (bounded by [`GUARD`]) until front end `front_end` has `count`
    /// acknowledged Sets in all.
    async fn wait_for_acks(&self, front_end: usize, count: usize, what: &str) {
        let mut rx = self.acked.subscribe();
        let reached = tokio::time::timeout(GUARD, rx.wait_for(|n| n[front_end] >= count)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{what}: front end {front_end} did not reach {count} acknowledged Sets within \
             {GUARD:?} (it has {}); failures so far: {:?}",
            self.acked()[front_end],
            self.failures()
                .iter()
                .map(|o| (o.front_end, o.result.clone().unwrap_err()))
                .collect::<Vec<_>>()
        );
    }

    /// Waits (bounded) until each front end has `more` acknowledged Sets
    /// than it has now.
    async fn wait_for_more_acks(&self, more: usize, what: &str) {
        for (front_end, now) in self.acked().into_iter().enumerate() {
            self.wait_for_acks(front_end, now + more, what).await;
        }
    }

    fn all(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    fn failures(&self) -> Vec<Outcome> {
        self.all()
            .into_iter()
            .filter(|o| o.result.is_err())
            .collect()
    }
}

/// Sets a unique friendly name, round and round over the accounts (writer
/// `id`'s k-th Set goes to account `(id + k) % ACCOUNTS`, so writers on
/// both front ends meet on every account), until `stop`; or, with
/// `stop_on_failure`, until its first failed Set.
async fn writer(
    id: usize,
    front_end: usize,
    client: Client,
    log: Arc<Log>,
    stop: Arc<AtomicBool>,
    stop_on_failure: bool,
) {
    let mut k = 0;
    while !stop.load(Ordering::Acquire) {
        let account = account((id + k) % ACCOUNTS);
        let name = format!("writer {id} set {k}");
        let started = Instant::now();
        let answer = tokio::time::timeout(
            HUNG,
            client
                .clone()
                .set_recording_settings(set_request(&account, &name)),
        )
        .await;
        let latency = started.elapsed();
        let result = match answer {
            Err(_) => Err((
                Code::DeadlineExceeded,
                format!("no answer within {HUNG:?} (the test gave up waiting)"),
            )),
            Ok(Err(status)) => Err((status.code(), status.message().to_owned())),
            Ok(Ok(response)) => {
                let settings = response.into_inner();
                if settings.account_sid != account
                    || settings.friendly_name.as_deref() != Some(name.as_str())
                    || settings.revision == 0
                {
                    log.wrong_answers
                        .lock()
                        .unwrap()
                        .push(format!("Set {name:?} of {account} answered {settings:?}"));
                }
                Ok(settings.revision)
            }
        };
        let failed = result.is_err();
        log.outcomes.lock().unwrap().push(Outcome {
            writer: id,
            front_end,
            account,
            name,
            started,
            latency,
            result,
        });
        if !failed {
            log.acked.send_modify(|n| n[front_end] += 1);
        } else if stop_on_failure {
            return;
        }
        k += 1;
    }
}

/// Writers [`WRITERS`] over the front ends `clients` (writer i on front end
/// `i % clients.len()`).
fn start_writers(
    clients: &[Client],
    log: &Arc<Log>,
    stop: &Arc<AtomicBool>,
    stop_on_failure: &[bool],
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|id| {
            let front_end = id % clients.len();
            tokio::spawn(writer(
                id,
                front_end,
                clients[front_end].clone(),
                Arc::clone(log),
                Arc::clone(stop),
                stop_on_failure[front_end],
            ))
        })
        .collect()
}

async fn stop_writers(stop: &AtomicBool, writers: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for writer in writers {
        tokio::time::timeout(GUARD, writer)
            .await
            .expect("a writer stops within the guard once told to")
            .expect("a writer task does not panic");
    }
}

/// What clients saw between two instants (by the time the answer came),
/// per front end: acknowledged Sets, failures by code, the slowest answer.
fn window(outcomes: &[Outcome], from: Instant, to: Instant, label: &str) -> String {
    let mut lines = Vec::new();
    for front_end in 0..2 {
        let mine: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.front_end == front_end && o.answered() >= from && o.answered() < to)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let acked = mine.iter().filter(|o| o.result.is_ok()).count();
        let mut codes: BTreeMap<String, usize> = BTreeMap::new();
        for o in &mine {
            if let Err((code, _)) = &o.result {
                *codes.entry(format!("{code:?}")).or_default() += 1;
            }
        }
        let slowest = mine.iter().map(|o| o.latency).max().unwrap_or_default();
        lines.push(format!(
            "  {label}, front end {front_end}: {acked} acknowledged, failures {codes:?}, \
             slowest answer {slowest:?}"
        ));
    }
    lines.join("\n")
}

/// Every stored revision of `account`, newest first (every page).
async fn history(client: &Client, account: &str) -> Vec<RecordingSettings> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = tokio::time::timeout(
            GUARD,
            client.clone().list_recording_settings_revisions(
                ListRecordingSettingsRevisionsRequest {
                    account_sid: account.to_owned(),
                    page_size: 1000,
                    page_token,
                },
            ),
        )
        .await
        .expect("a history page within the guard")
        .unwrap_or_else(|s| panic!("list the history of {account}: {s:?}"))
        .into_inner();
        all.extend(page.revisions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Checks that nothing acknowledged was lost, reading through every front
/// end in `readers` (Get) and the history through the first:
///
/// - no two acknowledgements share a revision, and every acknowledgement
///   carried the settings it set;
/// - every acknowledged Set is in its account's history at its revision,
///   with its friendly name;
/// - the history holds nothing but Sets the writers sent (acknowledged, or
///   failed: a failed Set's outcome is unknown, it may be stored);
/// - each account's current state, through every reader, is the newest
///   entry of its history, and that is the last acknowledged Set of the
///   account (by revision), or a later Set that failed (unknown outcome).
///
/// Returns what else the histories hold (not a loss, reported).
async fn assert_every_acknowledged_set_is_stored(
    readers: &[(&str, Client)],
    log: &Log,
) -> Unacknowledged {
    let outcomes = log.all();
    let wrong = log.wrong_answers.lock().unwrap().clone();
    assert!(
        wrong.is_empty(),
        "acknowledgements must carry what was set: {wrong:#?}"
    );
    let mut by_revision: HashMap<u64, &Outcome> = HashMap::new();
    for o in &outcomes {
        if let Ok(revision) = o.result {
            if let Some(other) = by_revision.insert(revision, o) {
                panic!("two Sets acknowledged with revision {revision}: {other:?} and {o:?}");
            }
        }
    }
    let mut extra = Unacknowledged::default();
    for i in 0..ACCOUNTS {
        let account = account(i);
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.account == account).collect();
        let acked: Vec<(u64, &Outcome)> = mine
            .iter()
            .filter_map(|o| o.result.as_ref().ok().map(|r| (*r, *o)))
            .collect();
        let failed: HashSet<&str> = mine
            .iter()
            .filter(|o| o.result.is_err())
            .map(|o| o.name.as_str())
            .collect();
        let sent: HashSet<&str> = mine.iter().map(|o| o.name.as_str()).collect();

        let stored = history(&readers[0].1, &account).await;
        assert!(
            stored.windows(2).all(|w| w[0].revision > w[1].revision),
            "{account}: the history is newest first, revisions strictly decreasing"
        );
        let stored_at: HashMap<u64, Option<&str>> = stored
            .iter()
            .map(|s| (s.revision, s.friendly_name.as_deref()))
            .collect();
        for (revision, o) in &acked {
            assert_eq!(
                stored_at.get(revision).copied(),
                Some(Some(o.name.as_str())),
                "{account}: the Set {:?} acknowledged by front end {} at revision {revision} \
                 is not in the history (through {}) with its value",
                o.name,
                o.front_end,
                readers[0].0
            );
        }
        for s in &stored {
            let name = s.friendly_name.as_deref().unwrap_or("");
            assert!(
                sent.contains(name),
                "{account}: the history holds {name:?} at revision {}, which no writer sent",
                s.revision
            );
            if by_revision.get(&s.revision).map(|o| o.name.as_str()) == Some(name) {
                continue;
            }
            if failed.contains(name) {
                extra.failed_but_stored += 1;
            } else {
                extra.stored_again += 1;
            }
        }

        let newest = stored
            .first()
            .unwrap_or_else(|| panic!("{account}: no history, but writers wrote it"));
        let last_acked = acked.iter().max_by_key(|(r, _)| *r);
        match last_acked {
            Some((revision, o)) if newest.revision == *revision => {
                assert_eq!(newest.friendly_name.as_deref(), Some(o.name.as_str()));
            }
            _ => {
                let name = newest.friendly_name.as_deref().unwrap_or("");
                assert!(
                    newest.revision > last_acked.map_or(0, |(r, _)| *r) && failed.contains(name),
                    "{account}: the newest stored state {name:?} at revision {} is neither the \
                     last acknowledged Set {:?} nor a later Set that failed",
                    newest.revision,
                    last_acked.map(|(r, o)| (r, &o.name))
                );
            }
        }
        for (label, client) in readers {
            let current = tokio::time::timeout(
                GUARD,
                client.clone().get_recording_settings(get_request(&account)),
            )
            .await
            .expect("a Get within the guard")
            .unwrap_or_else(|s| panic!("Get {account} through {label}: {s:?}"))
            .into_inner();
            assert_eq!(
                (current.revision, current.friendly_name.as_deref()),
                (newest.revision, newest.friendly_name.as_deref()),
                "{account}: a Get through {label} answers the newest stored state (the last \
                 acknowledged Set, {:?})",
                last_acked.map(|(r, o)| (r, &o.name))
            );
        }
    }
    extra
}

/// History entries that are not an acknowledged Set at its revision.
#[derive(Debug, Default)]
struct Unacknowledged {
    /// Sets that failed (UNAVAILABLE, or their front end died) and were
    /// stored all the same: their outcome was unknown.
    failed_but_stored: usize,
    /// Acknowledged Sets stored once more at another revision (a retried
    /// write whose first attempt had been stored).
    stored_again: usize,
}

/// The index of the member that is etcd's leader now, asked of the members
/// with `etcdctl endpoint status`; None if etcdctl is not there or no
/// member names a leader.
fn leader(cluster: &EtcdCluster) -> Option<usize> {
    let endpoints = cluster.endpoints();
    let output = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--dial-timeout", "1s", "--command-timeout", "2s"])
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["endpoint", "status", "-w", "json"])
        .output()
        .ok()?;
    let statuses: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    statuses.as_array()?.iter().find_map(|s| {
        let status = &s["Status"];
        let leader = status["leader"].as_u64()?;
        (status["header"]["member_id"].as_u64()? == leader)
            .then(|| endpoints.iter().position(|e| s["Endpoint"] == e.as_str()))
            .flatten()
    })
}

/// Runs a blocking cluster operation from an async test.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// settingsd's default --etcd-timeout, which the front ends of the load
/// tests run with.
const ETCD_TIMEOUT: Duration = Duration::from_secs(3);
/// Added to a timeout in a bound on how long an answer may take: a bound on
/// a hang, not a speed test.
const MARGIN: Duration = Duration::from_secs(3);
/// How long after a member is killed a Set sent then may still fail: none
/// may (only a Set in flight at the kill may, at most one per writer per
/// kill; in the runs so far none did). A call that loses its member goes to
/// the next; killing the leader costs an election (--election-timeout
/// 500 ms here), and a follower that forwarded a write to the dead leader
/// never answers it, but `Members::call` sends the write again to the next
/// member after a third of --etcd-timeout, well within the timeout. (Before
/// that, Sets in flight at a leader kill failed with UNAVAILABLE after the
/// whole timeout.)
const ELECTION_WINDOW: Duration = Duration::ZERO;

/// Checks what clients saw around the kills at `kills` (instants each kill
/// was done): every answer came within the timeout and margin, and every
/// failure is UNAVAILABLE, was sent in the election window of a kill, and
/// is its writer's only failure for that kill.
fn assert_failures_only_in_election_windows(log: &Log, kills: &[Instant], report: &str) {
    let outcomes = log.all();
    let slowest = outcomes
        .iter()
        .max_by_key(|o| o.latency)
        .expect("Sets were sent");
    assert!(
        slowest.latency < ETCD_TIMEOUT + MARGIN,
        "every Set answers within --etcd-timeout {ETCD_TIMEOUT:?} + {MARGIN:?}; this one took \
         {:?}: {slowest:?}\n{report}",
        slowest.latency
    );
    let mut per_writer_and_kill: HashMap<(usize, usize), usize> = HashMap::new();
    for o in outcomes.iter().filter(|o| o.result.is_err()) {
        assert!(
            matches!(o.result, Err((Code::Unavailable, _))),
            "a Set may only fail with UNAVAILABLE while a member is lost: {o:#?}\n{report}"
        );
        let kill = kills
            .iter()
            .position(|k| o.answered() >= *k && o.started < *k + ELECTION_WINDOW)
            .unwrap_or_else(|| {
                panic!(
                    "a Set failed that was neither in flight at a kill nor sent within \
                     {ELECTION_WINDOW:?} after one: {o:#?}\n{report}"
                )
            });
        let count = per_writer_and_kill.entry((o.writer, kill)).or_default();
        *count += 1;
        assert!(
            *count <= 1,
            "writer {} had more than one failed Set around kill {kill}:\n{report}\n{:#?}",
            o.writer,
            log.failures()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_one_member_under_load_loses_nothing_and_requests_keep_succeeding() {
    if !etcd_available() {
        return;
    }
    let test_started = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let a = front_end(&cluster, "/faults-member/").await;
    let b = front_end(&cluster, "/faults-member/").await;
    let clients = [connect(a.grpc_addr).await, connect(b.grpc_addr).await];
    let (log, stop) = (Log::new(), Arc::new(AtomicBool::new(false)));
    let writers = start_writers(&clients, &log, &stop, &[false, false]);
    for fe in 0..2 {
        log.wait_for_acks(fe, WARM_UP, "warm-up").await;
    }

    // Kill 1: member 0, where both front ends send their calls first (the
    // leader too, in about one run of three).
    let leader_1 = blocking(|| leader(&cluster));
    blocking(|| cluster.kill(0));
    let kill_1 = Instant::now();
    log.wait_for_more_acks(AFTER_FAULT, "after killing member 0")
        .await;

    // Kill 2: member 0 back, then whoever leads now (an election for sure;
    // member 1 if etcdctl cannot tell).
    blocking(|| cluster.restart(0));
    let restarted = Instant::now();
    let leader_2 = blocking(|| leader(&cluster));
    let victim = leader_2.unwrap_or(1);
    blocking(|| cluster.kill(victim));
    let kill_2 = Instant::now();
    log.wait_for_more_acks(
        AFTER_FAULT,
        &format!("after killing member {victim} (the leader)"),
    )
    .await;
    let end = Instant::now();
    stop_writers(&stop, writers).await;

    let outcomes = log.all();
    let report = [
        window(&outcomes, test_started, kill_1, "before any kill"),
        window(
            &outcomes,
            kill_1,
            restarted,
            &format!("member 0 killed (leader: {leader_1:?})"),
        ),
        window(&outcomes, restarted, kill_2, "member 0 back"),
        window(
            &outcomes,
            kill_2,
            end,
            &format!("member {victim} killed (leader: {leader_2:?})"),
        ),
        window(&outcomes, end, Instant::now(), "while stopping"),
    ]
    .join("\n");
    eprintln!("killing one member under load, answers by the time they came:\n{report}");
    assert_failures_only_in_election_windows(&log, &[kill_1, kill_2], &report);
    let extra = assert_every_acknowledged_set_is_stored(
        &[
            ("front end A", clients[0].clone()),
            ("front end B", clients[1].clone()),
        ],
        &log,
    )
    .await;
    eprintln!(
        "{} Sets sent, {} acknowledged, all stored; also stored: {extra:?}; test took {:?}",
        outcomes.len(),
        outcomes.iter().filter(|o| o.result.is_ok()).count(),
        test_started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_sets_are_unavailable_within_the_timeout_and_service_resumes_after() {
    if !etcd_available() {
        return;
    }
    const TIMEOUT: Duration = Duration::from_secs(2);
    let test_started = Instant::now();
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let mut server = front_end_with(&cluster, "/faults-quorum/", &["--etcd-timeout", "2s"]).await;
    let client = connect(server.grpc_addr).await;
    let before = client
        .clone()
        .set_recording_settings(set_request(ACCOUNT, "before the outage"))
        .await
        .expect("a Set with every member up")
        .into_inner();
    health_at_becomes(server.grpc_addr, ServingStatus::Serving).await;

    // Members 0 and 1: the one the front end calls first, and one more.
    blocking(|| {
        cluster.kill(0);
        cluster.kill(1);
    });
    let outage = Instant::now();
    // Health turns on its own (the background probe), before any request.
    health_at_becomes(server.grpc_addr, ServingStatus::NotServing).await;
    let not_serving_after = outage.elapsed();

    let started = Instant::now();
    let set = tokio::time::timeout(
        GUARD,
        client
            .clone()
            .set_recording_settings(set_request(ACCOUNT, "during the outage")),
    )
    .await
    .expect("a Set without quorum answers within the guard");
    let set_took = started.elapsed();
    let status = set.expect_err("a Set without quorum fails");
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "a Set without quorum is UNAVAILABLE: {status:?}"
    );
    assert!(
        set_took < TIMEOUT + MARGIN,
        "a Set without quorum answers within --etcd-timeout {TIMEOUT:?} + {MARGIN:?}, not \
         {set_took:?}"
    );

    let started = Instant::now();
    let get = tokio::time::timeout(
        GUARD,
        client.clone().get_recording_settings(get_request(ACCOUNT)),
    )
    .await
    .expect("a Get without quorum answers within the guard");
    let get_took = started.elapsed();
    let get_status = get.expect_err("a (linearizable) Get without quorum fails");
    assert_eq!(get_status.code(), Code::Unavailable, "{get_status:?}");
    assert!(
        get_took < TIMEOUT + MARGIN,
        "a Get without quorum answers within {TIMEOUT:?} + {MARGIN:?}, not {get_took:?}"
    );

    let started = Instant::now();
    let url = format!("http://{}/v1/RecordingSettings/Default", server.http_addr);
    let response = tokio::time::timeout(
        GUARD,
        post(
            &url,
            ACCOUNT,
            "anything",
            "FriendlyName=posted+during+the+outage",
        ),
    )
    .await
    .expect("a POST without quorum answers within the guard");
    let post_took = started.elapsed();
    assert_twilio_error(response, 503, 20503).await;
    assert!(
        post_took < TIMEOUT + MARGIN,
        "a POST without quorum answers within {TIMEOUT:?} + {MARGIN:?}, not {post_took:?}"
    );
    // Still NOT_SERVING after the failed requests (Check, not Watch).
    let mut health = HealthClient::new(channel(server.grpc_addr).await);
    let check = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health Check")
        .into_inner();
    assert_eq!(check.status, ServingStatus::NotServing as i32);

    blocking(|| cluster.restart_stopped());
    let restarted = Instant::now();
    health_at_becomes(server.grpc_addr, ServingStatus::Serving).await;
    let serving_after = restarted.elapsed();
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "the same settingsd process serves again (it was not restarted)"
    );

    let after = tokio::time::timeout(
        GUARD,
        client
            .clone()
            .set_recording_settings(set_request(OTHER_ACCOUNT, "after the outage")),
    )
    .await
    .expect("a Set answers within the guard")
    .expect("a Set succeeds once quorum is back, without restarting settingsd")
    .into_inner();
    assert!(after.revision > before.revision);
    let read_back = client
        .clone()
        .get_recording_settings(get_request(OTHER_ACCOUNT))
        .await
        .expect("a Get once quorum is back")
        .into_inner();
    assert_eq!(read_back, after, "the Set after the outage reads back");
    let current = client
        .clone()
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .expect("a Get once quorum is back")
        .into_inner();
    let stored = history(&client, ACCOUNT).await;
    let before_in_history = stored.iter().find(|s| s.revision == before.revision);
    assert_eq!(
        before_in_history.map(|s| s.friendly_name.as_deref()),
        Some(Some("before the outage")),
        "the Set acknowledged before the outage is in the history: {stored:?}"
    );
    // The failed Set and POST have an unknown outcome (they may have been
    // stored): the current state is the acknowledged one, or one of them.
    match current.friendly_name.as_deref() {
        Some("before the outage") => assert_eq!(current, before),
        Some("during the outage" | "posted during the outage") => {
            assert!(current.revision > before.revision);
        }
        other => panic!("{ACCOUNT} holds {other:?} after the outage"),
    }
    eprintln!(
        "no quorum: health NOT_SERVING {not_serving_after:?} after the kills (before any \
         request); Set UNAVAILABLE after {set_took:?}, Get after {get_took:?}, POST 503 after \
         {post_took:?}; SERVING {serving_after:?} after the restart; {ACCOUNT} then holds {:?} \
         at {}; test took {:?}",
        current.friendly_name,
        current.revision,
        test_started.elapsed()
    );
    server.signal("KILL");
    server.wait().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_quorum_concurrent_sets_of_one_account_each_answer_within_the_timeout() {
    if !etcd_available() {
        return;
    }
    const TIMEOUT: Duration = Duration::from_secs(2);
    const SETS: usize = 5;
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let server = front_end_with(&cluster, "/faults-queue/", &["--etcd-timeout", "2s"]).await;
    let client = connect(server.grpc_addr).await;
    client
        .clone()
        .set_recording_settings(set_request(ACCOUNT, "before the outage"))
        .await
        .expect("a Set with every member up");
    blocking(|| {
        cluster.kill(0);
        cluster.kill(1);
    });
    let sets: Vec<_> = (0..SETS)
        .map(|k| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = tokio::time::timeout(
                    GUARD,
                    client
                        .clone()
                        .set_recording_settings(set_request(ACCOUNT, &format!("concurrent {k}"))),
                )
                .await
                .expect("an answer within the guard");
                (started.elapsed(), result.map(|_| ()).map_err(|s| s.code()))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for set in sets {
        answers.push(set.await.unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|(took, result)| *took < TIMEOUT + MARGIN && *result == Err(Code::Unavailable)),
        "each of {SETS} concurrent Sets of one account without quorum is UNAVAILABLE within \
         {TIMEOUT:?} + {MARGIN:?}: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_front_end_mid_load_leaves_the_other_serving_with_every_acknowledged_set() {
    if !etcd_available() {
        return;
    }
    let test_started = Instant::now();
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let mut a = front_end(&cluster, "/faults-front-end/").await;
    let b = front_end(&cluster, "/faults-front-end/").await;
    let clients = [connect(a.grpc_addr).await, connect(b.grpc_addr).await];
    let (log, stop) = (Log::new(), Arc::new(AtomicBool::new(false)));
    // A's writers stop at their first failure: A is gone for good then.
    let writers = start_writers(&clients, &log, &stop, &[true, false]);
    for fe in 0..2 {
        log.wait_for_acks(fe, WARM_UP, "warm-up").await;
    }

    let kill = Instant::now();
    a.signal("KILL");
    let status = a.wait().await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "front end A died of SIGKILL: {status:?}"
    );
    let dead = Instant::now();
    let acked = log.acked();
    log.wait_for_acks(1, acked[1] + AFTER_FAULT, "B after killing A")
        .await;
    let end = Instant::now();
    let writers_cut_off = {
        let outcomes = log.all();
        (0..WRITERS)
            .filter(|w| w % 2 == 0)
            .filter(|w| outcomes.iter().any(|o| o.writer == *w && o.result.is_err()))
            .count()
    };
    stop_writers(&stop, writers).await;

    let outcomes = log.all();
    let report = [
        window(&outcomes, test_started, kill, "before the kill"),
        window(&outcomes, kill, end, "front end A killed"),
        window(&outcomes, end, Instant::now(), "while stopping"),
    ]
    .join("\n");
    eprintln!(
        "killing front end A under load (dead {:?} after the signal), answers by the time \
         they came:\n{report}",
        dead - kill
    );
    let failures = log.failures();
    assert!(
        failures.iter().all(|o| o.front_end == 0),
        "no Set through front end B fails: {:#?}",
        failures
            .iter()
            .filter(|o| o.front_end == 1)
            .collect::<Vec<_>>()
    );
    let slowest_b = outcomes
        .iter()
        .filter(|o| o.front_end == 1)
        .map(|o| o.latency)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_b < ETCD_TIMEOUT + MARGIN,
        "B answers every Set within {ETCD_TIMEOUT:?} + {MARGIN:?}, not {slowest_b:?}"
    );
    assert_eq!(
        writers_cut_off,
        WRITERS / 2,
        "every writer on A saw A go away (a failed Set) before B's {AFTER_FAULT} more Sets"
    );
    let extra =
        assert_every_acknowledged_set_is_stored(&[("front end B", clients[1].clone())], &log).await;
    eprintln!(
        "{} Sets sent, {} acknowledged ({} by A), all stored; also stored: {extra:?}; \
         test took {:?}",
        outcomes.len(),
        outcomes.iter().filter(|o| o.result.is_ok()).count(),
        outcomes
            .iter()
            .filter(|o| o.result.is_ok() && o.front_end == 0)
            .count(),
        test_started.elapsed()
    );
}
