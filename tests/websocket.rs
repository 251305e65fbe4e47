//! WebSocket pass-through: authenticated like any request, then bytes both ways until either
//! side closes; shutdown drains open tunnels.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::tokens::{ISSUER, JwksServer, TestKey, claims, issuer_yaml};
use support::{Gateway, Upstream};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A WebSocket server on 127.0.0.1 that echoes every message.
async fn echo_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (url, task)
}

async fn setup(
    server: &str,
) -> (
    Gateway,
    TestKey,
    JwksServer,
    tokio::task::JoinHandle<()>,
    Upstream,
) {
    let key = TestKey::shared("ES256");
    let jwks = JwksServer::start(&[&key]).await;
    let (ws_url, ws_task) = echo_server().await;
    let plain = Upstream::echo().await;
    let yaml = format!(
        "server:\n  listen: \"127.0.0.1:0\"\n{server}\
         upstreams:\n  ws:\n    endpoints: [\"{ws_url}\"]\n  plain:\n    endpoints: [\"{}\"]\n\
         issuers:\n{}\
         routes:\n  - name: ws\n    match: {{ path: /ws }}\n    upstream: ws\n  - name: plain\n    match: {{ path_prefix: /plain }}\n    upstream: plain\n    auth: none\n",
        plain.url(),
        issuer_yaml("corp", ISSUER, &jwks.url(), "")
    );
    let gw = Gateway::start(&yaml).await;
    gw.wait_ready().await;
    (gw, key, jwks, ws_task, plain)
}

async fn open(
    gw: &Gateway,
    token: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    tokio_tungstenite::client_async(request, tcp)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_websocket_passes_after_authentication_and_echoes_both_ways() {
    let (gw, key, _jwks, _ws, _plain) = setup("").await;
    let token = key.token(&claims(json!({})));
    let mut ws = open(&gw, Some(&token))
        .await
        .expect("the upgrade went through");
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("hello {i}"))
        );
    }
    let big = vec![7u8; 256 * 1024];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_websocket_without_a_token_is_refused_before_any_upgrade() {
    let (gw, _key, _jwks, _ws, _plain) = setup("").await;
    match open(&gw, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| "an open socket")),
    }
}

#[tokio::test]
async fn other_upgrades_are_not_passed_on() {
    let (gw, _key, _jwks, _ws, plain) = setup("").await;
    let response = support::raw_request(
        gw.addr,
        b"GET /plain/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = plain.only_request();
    assert!(!seen.headers.contains_key("upgrade"));
}

#[tokio::test]
async fn shutdown_drains_open_websockets() {
    let (mut gw, key, _jwks, _ws, _plain) = setup("  shutdown_grace: 10s\n").await;
    let token = key.token(&claims(json!({})));
    let mut ws = open(&gw, Some(&token)).await.unwrap();
    let stopped = gw.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Still open during the grace period.
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
    assert!(
        !stopped.is_finished(),
        "the gateway waits for the open WebSocket"
    );
    let started = Instant::now();
    ws.close(None).await.unwrap();
    drop(ws);
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the gateway stopped once the WebSocket closed")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
