//! Power loss, not just process death (issue 14): an acknowledged write
//! survives losing the page cache.
//!
//! The real binary serves from a data directory on a lossyfs mount (see the
//! `lossyfs` crate), which keeps only what an fsync/fdatasync covered when
//! the power is cut. Each cycle: start settingsd on the directory, check
//! that every acknowledged write (or a newer one) is there and every record
//! decodes, run concurrent writers over gRPC and the HTTP bridge on both
//! resources of several accounts, and a writer of resets (an acknowledged
//! reset must stay one: the resource at its default, or a newer write), at
//! a random moment cut the power (every
//! third cycle a torn cut that keeps a random subset of unsynced pages) and
//! SIGKILL settingsd, unmount and mount again.
//!
//! The negative control runs the same cycles with a build whose commit skips
//! the fdatasync after sled's flush (cargo feature `unsafe-skip-fdatasync`,
//! built into a target directory of its own): it must lose acknowledged
//! writes, or the harness proves nothing.
//!
//! `POWERLOSS_CYCLES=N` sets the number of cycles of the main test (the long
//! run); `POWERLOSS_SEED` replays a run. Where FUSE is missing the tests say
//! so and pass, unless `SETTINGSD_REQUIRE_FUSE=1` (as in CI).

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use lossyfs::{Control, CutMode, CutReport, Mounted};
use settingsd::pb::SetRecordingSettingsRequest;
use tokio::process::Command;
use tonic::Request;

use crate::{
    crash::{account, read_every_state, Acked},
    helpers::*,
    http_bridge::http,
};

/// Cycles in the suite: enough for a few torn cuts, small enough for CI.
const SUITE_CYCLES: usize = 12;
const GRPC_WRITERS: usize = 6;
const HTTP_WRITERS: usize = 4;
/// Writers of `ResetSettings` (one resource of one account at a time, so
/// that its answer's revision is that deletion's).
const RESET_WRITERS: usize = 1;
/// The "friendly name" an acknowledged reset leaves: no name, revision 0.
const RESET: &str = "(reset)";
const ACCOUNTS: usize = 12;

/// Whether FUSE can be used here; if not, says loudly which test is
/// skipped and why, or fails when `SETTINGSD_REQUIRE_FUSE=1`.
pub fn fuse_or_skip(test: &str) -> bool {
    match lossyfs::fuse_available() {
        Ok(()) => true,
        Err(why) => {
            assert!(
                std::env::var_os("SETTINGSD_REQUIRE_FUSE").is_none_or(|v| v != "1"),
                "{test}: SETTINGSD_REQUIRE_FUSE=1 but {why}"
            );
            // Straight to stderr, past the test harness's capture: a skip
            // must be seen even when the test passes.
            let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {why} ***\n");
            false
        }
    }
}

/// A disk that can lose power: a lossyfs mount over a backing directory.
pub struct LossyDisk {
    dir: tempfile::TempDir,
    mount: Option<Mounted>,
}

impl LossyDisk {
    /// A new, empty disk, powered on.
    pub fn new() -> LossyDisk {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("backing")).unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        let mut disk = LossyDisk { dir, mount: None };
        disk.power_on();
        disk
    }

    /// settingsd's data directory, on the mount; settingsd creates it.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("mnt/data")
    }

    pub fn control(&self) -> Control {
        self.mount.as_ref().expect("powered on").control()
    }

    /// Cuts the power: from now on the disk holds only what was synced (or,
    /// torn, some of the rest), and every change fails with EIO, as on a
    /// machine whose power just went. Kill the processes using it, then
    /// [`LossyDisk::power_on_again`].
    pub fn cut(&self, mode: CutMode) -> CutReport {
        self.control().cut(mode).expect("the cut")
    }

    /// A new mount over what the cut left (no process may use the old one).
    pub fn power_on_again(&mut self) {
        let mount = self.mount.take().expect("mounted");
        mount.unmount().expect("unmount after the cut");
        self.power_on();
    }

    fn power_on(&mut self) {
        let dir = self.dir.path();
        self.mount = Some(lossyfs::mount(&dir.join("backing"), &dir.join("mnt")).expect("mount"));
    }
}

impl Drop for LossyDisk {
    /// Unmounts (lazily if a process still holds the mount, as after a
    /// failed test whose server is still dying), and after a failure keeps
    /// what the disk held (the backing directory) for a post-mortem:
    /// settingsd can be started on a copy of it.
    fn drop(&mut self) {
        if let Some(mount) = self.mount.take() {
            // Detached lazily by lossyfs if a process still holds it.
            let _ = mount.unmount();
        }
        if std::thread::panicking() {
            let kept = self.dir.path().join("backing");
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = dir.keep();
            eprintln!("the failed run's disk is kept in {}", kept.display());
        }
    }
}

/// `binary serve` on port 0 with its data directory on `disk`.
pub async fn start_on(binary: &Path, disk: &LossyDisk) -> BinaryServer {
    let mut cmd = Command::new(binary);
    cmd.env("RUST_LOG", "info")
        .kill_on_drop(true)
        .args(SERVE_ON_PORT_0)
        .arg("--data-dir")
        .arg(disk.data_dir());
    let mut server = BinaryServer::spawn_command(cmd).await;
    let ready = server.wait_for_ready_line().await;
    server.grpc_addr = ready["grpc"].as_str().unwrap().parse().unwrap();
    server.http_addr = ready["http"].as_str().unwrap().parse().unwrap();
    server
}

fn acknowledge(acked: &Acked, resource: Resource, account: String, revision: u64, name: String) {
    let mut acked = acked.lock().unwrap();
    let entry = acked.entry((resource, account)).or_default();
    if revision > entry.0 {
        *entry = (revision, name);
    }
}

/// What a run of cycles did.
#[derive(Debug, Default)]
struct Figures {
    cycles: usize,
    torn_cycles: usize,
    /// Sets answered with success, over both transports, and resets that
    /// deleted something.
    writes_acknowledged: usize,
    /// Resource states whose newest acknowledged write was missing after a
    /// cut (older acknowledged writes of the same state are superseded).
    states_lost: usize,
    /// Resource states checked after a cut that had an acknowledged write.
    states_checked: usize,
    /// Cuts that found unsynced data (the others had nothing in flight).
    cuts_with_writes_in_flight: usize,
    /// Torn cuts that kept some unsynced pages.
    torn_cuts_that_kept_pages: usize,
    unsynced_pages_lost: usize,
    unsynced_pages_kept: usize,
}

/// Runs `cycles` power cuts under load against `binary` on a new disk and
/// returns what happened; verifies after every restart (a lost state is
/// counted, an unreadable record fails the test).
async fn power_loss_cycles(binary: &Path, cycles: usize, seed: u64) -> Figures {
    let mut disk = LossyDisk::new();
    let acked: Acked = Arc::default();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut figures = Figures::default();

    for cycle in 0..=cycles {
        // A slower disk some cycles: more writes in flight at the cut.
        let latency = Duration::from_millis(rng.u64(0..=3));
        disk.control().set_sync_latency(latency);
        let mut server = start_on(binary, &disk).await;
        figures.states_checked += acked.lock().unwrap().len();
        figures.states_lost += verify(&server, &acked, cycle, seed).await;
        if cycle == cycles {
            break;
        }

        let mut writers = Vec::new();
        for writer in 0..GRPC_WRITERS + HTTP_WRITERS + RESET_WRITERS {
            let (addr, acked) = (server.grpc_addr, Arc::clone(&acked));
            let http_addr = server.http_addr;
            writers.push(tokio::spawn(async move {
                if writer < GRPC_WRITERS {
                    grpc_writer(addr, writer, cycle, acked).await
                } else if writer < GRPC_WRITERS + HTTP_WRITERS {
                    http_writer(http_addr, writer, cycle, acked).await
                } else {
                    reset_writer(addr, writer, acked).await
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(30..400))).await;
        // The power goes first, then the process with it: a sync in flight
        // at the cut fails, as it would.
        let mode = if cycle % 3 == 2 {
            figures.torn_cycles += 1;
            CutMode::Torn { seed: rng.u64(..) }
        } else {
            CutMode::Drop
        };
        let report = disk.cut(mode);
        server.signal("KILL");
        server.wait().await;
        for writer in writers {
            figures.writes_acknowledged += writer.await.unwrap();
        }
        drop(server);
        disk.power_on_again();
        print_cut(cycle, mode, &report);
        figures.cuts_with_writes_in_flight += usize::from(report.files > 0);
        figures.torn_cuts_that_kept_pages += usize::from(report.pages_kept > 0);
        figures.unsynced_pages_lost += report.pages_lost;
        figures.unsynced_pages_kept += report.pages_kept;
        figures.cycles += 1;
    }
    figures
}

fn print_cut(cycle: usize, mode: CutMode, report: &CutReport) {
    eprintln!("power cut {cycle} ({mode:?}): {report:?}");
}

/// A channel to the server, or `None` if it is already gone (a cut can come
/// before a writer first runs).
async fn connect_while_up(addr: SocketAddr) -> Option<tonic::transport::Channel> {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .ok()
}

/// Sets over gRPC, alternating accounts and resources, until the server
/// is gone; returns how many were acknowledged.
async fn grpc_writer(addr: SocketAddr, writer: usize, cycle: usize, acked: Acked) -> usize {
    let Some(channel) = connect_while_up(addr).await else {
        return 0;
    };
    let grpc = SettingsClient::new(channel);
    for seq in 0.. {
        let account = account((writer * 5 + seq) % ACCOUNTS);
        let resource = Resource::ALL[(writer + seq / ACCOUNTS) % Resource::ALL.len()];
        let name = format!("cycle {cycle} grpc {writer} seq {seq}");
        let request = SetRecordingSettingsRequest {
            account_sid: account.clone(),
            friendly_name: name.clone(),
            ..Default::default()
        };
        let Ok(answer) = grpc.set(resource, Request::new(request.into())).await else {
            return seq; // the server is gone
        };
        acknowledge(&acked, resource, account, answer.revision, name);
    }
    unreachable!()
}

/// Resets of one resource of one account at a time, in turn, until the
/// server is gone; returns how many deleted something (and were
/// acknowledged).
async fn reset_writer(addr: SocketAddr, writer: usize, acked: Acked) -> usize {
    let Some(channel) = connect_while_up(addr).await else {
        return 0;
    };
    let mut admin = settingsd::pb::admin_service_client::AdminServiceClient::new(channel);
    let mut deleted = 0;
    for seq in 0.. {
        let account = account((writer * 7 + seq) % ACCOUNTS);
        let resource = Resource::ALL[(seq / ACCOUNTS) % Resource::ALL.len()];
        let request = settingsd::pb::ResetSettingsRequest {
            account_sid: account.clone(),
            resource: resource.name().to_owned(),
        };
        let Ok(answer) = admin.reset_settings(request).await else {
            return deleted; // the server is gone
        };
        let answer = answer.into_inner();
        if answer.reset_count > 0 {
            deleted += 1;
            acknowledge(&acked, resource, account, answer.revision, RESET.to_owned());
        }
    }
    unreachable!()
}

/// Sets through the HTTP bridge (Twilio's form POST; the ETag names the
/// revision), until the server is gone; returns how many were acknowledged.
async fn http_writer(addr: SocketAddr, writer: usize, cycle: usize, acked: Acked) -> usize {
    let client = http();
    for seq in 0.. {
        let account = account((writer * 5 + seq) % ACCOUNTS);
        let resource = Resource::ALL[(writer + seq / ACCOUNTS) % Resource::ALL.len()];
        let name = format!("cycle {cycle} http {writer} seq {seq}");
        let url = format!("http://{addr}{}", resource.spec().rest_path);
        let sent = client
            .post(url)
            .basic_auth(&account, Some("any"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("FriendlyName={}", name.replace(' ', "+")))
            .send()
            .await;
        let Ok(response) = sent else {
            return seq; // the server is gone
        };
        if !response.status().is_success() {
            return seq;
        }
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let revision = etag.trim_matches('"').parse().expect("a revision etag");
        acknowledge(&acked, resource, account, revision, name);
    }
    unreachable!()
}

/// Reads every resource of every account (a record that does not decode
/// answers DATA_LOSS: that fails the test) and returns how many states lost
/// their newest acknowledged write. What it finds becomes the state later
/// cuts must keep: it is on disk, since this process read it after a cut.
async fn verify(server: &BinaryServer, acked: &Acked, cycle: usize, seed: u64) -> usize {
    let grpc = SettingsClient::new(channel(server.grpc_addr).await);
    let expected = acked.lock().unwrap().clone();
    let mut lost = 0;
    for (key, got) in read_every_state(server, ACCOUNTS, cycle, seed).await {
        let (resource, account) = key.clone();
        if let Some((revision, name)) = expected.get(&key) {
            // Deleted (a Get answers the default, revision 0) by the
            // acknowledged reset, or by a newer one whose answer the cut
            // took: the newest change in the history is then a reset (no
            // name: every Set here names itself) newer than the write.
            let deleted_since = got.revision == 0
                && got.friendly_name.is_none()
                && (name == RESET || newer_reset(&grpc, resource, &account, *revision).await);
            let kept = got.revision > *revision
                || (got.revision == *revision && got.friendly_name.as_deref() == Some(name))
                || deleted_since;
            if deleted_since && name != RESET {
                eprintln!(
                    "cycle {cycle}: {resource} of {account}: a reset newer than acknowledged \
                     revision {revision} survived the cut unacknowledged"
                );
            }
            if !kept {
                lost += 1;
                eprintln!(
                    "cycle {cycle} (seed {seed}): {resource} of {account} lost acknowledged \
                     revision {revision} ({name:?}); found revision {} ({:?})",
                    got.revision, got.friendly_name
                );
            }
        }
        let mut acked = acked.lock().unwrap();
        if got.revision > 0 {
            acked.insert(key, (got.revision, got.friendly_name.unwrap_or_default()));
        } else {
            acked.remove(&key);
        }
    }
    lost
}

/// Whether the newest change of `account`'s `resource` in the history is a
/// reset (listed as the default resource: no name) newer than `revision`.
async fn newer_reset(
    grpc: &SettingsClient,
    resource: Resource,
    account: &str,
    revision: u64,
) -> bool {
    let request = settingsd::contract::ListRevisionsMessage {
        account_sid: account.to_owned(),
        page_size: 1,
        page_token: String::new(),
    };
    let page = grpc
        .list_revisions(resource, Request::new(request))
        .await
        .expect("history");
    page.revisions
        .first()
        .is_some_and(|s| s.revision > revision && s.friendly_name.is_none())
}

/// The seed of this run: `POWERLOSS_SEED`, or a random one (printed).
fn seed() -> u64 {
    std::env::var("POWERLOSS_SEED")
        .ok()
        .map(|s| s.parse().expect("POWERLOSS_SEED is a number"))
        .unwrap_or_else(|| fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_under_load_never_lose_an_acknowledged_write() {
    let test = "power_cuts_under_load_never_lose_an_acknowledged_write";
    if !fuse_or_skip(test) {
        return;
    }
    let cycles = std::env::var("POWERLOSS_CYCLES")
        .ok()
        .map(|n| n.parse().expect("POWERLOSS_CYCLES is a number"))
        .unwrap_or(SUITE_CYCLES);
    let seed = seed();
    let started = std::time::Instant::now();

    let figures = power_loss_cycles(Path::new(env!("CARGO_BIN_EXE_settingsd")), cycles, seed).await;

    eprintln!("{test} (seed {seed}, {:?}): {figures:?}", started.elapsed());
    assert_eq!(figures.states_lost, 0, "seed {seed}: {figures:?}");
    assert!(
        figures.writes_acknowledged > cycles * (GRPC_WRITERS + HTTP_WRITERS),
        "the load was real: {figures:?}"
    );
    // Cuts that find nothing unsynced test nothing; about half find some.
    assert!(
        figures.cuts_with_writes_in_flight > 0,
        "some cuts landed on writes in flight: {figures:?}"
    );
}

/// Builds settingsd with `unsafe-skip-fdatasync` into its own target
/// directory (once; later runs are no-ops) and returns the binary.
async fn negative_control_binary() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("negative-control");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--locked", "--quiet", "--bin", "settingsd"])
        .args(["--features", "unsafe-skip-fdatasync", "--target-dir"])
        .arg(&target)
        .status()
        .await
        .expect("run cargo");
    assert!(status.success(), "building the negative control failed");
    target.join("debug/settingsd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fdatasync_after_sleds_flush_power_cuts_lose_acknowledged_writes() {
    let test = "without_the_fdatasync_after_sleds_flush_power_cuts_lose_acknowledged_writes";
    if !fuse_or_skip(test) {
        return;
    }
    let binary = negative_control_binary().await;
    let seed = seed();

    let figures = power_loss_cycles(&binary, 3, seed).await;

    eprintln!("{test} (seed {seed}): {figures:?}");
    assert!(
        figures.writes_acknowledged > 0,
        "the load was real: {figures:?}"
    );
    assert!(
        figures.states_lost > 0,
        "the harness must see the loss of a commit without fdatasync: {figures:?}"
    );
}

/// The smallest reproduction of the first finding: the data directory's
/// own entry, in its parent, was never fsynced.
#[tokio::test]
async fn a_new_data_directory_survives_a_power_cut_right_after_the_first_open() {
    use settingsd::store::{
        sled::{SledStore, StoreOptions},
        Store,
    };
    if !fuse_or_skip("a_new_data_directory_survives_a_power_cut_right_after_the_first_open") {
        return;
    }
    let mut disk = LossyDisk::new();
    let data_dir = disk.data_dir().join("nested/deeper");
    let store = SledStore::open(&StoreOptions::new(&data_dir)).unwrap();
    store.close().await.unwrap();
    drop(store);
    wait_until_released(&data_dir);

    disk.cut(CutMode::Drop);
    disk.power_on_again();

    assert!(
        SledStore::exists(&data_dir),
        "the store's directory and files survive the cut"
    );
}

/// The smallest reproduction of the second finding: a torn cut during the
/// first open can leave sled's conf as zeros, which sled refuses to open.
#[tokio::test]
async fn a_store_whose_sled_conf_is_all_zeros_opens_again() {
    use settingsd::store::sled::{SledStore, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    drop(SledStore::open(&StoreOptions::new(dir.path())).unwrap());
    wait_until_released(dir.path());
    let conf = dir.path().join("conf");
    let len = std::fs::metadata(&conf).unwrap().len() as usize;
    std::fs::write(&conf, vec![0; len]).unwrap();

    let reopened = SledStore::open(&StoreOptions::new(dir.path()));

    assert!(reopened.is_ok(), "{:?}", reopened.err());
}
