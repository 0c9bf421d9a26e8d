//! What the HTTP listener reports of each bridge request: metrics (route,
//! method, status, latency) and the request log, with the form parameters
//! of its body.
//!
//! The body is copied as the bridge reads it ([`TeeBody`]), not read ahead
//! of it: the bridge's own limits (its body size cap, its request timeout
//! against a client trickling a body) stay the only ones that apply.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use axum::{body::Body, extract::State};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::{
    bridge::{self, MAX_BODY_BYTES},
    metrics::Metrics,
    request_log::{RecordedRequest, RequestLog},
    resource::Resource,
};

/// Where bridge requests are reported.
#[derive(Clone)]
pub(super) struct HttpObservers {
    pub(super) metrics: Option<Metrics>,
    pub(super) requests: Arc<RequestLog>,
}

/// Reports a bridge request: its route (a resource's path, or `other`, so
/// that unknown paths cannot grow the metrics' label set), method and
/// status to the metrics; the same and its account and form parameters to
/// the request log.
pub(super) async fn observe_http(
    State(observers): State<HttpObservers>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let arrived = SystemTime::now();
    let started = Instant::now();
    let path = request.uri().path();
    let route = Resource::ALL
        .iter()
        .map(|r| r.spec().rest_path)
        .find(|p| *p == path)
        .or_else(|| bridge::is_kinds_path(path).then_some(bridge::KINDS_ROUTE))
        .unwrap_or("other");
    let method = format!("{} {route}", request.method());
    // The body is copied only for a request log that keeps it.
    let copied = observers
        .requests
        .is_on()
        .then(|| Arc::new(Mutex::new(Vec::new())));
    let request = match &copied {
        Some(copy) => request.map(|body| {
            Body::new(TeeBody {
                inner: body,
                copy: Arc::clone(copy),
            })
        }),
        None => request,
    };
    let (response, account) = if copied.is_some() {
        RequestLog::track(next.run(request)).await
    } else {
        (next.run(request).await, None)
    };
    let took = started.elapsed();
    let status = response.status();
    if let Some(metrics) = &observers.metrics {
        metrics.request("http", &method, status.as_str(), took);
    }
    let Some(copied) = copied else {
        return response;
    };
    let body = std::mem::take(&mut *copied.lock().unwrap_or_else(PoisonError::into_inner));
    observers.requests.record(RecordedRequest {
        time: arrived,
        transport: "http",
        method: method.into(),
        account,
        status: status.as_str().to_owned().into(),
        latency: took,
        parameters: bridge::recorded_parameters(&body),
    });
    response
}

pin_project_lite::pin_project! {
    /// A request body that copies what is read from it (up to the bridge's
    /// body limit) for the request log.
    struct TeeBody {
        #[pin]
        inner: Body,
        copy: Arc<Mutex<Vec<u8>>>,
    }
}

impl HttpBody for TeeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            if let Some(data) = frame.data_ref() {
                let mut copy = this.copy.lock().unwrap_or_else(PoisonError::into_inner);
                let room = MAX_BODY_BYTES.saturating_sub(copy.len());
                copy.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
