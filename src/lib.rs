//! tokengate: a reverse proxy that lets only well-authenticated requests through.
//!
//! A request's journey, module by module:
//!
//! - [`server`] accepts the connection (HTTP/1.1 or h2c, or either over TLS) within
//!   `max_connections`;
//! - [`gateway`] runs the phases: head checks, [`routing::path`] normalisation,
//!   [`routing`] (first matching route), [`auth`] (bearer token, signature against the
//!   issuer's keys, [`revocation`], the route's rules), [`proxy`] (headers rewritten, streamed
//!   to a pooled upstream connection, WebSockets joined);
//! - [`reject`] turns any failure into the one response shape;
//! - [`metrics`] counts it, [`admin`] exports the counts.
//!
//! All of it reads one immutable [`snapshot::Snapshot`] built from a validated [`config`];
//! [`reload`] replaces it whole, and [`sources`] keeps key sets and revocation lists fresh.

pub mod admin;
pub mod auth;
pub mod config;
pub mod demo;
pub mod gateway;
pub mod metrics;
pub mod proxy;
pub mod reject;
pub mod reload;
pub mod revocation;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod sources;
mod ticker;

pub use server::{Gateway, ServeError};
