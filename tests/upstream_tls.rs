//! `https://` upstreams: verified against the trust store (a private CA added through
//! `SSL_CERT_FILE`), HTTP/2 when ALPN agrees, and 502 for a certificate nobody vouches for.

mod support;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use support::{Served, client};
use tokio::net::TcpListener;

/// An HTTPS server on 127.0.0.1 answering with the HTTP version it was spoken to in.
/// Returns its address and its (self-signed) certificate in PEM.
async fn https_upstream() -> (std::net::SocketAddr, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key =
        PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", request.version());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, generated.cert.pem())
}

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\nadmin:\n  listen: \"127.0.0.1:0\"\n\
         upstreams:\n  secure:\n    endpoints: [\"https://{upstream}\"]\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: secure\n    auth: none\n"
    )
}

#[tokio::test]
async fn https_upstreams_are_verified_and_spoken_to_in_http2() {
    let (addr, ca) = https_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let config_file = dir.path().join("tokengate.yaml");
    std::fs::write(&config_file, config(addr)).unwrap();

    let trusted = Served::start(
        &config_file,
        &[("SSL_CERT_FILE", ca_file.to_str().unwrap())],
    );
    let response = client()
        .get(format!("http://{}/x", trusted.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "HTTP/2.0", "ALPN chose h2");

    let untrusted = Served::start(&config_file, &[("SSL_CERT_FILE", "/nonexistent.pem")]);
    let response = client()
        .get(format!("http://{}/x", untrusted.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        502,
        "a certificate no trusted CA signed is refused"
    );
}
