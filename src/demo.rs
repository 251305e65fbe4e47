//! `tokengate demo`: everything on loopback, nothing to install or configure.
//!
//! An in-process echo upstream (it answers with what it received, as JSON), a generated
//! config with a public and a protected route, the gateway itself, and ready `curl` lines.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Gateway;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot bind a loopback port: {0}")]
    Bind(#[from] std::io::Error),
    #[error("the generated config was refused: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Serve(#[from] crate::ServeError),
}

/// Runs the demo until `shutdown` completes.
pub async fn run(shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(serve_echo(upstream));

    let listen = free_port_or_any(8080).await?;
    let admin = free_port_or_any(9090).await?;
    let yaml = demo_config(listen, admin, upstream_addr);
    let config = crate::config::parse(Path::new("<demo config>"), &yaml)?;
    let gateway = Gateway::bind(config).await?;
    let (base, metrics) = (gateway.local_addr(), gateway.admin_addr());
    println!(
        "\ntokengate demo: gateway on http://{base}, admin on http://{metrics}\n\
         \n\
         The config in use:\n{yaml}\n\
         Try:\n  \
         curl -i http://{base}/public/hello          # 200: anonymous route, the echo upstream answers\n  \
         curl -i http://{base}/orders/42             # 401: this route needs a bearer token\n  \
         curl -i http://{base}/nowhere               # 404: no route matches\n  \
         curl -i --path-as-is http://{base}/public/../orders/42  # 401: normalised before matching\n  \
         curl -s http://{metrics}/metrics | grep tokengate_requests_total\n\
         \n\
         Ctrl-C stops.\n"
    );
    gateway.run(shutdown).await?;
    Ok(())
}

fn demo_config(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "server:\n  listen: \"{listen}\"\n  shutdown_grace: 2s\n\
         admin:\n  listen: \"{admin}\"\n\
         issuers:\n  - name: demo\n    issuer: \"http://{listen}/demo-issuer\"\n    audiences: [demo-api]\n    jwks:\n      url: \"http://{upstream}/.well-known/jwks.json\"\n\
         upstreams:\n  echo:\n    endpoints: [\"http://{upstream}\"]\n\
         routes:\n  - name: public\n    match: {{ path_prefix: /public }}\n    upstream: echo\n    auth: none\n  \
         - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth:\n      scopes:\n        all_of: [orders.read]\n"
    )
}

async fn free_port_or_any(preferred: u16) -> std::io::Result<SocketAddr> {
    let probe = match TcpListener::bind(("127.0.0.1", preferred)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    probe.local_addr()
}

async fn serve_echo(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

/// Answers with the method, path and headers it received, so the user sees what the
/// gateway forwarded.
async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/.well-known/jwks.json" {
        return Ok(json(serde_json::json!({ "keys": [] })));
    }
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    Ok(json(serde_json::json!({
        "upstream": "echo",
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    })))
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{value:#}\n"))));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
