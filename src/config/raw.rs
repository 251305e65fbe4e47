//! The serde mirror of the YAML file, and nothing else.
//!
//! Every struct refuses unknown keys, so a typo is an error rather than a silently ignored
//! setting. Defaults live here; meaning (cross-references, ranges, parsing of addresses) lives
//! in `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_saphyr::Spanned;

use super::duration::HumanDuration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub issuers: Vec<Spanned<RawIssuer>>,
    pub revocation: Option<Spanned<RawRevocation>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Spanned<String>,
    pub tls: Option<RawTls>,
    pub shutdown_grace: HumanDuration,
    pub resource_metadata: Option<Spanned<String>>,
    pub max_header_bytes: Spanned<u64>,
    pub header_read_timeout: HumanDuration,
    pub idle_timeout: HumanDuration,
    pub max_connections: Spanned<u64>,
    pub max_body_bytes: u64,
    pub trusted_proxies: Vec<Spanned<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: unspanned("0.0.0.0:8080".to_owned()),
            tls: None,
            shutdown_grace: HumanDuration::secs(10),
            resource_metadata: None,
            max_header_bytes: unspanned(16_384),
            header_read_timeout: HumanDuration::secs(10),
            idle_timeout: HumanDuration::secs(60),
            max_connections: unspanned(10_000),
            max_body_bytes: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: Spanned<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: unspanned("127.0.0.1:9090".to_owned()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub jwks: RawJwks,
    #[serde(default)]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
}

fn default_leeway() -> HumanDuration {
    HumanDuration::secs(30)
}

fn default_scopes_claim() -> String {
    "scope".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub url: Option<String>,
    pub file: Option<String>,
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: HumanDuration,
    #[serde(default = "default_min_refresh_interval")]
    pub min_refresh_interval: HumanDuration,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: HumanDuration,
    #[serde(default = "default_max_stale")]
    pub max_stale: HumanDuration,
    pub cache_dir: Option<String>,
}

fn default_refresh_interval() -> HumanDuration {
    HumanDuration::secs(300)
}

fn default_min_refresh_interval() -> HumanDuration {
    HumanDuration::secs(5)
}

fn default_fetch_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}

fn default_max_stale() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    #[serde(default)]
    pub sources: Vec<RawRevocationSource>,
    #[serde(default = "default_expected_entries")]
    pub expected_entries: u64,
    #[serde(default = "default_false_positive_rate")]
    pub false_positive_rate: f64,
}

fn default_expected_entries() -> u64 {
    1_000_000
}

fn default_false_positive_rate() -> f64 {
    0.0001
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocationSource {
    pub file: Option<String>,
    pub url: Option<String>,
    #[serde(default = "default_revocation_refresh")]
    pub refresh_interval: HumanDuration,
}

fn default_revocation_refresh() -> HumanDuration {
    HumanDuration::secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub endpoints: Vec<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub upstream: String,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub forward: RawForward,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// `auth: none`, a map of rules, or absent (a token from any issuer).
#[derive(Debug, Default)]
pub enum RawAuth {
    #[default]
    AnyIssuer,
    None,
    Rules(RawAuthRules),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthRules {
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: RawScopes,
    #[serde(default)]
    pub claims: BTreeMap<String, RawClaimValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopes {
    #[serde(default)]
    pub all_of: Vec<String>,
    #[serde(default)]
    pub any_of: Vec<String>,
}

/// A value a claim must equal: YAML strings, integers, booleans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum RawClaimValue {
    Bool(bool),
    Integer(i64),
    String(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub strip_authorization: bool,
}

impl<'de> Deserialize<'de> for RawAuth {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawAuthVisitor)
    }
}

struct RawAuthVisitor;

impl<'de> Visitor<'de> for RawAuthVisitor {
    type Value = RawAuth;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`none` or a map with `issuers`, `scopes` and/or `claims`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAuth, E> {
        if v == "none" {
            Ok(RawAuth::None)
        } else {
            Err(E::custom(format!(
                "auth: `{v}` is not understood: write `auth: none` for an anonymous route, \
                 or a map of rules (issuers, scopes, claims)"
            )))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAuth, A::Error> {
        RawAuthRules::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawAuth::Rules)
    }
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(
        value,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}
