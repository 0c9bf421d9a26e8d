//! Limits against abuse: load is shed with a clear error, slow or oversized
//! clients are cut off, and the server keeps serving.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use settingsd::server::Limits;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tonic::Code;

use crate::{
    helpers::*,
    http_bridge::{assert_twilio_error, fetch},
    process::grpc_frame,
};

#[tokio::test]
async fn requests_past_the_in_flight_limit_are_shed_with_unavailable_and_503() {
    // A limit of zero sheds every request: the deterministic way to watch
    // the shedding path without racing real load.
    let app = spawn_app_with_limits(Limits {
        max_in_flight: 0,
        ..Limits::default()
    })
    .await;

    let grpc = app
        .client
        .clone()
        .get_recording_settings(get_request(ACCOUNT))
        .await
        .unwrap_err();
    let http = fetch(&app.url(), ACCOUNT, "any").await;

    assert_eq!(grpc.code(), Code::Unavailable);
    assert!(grpc.message().contains("limit"), "{}", grpc.message());
    assert_twilio_error(http, 503, 20503).await;
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(GUARD, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    received
}

/// A server whose listeners wait 200 ms for a request's headers, and a
/// client at `addr` that sends only part of them: the server must hang up.
async fn headers_trickled_to(addr: impl Fn(&TestApp) -> SocketAddr, head: &[u8]) -> TestApp {
    let app = spawn_app_with_limits(Limits {
        header_read_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(head).await.unwrap();
    read_until_closed(&mut slow).await;
    app
}

#[tokio::test]
async fn an_http_client_trickling_its_headers_is_disconnected() {
    let head = b"GET /v1/RecordingSettings/Default HTTP/1.1\r\nHost: x\r\n";
    let app = headers_trickled_to(|app| app.http_addr, head).await;

    assert_eq!(fetch(&app.url(), ACCOUNT, "any").await.status(), 200);
}

/// The admin listener has the same limits as the bridge's.
#[tokio::test]
async fn a_client_trickling_its_headers_to_the_admin_listener_is_disconnected() {
    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n";
    let app = headers_trickled_to(|app| app.admin_addr, head).await;
    let healthz = crate::http_bridge::http()
        .get(format!("http://{}/healthz", app.admin_addr))
        .send()
        .await
        .unwrap();

    assert_eq!(healthz.status(), 200);
}

#[tokio::test]
async fn an_http_client_trickling_its_body_gets_a_503_after_the_request_timeout() {
    let app = spawn_app_with_limits(Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut slow = TcpStream::connect(app.http_addr).await.unwrap();
    let auth = settingsd::auth::basic_authorization(ACCOUNT, "any");

    slow.write_all(
        format!(
            "POST /v1/RecordingSettings/Default HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nFriendlyName="
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = [0u8; 256];
    let n = tokio::time::timeout(GUARD, slow.read(&mut head))
        .await
        .expect("an answer before the guard")
        .unwrap();

    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("20503"), "{head}");
}

#[tokio::test]
async fn oversized_http_headers_are_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let request = |header_bytes: usize| {
        format!(
            "GET /v1/RecordingSettings/Default HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
            "a".repeat(header_bytes)
        )
    };

    // Over the 16 KiB limit: a Twilio error body.
    let mut client = TcpStream::connect(app.http_addr).await.unwrap();
    client
        .write_all(request(32 * 1024).as_bytes())
        .await
        .unwrap();
    let over = read_until_closed(&mut client).await;
    // Far over it: hyper refuses before any route runs (431, no body).
    let mut client = TcpStream::connect(app.http_addr).await.unwrap();
    let _ = client.write_all(request(256 * 1024).as_bytes()).await;
    let far_over = read_until_closed(&mut client).await;

    let over = String::from_utf8_lossy(&over);
    assert!(over.starts_with("HTTP/1.1 431"), "{over}");
    let body = over.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {over}"));
    assert_eq!(body["status"], 431);
    assert!(
        body["message"].as_str().unwrap().contains("16384"),
        "{body}"
    );
    let far_over = String::from_utf8_lossy(&far_over);
    assert!(
        far_over.is_empty() || far_over.starts_with("HTTP/1.1 431"),
        "{far_over}"
    );
    assert_eq!(fetch(&app.url(), ACCOUNT, "any").await.status(), 200);
}

#[tokio::test]
async fn a_grpc_message_over_the_limit_is_rejected_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let status = client
        .set_recording_settings(set_request(ACCOUNT, &"n".repeat(100 * 1024)))
        .await
        .unwrap_err();

    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    app.set(set_request(ACCOUNT, "normal")).await;
}

/// The idle timeout the idle-connection tests configure.
const IDLE: Duration = Duration::from_millis(300);

/// How long those tests give the server to close an idle connection: far
/// above `IDLE`, so a slow machine does not fail them, and far below
/// [`GUARD`], so a server that never closes fails them soon.
const IDLE_BOUND: Duration = Duration::from_secs(10);

/// An open-mode server whose connections go idle after [`IDLE`].
async fn spawn_idle_app() -> TestApp {
    spawn_app_with_limits(Limits {
        idle_timeout: IDLE,
        ..Limits::default()
    })
    .await
}

/// Waits (at most `IDLE_BOUND`) for the server to close `stream`, which the
/// test has stopped writing to; returns how long after `since` it did.
async fn closed_by_the_server(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut received = Vec::new();
    tokio::time::timeout(IDLE_BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the idle connection")
        .ok();
    since.elapsed()
}

#[tokio::test]
async fn a_silent_http_client_is_disconnected_after_the_idle_timeout_and_frees_its_slot() {
    let app = spawn_app_with_limits(Limits {
        max_connections: 1,
        idle_timeout: IDLE,
        ..Limits::default()
    })
    .await;
    let connecting = Instant::now();
    let mut silent = TcpStream::connect(app.http_addr).await.unwrap();

    // The silent client holds the only slot: this request waits in the
    // accept queue until the server closes that connection.
    let answer = tokio::time::timeout(IDLE_BOUND, fetch(&app.url(), ACCOUNT, "any"))
        .await
        .expect("served once the silent client's slot is freed");
    let closed_after = closed_by_the_server(&mut silent, connecting).await;

    assert_eq!(answer.status(), 200);
    assert!(closed_after >= IDLE, "closed after only {closed_after:?}");
}

#[tokio::test]
async fn an_http_client_stopping_in_the_http2_preface_is_disconnected_after_the_idle_timeout() {
    let app = spawn_idle_app().await;
    let connecting = Instant::now();
    let mut stalled = TcpStream::connect(app.http_addr).await.unwrap();

    // Half of the 24-byte preface: the bridge is still choosing between
    // HTTP/1 and HTTP/2, where hyper's header read timeout does not apply.
    stalled.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let closed_after = closed_by_the_server(&mut stalled, connecting).await;

    assert!(closed_after >= IDLE, "closed after only {closed_after:?}");
    assert_eq!(fetch(&app.url(), ACCOUNT, "any").await.status(), 200);
}

#[tokio::test]
async fn a_silent_grpc_client_is_disconnected_after_the_idle_timeout() {
    let app = spawn_idle_app().await;
    let connecting = Instant::now();
    let mut silent = TcpStream::connect(app.grpc_addr).await.unwrap();

    let closed_after = closed_by_the_server(&mut silent, connecting).await;

    assert!(closed_after >= IDLE, "closed after only {closed_after:?}");
}

/// An HTTP/2 connection to the gRPC port: the handle to send requests on,
/// and the task driving the connection, which ends when the server closes
/// it. The h2 client answers the server's pings by itself.
async fn http2_connection(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    h2::PingPong,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let ping_pong = connection.ping_pong().expect("ping_pong");
    (send, ping_pong, tokio::spawn(connection))
}

/// A GetRecordingSettings over `send`'s connection; returns its grpc-status.
async fn grpc_get(send: &h2::client::SendRequest<Bytes>, addr: SocketAddr) -> String {
    let mut send = send.clone().ready().await.expect("connection still open");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/settingsd.v1.RecordingSettingsService/GetRecordingSettings"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(grpc_frame(&get_request(ACCOUNT)), true)
        .unwrap();
    let mut body = response.await.expect("a response").into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the response body");
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    trailers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_http2_client_that_only_pings_is_disconnected_after_the_idle_timeout() {
    // Keep-alive pings far more often than the idle timeout: the client
    // answers them, and pings of its own, yet sends no request.
    let app = spawn_app_with_limits(Limits {
        idle_timeout: IDLE,
        keepalive_interval: IDLE / 6,
        ..Limits::default()
    })
    .await;
    let connecting = Instant::now();
    let (_send, mut ping_pong, mut connection) = http2_connection(app.grpc_addr).await;

    let pinging_until_closed = async {
        loop {
            tokio::select! {
                ended = &mut connection => return ended,
                () = async {
                    let _ = ping_pong.ping(h2::Ping::opaque()).await;
                    tokio::time::sleep(IDLE / 6).await;
                } => {}
            }
        }
    };
    tokio::time::timeout(IDLE_BOUND, pinging_until_closed)
        .await
        .expect("the server closes a connection that carries only pings")
        .expect("connection task")
        .ok();

    let closed_after = connecting.elapsed();
    assert!(closed_after >= IDLE, "closed after only {closed_after:?}");
}

#[tokio::test]
async fn a_grpc_connection_with_requests_more_often_than_the_idle_timeout_stays_open() {
    // A longer timeout than the other tests': requests spaced well inside it
    // must not be cut by a scheduling hiccup on a loaded machine.
    const LONG_IDLE: Duration = Duration::from_secs(2);
    let app = spawn_app_with_limits(Limits {
        idle_timeout: LONG_IDLE,
        ..Limits::default()
    })
    .await;
    let (send, _ping_pong, mut connection) = http2_connection(app.grpc_addr).await;

    // Requests a tenth of the idle timeout apart, for three times as long.
    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(grpc_get(&send, app.grpc_addr).await, "0");
        tokio::time::sleep(LONG_IDLE / 10).await;
    }
    let lasted = started.elapsed();
    assert!(!connection.is_finished(), "the connection was closed");
    assert_eq!(grpc_get(&send, app.grpc_addr).await, "0");

    // Once the requests stop, the same connection is closed.
    tokio::time::timeout(IDLE_BOUND, &mut connection)
        .await
        .expect("closed once idle")
        .expect("connection task")
        .ok();
    assert!(lasted >= 3 * LONG_IDLE, "{lasted:?}");
}

#[tokio::test]
async fn a_quiet_health_watch_is_not_idle_and_does_not_block_shutdown() {
    let app = spawn_app_with_limits(Limits {
        idle_timeout: IDLE,
        request_timeout: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(app.grpc_addr).await);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();

    // Nothing changes for three idle timeouts: the stream waits, unbroken.
    let quiet = tokio::time::timeout(3 * IDLE, watch.message()).await;
    let stopping = Instant::now();
    // The server gives up on the watch's connection after its grace period;
    // the connection (and the store it holds) lives until the client hangs up.
    let stopped = app.stop_server().await;
    let stop_took = stopping.elapsed();
    drop((watch, health));

    assert_eq!(first.status, 1, "SERVING");
    assert!(quiet.is_err(), "the watch ended or failed: {quiet:?}");
    stopped.unwrap();
    assert!(stop_took < IDLE_BOUND, "shutdown waited {stop_took:?}");
}
