//! kill -9 under load never loses an acknowledged write.
//!
//! The real binary takes concurrent Sets from many clients and is SIGKILLed
//! at a random moment; after a restart on the same directory, every
//! resource of every account must hold its last acknowledged write or a
//! newer one, and every record must still decode. Writers alternate between
//! the resources. (SIGKILL tests the process dying, not the machine: the
//! kernel's page cache survives it. Power loss is `powerloss`'s.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use settingsd::pb::SetRecordingSettingsRequest;
use tonic::Request;

use crate::helpers::*;

const CYCLES: usize = 20;
const CLIENTS: usize = 16;
const ACCOUNTS: usize = 24;

/// The `i`th account of a crash test.
pub fn account(i: usize) -> String {
    format!("AC{i:032x}")
}

/// The newest acknowledged write per resource and account: (revision,
/// friendly name).
pub type Acked = Arc<Mutex<HashMap<(Resource, String), (u64, String)>>>;

/// Every resource of the first `accounts` accounts, as a Get answers it
/// after a restart; a record that does not decode (DATA_LOSS) fails the
/// test, naming the cycle and the seed that replays it.
pub async fn read_every_state(
    server: &BinaryServer,
    accounts: usize,
    cycle: usize,
    seed: u64,
) -> Vec<((Resource, String), SettingsMessage)> {
    let grpc = SettingsClient::new(channel(server.grpc_addr).await);
    let mut states = Vec::new();
    for (i, resource) in (0..accounts).flat_map(|i| Resource::ALL.map(|r| (i, r))) {
        let account = account(i);
        let got = grpc
            .get(resource, Request::new(get_request(&account).into()))
            .await
            .unwrap_or_else(|s| {
                panic!("cycle {cycle} (seed {seed}): {resource} of {account} unreadable: {s}")
            });
        states.push(((resource, account), got));
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_never_loses_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let acked: Acked = Arc::default();
    let mut total_acked = 0usize;
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);

    for cycle in 0..CYCLES {
        let mut server = BinaryServer::start(dir.path()).await;
        verify(&server, &acked, cycle, seed).await;

        let writers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let addr = server.grpc_addr;
                let acked = Arc::clone(&acked);
                tokio::spawn(async move {
                    let grpc = SettingsClient::new(channel(addr).await);
                    let mut n = 0usize;
                    for seq in 0.. {
                        let account = account((client * 7 + seq) % ACCOUNTS);
                        let resource = Resource::ALL[(client + seq) % Resource::ALL.len()];
                        let name = format!("cycle {cycle} client {client} seq {seq}");
                        let request = SetRecordingSettingsRequest {
                            account_sid: account.clone(),
                            friendly_name: name.clone(),
                            ..Default::default()
                        };
                        let request = Request::new(request.into());
                        let Ok(answer) = grpc.set(resource, request).await else {
                            return n; // the server is gone
                        };
                        let revision = answer.revision;
                        let mut acked = acked.lock().unwrap();
                        let key = (resource, account);
                        let entry = acked.entry(key).or_insert((0, String::new()));
                        if revision > entry.0 {
                            *entry = (revision, name);
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(rng.u64(20..250))).await;
        server.signal("KILL");
        server.wait().await;
        for writer in writers {
            total_acked += writer.await.unwrap();
        }
    }

    let server = BinaryServer::start(dir.path()).await;
    verify(&server, &acked, CYCLES, seed).await;
    eprintln!("{CYCLES} kill cycles, {total_acked} acknowledged writes verified (seed {seed})");
    assert!(
        total_acked > CYCLES * CLIENTS,
        "the load was real: only {total_acked} writes acknowledged"
    );
}

/// Every resource of every account holds its newest acknowledged write, or
/// a newer one, and decodes (a record that does not would answer DATA_LOSS).
async fn verify(server: &BinaryServer, acked: &Acked, cycle: usize, seed: u64) {
    let expected = acked.lock().unwrap().clone();
    for ((resource, account), got) in read_every_state(server, ACCOUNTS, cycle, seed).await {
        if let Some((revision, name)) = expected.get(&(resource, account.clone())) {
            assert!(
                got.revision >= *revision,
                "cycle {cycle} (seed {seed}): {resource} of {account} lost acknowledged \
                 revision {revision} ({name:?}); found {}",
                got.revision
            );
            if got.revision == *revision {
                assert_eq!(got.friendly_name.as_deref(), Some(name.as_str()));
            }
        }
    }
}
