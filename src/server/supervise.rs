//! Keeps gRPC health true to whether the store takes writes, and asks the
//! store to recover after a failed commit.

use std::time::Duration;

use tonic_health::ServingStatus;

use crate::{
    contract::pb::{
        admin_service_server::AdminServiceServer,
        composition_settings_service_server::CompositionSettingsServiceServer,
        recording_settings_service_server::RecordingSettingsServiceServer,
    },
    grpc::{AdminGrpc, CompositionSettingsGrpc, RecordingSettingsGrpc},
    store::SharedStore,
};

/// How often the store supervisor looks at the store (so health reflects a
/// failed or stuck commit within this), and, after a failed commit, checks
/// whether the disk takes writes again.
const SUPERVISE_INTERVAL: Duration = Duration::from_millis(500);

/// Forever: keeps health true to whether writes work, and brings writes
/// back after a failed commit. Health is NOT_SERVING while a failed commit
/// has stopped writes (until [`crate::store::Store::recover`] succeeds, which this retries)
/// and while a commit has been running longer than `stall_limit` (a stuck
/// disk: writers are waiting on it).
pub(super) async fn supervise_store(
    store: SharedStore,
    health: tonic_health::server::HealthReporter,
    stall_limit: Duration,
) {
    let mut healthy = true;
    let mut attempts = 0_u64;
    loop {
        tokio::time::sleep(SUPERVISE_INTERVAL).await;
        // Health first: a recovery attempt can take long (on etcd, up to
        // --etcd-timeout), and NOT_SERVING should not wait for it.
        report(&store, &health, stall_limit, &mut healthy).await;
        if store.health().write_failure.is_some() {
            match store.recover().await {
                Ok(()) => attempts = 0,
                Err(e) => {
                    // Every 10 s, not every attempt: a full disk may last hours.
                    if attempts % 20 == 0 {
                        tracing::warn!(error = %e, attempts, "store not recovered yet; retrying");
                    }
                    attempts += 1;
                }
            }
            report(&store, &health, stall_limit, &mut healthy).await;
        }
    }
}

/// Sets health from the store's state, logging a change.
async fn report(
    store: &SharedStore,
    health: &tonic_health::server::HealthReporter,
    stall_limit: Duration,
    healthy: &mut bool,
) {
    let state = store.health();
    let failure = state.write_failure;
    let stalled = state.commit_running_for.filter(|d| *d >= stall_limit);
    let now_healthy = failure.is_none() && stalled.is_none();
    if now_healthy == *healthy {
        return;
    }
    *healthy = now_healthy;
    if now_healthy {
        tracing::info!("writes work again: health is SERVING");
        serving(health).await;
        return;
    }
    match (failure, stalled) {
        (Some(error), _) => tracing::error!(
            %error,
            "writes stopped (a failed commit, or a cluster that does not answer): health is \
             NOT_SERVING until the store takes writes again"
        ),
        (None, stalled) => tracing::error!(
            running_for = ?stalled,
            "a commit (flush + fdatasync) is stuck: health is NOT_SERVING until it finishes"
        ),
    }
    not_serving(health).await;
}

/// Reports every service, and the server as a whole, as SERVING.
pub(super) async fn serving(health: &tonic_health::server::HealthReporter) {
    health
        .set_serving::<RecordingSettingsServiceServer<RecordingSettingsGrpc>>()
        .await;
    health
        .set_serving::<CompositionSettingsServiceServer<CompositionSettingsGrpc>>()
        .await;
    health.set_serving::<AdminServiceServer<AdminGrpc>>().await;
    health.set_service_status("", ServingStatus::Serving).await;
}

/// Reports every service, and the server as a whole, as NOT_SERVING.
pub(super) async fn not_serving(health: &tonic_health::server::HealthReporter) {
    health
        .set_not_serving::<RecordingSettingsServiceServer<RecordingSettingsGrpc>>()
        .await;
    health
        .set_not_serving::<CompositionSettingsServiceServer<CompositionSettingsGrpc>>()
        .await;
    health
        .set_not_serving::<AdminServiceServer<AdminGrpc>>()
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
}
