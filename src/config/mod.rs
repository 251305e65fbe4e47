//! The gateway's configuration: loading, validation, and the runtime types the rest of the
//! crate reads.
//!
//! Two layers: `raw` mirrors the YAML (unknown keys refused), `validate` turns it into the
//! types below, checking ranges and cross-references and naming the file, the field and the
//! fix in every error. Nothing here runs on the request path.

mod duration;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use http::header::HeaderName;
use http::uri::{Authority, Scheme};
use ipnet::IpNet;

pub use crate::auth::rules::ClaimPath;
pub use duration::HumanDuration;
pub use validate::check_referenced_files;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from; relative paths inside it are resolved against its directory.
    pub path: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub issuers: Vec<Issuer>,
    pub revocation: Option<Revocation>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub shutdown_grace: Duration,
    /// RFC 9728 protected-resource metadata URL, echoed in every 401.
    pub resource_metadata: Option<String>,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// `None` means unlimited (streamed).
    pub max_body_bytes: Option<u64>,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Issuer {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: Jwks,
    /// Empty means "the asymmetric algorithms of the keys".
    pub algorithms: Vec<String>,
    pub leeway: Duration,
    /// The claim holding scopes (`scope`, `scp`, `realm_access.roles`).
    pub scopes_claim: ClaimPath,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Jwks {
    pub source: JwksSource,
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    pub fetch_timeout: Duration,
    /// `None`: keys never go stale.
    pub max_stale: Option<Duration>,
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Revocation {
    pub sources: Vec<RevocationSource>,
    pub expected_entries: u64,
    pub false_positive_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationSource {
    File(PathBuf),
    Url {
        url: String,
        refresh_interval: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Where an upstream listens: scheme and authority, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Lower-case host name without port.
    pub host: Option<String>,
    pub path: PathMatch,
    pub methods: Option<Vec<Method>>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub auth: Auth,
    pub forward: Forward,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// A whole-segment prefix, stored without a trailing slash (`/` stays `/`).
    Prefix(String),
}

impl PathMatch {
    /// The matcher for an already normalised path: `/orders/` and `/orders` are the same
    /// prefix.
    pub fn new(normal: String, exact: bool) -> Self {
        if exact {
            PathMatch::Exact(normal)
        } else if normal == "/" {
            PathMatch::Prefix(normal)
        } else {
            PathMatch::Prefix(normal.trim_end_matches('/').to_owned())
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    Anonymous,
    Required(AuthRules),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthRules {
    /// Indices into `Config::issuers`; `None`: any configured issuer.
    pub issuers: Option<Vec<usize>>,
    pub all_of: Vec<String>,
    pub any_of: Vec<String>,
    pub claims: Vec<(ClaimPath, ClaimValue)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    String(String),
    Integer(i64),
    Bool(bool),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Forward {
    /// (claim, header) pairs.
    pub claims_to_headers: Vec<(ClaimPath, HeaderName)>,
    pub strip_authorization: bool,
}

/// Why a config was refused. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}{}: {field}: {problem}\n  fix: {fix}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        file: PathBuf,
        line: Option<u64>,
        field: String,
        problem: String,
        fix: String,
    },
}

impl ConfigError {
    /// The dotted path of the offending field, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text` as if it were read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: raw::RawConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
        file: path.to_owned(),
        message: e
            .to_string()
            .trim_start_matches("error: ")
            .replace("<input>", &path.display().to_string()),
    })?;
    validate::validate(path, raw)
}
