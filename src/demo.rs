//! `tokengate demo`: everything on loopback, nothing to install or configure.
//!
//! An in-process echo upstream (it answers with what it received, as JSON), an identity
//! provider with an ephemeral ES256 key served as a JWKS, a generated config with a public and
//! a protected route, the gateway itself, and tokens with ready `curl` lines.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::Gateway;

const ISSUER: &str = "https://demo-idp.tokengate.local";
const AUDIENCE: &str = "demo-api";
const KID: &str = "demo-key-1";

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot bind a loopback port: {0}")]
    Bind(#[from] std::io::Error),
    #[error("cannot make the demo signing key")]
    Key,
    #[error("the generated config was refused: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Serve(#[from] crate::ServeError),
}

/// An ephemeral ES256 key: its JWKS document and a way to sign tokens.
struct DemoKey {
    jwks: Value,
    signing: EncodingKey,
}

impl DemoKey {
    fn generate() -> Result<Self, DemoError> {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| DemoError::Key)?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| DemoError::Key)?;
        // Uncompressed point: 0x04 || x || y, 32 bytes each.
        let point = pair.public_key().as_ref();
        let (x, y) = point.get(1..).ok_or(DemoError::Key)?.split_at(32);
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": KID,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        Ok(Self {
            jwks,
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
        })
    }

    fn token(&self, subject: &str, scope: &str) -> Result<String, DemoError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
        let claims = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "scope": scope,
            "iat": now, "exp": now + 3600,
        });
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &self.signing, Algorithm::ES256)
                .map_err(|_| DemoError::Key)?;
        Ok(format!("{message}.{signature}"))
    }
}

/// Runs the demo until `shutdown` completes.
pub async fn run(shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let key = DemoKey::generate()?;
    let upstream = TcpListener::bind("127.0.0.1:0").await?;
    let upstream_addr = upstream.local_addr()?;
    tokio::spawn(serve(upstream, Bytes::new()));
    let idp = TcpListener::bind("127.0.0.1:0").await?;
    let idp_addr = idp.local_addr()?;
    tokio::spawn(serve(idp, Bytes::from(key.jwks.to_string())));

    let listen = free_port_or_any(8080).await?;
    let admin = free_port_or_any(9090).await?;
    let yaml = demo_config(listen, admin, upstream_addr, idp_addr);
    let config = crate::config::parse(Path::new("<demo config>"), &yaml)?;
    let gateway = Gateway::bind(config).await?;
    let (base, metrics) = (gateway.local_addr(), gateway.admin_addr());
    let reader = key.token("alice", "orders.read profile")?;
    let outsider = key.token("bob", "profile")?;
    let state = gateway.state().clone();
    tokio::spawn(async move {
        // Print once the gateway has fetched the demo key set, so every line works at once.
        for _ in 0..100 {
            if state.snapshot.load().issuers.all_have_keys() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "\ntokengate demo: gateway on http://{base}, admin on http://{metrics}\n\
             (echo upstream on {upstream_addr}, JWKS on http://{idp_addr}/.well-known/jwks.json)\n\
             \n\
             The config in use:\n{yaml}\n\
             Tokens (ES256, valid for an hour):\n  \
             READER=\"{reader}\"   # scope orders.read\n  \
             OUTSIDER=\"{outsider}\"   # scope profile only\n\
             \n\
             Try:\n  \
             curl -i -H \"Authorization: Bearer $READER\" http://{base}/orders/42     # 200, the upstream sees X-Auth-Subject: alice\n  \
             curl -i -H \"Authorization: Bearer $OUTSIDER\" http://{base}/orders/42   # 403 insufficient_scope\n  \
             curl -i http://{base}/orders/42                                          # 401: no token\n  \
             curl -i -H \"Authorization: Bearer ${{READER}}x\" http://{base}/orders/42  # 401 invalid_token\n  \
             curl -i http://{base}/public/hello                                       # 200: anonymous route\n  \
             curl -i --path-as-is http://{base}/public/../orders/42                   # 401: normalised before matching\n  \
             curl -s http://{metrics}/metrics | grep tokengate_auth_decisions_total\n\
             \n\
             Ctrl-C stops.\n"
        );
    });
    gateway.run(shutdown).await?;
    Ok(())
}

fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    idp: SocketAddr,
) -> String {
    format!(
        "server:\n  listen: \"{listen}\"\n  shutdown_grace: 2s\n\
         admin:\n  listen: \"{admin}\"\n\
         issuers:\n  - name: demo\n    issuer: \"{ISSUER}\"\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n    \
         jwks:\n      url: \"http://{idp}/.well-known/jwks.json\"\n\
         upstreams:\n  echo:\n    endpoints: [\"http://{upstream}\"]\n\
         routes:\n  - name: public\n    match: {{ path_prefix: /public }}\n    upstream: echo\n    auth: none\n  \
         - name: orders\n    match: {{ path_prefix: /orders }}\n    upstream: echo\n    auth:\n      scopes:\n        all_of: [orders.read]\n    \
         forward:\n      claims_to_headers: {{ sub: X-Auth-Subject, scope: X-Auth-Scopes }}\n"
    )
}

async fn free_port_or_any(preferred: u16) -> std::io::Result<SocketAddr> {
    let probe = match TcpListener::bind(("127.0.0.1", preferred)).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0").await?,
    };
    probe.local_addr()
}

/// Serves `jwks` at `/.well-known/jwks.json` when it is not empty, and echoes every other
/// request back as JSON, so the user sees what the gateway forwarded.
async fn serve(listener: TcpListener, jwks: Bytes) {
    while let Ok((stream, _)) = listener.accept().await {
        let jwks = jwks.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let jwks = jwks.clone();
                async move { Ok::<_, Infallible>(answer(request, jwks)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(request: Request<Incoming>, jwks: Bytes) -> Response<Full<Bytes>> {
    if !jwks.is_empty() {
        return json_response(jwks);
    }
    let headers: serde_json::Map<String, Value> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into(),
            )
        })
        .collect();
    let body = json!({
        "upstream": "echo",
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    });
    json_response(Bytes::from(format!("{body:#}\n")))
}

fn json_response(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
