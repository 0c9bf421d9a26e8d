//! Consistency of settingsd on etcd, seen from outside: two real front ends
//! (the `settingsd` binary) on one prefix of a real 3-member etcd cluster,
//! driven concurrently through both, and the answers checked against what
//! the contract promises:
//!
//! - concurrent read-merge-writes lose no update (every acknowledged Set is
//!   in the history, exactly as acknowledged, merged into the state the
//!   write before it left);
//! - of conditional Sets racing on one etag, exactly one wins;
//! - a recorded history of Gets and Sets is linearizable (stateright's
//!   checker), and its revisions say so too.
//!
//! Each test starts its own cluster and returns early (passes) where etcd
//! is not installed; see `etcd_cluster`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::SocketAddr,
    time::Instant,
};

use settingsd::pb::{
    ListRecordingSettingsRevisionsRequest, RecordingSettings, SetRecordingSettingsRequest,
};
use stateright::semantics::{
    register::{Register, RegisterOp, RegisterRet},
    ConsistencyTester, LinearizabilityTester,
};
use tokio::task::JoinSet;
use tonic::Code;

use crate::{
    etcd::front_end,
    etcd_cluster::{etcd_available, EtcdCluster},
    helpers::*,
};

/// The names of the two front ends, by index.
const FRONT_ENDS: [&str; 2] = ["A", "B"];

/// A 3-member cluster and front ends A and B on one prefix of it.
struct TwoFrontEnds {
    /// Declared first, so dropped first: the front ends go before etcd.
    _servers: [BinaryServer; 2],
    addrs: [SocketAddr; 2],
    clients: [Client; 2],
    _cluster: EtcdCluster,
}

async fn two_front_ends(prefix: &str) -> TwoFrontEnds {
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .expect("the etcd cluster starts");
    let a = front_end(&cluster, prefix).await;
    let b = front_end(&cluster, prefix).await;
    let addrs = [a.grpc_addr, b.grpc_addr];
    let clients = [connect(addrs[0]).await, connect(addrs[1]).await];
    TwoFrontEnds {
        _servers: [a, b],
        addrs,
        clients,
        _cluster: cluster,
    }
}

/// The `i`th test account: "AC" and 32 lowercase hex digits.
fn account(i: usize) -> String {
    format!("AC{:032x}", 0x00c0_ffee_0000 + i)
}

/// A task's panic, raised again in the test with its own message.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> T {
    result.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

async fn set(
    client: &Client,
    request: SetRecordingSettingsRequest,
) -> Result<RecordingSettings, tonic::Status> {
    let what = format!("{request:?}");
    tokio::time::timeout(GUARD, client.clone().set_recording_settings(request))
        .await
        .unwrap_or_else(|_| panic!("no answer to a Set within {GUARD:?}: {what}"))
        .map(tonic::Response::into_inner)
}

async fn get(client: &Client, account: &str) -> RecordingSettings {
    tokio::time::timeout(
        GUARD,
        client.clone().get_recording_settings(get_request(account)),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to a Get of {account} within {GUARD:?}"))
    .unwrap_or_else(|status| panic!("Get of {account}: {status:?}"))
    .into_inner()
}

/// The account's whole history, newest first, read in pages of `page_size`.
async fn history(client: &Client, account: &str, page_size: i32) -> Vec<RecordingSettings> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10_000 {
        let request = ListRecordingSettingsRevisionsRequest {
            account_sid: account.to_owned(),
            page_size,
            page_token: page_token.clone(),
        };
        let page = tokio::time::timeout(
            GUARD,
            client.clone().list_recording_settings_revisions(request),
        )
        .await
        .unwrap_or_else(|_| panic!("no history page of {account} within {GUARD:?}"))
        .unwrap_or_else(|status| panic!("history of {account} (token {page_token:?}): {status:?}"))
        .into_inner();
        assert!(
            page.revisions.len() <= usize::try_from(page_size).unwrap(),
            "a history page of {account} has {} entries, more than its page size {page_size}",
            page.revisions.len()
        );
        all.extend(page.revisions);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
    panic!("the history of {account} did not end within 10000 pages");
}

// ---------------------------------------------------------------------
// 1. Concurrent read-merge-writes through two front ends lose no update.
// ---------------------------------------------------------------------

const MERGE_ACCOUNTS: usize = 4;
const MERGE_WRITERS: usize = 16;
const SETS_PER_WRITER: usize = 20;

/// The optional field a merge writer sets: even writers one, odd writers
/// the other. Every Set must also send friendly_name (it is required), so
/// a writer of "friendly_name only" would leave nothing for a merge to keep;
/// the two kinds are the two optional SID fields instead, and every Set's
/// friendly_name is unique too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Credentials,
    EncryptionKey,
}

impl Field {
    fn of_writer(writer: usize) -> Field {
        if writer % 2 == 0 {
            Field::Credentials
        } else {
            Field::EncryptionKey
        }
    }

    fn other(self) -> Field {
        match self {
            Field::Credentials => Field::EncryptionKey,
            Field::EncryptionKey => Field::Credentials,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::Credentials => "aws_credentials_sid",
            Field::EncryptionKey => "encryption_key_sid",
        }
    }

    fn of(self, settings: &RecordingSettings) -> Option<&str> {
        match self {
            Field::Credentials => settings.aws_credentials_sid.as_deref(),
            Field::EncryptionKey => settings.encryption_key_sid.as_deref(),
        }
    }

    fn set(self, request: &mut SetRecordingSettingsRequest, sid: String) {
        match self {
            Field::Credentials => request.aws_credentials_sid = Some(sid),
            Field::EncryptionKey => request.encryption_key_sid = Some(sid),
        }
    }
}

/// One acknowledged merge Set.
struct Ack {
    writer: usize,
    n: usize,
    front_end: usize,
    field: Field,
    sid: String,
    friendly_name: String,
    answer: RecordingSettings,
}

impl Ack {
    fn describe(&self) -> String {
        format!(
            "writer {}'s Set {} through {} ({} {}, friendly_name {:?}), revision {}",
            self.writer,
            self.n,
            FRONT_ENDS[self.front_end],
            self.field.name(),
            self.sid,
            self.friendly_name,
            self.answer.revision
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_merges_through_two_front_ends_lose_no_update() {
    if !etcd_available() {
        return;
    }
    let setup = two_front_ends("/consistency-merge/").await;
    let started = Instant::now();

    // MERGE_WRITERS writers per account, all at once, on both front ends:
    // writers 0, 1 on A, 2, 3 on B, 4, 5 on A... so each front end has
    // writers of both fields.
    let mut writers = JoinSet::new();
    for a in 0..MERGE_ACCOUNTS {
        for writer in 0..MERGE_WRITERS {
            let front_end = (writer / 2) % 2;
            let client = setup.clients[front_end].clone();
            writers.spawn(async move {
                let account = account(a);
                let field = Field::of_writer(writer);
                let mut acks = Vec::with_capacity(SETS_PER_WRITER);
                for n in 0..SETS_PER_WRITER {
                    // Unique per write: "CR" and 32 hex digits.
                    let sid = format!("CR{a:08x}{writer:08x}{n:016x}");
                    let friendly_name = format!("account {a} writer {writer} set {n}");
                    let mut request = set_request(&account, &friendly_name);
                    field.set(&mut request, sid.clone());
                    let answer = set(&client, request).await.unwrap_or_else(|status| {
                        panic!(
                            "writer {writer}'s Set {n} of {account} through {} failed: {status:?}",
                            FRONT_ENDS[front_end]
                        )
                    });
                    acks.push(Ack {
                        writer,
                        n,
                        front_end,
                        field,
                        sid,
                        friendly_name,
                        answer,
                    });
                }
                (a, acks)
            });
        }
    }
    let mut acks_by_account: Vec<Vec<Ack>> = (0..MERGE_ACCOUNTS).map(|_| Vec::new()).collect();
    while let Some(result) = writers.join_next().await {
        let (a, acks) = joined(result);
        acks_by_account[a].extend(acks);
    }
    eprintln!(
        "{} Sets acknowledged in {:?}",
        MERGE_ACCOUNTS * MERGE_WRITERS * SETS_PER_WRITER,
        started.elapsed()
    );

    // Revisions are store-wide: no two acknowledged Sets share one.
    let mut owner_of_revision: HashMap<u64, String> = HashMap::new();
    for (a, acks) in acks_by_account.iter().enumerate() {
        for ack in acks {
            let who = format!("{} on {}", ack.describe(), account(a));
            if let Some(before) = owner_of_revision.insert(ack.answer.revision, who.clone()) {
                panic!(
                    "two acknowledged Sets got revision {}: {before} and {who}",
                    ack.answer.revision
                );
            }
        }
    }

    for (a, acks) in acks_by_account.iter_mut().enumerate() {
        let account = account(a);
        assert_eq!(
            acks.len(),
            MERGE_WRITERS * SETS_PER_WRITER,
            "acknowledged Sets of {account}"
        );

        // Each writer's revisions strictly increase (they are in its order).
        for writer in 0..MERGE_WRITERS {
            let own: Vec<&Ack> = acks.iter().filter(|ack| ack.writer == writer).collect();
            for pair in own.windows(2) {
                assert!(
                    pair[0].answer.revision < pair[1].answer.revision,
                    "on {account}, a writer's later Set got a lower revision: {} then {}",
                    pair[0].describe(),
                    pair[1].describe()
                );
            }
        }

        // The state now is the last acknowledged write's, on both front ends.
        acks.sort_by_key(|ack| ack.answer.revision);
        let last = acks.last().expect("acknowledged Sets");
        for (i, client) in setup.clients.iter().enumerate() {
            let now = get(client, &account).await;
            assert_eq!(
                now.revision,
                last.answer.revision,
                "a Get of {account} through {} answers revision {}, but the highest \
                 acknowledged is {}",
                FRONT_ENDS[i],
                now.revision,
                last.describe()
            );
            assert_eq!(
                now,
                last.answer,
                "a Get of {account} through {} differs from the answer to the last Set ({})",
                FRONT_ENDS[i],
                last.describe()
            );
        }

        // The history holds every acknowledged Set, exactly as acknowledged,
        // and nothing else (nothing else wrote this account, and nothing
        // compacts etcd here). Read in pages, half through each front end.
        let history = history(&setup.clients[a % 2], &account, 37).await;
        check_merged_history(&account, acks, &history);
    }
    eprintln!("checked in {:?} in all", started.elapsed());
}

/// Checks `history` (newest first) against `acks`, every Set acknowledged
/// on `account` (sorted by revision): it holds each exactly as answered and
/// nothing else, and each is the merge of its own fields into the state the
/// write before it left.
fn check_merged_history(account: &str, acks: &[Ack], history: &[RecordingSettings]) {
    for pair in history.windows(2) {
        assert!(
            pair[0].revision > pair[1].revision,
            "the history of {account} is not newest first: revision {} before {}",
            pair[0].revision,
            pair[1].revision
        );
    }
    assert_eq!(
        history.len(),
        acks.len(),
        "the history of {account} has {} entries, but {} Sets were acknowledged and \
         nothing compacts here: it must hold every one",
        history.len(),
        acks.len()
    );
    let by_revision: HashMap<u64, &RecordingSettings> =
        history.iter().map(|s| (s.revision, s)).collect();

    // Replay the acknowledged writes in revision order: at each one,
    // the state must hold this write's values and, for the other field,
    // the value of the latest write of that field below it (or none).
    // Anything else is a lost update.
    let mut latest: HashMap<&'static str, &Ack> = HashMap::new();
    for ack in acks.iter() {
        let entry = by_revision.get(&ack.answer.revision).unwrap_or_else(|| {
            panic!(
                "the history of {account} lacks the acknowledged {}",
                ack.describe()
            )
        });
        assert_eq!(
            *entry,
            &ack.answer,
            "the history of {account} at revision {} differs from what its Set was \
             answered ({})",
            ack.answer.revision,
            ack.describe()
        );
        assert_eq!(
            entry.friendly_name.as_deref(),
            Some(ack.friendly_name.as_str()),
            "the friendly_name of {account} at {}",
            ack.describe()
        );
        assert_eq!(
            ack.field.of(entry),
            Some(ack.sid.as_str()),
            "the {} of {account} at {}",
            ack.field.name(),
            ack.describe()
        );
        let other = ack.field.other();
        let expected = latest.get(other.name());
        assert_eq!(
            other.of(entry),
            expected.map(|before| before.sid.as_str()),
            "lost update on {account}: at {}, {} must still be the value of the latest \
             {} write below it ({}), whose update this Set's merge must keep",
            ack.describe(),
            other.name(),
            other.name(),
            expected.map_or("none: it was never set".to_owned(), |b| b.describe())
        );
        latest.insert(ack.field.name(), ack);
    }
}

// ---------------------------------------------------------------------
// 2. Conditional writes: exactly one winner per etag.
// ---------------------------------------------------------------------

const ROUNDS: usize = 12;
const CONTENDERS: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn conditional_writes_have_exactly_one_winner_per_etag() {
    if !etcd_available() {
        return;
    }
    let setup = two_front_ends("/consistency-conditional/").await;
    let started = Instant::now();
    let account = account(0);
    let mut winners = Vec::new();

    for round in 0..ROUNDS {
        let read = get(&setup.clients[round % 2], &account).await;
        if round == 0 {
            assert_eq!(read.etag, "\"0\"", "the default resource's etag");
        }
        let mut contenders = JoinSet::new();
        for contender in 0..CONTENDERS {
            let front_end = contender % 2;
            let client = setup.clients[front_end].clone();
            let request = SetRecordingSettingsRequest {
                etag: read.etag.clone(),
                ..set_request(&account, &format!("round {round} contender {contender}"))
            };
            contenders.spawn(async move { (contender, front_end, set(&client, request).await) });
        }
        let mut results = Vec::new();
        while let Some(result) = contenders.join_next().await {
            results.push(joined(result));
        }
        results.sort_by_key(|(contender, _, _)| *contender);

        let (won, lost): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, _, r)| r.is_ok());
        assert_eq!(
            won.len(),
            1,
            "round {round}: {CONTENDERS} Sets carried etag {}; exactly one must succeed, \
             these did: {won:?}; the others: {lost:?}",
            read.etag
        );
        let (contender, front_end, winner) = won.into_iter().next().unwrap();
        let winner = winner.unwrap();
        assert_eq!(
            winner.friendly_name.as_deref(),
            Some(format!("round {round} contender {contender}").as_str()),
            "round {round}: the winner's answer holds another write"
        );
        assert!(
            winner.revision > read.revision,
            "round {round}: the winner's revision {} is not after the read's {}",
            winner.revision,
            read.revision
        );
        for (loser, loser_front_end, result) in &lost {
            let status = result.as_ref().unwrap_err();
            assert_eq!(
                status.code(),
                Code::Aborted,
                "round {round}: contender {loser} (through {}) lost to contender \
                 {contender} and must fail with ABORTED: {status:?}",
                FRONT_ENDS[*loser_front_end]
            );
            assert!(
                status.message().contains(&winner.etag),
                "round {round}: contender {loser}'s ABORTED must name the current etag, \
                 the winner's {}: {:?}",
                winner.etag,
                status.message()
            );
        }
        let other = 1 - front_end;
        let seen = get(&setup.clients[other], &account).await;
        assert_eq!(
            seen, winner,
            "round {round}: a Get through {} must answer what the winner (contender \
             {contender}, through {}) was answered",
            FRONT_ENDS[other], FRONT_ENDS[front_end]
        );
        winners.push(winner);
    }

    // The losers changed nothing: the history is the winners, newest first.
    winners.reverse();
    let history = history(&setup.clients[0], &account, 5).await;
    assert_eq!(
        history, winners,
        "the history of {account} must be exactly the {ROUNDS} winners, newest first"
    );
    eprintln!("{ROUNDS} rounds in {:?}", started.elapsed());
}

// ---------------------------------------------------------------------
// 3. A recorded history of Gets and Sets is linearizable.
// ---------------------------------------------------------------------

const CLIENTS: usize = 6;
const LIN_ACCOUNTS: usize = 3;
const OPS_PER_CLIENT: usize = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Set,
}

/// One recorded operation.
#[derive(Clone, Debug)]
struct Op {
    client: usize,
    /// Its place in its client's sequence.
    seq: usize,
    account: usize,
    kind: Kind,
    /// The friendly_name written, or read ("" for the default resource).
    value: String,
    revision: u64,
    invoked: Instant,
    returned: Instant,
}

impl Op {
    fn describe(&self, t0: Instant) -> String {
        let micros = |t: Instant| t.duration_since(t0).as_micros();
        format!(
            "client {} (front end {}) op {}: {:?} {:?} at revision {}, [{} us, {} us]",
            self.client,
            FRONT_ENDS[self.client % 2],
            self.seq,
            self.kind,
            self.value,
            self.revision,
            micros(self.invoked),
            micros(self.returned)
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recorded_history_is_linearizable() {
    if !etcd_available() {
        return;
    }
    let setup = two_front_ends("/consistency-linearizable/").await;
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let started = Instant::now();

    let mut clients = JoinSet::new();
    for c in 0..CLIENTS {
        // A connection of its own per client, half to A, half to B.
        let client = connect(setup.addrs[c % 2]).await;
        clients.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
            let mut ops = Vec::with_capacity(OPS_PER_CLIENT);
            for seq in 0..OPS_PER_CLIENT {
                let a = rng.usize(..LIN_ACCOUNTS);
                let account = account(a);
                let kind = if rng.bool() { Kind::Get } else { Kind::Set };
                let written = format!("c{c}-{seq}");
                let invoked = Instant::now();
                let answer = match kind {
                    Kind::Get => get(&client, &account).await,
                    Kind::Set => set(&client, set_request(&account, &written))
                        .await
                        .unwrap_or_else(|status| {
                            panic!("client {c}'s Set {seq} of {account}: {status:?}")
                        }),
                };
                let returned = Instant::now();
                let value = answer.friendly_name.unwrap_or_default();
                if kind == Kind::Set {
                    assert_eq!(value, written, "client {c}'s Set {seq} answer");
                }
                ops.push(Op {
                    client: c,
                    seq,
                    account: a,
                    kind,
                    value,
                    revision: answer.revision,
                    invoked,
                    returned,
                });
            }
            ops
        });
    }
    let mut ops = Vec::new();
    while let Some(result) = clients.join_next().await {
        ops.extend(joined(result));
    }
    eprintln!("{} operations in {:?}", ops.len(), started.elapsed());
    let t0 = ops.iter().map(|op| op.invoked).min().expect("operations");

    for a in 0..LIN_ACCOUNTS {
        let account = account(a);
        let mine: Vec<Op> = ops.iter().filter(|op| op.account == a).cloned().collect();
        check_linearizable(&account, &mine, t0, seed);
        check_revisions(&account, &mine, t0, seed);
    }
    eprintln!("recorded and checked in {:?}", started.elapsed());
}

/// (a) stateright's checker on `ops` (one account's), with the friendly
/// name as a register whose initial value is the default resource's
/// (none: "").
fn check_linearizable(account: &str, ops: &[Op], t0: Instant, seed: u64) {
    let mut mine: Vec<&Op> = ops.iter().collect();
    mine.sort_by_key(|op| op.invoked);
    let table = table(&mine, t0);
    // Events in real-time order; on a tie, the invocation first (the
    // two operations are then taken as concurrent, the weaker claim).
    let mut events: Vec<(Instant, bool, &Op)> = mine
        .iter()
        .flat_map(|op| [(op.invoked, false, *op), (op.returned, true, *op)])
        .collect();
    events.sort_by_key(|(at, is_return, _)| (*at, *is_return));
    let mut tester = LinearizabilityTester::new(Register(String::new()));
    for (_, is_return, op) in events {
        let fed = match (is_return, op.kind) {
            (false, Kind::Get) => tester.on_invoke(op.client, RegisterOp::Read),
            (false, Kind::Set) => tester.on_invoke(op.client, RegisterOp::Write(op.value.clone())),
            (true, Kind::Get) => tester.on_return(op.client, RegisterRet::ReadOk(op.value.clone())),
            (true, Kind::Set) => tester.on_return(op.client, RegisterRet::WriteOk),
        };
        if let Err(e) = fed {
            panic!("feeding the checker {}: {e}", op.describe(t0));
        }
    }
    let checking = Instant::now();
    let serialized = tester.serialized_history();
    let overlapping = mine
        .iter()
        .enumerate()
        .flat_map(|(i, x)| mine[i + 1..].iter().map(move |y| (x, y)))
        .filter(|(x, y)| x.invoked < y.returned && y.invoked < x.returned)
        .count();
    eprintln!(
        "{account}: {} operations ({overlapping} concurrent pairs) checked in {:?}",
        mine.len(),
        checking.elapsed()
    );
    assert!(
        serialized.is_some(),
        "the history of {account} is not linearizable (seed {seed}): no order of its \
         operations respects both real time and register semantics. By invocation \
         (times from the first invocation):\n{table}"
    );
}

/// (b) The same, by revision, each rule stated on its own.
fn check_revisions(account: &str, ops: &[Op], t0: Instant, seed: u64) {
    let mut mine: Vec<&Op> = ops.iter().collect();
    mine.sort_by_key(|op| op.invoked);
    let table = table(&mine, t0);
    let sets: HashMap<&str, &Op> = mine
        .iter()
        .filter(|op| op.kind == Kind::Set)
        .map(|op| (op.value.as_str(), *op))
        .collect();
    for op in mine.iter().filter(|op| op.kind == Kind::Set) {
        for earlier in mine
            .iter()
            .filter(|e| e.kind == Kind::Set && e.returned < op.invoked)
        {
            assert!(
                earlier.revision < op.revision,
                "on {account}, a Set acknowledged before another was invoked has a \
                 revision not below it: {} then {} (seed {seed})\n{table}",
                earlier.describe(t0),
                op.describe(t0)
            );
        }
    }
    for op in mine.iter().filter(|op| op.kind == Kind::Get) {
        // What it read is a write, with that write's revision...
        if op.value.is_empty() {
            assert_eq!(
                op.revision,
                0,
                "on {account}, a Get read the default resource with a revision: {} \
                 (seed {seed})",
                op.describe(t0)
            );
        } else {
            let write = sets.get(op.value.as_str()).unwrap_or_else(|| {
                panic!(
                    "on {account}, a Get read a value nobody wrote there: {} (seed {seed})",
                    op.describe(t0)
                )
            });
            assert_eq!(
                op.revision,
                write.revision,
                "on {account}, a Get read a write with another revision than the write \
                 was answered: {} read {} (seed {seed})",
                op.describe(t0),
                write.describe(t0)
            );
            // ...not from the future...
            assert!(
                write.invoked < op.returned,
                "on {account}, a Get read a write invoked only after the Get returned: \
                 {} read {} (seed {seed})",
                op.describe(t0),
                write.describe(t0)
            );
        }
        // ...and not older than any write acknowledged before it began.
        if let Some(newest) = mine
            .iter()
            .filter(|w| w.kind == Kind::Set && w.returned < op.invoked)
            .max_by_key(|w| w.revision)
        {
            assert!(
                op.revision >= newest.revision,
                "on {account}, a stale read: {} began after {} was acknowledged, but \
                 answers an older revision (seed {seed})\n{table}",
                op.describe(t0),
                newest.describe(t0)
            );
        }
    }
    // Each client's view of the account never goes back, and its own
    // Set is newer than anything it saw before.
    let mut by_client: BTreeMap<usize, Vec<&Op>> = BTreeMap::new();
    for op in &mine {
        by_client.entry(op.client).or_default().push(op);
    }
    for (client, seen) in by_client {
        for pair in seen.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let ok = match after.kind {
                Kind::Get => after.revision >= before.revision,
                Kind::Set => after.revision > before.revision,
            };
            assert!(
                ok,
                "on {account}, client {client}'s view went back: {} then {} (seed {seed})",
                before.describe(t0),
                after.describe(t0)
            );
        }
    }
}

/// `ops`, one a line (times from `t0`).
fn table(ops: &[&Op], t0: Instant) -> String {
    ops.iter().fold(String::new(), |mut table, op| {
        let _ = writeln!(table, "  {}", op.describe(t0));
        table
    })
}

// ---------------------------------------------------------------------
// The checks above catch what they look for: made-up histories with the
// anomaly each looks for (no etcd needed).
// ---------------------------------------------------------------------

/// A made-up recorded operation, times in milliseconds from `t0`.
fn made_up(
    t0: Instant,
    client: usize,
    kind: Kind,
    value: &str,
    revision: u64,
    millis: (u64, u64),
) -> Op {
    Op {
        client,
        seq: 0,
        account: 0,
        kind,
        value: value.to_owned(),
        revision,
        invoked: t0 + std::time::Duration::from_millis(millis.0),
        returned: t0 + std::time::Duration::from_millis(millis.1),
    }
}

/// A Set acknowledged before a Get began, and the Get reading the default.
fn stale_read(t0: Instant) -> Vec<Op> {
    vec![
        made_up(t0, 0, Kind::Set, "c0-0", 5, (0, 1)),
        made_up(t0, 1, Kind::Get, "", 0, (2, 3)),
    ]
}

#[test]
#[should_panic(expected = "is not linearizable")]
fn the_linearizability_check_catches_a_stale_read() {
    let t0 = Instant::now();
    check_linearizable(&account(0), &stale_read(t0), t0, 0);
}

#[test]
#[should_panic(expected = "a stale read")]
fn the_revision_check_catches_a_stale_read() {
    let t0 = Instant::now();
    check_revisions(&account(0), &stale_read(t0), t0, 0);
}

#[test]
fn both_checks_accept_a_read_concurrent_with_a_write_seeing_either_value() {
    let t0 = Instant::now();
    for (value, revision) in [("", 0), ("c0-0", 5)] {
        let ops = vec![
            made_up(t0, 0, Kind::Set, "c0-0", 5, (0, 3)),
            made_up(t0, 1, Kind::Get, value, revision, (1, 2)),
        ];
        check_linearizable(&account(0), &ops, t0, 0);
        check_revisions(&account(0), &ops, t0, 0);
    }
}

#[test]
#[should_panic(expected = "lost update")]
fn the_merge_check_catches_a_lost_update() {
    let account = account(0);
    let state =
        |revision, name: &str, credentials: Option<&str>, key: Option<&str>| RecordingSettings {
            account_sid: account.clone(),
            friendly_name: Some(name.to_owned()),
            aws_credentials_sid: credentials.map(str::to_owned),
            encryption_key_sid: key.map(str::to_owned),
            revision,
            ..Default::default()
        };
    let (credentials, key) = (format!("CR{:032x}", 1), format!("CR{:032x}", 2));
    let acks = [
        Ack {
            writer: 0,
            n: 0,
            front_end: 0,
            field: Field::Credentials,
            sid: credentials.clone(),
            friendly_name: "first".to_owned(),
            answer: state(10, "first", Some(&credentials), None),
        },
        // Merged into the default instead of into revision 10's state:
        // the credentials written at 10 are lost.
        Ack {
            writer: 1,
            n: 0,
            front_end: 1,
            field: Field::EncryptionKey,
            sid: key.clone(),
            friendly_name: "second".to_owned(),
            answer: state(11, "second", None, Some(&key)),
        },
    ];
    let history: Vec<RecordingSettings> = acks.iter().rev().map(|a| a.answer.clone()).collect();
    check_merged_history(&account, &acks, &history);
}
