//! Shared set-up for the integration tests: a real gateway on 127.0.0.1:0, real upstreams,
//! real clients. Everything binds to loopback and stops when the test's runtime ends.

#![allow(dead_code)]

pub mod keys;
pub mod tokens;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub version: http::Version,
}

/// A real HTTP server on 127.0.0.1:0 that records every request and counts connections.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Upstream {
    /// An upstream answering 200 `ok from ADDR`, with hop-by-hop headers the gateway must drop.
    pub async fn echo() -> Self {
        Self::start(|request: Request<Incoming>, addr: SocketAddr| async move {
            drop(request.into_body().collect().await);
            Response::builder()
                .header("x-upstream", addr.to_string())
                .header("connection", "x-hop")
                .header("x-hop", "must not reach the client")
                .header("keep-alive", "timeout=5")
                .body(full(format!("ok from {addr}")))
                .unwrap()
        })
        .await
    }

    /// A source (a revocation list, say) that serves `body` while `up` holds and answers 503
    /// otherwise, to go down and come back; `seen()` counts its fetches.
    pub async fn switchable(body: &'static str, up: Arc<AtomicBool>) -> Self {
        Self::start(move |_request, _| {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Response::new(full(body))
                } else {
                    Response::builder().status(503).body(full("down")).unwrap()
                }
            }
        })
        .await
    }

    /// An upstream whose answers come from `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let task = {
            let (seen, connections) = (seen.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, handler) = (seen.clone(), handler.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            seen.lock().unwrap().push(Seen {
                                method: request.method().to_string(),
                                path_and_query: request
                                    .uri()
                                    .path_and_query()
                                    .map_or(String::new(), |p| p.to_string()),
                                headers: request.headers().clone(),
                                version: request.version(),
                            });
                            let response = handler(request, addr);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The one request received so far; panics if there were more or none.
    pub fn only_request(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(
            seen.len(),
            1,
            "expected exactly one upstream request, got {seen:#?}"
        );
        seen.into_iter().next().unwrap()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway running in this process on 127.0.0.1:0.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts a gateway from `yaml`; `server.listen` and `admin.listen` default to
    /// 127.0.0.1:0 when the YAML has no `server:`/`admin:` section.
    pub async fn start(yaml: &str) -> Self {
        let mut text = String::new();
        if !yaml.contains("server:") {
            text.push_str("server:\n  listen: \"127.0.0.1:0\"\n");
        }
        if !yaml.contains("admin:") {
            text.push_str("admin:\n  listen: \"127.0.0.1:0\"\n");
        }
        text.push_str(yaml);
        let config = tokengate::config::parse(Path::new("test.yaml"), &text)
            .unwrap_or_else(|e| panic!("test config refused: {e}\n{text}"));
        Self::run(tokengate::Gateway::bind(config).await.unwrap(), None)
    }

    /// Starts a gateway from a config file and reloads it when the file changes, as `serve`.
    pub async fn start_file(path: &Path) -> Self {
        let config =
            tokengate::config::load(path).unwrap_or_else(|e| panic!("config refused: {e}"));
        let gateway = tokengate::Gateway::bind(config).await.unwrap();
        let reloader = tokengate::reload::spawn(gateway.state().clone(), path.to_owned());
        Self::run(gateway, Some(reloader))
    }

    /// Runs a bound gateway until `begin_shutdown` (or drop), then stops `reloader` too.
    fn run(gateway: tokengate::Gateway, reloader: Option<JoinHandle<()>>) -> Self {
        let (addr, admin) = (gateway.local_addr(), gateway.admin_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gateway
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            if let Some(reloader) = reloader {
                reloader.abort();
            }
        });
        Self {
            addr,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (at most 10 s) until `/readyz` says ready: every issuer has its keys.
    pub async fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = client().get(self.admin_url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Signals shutdown and returns the task that completes when the gateway has stopped.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("shutdown begins once")
    }

    /// The status of a plain `GET` of `path`.
    pub async fn status(&self, path: &str) -> reqwest::StatusCode {
        client().get(self.url(path)).send().await.unwrap().status()
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `check` every 50 ms until it holds; fails the test after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of `GET /x` with `token` as the bearer credential.
pub async fn status_with(gw: &Gateway, token: &str) -> u16 {
    client()
        .get(gw.url("/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A plain HTTP client that never goes through a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// What came back on one connection.
pub struct Answer {
    pub text: String,
    /// The gateway closed the connection (within the wait).
    pub closed: bool,
}

impl Answer {
    pub fn status(&self) -> Option<u16> {
        let line = self.text.lines().next()?;
        line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    pub fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count()
    }
}

/// Writes `bytes` on a fresh connection, then reads until the gateway closes or `wait` passes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before reading everything; that is fine.
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Answer {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// A raw TCP server on 127.0.0.1 for what a well-behaved HTTP server never does: `handle`
/// gets each accepted connection and its number (0 for the first). Stops when dropped.
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start<F, Fut>(handle: F) -> Self
    where
        F: Fn(TcpStream, usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let number = counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(stream, number));
            }
        });
        Self {
            addr,
            connections,
            task,
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from `stream` until the end of a request or response head; false when the peer
/// closed (or failed) first.
pub async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// What `exchange` read, as text: for tests that only look at the bytes.
pub async fn raw_request(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    exchange(addr, request, wait).await.text
}

/// The value of `name` in a Prometheus text exposition line that has all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A request or response body fed chunk by chunk from a channel, so a test decides when each
/// chunk is sent.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// A channel-fed body and the sender that feeds it.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, ChannelBody(rx))
}

/// A free loopback port with nothing listening on it.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// The `tokengate` binary serving a config file, killed (by PID) when dropped.
pub struct Served {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Served {
    /// Runs `tokengate serve --config CONFIG` with `env`, and waits for its address.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"));
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(config);
        for (k, v) in env {
            command.env(k, v);
        }
        Self::spawn(command)
    }

    /// Runs `command` (a `tokengate --log-format json serve ...`) and waits for its listening
    /// address; its log lines remain readable from `lines`.
    pub fn spawn(mut command: std::process::Command) -> Self {
        use std::io::BufRead;
        command
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let addr = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("the gateway logged its listening address");
            let event: serde_json::Value =
                serde_json::from_str(&line).expect("logs are JSON lines");
            if event["message"] == "gateway listening" {
                break event["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        Self { child, addr, lines }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
