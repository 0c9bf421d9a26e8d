//! Real I/O errors in the real, unmodified binary (issue 14): the disk
//! under settingsd (a lossyfs mount) fails fsync/fdatasync with EIO, or
//! writes with ENOSPC. The same promises as the in-process fault tests
//! (`faults`): Sets fail with UNAVAILABLE and nothing more is acknowledged,
//! reads go on, health turns NOT_SERVING, and once the fault clears the
//! store recovers; then a power cut shows every acknowledged write durable.

use lossyfs::{Control, CutMode};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    faults::{assert_stopped_then_recovered, health_at_becomes, WritesStopped},
    helpers::*,
    http_bridge::post,
    powerloss::{fuse_or_skip, start_on, LossyDisk},
};

/// The fault a test injects, and how it clears.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Every fsync and fdatasync fails with EIO.
    FailingSyncs,
    /// Every write fails with ENOSPC.
    DiskFull,
}

impl Fault {
    fn set(self, control: &Control, on: bool) {
        match self {
            Fault::FailingSyncs => control.fail_syncs(if on { u64::MAX } else { 0 }),
            Fault::DiskFull => control.set_disk_full(on),
        }
    }
}

/// The scenario of both tests: a write acknowledged before the fault,
/// refused writes during it (gRPC and HTTP), a read, recovery, a write
/// after it; then SIGKILL, a power cut, and a restart that must hold both
/// acknowledged writes.
async fn a_real_fault_stops_writes_until_it_clears(fault: Fault) {
    let mut disk = LossyDisk::new();
    let mut server = start_on(std::path::Path::new(env!("CARGO_BIN_EXE_settingsd")), &disk).await;
    let grpc = SettingsClient::new(channel(server.grpc_addr).await);
    let set = |account: &str, name: &str| {
        let request = tonic::Request::new(set_request(account, name).into());
        let grpc = grpc.clone();
        async move { grpc.set(Resource::Recording, request).await }
    };
    let acknowledged = set(ACCOUNT, "before the fault").await.unwrap();

    fault.set(&disk.control(), true);
    // Many writers at once with long names, so that the failed commit's
    // data spans several pages of sled's log: pages a failed fsync lost
    // (lossyfs, as Linux, marks them clean) that no later write touches
    // again. Recovery must write them again before it trusts the log.
    let long_name = "n".repeat(250);
    let during: Vec<_> = (0..48)
        .map(|i| {
            let request =
                tonic::Request::new(set_request(&format!("AC{i:032x}"), &long_name).into());
            let grpc = grpc.clone();
            tokio::spawn(async move { grpc.set(Resource::Recording, request).await })
        })
        .collect();
    let mut failed_during = Vec::new();
    for set in during {
        failed_during.push(set.await.unwrap().unwrap_err().code());
    }
    let failed = set(ACCOUNT, "during the fault").await.unwrap_err();
    let url = format!(
        "http://{}{}",
        server.http_addr,
        Resource::Recording.spec().rest_path
    );
    let http = post(&url, ACCOUNT, "any", "FriendlyName=during+the+fault").await;
    let refused = set(OTHER_ACCOUNT, "refused").await.unwrap_err();
    health_at_becomes(server.grpc_addr, ServingStatus::NotServing).await;
    let read = grpc
        .get(
            Resource::Recording,
            tonic::Request::new(get_request(OTHER_ACCOUNT).into()),
        )
        .await
        .unwrap();
    fault.set(&disk.control(), false);
    health_at_becomes(server.grpc_addr, ServingStatus::Serving).await;
    let after = set(OTHER_ACCOUNT, "after the fault").await.unwrap();
    disk.cut(CutMode::Drop);
    server.signal("KILL");
    server.wait().await;
    drop(server);
    disk.power_on_again();
    let restarted = start_on(std::path::Path::new(env!("CARGO_BIN_EXE_settingsd")), &disk).await;
    let grpc = SettingsClient::new(channel(restarted.grpc_addr).await);
    let get = |account: &'static str| {
        let grpc = grpc.clone();
        async move {
            grpc.get(
                Resource::Recording,
                tonic::Request::new(get_request(account).into()),
            )
            .await
            .unwrap()
        }
    };
    let (survived, other) = (get(ACCOUNT).await, get(OTHER_ACCOUNT).await);

    assert!(
        failed_during.iter().all(|c| *c == Code::Unavailable),
        "{fault:?}: {failed_during:?}"
    );
    assert_stopped_then_recovered(
        &format!("{fault:?}"),
        WritesStopped {
            failed,
            http,
            refused,
            read,
            after: after.clone(),
        },
    )
    .await;
    assert!(
        survived.revision >= acknowledged.revision,
        "{fault:?}: the acknowledged write (or an unacknowledged one after it) survived the \
         power cut: {survived:?}"
    );
    assert_eq!(
        other, after,
        "{fault:?}: the write after recovery survived the power cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_eio_from_fdatasync_stops_writes_until_it_clears_and_loses_nothing_acknowledged() {
    if fuse_or_skip(
        "a_real_eio_from_fdatasync_stops_writes_until_it_clears_and_loses_nothing_acknowledged",
    ) {
        a_real_fault_stops_writes_until_it_clears(Fault::FailingSyncs).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_enospc_on_write_stops_writes_until_it_clears_and_loses_nothing_acknowledged() {
    if fuse_or_skip(
        "a_real_enospc_on_write_stops_writes_until_it_clears_and_loses_nothing_acknowledged",
    ) {
        a_real_fault_stops_writes_until_it_clears(Fault::DiskFull).await;
    }
}
