//! The real binary: the held data directory, graceful shutdown on SIGTERM
//! with a request in flight, and the operator CLI.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use settingsd::pb::{RecordingSettings, SetRecordingSettingsRequest};
use tokio::net::TcpStream;

use crate::helpers::*;

#[tokio::test]
async fn a_second_server_on_a_held_data_directory_fails_fast_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = BinaryServer::start(dir.path()).await;

    let second = tokio::time::timeout(
        GUARD,
        binary()
            .args(SERVE_ON_PORT_0)
            .arg("--data-dir")
            .arg(dir.path())
            .output(),
    )
    .await
    .expect("the second server exits instead of waiting for the lock")
    .unwrap();

    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("in use by another settingsd"), "{stderr}");
    // The first server is unaffected.
    let mut client = connect(first.grpc_addr).await;
    client
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .unwrap();
    first.signal("TERM");
    assert!(first.wait().await.success());
}

/// A gRPC message frame: uncompressed flag, big-endian length, message.
pub(crate) fn grpc_frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(body.len()).unwrap());
    frame.put_slice(&body);
    frame.freeze()
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_set_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(dir.path()).await;
    // A raw HTTP/2 client, so the request can be left half-sent: headers now,
    // body after the server has begun shutting down.
    let tcp = TcpStream::connect(server.grpc_addr).await.unwrap();
    let (send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().expect("ping_pong");
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/settingsd.v1.RecordingSettingsService/SetRecordingSettings",
            server.grpc_addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    // The server answers a PING only after processing the frames before it,
    // so once the PONG is back the request's stream is open on the server.
    ping_pong.ping(h2::Ping::opaque()).await.unwrap();

    server.signal("TERM");
    server.wait_for_log("finishing in-flight requests").await;
    body.send_data(
        grpc_frame(&SetRecordingSettingsRequest {
            account_sid: ACCOUNT.into(),
            friendly_name: "in flight".into(),
            ..Default::default()
        }),
        true,
    )
    .unwrap();
    let response = tokio::time::timeout(GUARD, response)
        .await
        .unwrap()
        .unwrap();
    let (parts, mut body) = response.into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    let status = server.wait().await;

    assert_eq!(parts.status, 200);
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.to_str().unwrap()),
        Some("0"),
        "trailers: {trailers:?}"
    );
    let mut data = data.freeze();
    data.advance(5);
    let stored = RecordingSettings::decode(data).unwrap();
    assert_eq!(stored.friendly_name.as_deref(), Some("in flight"));
    assert!(status.success(), "exit status {status:?}");

    let restarted = spawn_app_on(dir.path()).await;
    let got = restarted.get(ACCOUNT).await;
    assert_eq!(
        got,
        SettingsMessage::from(stored),
        "the in-flight write is on disk"
    );
}

#[tokio::test]
async fn the_cli_sets_and_gets_settings_as_rest_json() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();

    let set = cli(&[
        "set",
        "--grpc-addr",
        &addr,
        "--account",
        ACCOUNT,
        "--friendly-name",
        "from the cli",
        "--encryption-key-sid",
        KEY,
        "--encryption-enabled",
        "true",
    ])
    .await;
    let get = cli(&["get", "--grpc-addr", &addr, "--account", ACCOUNT]).await;

    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(json["account_sid"], ACCOUNT);
    assert_eq!(json["friendly_name"], "from the cli");
    assert_eq!(json["encryption_key_sid"], KEY);
    assert_eq!(json["encryption_enabled"], true);
    assert_eq!(json["aws_s3_url"], serde_json::Value::Null);
    assert_eq!(json["url"], TWILIO_URL);
    assert!(json["revision"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_cli_reads_and_writes_composition_settings_with_resource_composition() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();
    let common = ["--grpc-addr", &addr, "--account", ACCOUNT];

    let set = cli(&[
        &["set", "--resource", "composition"],
        &common[..],
        &["--friendly-name", "compositions"],
    ]
    .concat())
    .await;
    let get = cli(&[&["get", "--resource", "composition"], &common[..]].concat()).await;
    let recording = cli(&[&["get"], &common[..]].concat()).await;
    let unknown = cli(&[&["get", "--resource", "rooms"], &common[..]].concat()).await;

    for out in [&set, &get, &recording] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(json(&get)["friendly_name"], "compositions");
    assert_eq!(json(&get)["url"], COMPOSITION_URL);
    assert_eq!(json(&get), json(&set));
    assert_eq!(json(&recording)["friendly_name"], serde_json::Value::Null);
    assert_eq!(json(&recording)["url"], TWILIO_URL);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        stderr.contains("--resource") && stderr.contains("rooms"),
        "{stderr}"
    );
    assert!(
        stderr.contains("composition"),
        "names the choices: {stderr}"
    );
}

#[tokio::test]
async fn the_cli_reports_a_rejected_set_on_stderr_and_exits_non_zero() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();

    let out = cli(&[
        "set",
        "--grpc-addr",
        &addr,
        "--account",
        ACCOUNT,
        "--friendly-name",
        "x",
        "--aws-s3-url",
        "ftp://nope",
    ])
    .await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("InvalidArgument"), "{stderr}");
    assert!(stderr.contains("aws_s3_url"), "{stderr}");
}

/// Runs `settingsd bench --json` with `args`, and returns its `results`
/// once it has exited successfully.
async fn bench_results(args: &[&str]) -> Vec<serde_json::Value> {
    let out = tokio::time::timeout(
        GUARD * 2,
        binary().args(["bench", "--json"]).args(args).output(),
    )
    .await
    .expect("the bench finishes")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["results"].as_array().unwrap().clone()
}

#[tokio::test]
async fn bench_quick_reports_every_requested_scenario_as_json() {
    let results = bench_results(&[
        "--quick",
        "--concurrency",
        "4",
        "--accounts",
        "50",
        "--scenario",
        "noop",
        "--scenario",
        "grpc_get",
        "--scenario",
        "http_post",
    ])
    .await;

    let names: Vec<_> = results
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["noop", "grpc_get", "http_post"]);
    for r in &results {
        assert!(r["throughput_rps"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        for key in ["p50_us", "p99_us", "p999_us"] {
            assert!(r[key].as_u64().unwrap() > 0, "{key} in {r}");
        }
    }
    assert_eq!(results[1]["baseline"], "noop");
}

#[tokio::test]
async fn bench_against_a_server_with_accounts_acts_for_the_credentials_account() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start_with_accounts(dir.path()).await;
    let target = format!("http://{}", server.grpc_addr);
    let http_target = format!("http://{}", server.http_addr);
    let credentials = format!("{API_KEY}:{API_SECRET}");

    let results = bench_results(&[
        "--requests",
        "200",
        "--concurrency",
        "4",
        "--target",
        &target,
        "--http-target",
        &http_target,
        "--credentials",
        &credentials,
        "--scenario",
        "grpc_get",
        "--scenario",
        "grpc_set",
        "--scenario",
        "http_get",
        "--scenario",
        "http_post",
    ])
    .await;
    let malformed = binary()
        .args(["bench", "--credentials", "no-colon", "--scenario", "noop"])
        .output()
        .await
        .unwrap();

    assert_eq!(results.len(), 4);
    for r in &results {
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["requests"], 200, "--requests is the run's length: {r}");
    }
    assert!(!malformed.status.success());
    assert!(String::from_utf8_lossy(&malformed.stderr).contains("USER:SECRET"));
}

#[tokio::test]
async fn the_cli_watches_lists_history_rolls_back_and_writes_conditionally() {
    let app = spawn_app().await;
    let addr = app.grpc_addr.to_string();
    let common = [
        "--grpc-addr",
        &addr,
        "--account",
        ACCOUNT,
        "--resource",
        "composition",
    ];
    let composition = app.for_resource(Resource::Composition);
    let first = composition.set(set_request(ACCOUNT, "first")).await;
    let second = composition.set(set_request(ACCOUNT, "second")).await;
    let mut watch = binary()
        .args(["watch", "--from", &first.revision.to_string()])
        .args(common)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));

    let history = cli(&[&["history", "--page-size", "1"], &common[..]].concat()).await;
    let stale = cli(&[
        &["set", "--friendly-name", "stale", "--etag", &first.etag],
        &common[..],
    ]
    .concat())
    .await;
    let rollback = cli(&[
        &["rollback", "--revision", &first.revision.to_string()],
        &common[..],
    ]
    .concat())
    .await;

    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let history = json(&history);
    assert_eq!(history["revisions"][0]["friendly_name"], "second");
    assert_eq!(history["revisions"][0]["etag"], second.etag.as_str());
    assert_eq!(history["next_page_token"], second.revision.to_string());
    assert!(!stale.status.success());
    assert!(String::from_utf8_lossy(&stale.stderr).contains("Aborted"));
    let rollback = json(&rollback);
    assert_eq!(rollback["friendly_name"], "first");
    assert!(rollback["revision"].as_u64().unwrap() > second.revision);
    // The watch printed every change from --from on, then the rollback.
    assert_eq!(next_json_line(&mut lines).await["friendly_name"], "first");
    assert_eq!(next_json_line(&mut lines).await["friendly_name"], "second");
    let rolled = next_json_line(&mut lines).await;
    assert_eq!(rolled["friendly_name"], "first");
    assert_eq!(rolled["revision"], rollback["revision"]);
    assert_eq!(rolled["url"], COMPOSITION_URL);
    watch.kill().await.unwrap();
}

async fn next_json_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(GUARD, lines.next_line())
        .await
        .expect("a line within the guard")
        .unwrap()
        .expect("the watch is still running");
    serde_json::from_str(&line).unwrap()
}
