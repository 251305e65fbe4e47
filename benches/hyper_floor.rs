//! The floor under tokengate's cost a request: the HTTP stack it is built on (hyper's HTTP/1.1
//! server and client connections on tokio, upstream connections kept and reused) passing a
//! request through with nothing else: no routing, no token, no header rewritten, no metrics,
//! no timeouts, no logs. What tokengate spends beyond this proxy is what its own code costs;
//! what this proxy spends beyond nginx is the stack's.
//!
//! ```sh
//! cargo bench --bench hyper_floor --no-run            # builds it (optimised, as a bench)
//! .../hyper_floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000
//! ```
//!
//! `benches/load/floor.py` times it beside nginx and tokengate, and `benches/load/profile.py
//! --floor` counts its instructions. Run without arguments (as `cargo test --benches` does), it
//! proxies a few requests to an upstream of its own on 127.0.0.1 and checks each answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (flag(&args, "--listen"), flag(&args, "--upstream")) {
        (Some(listen), Some(upstream)) => {
            let listener = TcpListener::bind(listen.parse::<SocketAddr>()?).await?;
            serve(listener, upstream.parse()?).await
        }
        (None, None) => self_check().await,
        _ => Err("give both --listen ADDR and --upstream ADDR, or neither".into()),
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).map(String::as_str)
}

async fn serve(listener: TcpListener, upstream: SocketAddr) -> Result<(), Error> {
    let pool = Arc::new(Pool {
        upstream,
        kept: Mutex::new(Vec::new()),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(pool.forward(request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Kept-alive connections to the upstream, the one kept last used first.
struct Pool {
    upstream: SocketAddr,
    kept: Mutex<Vec<SendRequest<Incoming>>>,
}

impl Pool {
    async fn forward(self: &Arc<Self>, request: Request<Incoming>) -> Response<PoolBody> {
        match self.send(request).await {
            Ok(response) => response,
            Err(_) => {
                let mut response = Response::new(PoolBody::Failed);
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
            }
        }
    }

    async fn send(
        self: &Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<PoolBody>, Error> {
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(sender) = &mut kept
            && sender.ready().await.is_err()
        {
            kept = None;
        }
        let mut sender = match kept {
            Some(sender) => sender,
            None => {
                let stream = TcpStream::connect(self.upstream).await?;
                let _ = stream.set_nodelay(true);
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                sender
            }
        };
        let response = sender.send_request(request).await?;
        let done = response.body().is_end_stream();
        let mut response = response.map(|inner| PoolBody::Upstream {
            inner,
            keep: Some((self.clone(), sender)),
        });
        if done {
            response.body_mut().finished();
        }
        Ok(response)
    }
}

/// The upstream's response body; its connection goes back to the pool at the body's end.
enum PoolBody {
    Upstream {
        inner: Incoming,
        keep: Option<(Arc<Pool>, SendRequest<Incoming>)>,
    },
    Failed,
}

impl PoolBody {
    fn finished(&mut self) {
        if let PoolBody::Upstream { keep, .. } = self
            && let Some((pool, sender)) = keep.take()
        {
            pool.kept
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(sender);
        }
    }
}

impl http_body::Body for PoolBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let PoolBody::Upstream { inner, keep } = &mut *self else {
            return Poll::Ready(None);
        };
        let frame = ready!(Pin::new(&mut *inner).poll_frame(cx));
        let end = match &frame {
            None => true,
            Some(Ok(_)) => inner.is_end_stream(),
            Some(Err(_)) => {
                *keep = None;
                false
            }
        };
        if end {
            self.finished();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PoolBody::Upstream { inner, .. } => inner.is_end_stream(),
            PoolBody::Failed => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PoolBody::Upstream { inner, .. } => inner.size_hint(),
            PoolBody::Failed => SizeHint::with_exact(0),
        }
    }
}

/// An upstream answering "ok" and the floor in front of it, both on 127.0.0.1; a few requests
/// on one kept-alive client connection must all come back 200 with the upstream's body.
async fn self_check() -> Result<(), Error> {
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    let upstream_task = tokio::spawn(async move {
        while let Ok((stream, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let floor = TcpListener::bind("127.0.0.1:0").await?;
    let floor_addr = floor.local_addr()?;
    let floor_task = tokio::spawn(serve(floor, upstream_addr));

    let stream = TcpStream::connect(floor_addr).await?;
    let (mut client, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    for n in 0..5 {
        client.ready().await?;
        let request = Request::get(format!("/check/{n}"))
            .header(http::header::HOST, floor_addr.to_string())
            .body(Empty::new())?;
        let response = client.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK || body.as_ref() != b"ok\n" {
            return Err(format!("request {n}: {status} {body:?}, expected 200 \"ok\\n\"").into());
        }
    }
    floor_task.abort();
    upstream_task.abort();
    println!("hyper_floor: 5 requests proxied, each answered 200");
    Ok(())
}
