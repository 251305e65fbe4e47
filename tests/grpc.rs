//! A gRPC-style bidirectional streaming call through the gateway: HTTP/2 on both sides,
//! messages interleaved both ways, trailers (`grpc-status`) preserved.

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Gateway, Upstream};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A body fed frame by frame (data or trailers) from a channel.
struct Frames(mpsc::Receiver<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn trailers(status: &str) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", HeaderValue::from_str(status).unwrap());
    map.insert("grpc-message", HeaderValue::from_static("done"));
    Frame::trailers(map)
}

/// Echoes every request message as soon as it arrives, then ends with trailers.
async fn echo_stream(request: Request<Incoming>) -> Response<support::Body> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut body = request.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data()
                && tx.send(Frame::data(data)).await.is_err()
            {
                return;
            }
        }
        let _ = tx.send(trailers("0")).await;
    });
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Frames(rx).boxed())
        .unwrap()
}

#[tokio::test]
async fn a_streaming_grpc_call_passes_with_its_trailers() {
    let upstream = Upstream::start(|request, _| echo_stream(request)).await;
    let yaml = format!(
        "upstreams:\n  grpc:\n    endpoints: [\"{}\"]\n\
         routes:\n  - name: grpc\n    match: {{ path_prefix: /echo.Echo }}\n    upstream: grpc\n    auth: none\n",
        upstream.url()
    );
    let gw = Gateway::start(&yaml).await;

    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (messages, outgoing) = mpsc::channel(8);
    let request = Request::post(format!("http://{}/echo.Echo/Stream", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Frames(outgoing))
        .unwrap();
    messages
        .send(Frame::data(Bytes::from_static(b"\0\0\0\0\x05first")))
        .await
        .unwrap();
    let response = h2.send_request(request).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    let mut body = response.into_body();
    // Each message comes back before the next is sent: streaming both ways, no buffering.
    for message in ["first", "second", "third"] {
        if message != "first" {
            let framed = [
                b"\0\0\0\0".as_slice(),
                &[message.len() as u8],
                message.as_bytes(),
            ]
            .concat();
            messages
                .send(Frame::data(Bytes::from(framed)))
                .await
                .unwrap();
        }
        let frame = body.frame().await.unwrap().unwrap();
        let data = frame.into_data().unwrap();
        assert!(data.ends_with(message.as_bytes()), "{data:?}");
    }
    drop(messages);
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if frame.is_trailers() {
            trailers = frame.into_trailers().ok();
        }
    }
    let trailers = trailers.expect("the trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");

    let seen = upstream.only_request();
    assert_eq!(
        seen.version,
        http::Version::HTTP_2,
        "gRPC went upstream over HTTP/2"
    );
    assert_eq!(seen.headers["te"], "trailers");
}
