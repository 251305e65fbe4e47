//! TLS termination: HTTP/1.1 and HTTP/2 chosen by ALPN, certificate rotation without dropping
//! connections, and a mismatched key refused.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, ServerName};
use support::{Gateway, Upstream, eventually, metric_value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn self_signed() -> Pair {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    Pair {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        der: generated.cert.der().clone(),
    }
}

fn install(dir: &Path, pair: &Pair) {
    // Key first, then the certificate, each by rename, as a cert manager would.
    for (name, text) in [("tls.key", &pair.key_pem), ("tls.crt", &pair.cert_pem)] {
        let staged = dir.join(format!(".{name}.new"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
}

fn config(dir: &Path, upstream: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  tls:\n    cert: \"{}\"\n    key: \"{}\"\n\
         upstreams:\n  app:\n    endpoints: [\"{upstream}\"]\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n    auth: none\n",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    )
}

/// A TLS connection to the gateway trusting `roots`, offering `alpn`.
async fn connect(
    gw: &Gateway,
    roots: &[&CertificateDer<'static>],
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends GET `path` on an established HTTP/1.1 sender.
async fn get1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> StatusCode {
    let request = Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn alpn_chooses_http2_or_http1_over_tls() {
    let pair = self_signed();
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &pair);
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(dir.path(), &upstream.url())).await;

    let tls = connect(&gw, &[&pair.der], &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://localhost/over-h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, Version::HTTP_2)
    );

    let tls = connect(&gw, &[&pair.der], &[b"http/1.1"]).await;
    let (mut h1, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(get1(&mut h1, "/over-h1").await, StatusCode::OK);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn a_rotated_certificate_serves_new_handshakes_and_old_connections_live_on() {
    let (first, second) = (self_signed(), self_signed());
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &first);
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(dir.path(), &upstream.url())).await;
    let both = [&first.der, &second.der];

    let old = connect(&gw, &both, &[b"http/1.1"]).await;
    assert_eq!(old.get_ref().1.peer_certificates().unwrap()[0], first.der);
    let (mut old_sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    tokio::spawn(connection);
    assert_eq!(get1(&mut old_sender, "/before").await, StatusCode::OK);

    install(dir.path(), &second);
    eventually(
        "a handshake with the new certificate",
        Duration::from_secs(5),
        async || {
            let fresh = connect(&gw, &both, &[b"http/1.1"]).await;
            fresh.get_ref().1.peer_certificates().unwrap()[0] == second.der
        },
    )
    .await;
    assert_eq!(
        get1(&mut old_sender, "/after").await,
        StatusCode::OK,
        "the old connection was kept"
    );
    let text = gw.metrics().await;
    assert!(
        metric_value(
            &text,
            "tokengate_reload_total",
            &[("what", "tls"), ("result", "ok")]
        )
        .is_some_and(|n| n >= 1.0)
    );
}

#[tokio::test]
async fn a_key_that_does_not_match_is_refused_with_a_clear_error() {
    let (pair, other) = (self_signed(), self_signed());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &pair.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &other.key_pem).unwrap();
    let config_path = dir.path().join("tokengate.yaml");
    std::fs::write(&config_path, config(dir.path(), "http://127.0.0.1:9")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["check", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("fix:"), "{stderr}");
}
