//! The admin listener (`--admin-addr`): Prometheus metrics and
//! Kubernetes-style probes, on a plain-HTTP port of its own so the
//! Twilio-shaped port stays Twilio-only.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 while the store takes writes and the server
//!   accepts; 503 with a one-line reason otherwise.
//! - `GET /metrics`: the text exposition. With `--accounts` it needs an
//!   operator's Basic credentials, unless `--metrics-public`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tokio::sync::watch;

use crate::{
    auth::{Authenticator, Caller},
    grpc::InFlight,
    metrics::Metrics,
    store::SharedStore,
};

/// What the admin routes read.
#[derive(Clone)]
pub(super) struct AdminState {
    pub(super) metrics: Metrics,
    pub(super) store: SharedStore,
    pub(super) in_flight: InFlight,
    pub(super) auth: Authenticator,
    /// `/metrics` without credentials even with `--accounts`.
    pub(super) metrics_public: bool,
    /// True once shutdown has begun: not ready.
    pub(super) stopping: watch::Receiver<bool>,
}

pub(super) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: the admin port serves /metrics, /healthz and /readyz\n",
            )
        })
        .with_state(Arc::new(state))
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    if *state.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    match state.store.health().write_failure {
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store takes no writes ({why})\n"),
        )
            .into_response(),
        None => (StatusCode::OK, "ready\n").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if !state.auth.is_open() && !state.metrics_public {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match state.auth.authenticate(authorization) {
            Ok(Caller::Operator(_)) => {}
            Ok(_) => {
                return (
                    StatusCode::FORBIDDEN,
                    "forbidden: /metrics needs an operator's credentials (or --metrics-public)\n",
                )
                    .into_response()
            }
            Err(_) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"settingsd-admin\"")],
                    "unauthorized: /metrics needs an operator's Basic credentials\n",
                )
                    .into_response()
            }
        }
    }
    state.metrics.set_in_flight(state.in_flight.current());
    state
        .metrics
        .set_writes_stopped(state.store.health().write_failure.is_some());
    for resource in state.store.resources().to_vec() {
        if let Some(count) = state.store.stored_count(resource) {
            state.metrics.set_stored(resource, count);
        }
    }
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.render(),
    )
        .into_response()
}
