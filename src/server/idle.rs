//! The idle timeout: a connection that carries no request for
//! [`Limits::idle_timeout`](super::limits::Limits::idle_timeout) is closed,
//! so silent clients cannot keep connection slots forever.
//!
//! Idleness is judged from requests, not bytes. Counting bytes read from the
//! client would not do: an idle HTTP/2 client still answers the server's
//! keep-alive PINGs (and may send PINGs or SETTINGS of its own), so its
//! connection would never look idle. Instead each connection has a
//! [`ConnectionActivity`], touched by [`TrackActivity`] when a request
//! starts, when its handler answers, whenever its response body yields a
//! frame, and when the response ends. hyper asks a body for its next frame
//! only once the client's flow-control window (HTTP/2) or the socket (HTTP/1)
//! has room for it, so frames come as fast as the client takes the response,
//! a chunk at a time (tonic batches a stream's messages into chunks of up to
//! 32 KiB). The connection's stream ([`LimitedStream`](super::limits::LimitedStream))
//! fails its reads and writes once nothing has touched the activity for the
//! timeout and no handler is running, and hyper then drops the connection,
//! freeing its slot. So:
//!
//! - the clock starts at accept: a client that connects and sends nothing,
//!   or only part of a request head or of the HTTP/2 preface, is closed
//!   after the timeout;
//! - a connection with a handler running is never closed (the request
//!   timeout bounds handlers);
//! - a response body waiting on the server for its next frame (a quiet
//!   stream such as health's Watch) keeps the connection busy too; once it
//!   has a frame ready, the client must take it;
//! - a long response, such as an export stream, stays open while the
//!   client keeps reading it, and is closed once the client has taken no
//!   chunk of it for the timeout (stopped reading, or reads slower than a
//!   chunk per timeout);
//! - the close is abrupt (no HTTP/2 GOAWAY): a client that sends a request
//!   at the very moment its idle connection is closed sees that request
//!   fail, as with any server that closes idle connections.
//!
//! Request bodies are not watched: while a request's handler runs the
//! connection counts as busy, and the request timeout bounds that.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use hyper::{
    body::{Body, Frame, SizeHint},
    Request, Response,
};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::TcpConnectInfo;
use tower_layer::Layer;
use tower_service::Service;

/// When one connection last made progress, and how many of its requests
/// have a handler running. Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct ConnectionActivity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    /// When the connection was accepted.
    origin: Instant,
    /// Nanoseconds from `origin` to the last progress.
    last: AtomicU64,
    /// Requests whose handler has not answered yet.
    running: AtomicUsize,
}

impl ConnectionActivity {
    /// The activity of a connection accepted now.
    pub fn new() -> Self {
        ConnectionActivity(Arc::new(ActivityState {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        }))
    }

    /// Records progress now.
    fn touch(&self) {
        let since = Instant::now().saturating_duration_since(self.0.origin);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.0.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// A request started: the connection is busy until the guard drops.
    fn start_request(&self) -> RunningRequest {
        self.0.running.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RunningRequest(self.clone())
    }

    /// When the connection is idle for `timeout` if nothing else happens;
    /// `None` while a handler is running.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.0.running.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_nanos(self.0.last.load(Ordering::Relaxed));
        Some(self.0.origin + last + timeout)
    }
}

impl Default for ConnectionActivity {
    fn default() -> Self {
        Self::new()
    }
}

/// A request whose handler has not answered yet.
struct RunningRequest(ConnectionActivity);

impl Drop for RunningRequest {
    fn drop(&mut self) {
        // Touch first: a connection task that sees `running` drop to zero
        // (Acquire, pairing with this Release) also sees the fresh time, and
        // cannot close the connection just before this answer is written.
        self.0.touch();
        self.0 .0.running.fetch_sub(1, Ordering::Release);
    }
}

/// Touches the activity when dropped (a response body ending or abandoned).
struct TouchOnDrop(Option<ConnectionActivity>);

impl Drop for TouchOnDrop {
    fn drop(&mut self) {
        if let Some(activity) = &self.0 {
            activity.touch();
        }
    }
}

/// The timer a connection's stream polls when it has nothing to read or
/// cannot write: ready once the connection has been idle for the timeout.
pub(crate) struct IdleTimer {
    activity: ConnectionActivity,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    pub(crate) fn new(activity: ConnectionActivity, timeout: Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeout));
        IdleTimer {
            activity,
            timeout,
            sleep,
        }
    }

    pub(crate) fn activity(&self) -> &ConnectionActivity {
        &self.activity
    }

    /// Ready once no request has made progress for the timeout and no
    /// handler is running. Progress only ever postpones the deadline, so a
    /// timer armed for the last known deadline wakes early enough to look
    /// again; nothing else needs to wake the connection.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let now = Instant::now();
            let deadline = self.activity.idle_deadline(self.timeout);
            let wake_at = match deadline {
                Some(deadline) if deadline <= now => return Poll::Ready(()),
                Some(deadline) => deadline,
                // A handler is running: look again a timeout from now.
                None => now + self.timeout,
            };
            if self.sleep.deadline() != wake_at {
                self.sleep.as_mut().reset(wake_at);
            }
            ready!(self.sleep.as_mut().poll(cx));
            if deadline.is_some() && self.activity.idle_deadline(self.timeout) == deadline {
                return Poll::Ready(());
            }
        }
    }
}

/// What the gRPC server's connections report to their requests (as
/// request extensions): the TCP addresses, and the connection's activity
/// for [`TrackActivity`].
#[derive(Debug, Clone)]
pub struct LimitedConnectInfo {
    pub tcp: TcpConnectInfo,
    pub activity: ConnectionActivity,
}

/// Makes [`TrackActivity`] services that find the connection's activity in
/// each request's [`LimitedConnectInfo`] extension (for tonic's
/// `Server::layer`, whose layers are shared by all connections).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackActivityLayer;

impl<S> Layer<S> for TrackActivityLayer {
    type Service = TrackActivity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrackActivity {
            inner,
            activity: None,
        }
    }
}

/// Reports each request's progress to its connection's
/// [`ConnectionActivity`]; see the module documentation.
#[derive(Debug, Clone)]
pub struct TrackActivity<S> {
    inner: S,
    /// The connection's activity when the service serves one connection;
    /// `None` to look for a [`LimitedConnectInfo`] in each request.
    activity: Option<ConnectionActivity>,
}

impl<S> TrackActivity<S> {
    /// Tracks the requests of the one connection `activity` belongs to.
    pub fn new(inner: S, activity: ConnectionActivity) -> Self {
        TrackActivity {
            inner,
            activity: Some(activity),
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for TrackActivity<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let activity = match &self.activity {
            Some(activity) => Some(activity.clone()),
            None => {
                let info = request.extensions().get::<LimitedConnectInfo>().cloned();
                info.map(|info| {
                    // What `tonic::Request::remote_addr` looks for.
                    request.extensions_mut().insert(info.tcp);
                    info.activity
                })
            }
        };
        TrackedFuture {
            running: activity.as_ref().map(ConnectionActivity::start_request),
            activity,
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A handler's answer; the connection counts as busy until it is ready
    /// or dropped.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        activity: Option<ConnectionActivity>,
        running: Option<RunningRequest>,
    }
}

impl<F, ResBody, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<TrackedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.running.take();
        let activity = this.activity.take();
        Poll::Ready(result.map(|response| {
            response.map(|inner| TrackedBody {
                inner,
                activity: TouchOnDrop(activity),
                waiting: None,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports each frame it yields as progress, and
    /// keeps the connection busy while it waits on the server for the next
    /// one (a quiet stream such as health's Watch is not an idle client).
    /// hyper polls a body only when the client has room for more, so a
    /// client that stops reading still goes idle.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        activity: TouchOnDrop,
        waiting: Option<RunningRequest>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if this.waiting.is_none() {
                    *this.waiting = this
                        .activity
                        .0
                        .as_ref()
                        .map(ConnectionActivity::start_request);
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                // Dropping the guard touches the activity.
                if this.waiting.take().is_none() {
                    if let Some(activity) = &this.activity.0 {
                        activity.touch();
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
