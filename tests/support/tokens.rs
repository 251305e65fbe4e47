//! A real JWKS server on 127.0.0.1 that can be switched to fail, hang, serve garbage or
//! rotate keys, and counts its fetches; plus the keys and tokens of `keys`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use serde_json::json;

pub use super::keys::*;
use super::{Upstream, full};

/// What the JWKS server does on the next fetch.
#[derive(Clone)]
pub enum Mode {
    Serve { body: String, max_age: Option<u64> },
    Fail,
    Garbage,
    Hang,
}

/// A real JWKS endpoint on 127.0.0.1 with an ETag, counting fetches.
pub struct JwksServer {
    pub upstream: Upstream,
    mode: Arc<Mutex<Mode>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(keys: &[&TestKey]) -> Self {
        let mode = Arc::new(Mutex::new(Mode::Serve {
            body: jwks(keys),
            max_age: None,
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let upstream = {
            let (mode, fetches) = (mode.clone(), fetches.clone());
            Upstream::start(move |request, _| {
                let mode = mode.lock().unwrap().clone();
                fetches.fetch_add(1, Ordering::SeqCst);
                let if_none_match = request.headers().get("if-none-match").cloned();
                async move {
                    match mode {
                        Mode::Serve { body, max_age } => {
                            let etag = format!("\"{:x}\"", fnv(body.as_bytes()));
                            let mut response = Response::builder().header("etag", &etag);
                            if let Some(age) = max_age {
                                response =
                                    response.header("cache-control", format!("max-age={age}"));
                            }
                            if if_none_match.is_some_and(|v| v == etag.as_str()) {
                                return response.status(304).body(full("")).unwrap();
                            }
                            response
                                .header("content-type", "application/json")
                                .body(full(body))
                                .unwrap()
                        }
                        Mode::Fail => Response::builder().status(500).body(full("down")).unwrap(),
                        Mode::Garbage => Response::new(full("<html>not json</html>")),
                        Mode::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            Response::new(full("{}"))
                        }
                    }
                }
            })
            .await
        };
        Self {
            upstream,
            mode,
            fetches,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.upstream.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.upstream.addr
    }

    pub fn serve(&self, keys: &[&TestKey]) {
        *self.mode.lock().unwrap() = Mode::Serve {
            body: jwks(keys),
            max_age: None,
        };
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

pub fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// An issuer block for a test config.
pub fn issuer_yaml(name: &str, iss: &str, jwks_url: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    issuer: \"{iss}\"\n    audiences: [{AUDIENCE}]\n    jwks:\n      url: \"{jwks_url}\"\n      min_refresh_interval: 1s\n      fetch_timeout: 1s\n{extra}"
    )
}
