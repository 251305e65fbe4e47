//! What clients see when upstreams fail or requests exceed limits, and that bodies stream.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::{
    Gateway, Upstream, channel_body, client, closed_port, full, metric_value, raw_request,
};
use tokio::sync::Notify;

fn config(endpoints: &[String], server: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n{server}\
         upstreams:\n  app:\n    endpoints: [{}]\n    connect_timeout: 1s\n    request_timeout: 300ms\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n    auth: none\n",
        list.join(", ")
    )
}

async fn json_error(response: reqwest::Response) -> String {
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    body["error"].as_str().unwrap().to_owned()
}

/// `tokengate_upstream_errors_total` of the upstream `app` for `kind`.
async fn upstream_errors(gw: &Gateway, kind: &str) -> Option<f64> {
    let metrics = gw.metrics().await;
    metric_value(
        &metrics,
        "tokengate_upstream_errors_total",
        &[("upstream", "app"), ("kind", kind)],
    )
}

#[tokio::test]
async fn unreachable_upstream_gets_502_and_is_counted() {
    let dead = closed_port().await;
    let gw = Gateway::start(&config(&[format!("http://{dead}")], "")).await;
    let response = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(json_error(response).await, "bad_gateway");
    assert_eq!(upstream_errors(&gw, "connect").await, Some(1.0));
}

#[tokio::test]
async fn a_request_timeout_beyond_the_clock_is_no_timeout_and_no_panic() {
    let upstream = Upstream::start(|_req, _addr| async { Response::new(full("fine")) }).await;
    // About 2^64 seconds: a deadline this far overflows the clock, and must not take the
    // gateway down with it.
    let yaml = config(&[upstream.url()], "").replace(
        "request_timeout: 300ms",
        "request_timeout: 500000000000years",
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..2 {
        let response = client().get(gw.url("/far")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "fine");
    }
}

#[tokio::test]
async fn slow_upstream_gets_504_after_request_timeout() {
    let upstream = Upstream::start(|_req, _addr| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Response::new(full("too late"))
    })
    .await;
    let gw = Gateway::start(&config(&[upstream.url()], "")).await;
    let started = Instant::now();
    let response = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(json_error(response).await, "gateway_timeout");
    assert_eq!(upstream_errors(&gw, "timeout").await, Some(1.0));
}

/// On a kept connection as on a new one: the request still waiting at `request_timeout` gets
/// 504, and its connection (the late answer would still arrive on it) is closed, not given the
/// next request.
#[tokio::test]
async fn a_slow_answer_on_a_kept_connection_gets_504_and_its_connection_is_not_reused() {
    let upstream = Upstream::start(|request, _addr| async move {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Response::new(full("fine"))
    })
    .await;
    let gw = Gateway::start(&config(&[upstream.url()], "")).await;
    let client = client();
    let answered = async || {
        let response = client.get(gw.url("/fast")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "fine");
    };
    for _ in 0..3 {
        answered().await;
    }
    assert_eq!(
        upstream.connections(),
        1,
        "the answered requests share one connection"
    );

    let started = Instant::now();
    let response = client.get(gw.url("/slow")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status(), 504);
    assert_eq!(json_error(response).await, "gateway_timeout");
    // 300 ms, noticed within one tick (an eighth of it), with room for a busy machine.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );

    answered().await;
    assert_eq!(
        upstream.connections(),
        2,
        "the timed-out connection was not reused"
    );
    assert_eq!(
        upstream.seen().len(),
        5,
        "the timed-out request was not sent again"
    );
    assert_eq!(upstream_errors(&gw, "timeout").await, Some(1.0));
}

#[tokio::test]
async fn upstream_that_breaks_the_protocol_gets_502() {
    // A "server" that answers garbage and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let garbage = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream.write_all(b"this is not HTTP\r\n\r\n").await;
        }
    });
    let gw = Gateway::start(&config(&[format!("http://{addr}")], "")).await;
    let response = client().get(gw.url("/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(upstream_errors(&gw, "protocol").await, Some(1.0));
    garbage.abort();
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&[upstream.url()], "  max_header_bytes: 16384\n")).await;
    let big = "a".repeat(20_000);
    let request =
        format!("GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let response = raw_request(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    let fits = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8_000)
    );
    let response = raw_request(gw.addr, fits.as_bytes(), Duration::from_secs(5)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn bodies_over_max_body_bytes_get_413() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&[upstream.url()], "  max_body_bytes: 1000\n")).await;
    // Declared too large: refused before anything is forwarded.
    let declared = client()
        .post(gw.url("/up"))
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    assert_eq!(json_error(declared).await, "payload_too_large");
    assert!(upstream.seen().is_empty());
    // Chunked, found too large while streaming.
    let (tx, body) = channel_body();
    let http = Client::builder(TokioExecutor::new()).build_http::<support::ChannelBody>();
    let request = Request::post(gw.url("/up")).body(body).unwrap();
    let sender = tokio::spawn(async move {
        for _ in 0..4 {
            if tx.send(Bytes::from(vec![b'y'; 600])).await.is_err() {
                break;
            }
        }
    });
    let response = http.request(request).await.unwrap();
    assert_eq!(response.status(), 413);
    sender.abort();
    // Within the limit: forwarded.
    let fits = client()
        .post(gw.url("/up"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream_without_being_buffered_whole() {
    let first_chunk_arrived = Arc::new(Notify::new());
    let upstream = {
        let first_chunk_arrived = first_chunk_arrived.clone();
        Upstream::start(move |request: Request<hyper::body::Incoming>, _| {
            let first_chunk_arrived = first_chunk_arrived.clone();
            async move {
                let mut body = request.into_body();
                let mut total = 0usize;
                let mut signalled = false;
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.unwrap().into_data() {
                        total += data.len();
                        if !signalled {
                            first_chunk_arrived.notify_one();
                            signalled = true;
                        }
                    }
                }
                Response::new(full(total.to_string()))
            }
        })
        .await
    };
    let gw = Gateway::start(&config(&[upstream.url()], "")).await;
    let (tx, body) = channel_body();
    let http = Client::builder(TokioExecutor::new()).build_http::<support::ChannelBody>();
    let request = Request::post(gw.url("/upload")).body(body).unwrap();
    let response = tokio::spawn(http.request(request));
    let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
    tx.send(chunk.clone()).await.unwrap();
    // If the gateway waited for the whole body, the upstream would never see this first chunk.
    tokio::time::timeout(Duration::from_secs(5), first_chunk_arrived.notified())
        .await
        .expect("the upstream received the first chunk while the client was still sending");
    for _ in 1..256 {
        tx.send(chunk.clone()).await.unwrap();
    }
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, (256 * 64 * 1024).to_string());
}

#[tokio::test]
async fn response_bodies_stream_to_the_client_without_being_buffered_whole() {
    let client_has_first_chunk = Arc::new(Notify::new());
    let upstream = {
        let client_has_first_chunk = client_has_first_chunk.clone();
        Upstream::start(move |_req, _| {
            let client_has_first_chunk = client_has_first_chunk.clone();
            async move {
                let (tx, body) = channel_body();
                tokio::spawn(async move {
                    let chunk = Bytes::from(vec![b'd'; 64 * 1024]);
                    tx.send(chunk.clone()).await.unwrap();
                    // The rest only once the client proves it got the first chunk.
                    client_has_first_chunk.notified().await;
                    for _ in 1..256 {
                        if tx.send(chunk.clone()).await.is_err() {
                            return;
                        }
                    }
                });
                Response::new(body.boxed())
            }
        })
        .await
    };
    let gw = Gateway::start(&config(&[upstream.url()], "")).await;
    let mut response = client().get(gw.url("/download")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first chunk arrived before the upstream finished")
        .unwrap()
        .unwrap();
    let mut total = first.len();
    client_has_first_chunk.notify_one();
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, 256 * 64 * 1024);
}

#[tokio::test]
async fn endpoints_take_turns() {
    let a = Upstream::echo().await;
    let b = Upstream::echo().await;
    let gw = Gateway::start(&config(&[a.url(), b.url()], "")).await;
    for i in 0..10 {
        let response = client().get(gw.url(&format!("/{i}"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!((a.seen().len(), b.seen().len()), (5, 5));
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_is_ejected() {
    let dead = closed_port().await;
    let live = Upstream::echo().await;
    let gw = Gateway::start(&config(&[format!("http://{dead}"), live.url()], "")).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(gw.status(&format!("/{i}")).await.as_u16());
    }
    let failures = statuses.iter().filter(|&&s| s == 502).count();
    assert!(
        failures <= 1,
        "only the first try of the dead endpoint fails: {statuses:?}"
    );
    assert_eq!(live.seen().len(), 10 - failures);
}
