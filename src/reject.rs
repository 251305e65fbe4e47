//! Request-time failures as values, and the one place they become responses.
//!
//! Bodies are `{"error": ..., "error_description": ...}`; 401 and 403 carry the RFC 6750 §3
//! `WWW-Authenticate` challenge. Descriptions are fixed texts chosen by the gateway: they
//! never echo a token or a claim value.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Why the gateway answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed request: several Host or Authorization headers, a refused path.
    BadRequest(&'static str),
    NotFound,
    /// No token on a route that needs one (RFC 6750 §3.1: no error code).
    MissingToken,
    InvalidToken(&'static str),
    /// A valid token without the scopes or claims the route requires.
    InsufficientScope {
        scope: String,
    },
    PayloadTooLarge,
    BadGateway,
    GatewayTimeout,
    /// What a protected route needs is not there yet or no longer (the issuer's keys are too
    /// old to trust, or a revocation source has not loaded once); retry after this many
    /// seconds.
    Unavailable {
        why: &'static str,
        retry_after_secs: u64,
    },
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MissingToken | Rejection::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Rejection::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BadGateway => StatusCode::BAD_GATEWAY,
            Rejection::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_and_description(&self) -> (&'static str, &str) {
        match self {
            Rejection::BadRequest(why) => ("invalid_request", why),
            Rejection::NotFound => ("not_found", "no route matches this request"),
            Rejection::MissingToken => ("unauthorized", "a bearer token is required"),
            Rejection::InvalidToken(why) => ("invalid_token", why),
            Rejection::InsufficientScope { .. } => (
                "insufficient_scope",
                "the token lacks a scope or claim this route requires",
            ),
            Rejection::PayloadTooLarge => ("payload_too_large", "the request body is too large"),
            Rejection::BadGateway => ("bad_gateway", "the upstream could not be reached"),
            Rejection::GatewayTimeout => ("gateway_timeout", "the upstream did not answer in time"),
            Rejection::Unavailable { why, .. } => ("temporarily_unavailable", why),
        }
    }

    /// The response for this rejection. `resource_metadata` is RFC 9728's metadata URL,
    /// added to every 401 challenge when configured.
    pub fn into_response(self, resource_metadata: Option<&str>) -> Response<Full<Bytes>> {
        let status = self.status();
        let (error, description) = self.error_and_description();
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self.challenge(description, resource_metadata) {
            // The challenge is built from fixed texts and validated config: always a valid value.
            if let Ok(value) = HeaderValue::try_from(challenge) {
                headers.insert(WWW_AUTHENTICATE, value);
            }
        }
        if let Rejection::Unavailable {
            retry_after_secs, ..
        } = self
        {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }

    fn challenge(&self, description: &str, resource_metadata: Option<&str>) -> Option<String> {
        let mut challenge = String::from("Bearer realm=\"tokengate\"");
        match self {
            Rejection::MissingToken => {}
            Rejection::InvalidToken(_) => {
                challenge.push_str(", error=\"invalid_token\", error_description=\"");
                challenge.push_str(description);
                challenge.push('"');
            }
            Rejection::InsufficientScope { scope } => {
                challenge.push_str(", error=\"insufficient_scope\", scope=\"");
                challenge.push_str(scope);
                challenge.push('"');
                return Some(challenge);
            }
            _ => return None,
        }
        if let Some(url) = resource_metadata {
            challenge.push_str(", resource_metadata=\"");
            challenge.push_str(url);
            challenge.push('"');
        }
        Some(challenge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge_of(r: Rejection, meta: Option<&str>) -> Option<String> {
        r.into_response(meta)
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn missing_token_challenge_has_no_error_code() {
        assert_eq!(
            challenge_of(Rejection::MissingToken, None).as_deref(),
            Some("Bearer realm=\"tokengate\"")
        );
    }

    #[test]
    fn invalid_token_challenge_carries_code_description_and_metadata() {
        let c = challenge_of(
            Rejection::InvalidToken("the token has expired"),
            Some("https://api.example.com/.well-known/oauth-protected-resource"),
        )
        .unwrap();
        assert_eq!(
            c,
            "Bearer realm=\"tokengate\", error=\"invalid_token\", \
             error_description=\"the token has expired\", \
             resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource\""
        );
    }

    #[test]
    fn insufficient_scope_names_the_scope_and_is_403() {
        let r = Rejection::InsufficientScope {
            scope: "orders.read".into(),
        };
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            challenge_of(r, None).as_deref(),
            Some("Bearer realm=\"tokengate\", error=\"insufficient_scope\", scope=\"orders.read\"")
        );
    }

    #[test]
    fn other_rejections_have_no_challenge_and_json_bodies() {
        let response = Rejection::NotFound.into_response(Some("https://x"));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }
}
