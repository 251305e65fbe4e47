//! Kept-alive HTTP/1.1 connections to one `http://` endpoint.
//!
//! hyper's `client::conn` speaks the protocol; this only keeps the connections. A connection
//! goes back into the pool when the last byte of its response body has been passed on (the
//! response's [`Body`] does that), so no task is spawned per request and nothing is looked up
//! by key. The connection kept last is used first; those unused for `IDLE_TIMEOUT` close.

use std::collections::VecDeque;
use std::error::Error;
use std::pin::Pin;
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

use super::UpstreamBody;

/// A connection unused this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most connections kept per endpoint; beyond it a connection closes after its response.
const MAX_KEPT: usize = 1024;

pub struct Connections {
    kept: Mutex<VecDeque<Kept>>,
    connector: HttpConnector,
    /// `http://authority`, what the connector dials.
    target: Uri,
}

struct Kept {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made.
    Connect(Box<dyn Error + Send + Sync>),
    /// The connection failed while the request or the response head was in flight.
    Request(hyper::Error),
}

impl Connections {
    pub fn new(connector: HttpConnector, target: Uri) -> Self {
        Self {
            kept: Mutex::new(VecDeque::new()),
            connector,
            target,
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
            while let Some(mut sender) = self.take(now) {
                // Just kept, its connection may still be finishing the previous exchange.
                if sender.ready().await.is_err() {
                    continue;
                }
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.returning(response, sender)),
                    // The upstream closed the connection before the request was written (an idle
                    // keep-alive timing out): the request is given back and goes on another one.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                }
            }
            let mut sender = self.connect().await?;
            let response = sender
                .send_request(request)
                .await
                .map_err(SendError::Request)?;
            Ok(self.returning(response, sender))
        }
    }

    /// The response, with its connection to be kept once the body has been read.
    fn returning(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<UpstreamBody>,
    ) -> Response<Body> {
        let done = response.body().is_end_stream();
        let mut response = response.map(|inner| Body {
            inner,
            keep: Some((self.clone(), sender)),
        });
        if done {
            response.body_mut().finished();
        }
        response
    }

    fn take(&self, now: Instant) -> Option<SendRequest<UpstreamBody>> {
        let mut kept = self.lock();
        while let Some(candidate) = kept.pop_back() {
            if now.saturating_duration_since(candidate.since) >= IDLE_TIMEOUT {
                // The newest is too old, so all are: dropping a sender closes its connection.
                kept.clear();
                return None;
            }
            if !candidate.sender.is_closed() {
                return Some(candidate.sender);
            }
        }
        None
    }

    fn keep(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
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
            kept.push_back(Kept { sender, since });
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, SendError> {
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
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A response body from a pooled connection: passes the upstream's frames through and, at the
/// end of the body, gives the connection back to the pool. A body dropped before its end
/// takes the connection with it, since the rest of the response would still be on the wire.
pub struct Body {
    inner: Incoming,
    keep: Option<(Arc<Connections>, SendRequest<UpstreamBody>)>,
}

impl Body {
    pub fn new(inner: Incoming) -> Self {
        Self { inner, keep: None }
    }

    fn finished(&mut self) {
        if let Some((pool, sender)) = self.keep.take() {
            pool.keep(sender);
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
