//! Limits against abuse: how much a client can make the server hold, and for
//! how long. Past a limit the server sheds load with a clear error
//! (UNAVAILABLE over gRPC, Twilio's 503 over HTTP) instead of growing memory
//! or connection counts without bound.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::idle::{ConnectionActivity, IdleTimer, LimitedConnectInfo};

/// Every limit, with defaults sized for a settings service whose requests
/// are a few hundred bytes and take milliseconds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections per listener; further clients wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// Requests being handled at once across both transports; past it, new
    /// requests are shed at once.
    pub max_in_flight: usize,
    /// The longest a request may take, from headers to answer (a client
    /// trickling its body is cut off here).
    pub request_timeout: Duration,
    /// How long an HTTP/1 client may take to send a request's headers,
    /// including an idle keep-alive connection's next request.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1) or header list (HTTP/2), in bytes.
    pub max_header_bytes: usize,
    /// Largest gRPC request message, in bytes.
    pub max_grpc_message_bytes: usize,
    /// HTTP/2 keep-alive pings, to drop connections whose peer vanished.
    pub keepalive_interval: Duration,
    /// How long a connection may go without a request making progress
    /// before it is closed and its slot freed: counted from accept (so it
    /// also bounds a client that connects and sends nothing, or part of a
    /// request head or HTTP/2 preface) and from the last request activity
    /// after that. Pings and other connection-level frames do not count; a
    /// running handler or a response the client keeps reading does. See
    /// [`super::idle`].
    pub idle_timeout: Duration,
    /// A commit (flush + fdatasync) running longer than this means a stuck
    /// disk: health reports NOT_SERVING until it finishes.
    pub commit_stall_limit: Duration,
    /// Watch streams open at once, in all: each holds a task, a buffer and
    /// a subscription for its whole life (unlike a request, it holds no
    /// in-flight slot).
    pub max_watches: usize,
    /// Watch streams open at once acting for one account, so that one
    /// tenant cannot take every watch the server allows.
    pub max_watches_per_account: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_grpc_message_bytes: 64 * 1024,
            keepalive_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            commit_stall_limit: Duration::from_secs(5),
            max_watches: 10_000,
            max_watches_per_account: 100,
        }
    }
}

/// A TCP connection counted against its listener's connection limit until
/// it is dropped. Once the connection has been idle for the idle timeout
/// (see [`super::idle`]), reads and writes that would wait fail with
/// `TimedOut`, so the server drops it.
pub struct LimitedStream {
    inner: TcpStream,
    idle: IdleTimer,
    idle_expired: bool,
    _permit: OwnedSemaphorePermit,
    _counted: Option<Counted>,
}

/// Counts a connection open in a gauge while it lives.
struct Counted(prometheus::IntGauge);

impl Counted {
    fn new(gauge: prometheus::IntGauge) -> Counted {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl LimitedStream {
    /// The connection's activity, for [`TrackActivity`](super::idle::TrackActivity).
    pub fn activity(&self) -> ConnectionActivity {
        self.idle.activity().clone()
    }

    /// Called when the socket has nothing to read or cannot take more:
    /// the error to end the connection with once it is idle, else `Pending`.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.idle_expired {
            ready!(self.idle.poll_expired(cx));
            self.idle_expired = true;
            tracing::debug!("closing an idle connection");
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connection idle for longer than the idle timeout",
        )))
    }
}

/// Accepts connections from `listener`, at most `max_connections` open at
/// once, each closed after `idle_timeout` without request activity, with
/// TCP_NODELAY (answers are small and latency matters). Accept errors (such
/// as running out of file descriptors) are logged and retried after a pause
/// rather than ending the server. The stream ends, and the listener closes,
/// once the consumer drops it.
pub fn limited_incoming(
    listener: TcpListener,
    max_connections: usize,
    idle_timeout: Duration,
    open: Option<prometheus::IntGauge>,
) -> ReceiverStream<io::Result<LimitedStream>> {
    let (tx, rx) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
                () = tx.closed() => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            match accepted {
                Ok((inner, _peer)) => {
                    if let Err(e) = inner.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    let stream = LimitedStream {
                        inner,
                        idle: IdleTimer::new(ConnectionActivity::new(), idle_timeout),
                        idle_expired: false,
                        _permit: permit,
                        _counted: open.clone().map(Counted::new),
                    };
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for LimitedStream {
    type ConnectInfo = LimitedConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        LimitedConnectInfo {
            tcp: self.inner.connect_info(),
            activity: self.activity(),
        }
    }
}

// Reads and writes that complete pass straight through (bytes are not
// activity: see `super::idle`); only those that would wait consult the idle
// timer. hyper always has a read pending on a connection it is not writing
// to, and a write pending on one that cannot take its output, so one of the
// two registers the timer whatever state the connection is in.
impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.idle_expired {
            if let Poll::Ready(read) = Pin::new(&mut this.inner).poll_read(cx, buf) {
                return Poll::Ready(read);
            }
        }
        this.poll_idle(cx)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.idle_expired {
            if let Poll::Ready(written) = Pin::new(&mut this.inner).poll_write(cx, buf) {
                return Poll::Ready(written);
            }
        }
        this.poll_idle(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.idle_expired {
            if let Poll::Ready(written) = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
                return Poll::Ready(written);
            }
        }
        this.poll_idle(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
