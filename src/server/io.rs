//! A socket wrapper that notes activity, so the connection task can enforce idle and
//! header-read timeouts without a timer per read: a relaxed store per read or write.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the connection task reads on each tick.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bytes read since the last tick.
    pub read: AtomicBool,
    /// Bytes written since the last tick.
    pub written: AtomicBool,
    /// Requests whose response head is not yet produced.
    pub in_flight: AtomicUsize,
    /// Requests started on this connection.
    pub requests: AtomicU64,
    /// The client opened with the HTTP/2 preface: frames (PING, WINDOW_UPDATE) arrive between
    /// requests, so reads there do not mean a request head is being sent.
    pub http2: AtomicBool,
    /// The first bytes were seen (and `http2` decided).
    sniffed: AtomicBool,
}

/// Marks a request in flight for as long as it lives (also when its future is dropped).
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.written.store(true, Ordering::Relaxed);
    }
}

pub struct TrackedIo<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            self.activity.read.store(true, Ordering::Relaxed);
            if !self.activity.sniffed.load(Ordering::Relaxed) && before == 0 && new.len() >= 2 {
                // RFC 9113 §3.4: the preface starts "PRI"; no HTTP/1 method starts "PR".
                self.activity
                    .http2
                    .store(new.starts_with(b"PR"), Ordering::Relaxed);
                self.activity.sniffed.store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.written.store(true, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.written.store(true, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
