//! Connection limits and lifecycle: header-read and idle timeouts, max_connections, graceful
//! shutdown bounded by shutdown_grace.

mod support;

use std::time::{Duration, Instant};

use http::Response;
use support::{Gateway, Upstream, client, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(upstream: &str, server: &str) -> String {
    format!(
        "server:\n  listen: \"127.0.0.1:0\"\n{server}\
         upstreams:\n  app:\n    endpoints: [\"{upstream}\"]\n\
         routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    upstream: app\n    auth: none\n"
    )
}

/// Reads until the peer closes; returns how long that took, or None if it stayed open.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Opens a connection and completes one keep-alive request on it.
async fn kept_alive_after_one_request(gw: &Gateway) -> TcpStream {
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    conn
}

/// Sends a header line every 100 ms (at most 40) until the gateway closes; returns how long.
async fn drip_until_closed(conn: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if conn
            .write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            return Some(started.elapsed());
        }
    }
    time_until_closed(conn, Duration::from_secs(1)).await
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_header_read_timeout() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "  header_read_timeout: 300ms\n")).await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let closed = time_until_closed(&mut silent, Duration::from_secs(5)).await;
    let closed = closed.expect("the gateway closed a connection that never sent a request");
    assert!(
        closed >= Duration::from_millis(250),
        "closed too early: {closed:?}"
    );
}

#[tokio::test]
async fn a_slowly_dripped_request_head_is_cut_off() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "  header_read_timeout: 500ms\n")).await;
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let closed = drip_until_closed(&mut slow)
        .await
        .expect("a request head dripped for 4 s was still being read");
    assert!(closed < Duration::from_secs(3), "took {closed:?}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "  idle_timeout: 400ms\n")).await;
    let mut conn = kept_alive_after_one_request(&gw).await;
    let closed = time_until_closed(&mut conn, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle keep-alive connection was closed");
    assert!(
        closed >= Duration::from_millis(300),
        "closed too early: {closed:?}"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_header_read_timeout_until_idle_timeout() {
    let upstream = Upstream::echo().await;
    let server = "  header_read_timeout: 200ms\n  idle_timeout: 1500ms\n";
    let gw = Gateway::start(&config(&upstream.url(), server)).await;
    let mut conn = kept_alive_after_one_request(&gw).await;
    let closed = time_until_closed(&mut conn, Duration::from_secs(5)).await;
    let closed = closed.expect("the idle connection was closed in the end");
    assert!(
        closed >= Duration::from_millis(1200),
        "idle for {closed:?}: closed by the header timer, not idle_timeout"
    );
}

#[tokio::test]
async fn a_second_request_head_on_a_kept_alive_connection_is_also_timed() {
    let upstream = Upstream::echo().await;
    let server = "  header_read_timeout: 400ms\n  idle_timeout: 10s\n";
    let gw = Gateway::start(&config(&upstream.url(), server)).await;
    let mut conn = kept_alive_after_one_request(&gw).await;
    conn.write_all(b"GET /b HTTP/1.1\r\n").await.unwrap();
    let closed = drip_until_closed(&mut conn)
        .await
        .expect("the dripped second head was cut off");
    assert!(closed < Duration::from_secs(3), "took {closed:?}");
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_request_waiting_on_a_slow_upstream_is_not_idle() {
    let upstream = Upstream::start(|_req, _| async {
        tokio::time::sleep(Duration::from_millis(900)).await;
        Response::new(full("slow but fine"))
    })
    .await;
    let gw = Gateway::start(&config(&upstream.url(), "  idle_timeout: 300ms\n")).await;
    let response = client().get(gw.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow but fine");
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_at_once() {
    let upstream = Upstream::echo().await;
    let gw = Gateway::start(&config(&upstream.url(), "  max_connections: 2\n")).await;
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    let _second = TcpStream::connect(gw.addr).await.unwrap();
    // Let the gateway accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let refused = time_until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(refused.is_some(), "the third connection was refused");
    // The first two still work.
    first
        .write_all(b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    first.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    // A freed slot is usable again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = support::raw_request(
        gw.addr,
        b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    let upstream = Upstream::start(|_req, _| async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        Response::new(full("finished"))
    })
    .await;
    let mut gw = Gateway::start(&config(&upstream.url(), "  shutdown_grace: 5s\n")).await;
    let url = gw.url("/work");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = gw.begin_shutdown();
    assert_eq!(in_flight.await.unwrap(), "finished");
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the gateway stopped once the request was done")
        .unwrap();
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_is_bounded_by_shutdown_grace() {
    let upstream = Upstream::start(|_req, _| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("never"))
    })
    .await;
    let yaml = config(&upstream.url(), "  shutdown_grace: 300ms\n")
        .replace("endpoints:", "request_timeout: 60s\n    endpoints:");
    let mut gw = Gateway::start(&yaml).await;
    let url = gw.url("/hang");
    let hanging = tokio::spawn(async move { client().get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), gw.begin_shutdown())
        .await
        .expect("shutdown finished within the grace period plus a little")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    hanging.abort();
}

#[tokio::test]
async fn shutdown_closes_idle_kept_alive_connections_at_once() {
    let upstream = Upstream::start(|_req, _| async { Response::new(full("ok")) }).await;
    // Long timeouts: the connection's timeout check then runs once a second, so a close well
    // within that second is the shutdown signal's doing, not the next check's.
    let mut gw = Gateway::start(&config(
        &upstream.url(),
        "  shutdown_grace: 30s\n  idle_timeout: 60s\n  header_read_timeout: 60s\n",
    ))
    .await;
    let mut idle = kept_alive_after_one_request(&gw).await;
    let stopped = gw.begin_shutdown();
    let closed = time_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|t| t < Duration::from_millis(500)),
        "the idle connection was closed after {closed:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("the gateway stopped without waiting for shutdown_grace")
        .unwrap();
}
