//! Kept-alive HTTP/1.1 connections to one `http://` endpoint.
//!
//! hyper's `client::conn` speaks the protocol; this only keeps the connections. A connection
//! goes back into the pool when the last byte of its response body has been passed on (the
//! response's [`Body`] does that), so no task is spawned per request and nothing is looked up
//! by key. The connection kept last is used first; those unused for `IDLE_TIMEOUT` close.
//!
//! `request_timeout` is kept by the task that drives each connection, not by a timer per
//! request: a request writes its deadline into its connection's [`Exchange`], and the task,
//! woken for the request anyway, checks it on a ticker that runs only while a request waits
//! (a tick is an eighth of the timeout, 5 ms to 1 s; a timeout is noticed up to one tick late).
//! A timer registered and cancelled for every request cost about 900 instructions of the
//! roughly 36 000 a proxied request takes (benches/load/FINDINGS.md, "The floor").

use std::collections::VecDeque;
use std::error::Error;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service as _;

use super::{UpstreamBody, millis_since_start};
use crate::ticker::Ticker;

/// A connection unused this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most connections kept per endpoint; beyond it a connection closes after its response.
const MAX_KEPT: usize = 1024;

pub struct Connections {
    kept: Mutex<VecDeque<Kept>>,
    connector: HttpConnector,
    /// `http://authority`, what the connector dials.
    target: Uri,
    /// The longest a request waits for its response head once on a connection, in
    /// milliseconds (the unit of an [`Exchange`]'s deadline).
    request_timeout_ms: u64,
    /// How often a connection's task looks at the deadline of the request waiting on it.
    tick: Duration,
}

struct Kept {
    conn: Conn,
    since: Instant,
}

/// One connection: the handle requests are sent through, and the request clock it shares
/// with the task driving it.
struct Conn {
    sender: SendRequest<UpstreamBody>,
    exchange: Arc<Exchange>,
}

/// The deadline of the request waiting on a connection, shared by the request and the task
/// that drives the connection: `IDLE` when none waits, `TIMED_OUT` once the task has given up
/// on it (and closed the connection), else milliseconds on `millis_since_start`'s clock.
#[derive(Default)]
struct Exchange {
    deadline: AtomicU64,
}

const IDLE: u64 = 0;
const TIMED_OUT: u64 = u64::MAX;

impl Exchange {
    /// A request starts waiting: it times out at `deadline`.
    fn begin(&self, deadline: u64) {
        self.deadline
            .store(deadline.clamp(1, TIMED_OUT - 1), Ordering::Release);
    }

    /// The request's wait is over (a response head, or an error): whether it had timed out.
    fn end(&self) -> bool {
        self.deadline.swap(IDLE, Ordering::AcqRel) == TIMED_OUT
    }

    fn waiting(&self) -> bool {
        !matches!(self.deadline.load(Ordering::Acquire), IDLE | TIMED_OUT)
    }

    /// Gives up on the waiting request if its deadline is `now` or earlier. Whichever of this
    /// and `end` comes first decides, so a response head arriving at the deadline is either
    /// passed on whole or not at all.
    fn expire(&self, now: u64) -> bool {
        let deadline = self.deadline.load(Ordering::Acquire);
        !matches!(deadline, IDLE | TIMED_OUT)
            && now >= deadline
            && self
                .deadline
                .compare_exchange(deadline, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(Box<dyn Error + Send + Sync>),
    /// The connection failed while the request or the response head was in flight.
    Request(hyper::Error),
    /// No response head within `request_timeout`.
    Timeout,
}

impl Connections {
    pub fn new(connector: HttpConnector, target: Uri, request_timeout: Duration) -> Self {
        Self {
            kept: Mutex::new(VecDeque::new()),
            connector,
            target,
            request_timeout_ms: u64::try_from(request_timeout.as_millis()).unwrap_or(u64::MAX),
            tick: (request_timeout / 8).clamp(Duration::from_millis(5), Duration::from_secs(1)),
        }
    }

    /// Sends `request` (origin-form target, Host set) on a kept connection or a new one;
    /// `now` is the time the exchange began.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold the request twice; see `gateway`"
    )]
    pub fn send(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
        now: Instant,
    ) -> impl Future<Output = Result<Response<Body>, SendError>> {
        async move {
            let deadline = millis_since_start(now).saturating_add(self.request_timeout_ms);
            while let Some(mut conn) = self.take(now) {
                conn.exchange.begin(deadline);
                // Just kept, its connection may still be finishing the previous exchange.
                if conn.sender.ready().await.is_err() {
                    if conn.exchange.end() {
                        return Err(SendError::Timeout);
                    }
                    continue;
                }
                let sent = conn.sender.try_send_request(request).await;
                if conn.exchange.end() {
                    return Err(SendError::Timeout);
                }
                match sent {
                    Ok(response) => return Ok(self.returning(response, conn)),
                    // The upstream closed the connection before the request was written (an idle
                    // keep-alive timing out): the request is given back and goes on another one.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                }
            }
            let mut conn = self.connect().await?;
            conn.exchange.begin(deadline);
            let sent = conn.sender.send_request(request).await;
            if conn.exchange.end() {
                return Err(SendError::Timeout);
            }
            Ok(self.returning(sent.map_err(SendError::Request)?, conn))
        }
    }

    /// The response, with its connection to be kept once the body has been read.
    fn returning(self: &Arc<Self>, response: Response<Incoming>, conn: Conn) -> Response<Body> {
        let done = response.body().is_end_stream();
        let mut response = response.map(|inner| Body {
            inner,
            keep: Some((self.clone(), conn)),
        });
        if done {
            response.body_mut().finished();
        }
        response
    }

    fn take(&self, now: Instant) -> Option<Conn> {
        let mut kept = self.lock();
        while let Some(candidate) = kept.pop_back() {
            if now.saturating_duration_since(candidate.since) >= IDLE_TIMEOUT {
                // The newest is too old, so all are: dropping a sender closes its connection.
                kept.clear();
                return None;
            }
            if !candidate.conn.sender.is_closed() {
                return Some(candidate.conn);
            }
        }
        None
    }

    fn keep(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let since = Instant::now();
        let mut kept = self.lock();
        // The oldest goes when idle too long, so a pool grown at a peak shrinks after it.
        if kept
            .front()
            .is_some_and(|oldest| since.duration_since(oldest.since) >= IDLE_TIMEOUT)
        {
            kept.pop_front();
        }
        if kept.len() < MAX_KEPT {
            kept.push_back(Kept { conn, since });
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let io = self
            .connector
            .clone()
            .call(self.target.clone())
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let (sender, connection) = Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Request)?;
        let exchange = Arc::new(Exchange::default());
        tokio::spawn(drive(connection, exchange.clone(), self.tick));
        Ok(Conn { sender, exchange })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drives one connection until it closes, or until the request waiting on it outlives its
/// deadline: the connection is then closed (the rest of that response would still be coming).
///
/// The ticker (see `ticker`) is set again only while a request waits.
async fn drive(
    connection: impl Future<Output = hyper::Result<()>>,
    exchange: Arc<Exchange>,
    tick: Duration,
) {
    let mut connection = pin!(connection);
    let sleep = pin!(tokio::time::sleep(tick));
    let mut ticker = Ticker::new(sleep, tick);
    let result = poll_fn(|cx| {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if exchange.waiting()
            && let Some(now) = ticker.tick(cx)
            && exchange.expire(millis_since_start(now))
        {
            tracing::debug!("upstream request_timeout reached; connection closed");
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "upstream connection closed with an error");
    }
}

/// A response body from a pooled connection: passes the upstream's frames through and, at the
/// end of the body, gives the connection back to the pool. A body dropped before its end
/// takes the connection with it, since the rest of the response would still be on the wire.
pub struct Body {
    inner: Incoming,
    keep: Option<(Arc<Connections>, Conn)>,
}

impl Body {
    pub fn new(inner: Incoming) -> Self {
        Self { inner, keep: None }
    }

    fn finished(&mut self) {
        if let Some((pool, conn)) = self.keep.take() {
            pool.keep(conn);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.finished(),
            Some(Ok(_)) if self.inner.is_end_stream() => self.finished(),
            Some(Ok(_)) => {}
            // A broken response: its connection is not reused.
            Some(Err(_)) => self.keep = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
