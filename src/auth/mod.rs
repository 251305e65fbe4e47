//! Authentication of a request against its route's `auth` rules.
//!
//! The route decides: `auth: none` is anonymous; anything else needs a bearer token from an
//! allowed issuer. This module never forwards and never fetches keys on the request path.

pub mod bearer;

use http::HeaderMap;

use crate::config::{Auth, Route};
use crate::reject::Rejection;
use bearer::{BearerError, bearer_token};

/// How a request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Anonymous,
}

/// Applies `route`'s auth rules to the request `headers`.
///
/// Token verification is not part of this build: a route that needs a token refuses every
/// request (401), so nothing unauthenticated is ever forwarded.
pub fn authenticate(headers: &HeaderMap, route: &Route) -> Result<Decision, Rejection> {
    match &route.auth {
        Auth::Anonymous => Ok(Decision::Anonymous),
        Auth::Required(_) => match bearer_token(headers) {
            Ok(None) => Err(Rejection::MissingToken),
            Ok(Some(_token)) => Err(Rejection::InvalidToken(
                "this gateway cannot verify tokens yet",
            )),
            Err(BearerError::Several) => {
                Err(Rejection::BadRequest("several Authorization headers"))
            }
            Err(BearerError::Malformed) => {
                Err(Rejection::InvalidToken("the bearer token is malformed"))
            }
        },
    }
}
