//! WebSocket pass-through (RFC 6455): after authentication, an `Upgrade: websocket` request
//! is forwarded with its upgrade headers, and once the upstream answers 101 the two
//! connections are joined and bytes copied both ways until either side closes.
//!
//! WebSocket is the only upgrade that passes; any other `Upgrade` (h2c included) is removed
//! with the hop-by-hop headers. Open tunnels are counted so shutdown can drain them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use http::request::Parts;
use http::{Method, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;

/// Is this an HTTP/1.1 WebSocket opening handshake?
pub fn is_websocket(parts: &Parts) -> bool {
    parts.method == Method::GET
        && parts.version == Version::HTTP_11
        && has_token(&parts.headers, UPGRADE, "websocket")
        && has_token(&parts.headers, CONNECTION, "upgrade")
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Puts back the two headers hop-by-hop removal took, for the upgrade to reach the next hop.
pub fn restore_upgrade_headers(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// The open tunnels, for shutdown to wait on.
#[derive(Debug, Default)]
pub struct Tunnels {
    open: AtomicUsize,
    closed: Notify,
}

impl Tunnels {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Completes when no tunnel is open.
    pub async fn drained(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// Joins the client's and the upstream's upgraded connections and copies until one closes.
pub fn spawn_tunnel(tunnels: Arc<Tunnels>, client: OnUpgrade, upstream: OnUpgrade) {
    tunnels.open.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => tracing::debug!(up, down, "WebSocket tunnel closed"),
                    Err(e) => tracing::debug!(error = %e, "WebSocket tunnel ended with an error"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade did not complete"),
        }
        tunnels.open.fetch_sub(1, Ordering::AcqRel);
        tunnels.closed.notify_waiters();
    });
}
