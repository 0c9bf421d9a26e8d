//! Limits against abuse: load is shed with a clear error, slow or oversized
//! clients are cut off, and the server keeps serving.

use std::time::Duration;

use settingsd::limits::Limits;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;

use crate::{
    helpers::*,
    http_bridge::{assert_twilio_error, fetch},
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

#[tokio::test]
async fn an_http_client_trickling_its_headers_is_disconnected() {
    let app = spawn_app_with_limits(Limits {
        header_read_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut slow = TcpStream::connect(app.http_addr).await.unwrap();

    slow.write_all(b"GET /v1/RecordingSettings/Default HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    read_until_closed(&mut slow).await;

    assert_eq!(fetch(&app.url(), ACCOUNT, "any").await.status(), 200);
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
    let app = spawn_app();
    let app = app.await;
    let mut client = TcpStream::connect(app.http_addr).await.unwrap();

    let huge = "a".repeat(64 * 1024);
    let _ = client
        .write_all(
            format!(
                "GET /v1/RecordingSettings/Default HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    let answer = read_until_closed(&mut client).await;

    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
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
