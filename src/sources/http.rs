//! Fetching a document over HTTP(S) with `If-None-Match`, a size cap and `max-age`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, ETAG, HeaderValue, IF_NONE_MATCH};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One client for every fetch in the process: rustls with aws-lc-rs and the webpki roots.
fn client() -> &'static HttpsClient {
    static CLIENT: OnceLock<HttpsClient> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // An explicit provider: the process-wide default would panic if two were linked.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .expect("the aws-lc-rs provider supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(https)
    })
}

/// What a fetch brought.
pub enum Fetched {
    /// 304: what we have is current.
    NotModified { max_age: Option<Duration> },
    /// 200: a body (still streaming, capped) and its validators.
    Body {
        body: Limited<Incoming>,
        etag: Option<HeaderValue>,
        max_age: Option<Duration>,
    },
}

/// GETs `url`, sending `etag` as `If-None-Match`; bodies over `limit` bytes fail when read.
pub async fn fetch(url: &str, etag: Option<&HeaderValue>, limit: usize) -> Result<Fetched, String> {
    let mut request = Request::get(url);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag.clone());
    }
    let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
    let response = client()
        .request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let max_age = max_age(response.headers().get(CACHE_CONTROL));
    match response.status() {
        StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified { max_age }),
        StatusCode::OK => Ok(Fetched::Body {
            etag: response.headers().get(ETAG).cloned(),
            max_age,
            body: Limited::new(response.into_body(), limit),
        }),
        status => Err(format!("the server answered {status}")),
    }
}

/// Reads a whole (capped) body.
pub async fn collect(body: Limited<Incoming>, limit: usize) -> Result<Bytes, String> {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("reading the body failed ({e}); the limit is {limit} bytes"))
}

/// `Cache-Control: max-age=N` as a duration.
fn max_age(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?;
    text.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            value
                .trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            max_age(Some(&v("public, max-age=300"))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age(Some(&v("no-cache"))), None);
        assert_eq!(max_age(None), None);
    }
}
