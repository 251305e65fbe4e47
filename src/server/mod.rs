//! Listeners and connections: the accept loop, `max_connections`, TLS handshakes (`tls`),
//! per-connection header-read and idle timeouts, HTTP/1.1 and HTTP/2 on one port (h2c by
//! prior knowledge, h2 by ALPN), graceful shutdown that drains requests and WebSockets.

mod io;
pub mod tls;

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::Config;
use crate::gateway::{self, ConnectionInfo};
use crate::snapshot::State;
use crate::ticker::Ticker;
use io::{Activity, InFlight, TrackedIo};

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(
        "{field}: cannot listen on {addr}: {source}\n  fix: free the port, or choose another address in the config"
    )]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A gateway whose listeners are bound, ready to `run`.
pub struct Gateway {
    state: Arc<State>,
    listener: TcpListener,
    admin: TcpListener,
    tls: Option<tls::Tls>,
}

impl Gateway {
    /// Binds the gateway and admin listeners of `config`.
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        let listen = config.server.listen;
        let admin_listen = config.admin.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                field: "server.listen",
                addr: listen,
                source,
            })?;
        let admin = TcpListener::bind(admin_listen)
            .await
            .map_err(|source| ServeError::Bind {
                field: "admin.listen",
                addr: admin_listen,
                source,
            })?;
        let tls = config.server.tls.as_ref().map(tls::Tls::new).transpose()?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let state = Arc::new(State::new(config, metrics)?);
        Ok(Self {
            state,
            listener,
            admin,
            tls,
        })
    }

    /// The address the gateway listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the admin endpoints.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// for up to `server.shutdown_grace`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let Gateway {
            state,
            listener,
            admin,
            tls,
        } = self;
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone()));
        let tls_reloader = tls
            .as_ref()
            .map(|t| t.spawn_reloader(state.metrics.clone()));
        tracing::info!(addr = %listener.local_addr().map_or(String::new(), |a| a.to_string()), "gateway listening");
        tracing::info!(addr = %admin.local_addr().map_or(String::new(), |a| a.to_string()), "admin listening");
        let admin_task = tokio::spawn(crate::admin::serve(admin, state.clone()));
        state.set_ready(true);

        let draining = Arc::new(Draining::default());
        // Fixed for the life of the process (a reload says so); the rest is read per connection.
        let max_connections = state.snapshot.load().config.server.max_connections;
        let permits = Arc::new(Semaphore::new(max_connections));
        let builder = Arc::new(http_builder(&state.snapshot.load().config));
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = max_connections, "max_connections reached; connection refused");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let builder = builder.clone();
            let draining = draining.clone();
            // Counted from accept on, TLS handshake included, as shutdown waits for it.
            let open = draining.open.subscribe();
            let acceptor = acceptor.clone();
            let limits = ConnectionLimits::from(&state.snapshot.load().config.server);
            tokio::spawn(async move {
                let _open = open;
                let info = Arc::new(ConnectionInfo::new(peer, acceptor.is_some()));
                let activity = Arc::new(Activity::default());
                let tracked = TrackedIo::new(stream, activity.clone());
                match acceptor {
                    None => {
                        serve_connection(
                            tracked, activity, info, state, &builder, &draining, &limits,
                        )
                        .await
                    }
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            limits.header_read_timeout,
                            acceptor.accept(tracked),
                        )
                        .await;
                        match handshake {
                            Ok(Ok(tls)) => {
                                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                activity.http2.store(h2, Ordering::Relaxed);
                                serve_connection(
                                    tls, activity, info, state, &builder, &draining, &limits,
                                )
                                .await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake not completed within header_read_timeout")
                            }
                        }
                    }
                }
                drop(permit);
            });
        }

        state.set_ready(false);
        drop(listener);
        let grace = state.snapshot.load().config.server.shutdown_grace;
        let open = draining.open.receiver_count();
        tracing::info!(
            open_connections = open,
            grace_ms = grace.as_millis() as u64,
            "shutting down"
        );
        tokio::select! {
            () = async {
                draining.start();
                draining.open.closed().await;
                state.tunnels.drained().await;
            } => tracing::info!("all connections closed"),
            () = tokio::time::sleep(grace) => {
                tracing::warn!("shutdown_grace elapsed; closing the remaining connections");
            }
        }
        admin_task.abort();
        if let Some(task) = tls_reloader {
            task.abort();
        }
        Ok(())
    }
}

fn http_builder(config: &Config) -> auto::Builder<TokioExecutor> {
    let server = &config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Enforced per connection in `serve_connection`; see there.
        .header_read_timeout(None)
        .max_buf_size(server.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Tells open connections that the gateway is shutting down, and counts them.
struct Draining {
    /// Set before `notify` wakes the connections, so that a connection woken for any other
    /// reason sees it too.
    started: AtomicBool,
    notify: Arc<Notify>,
    /// Every connection holds a receiver: the count of them is the open connections, and
    /// `closed` completes when the last one has gone.
    open: watch::Sender<()>,
}

impl Default for Draining {
    fn default() -> Self {
        Self {
            started: AtomicBool::new(false),
            notify: Arc::new(Notify::new()),
            open: watch::Sender::new(()),
        }
    }
}

impl Draining {
    fn start(&self) {
        self.started.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

async fn serve_connection<I>(
    io: I,
    activity: Arc<Activity>,
    info: Arc<ConnectionInfo>,
    state: Arc<State>,
    builder: &auto::Builder<TokioExecutor>,
    draining: &Draining,
    limits: &ConnectionLimits,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = pin!(draining.notify.clone().notified_owned());
    let io = TokioIo::new(io);
    let service_activity = activity.clone();
    let service_info = info.clone();
    let service = service_fn(move |request| {
        let (state, info) = (state.clone(), service_info.clone());
        let in_flight = InFlight::start(service_activity.clone());
        async move {
            let response = gateway::handle(&state, &info, request).await;
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let mut connection = pin!(builder.serve_connection_with_upgrades(io, service));

    // Timeouts enforced here rather than by hyper: its HTTP/1 header timer also runs while a
    // kept-alive connection waits for its next request (which would make idle_timeout
    // meaningless), and protocol auto-detection has no timer at all.
    let tick = (limits.idle_timeout.min(limits.header_read_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut clock = ConnectionClock::new(Instant::now());
    let sleep = pin!(tokio::time::sleep(tick));
    let mut ticker = Ticker::new(sleep, tick);
    // The shutdown signal is polled once and then only read as a flag, as the ticker is only
    // looked at until it fires (see `ticker`): it keeps the waker of its last poll, which is
    // this task's and does not change.
    let (mut shutdown_armed, mut shutting_down) = (false, false);
    poll_fn(|cx| {
        if !shutting_down {
            // The waker first, then the flag: a shutdown that starts after this reads it on
            // the wake it causes, one that started before is read now.
            if !shutdown_armed {
                shutdown_armed = true;
                let _ = shutdown.as_mut().poll(cx);
            }
            if draining.started.load(Ordering::Acquire) {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            if let Err(e) = result {
                tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
            }
            return Poll::Ready(());
        }
        if let Some(now) = ticker.tick(cx)
            && let Some(reason) = clock.expired(&activity, now, limits)
        {
            tracing::debug!(peer = %info.peer, reason, "closing connection");
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
}

/// The timeouts a connection lives by, taken from the config current when it was accepted.
#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl From<&crate::config::Server> for ConnectionLimits {
    fn from(server: &crate::config::Server) -> Self {
        Self {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
        }
    }
}

/// Per-connection timing: when the connection was last active, and when the request head now
/// being read began.
struct ConnectionClock {
    last_active: Instant,
    /// Set while a request head is being received (from accept for the first one).
    head_started: Option<Instant>,
    requests_seen: u64,
}

impl ConnectionClock {
    fn new(accepted: Instant) -> Self {
        Self {
            last_active: accepted,
            head_started: Some(accepted),
            requests_seen: 0,
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(
        &mut self,
        activity: &Activity,
        now: Instant,
        limits: &ConnectionLimits,
    ) -> Option<&'static str> {
        let read = activity.read.swap(false, Ordering::Relaxed);
        let written = activity.written.swap(false, Ordering::Relaxed);
        let in_flight = activity.in_flight.load(Ordering::Relaxed) > 0;
        let requests = activity.requests.load(Ordering::Relaxed);
        if read || written || in_flight {
            self.last_active = now;
        }
        if requests != self.requests_seen || in_flight {
            // A head was completed; the next one starts with the next bytes read.
            self.requests_seen = requests;
            self.head_started = None;
        } else if read && self.head_started.is_none() && !activity.http2.load(Ordering::Relaxed) {
            self.head_started = Some(now);
        }
        if self
            .head_started
            .is_some_and(|t| now.duration_since(t) >= limits.header_read_timeout)
        {
            return Some("request head not received within header_read_timeout");
        }
        if now.duration_since(self.last_active) >= limits.idle_timeout {
            return Some("idle_timeout reached");
        }
        None
    }
}
