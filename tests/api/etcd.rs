//! settingsd front ends on a real etcd cluster (`serve --store etcd`): two
//! front ends serve the same data, watches on one see writes made through
//! the other, and concurrent writers through both lose no update.
//!
//! Each front end is the real binary; the cluster is three real etcd
//! members (see `etcd_cluster`). The semantic suites run on etcd too, in
//! process: `SETTINGSD_TEST_STORE=etcd` (see `helpers::open_store`).

use std::path::Path;

use crate::{
    etcd_cluster::{etcd_available, EtcdCluster},
    helpers::*,
};

/// `settingsd serve --store etcd` on `cluster`, under `prefix`, on port 0.
pub async fn front_end(cluster: &EtcdCluster, prefix: &str) -> BinaryServer {
    front_end_with(cluster, prefix, &[]).await
}

/// [`front_end`] with extra arguments.
pub async fn front_end_with(cluster: &EtcdCluster, prefix: &str, args: &[&str]) -> BinaryServer {
    let endpoints = cluster.endpoints_arg();
    let mut all = vec![
        "--store",
        "etcd",
        "--etcd-endpoints",
        &endpoints,
        "--etcd-prefix",
        prefix,
    ];
    all.extend_from_slice(args);
    // --data-dir is not used with etcd: a path that does not exist shows it.
    BinaryServer::start_with(Path::new("/nonexistent/settingsd-data"), &all).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_through_one_front_end_is_read_and_watched_through_the_other_in_order() {
    if !etcd_available() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .unwrap();
    let a = front_end(&cluster, "/two-front-ends/").await;
    let b = front_end(&cluster, "/two-front-ends/").await;
    let (a_client, b_client) = (connect(a.grpc_addr).await, connect(b.grpc_addr).await);
    let first = a_client
        .clone()
        .set_recording_settings(set_request(ACCOUNT, "through a"))
        .await
        .unwrap()
        .into_inner();
    let mut watch = b_client
        .clone()
        .watch_recording_settings(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: first.revision,
        })
        .await
        .unwrap()
        .into_inner();

    let read_on_b = b_client
        .clone()
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .unwrap()
        .into_inner();
    let mut written = vec![first.clone()];
    for i in 0..5 {
        let client = if i % 2 == 0 { &a_client } else { &b_client };
        written.push(
            client
                .clone()
                .set_recording_settings(set_request(ACCOUNT, &format!("write {i}")))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        let message = tokio::time::timeout(GUARD, watch.message())
            .await
            .expect("a watch message within the guard")
            .expect("the watch goes on")
            .expect("the watch goes on");
        if !message.progress {
            seen.push(message.settings.expect("a change carries its settings"));
        }
    }

    assert_eq!(read_on_b, first, "a Get through B sees the Set through A");
    assert_eq!(
        seen, written,
        "B's watch: every write, in order, same revisions"
    );
    assert!(written.windows(2).all(|w| w[0].revision < w[1].revision));
}

/// Compacts the cluster's history up to `revision`, as an operator would
/// (`etcdctl compact`), through etcd's JSON gateway.
async fn compact(endpoint: &str, revision: u64) {
    let response = reqwest::Client::new()
        .post(format!("{endpoint}/v3/kv/compaction"))
        .json(&serde_json::json!({ "revision": revision.to_string(), "physical": true }))
        .send()
        .await
        .expect("etcd's gateway answers");
    assert!(response.status().is_success(), "{response:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_compaction_bounds_watches_history_and_rollback_as_the_sled_log_does() {
    use tonic::Code;
    use tonic_types::StatusExt;
    if !etcd_available() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
        .await
        .unwrap();
    let server = front_end(&cluster, "/compaction/").await;
    let mut client = connect(server.grpc_addr).await;
    let mut written = Vec::new();
    for i in 0..8 {
        let set = client.set_recording_settings(set_request(ACCOUNT, &format!("v{i}")));
        written.push(set.await.unwrap().into_inner());
    }
    compact(&cluster.endpoint(0), written[5].revision).await;

    let status = client
        .watch_recording_settings(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: written[0].revision,
        })
        .await
        .expect_err("a watch from a compacted revision fails at once");
    let mut resumed = client
        .watch_recording_settings(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: written[5].revision,
        })
        .await
        .expect("a watch from the oldest retained revision works")
        .into_inner();
    let mut replayed = Vec::new();
    while replayed.len() < 3 {
        let message = tokio::time::timeout(GUARD, resumed.message())
            .await
            .expect("a watch message within the guard")
            .unwrap()
            .unwrap();
        if !message.progress {
            replayed.push(message.settings.unwrap());
        }
    }
    let history = client
        .list_recording_settings_revisions(settingsd::pb::ListRecordingSettingsRevisionsRequest {
            account_sid: ACCOUNT.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let rollback = client
        .rollback_recording_settings(settingsd::pb::RollbackRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            revision: written[2].revision,
            etag: String::new(),
        })
        .await
        .expect_err("a rollback to a compacted revision fails");

    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let info = status
        .get_details_error_info()
        .expect("an ErrorInfo detail");
    assert_eq!(info.reason, "REVISION_COMPACTED");
    let oldest: u64 = info.metadata["oldest_revision"].parse().unwrap();
    assert_eq!(oldest, written[5].revision, "etcd's compact revision");
    assert_eq!(replayed, written[5..].to_vec());
    let mut retained = written[5..].to_vec();
    retained.reverse();
    assert_eq!(
        history.revisions, retained,
        "the history keeps what etcd keeps"
    );
    assert_eq!(rollback.code(), Code::NotFound, "{rollback:?}");
}

#[tokio::test]
async fn serve_refuses_etcd_settings_that_cannot_work_naming_the_flag() {
    let serve = [
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ];
    let cases: [(&[&str], &str); 4] = [
        (&["--store", "etcd"], "--etcd-endpoints"),
        (
            &["--etcd-endpoints", "http://127.0.0.1:2379"],
            "--store etcd",
        ),
        (
            &[
                "--store",
                "etcd",
                "--etcd-endpoints",
                "https://127.0.0.1:2379",
            ],
            "--etcd-endpoints",
        ),
        (
            &[
                "--store",
                "etcd",
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
                "--etcd-prefix",
                "",
            ],
            "--etcd-prefix",
        ),
    ];
    for (args, named) in cases {
        let out = cli(&[&serve[..], args].concat()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must not start");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resumed_watch_of_a_stored_record_gets_progress_while_nothing_changes() {
    if !etcd_available() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(1))
        .await
        .unwrap();
    let server = front_end(&cluster, "/progress/").await;
    let mut client = connect(server.grpc_addr).await;
    let written = client
        .set_recording_settings(set_request(ACCOUNT, "stored"))
        .await
        .unwrap()
        .into_inner();
    let other = client
        .set_recording_settings(set_request(OTHER_ACCOUNT, "another key"))
        .await
        .unwrap()
        .into_inner();

    let mut watch = client
        .watch_recording_settings(settingsd::pb::WatchRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            start_revision: written.revision + 1,
        })
        .await
        .unwrap()
        .into_inner();
    // Progress comes every few seconds (the contract); the guard is 30 s.
    let first = tokio::time::timeout(GUARD, watch.message())
        .await
        .expect("progress within the guard")
        .unwrap()
        .unwrap();

    assert!(
        first.progress,
        "nothing changed, so the first message is progress: {first:?}"
    );
    assert!(
        first.revision >= other.revision,
        "progress reaches the store's revision, past the watched key's: {first:?}"
    );
}

/// POSTs `body` to etcd's JSON gateway at `path`; returns the answer.
async fn gateway(endpoint: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{endpoint}{path}"))
        .json(&body)
        .send()
        .await
        .expect("etcd's gateway answers")
        .json()
        .await
        .expect("etcd's gateway answers JSON")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_out_of_space_stops_writes_not_reads_until_an_operator_frees_space() {
    use crate::faults::health_at_becomes;
    use tonic::Code;
    use tonic_health::pb::health_check_response::ServingStatus;
    if !etcd_available() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(|| {
        EtcdCluster::start_with(1, &["--quota-backend-bytes", "2097152"])
    })
    .await
    .unwrap();
    let endpoint = cluster.endpoint(0);
    let server = front_end(&cluster, "/nospace/").await;
    let mut client = connect(server.grpc_addr).await;
    let written = client
        .set_recording_settings(set_request(ACCOUNT, "before the disk filled"))
        .await
        .unwrap()
        .into_inner();

    // Someone else's data fills etcd's quota: etcd raises its NOSPACE alarm.
    let filler = vec![b'x'; 256 * 1024];
    let mut full = false;
    for i in 0..64 {
        let key = format!("/filler/{i:03}");
        let answer = gateway(
            &endpoint,
            "/v3/kv/put",
            serde_json::json!({ "key": b64(key.as_bytes()), "value": b64(&filler) }),
        )
        .await;
        if answer.to_string().contains("space exceeded") {
            full = true;
            break;
        }
    }
    assert!(full, "etcd's 2 MiB quota fills up");
    health_at_becomes(server.grpc_addr, ServingStatus::NotServing).await;
    let refused = client
        .set_recording_settings(set_request(ACCOUNT, "while full"))
        .await
        .expect_err("writes are refused while etcd is out of space");
    let read = client
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .expect("reads go on")
        .into_inner();

    // The operator's way out: delete, compact, defragment, disarm.
    let deleted = gateway(
        &endpoint,
        "/v3/kv/deleterange",
        serde_json::json!({ "key": b64(b"/filler/"), "range_end": b64(b"/filler0") }),
    )
    .await;
    let revision = deleted["header"]["revision"]
        .as_str()
        .expect("a revision")
        .to_owned();
    gateway(
        &endpoint,
        "/v3/kv/compaction",
        serde_json::json!({ "revision": revision, "physical": true }),
    )
    .await;
    gateway(
        &endpoint,
        "/v3/maintenance/defragment",
        serde_json::json!({}),
    )
    .await;
    let alarms = gateway(
        &endpoint,
        "/v3/maintenance/alarm",
        serde_json::json!({ "action": "GET" }),
    )
    .await;
    for alarm in alarms["alarms"].as_array().expect("the NOSPACE alarm") {
        gateway(
            &endpoint,
            "/v3/maintenance/alarm",
            serde_json::json!({ "action": "DEACTIVATE", "memberID": alarm["memberID"], "alarm": alarm["alarm"] }),
        )
        .await;
    }
    health_at_becomes(server.grpc_addr, ServingStatus::Serving).await;
    let after = client
        .set_recording_settings(set_request(ACCOUNT, "after the operator freed space"))
        .await
        .expect("writes work again, without a restart")
        .into_inner();

    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(read, written, "the last acknowledged write is still read");
    assert!(after.revision > written.revision);
}
