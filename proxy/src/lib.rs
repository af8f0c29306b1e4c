//! `redshift-iam-proxy`: a PostgreSQL-wire proxy that authenticates clients by X.509
//! certificate and logs them in to Amazon Redshift with temporary IAM credentials.
//!
//! - [`server`]: the composition root: binds listeners, accepts, drains on shutdown.
//! - [`runtime`]: the reloadable state built from the configuration, the services that
//!   outlive reloads, admission (connection limits), readiness and reload.
//! - [`session`]: one connection from accept to close, as typed phases; [`relay`] splices
//!   it after login.
//! - [`refusal`]: every way a connection is refused, and the one mapping to SQLSTATE,
//!   client text, audit reason and metric ([`sqlstate`] names the codes).
//! - [`frontend`]: the client side: negotiation, client TLS and certificates, password
//!   logins. [`backend`]: the upstream side: verify-full TLS, login, cancel forwarding.
//! - [`net`]: wire messages and framing shared by both sides.
//! - [`cancel`]: routing CancelRequests to the right upstream backend.
//! - [`reuse`]: session reuse, upstream sessions kept for the next client of an identity.
//! - [`audit`]: one JSON-lines record per connection; [`metrics`] and [`admin`]: Prometheus
//!   metrics and health endpoints on the admin listener.

pub mod admin;
pub mod audit;
pub mod backend;
pub mod cancel;
pub mod cli;
/// The subcommands need the production credential chain, i.e. the AWS SDK.
#[cfg(feature = "aws-sdk")]
pub mod commands;
pub mod credential_process;
pub mod frontend;
pub mod hash_password;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod refusal;
pub mod relay;
pub mod reuse;
pub mod runtime;
pub mod server;
pub mod session;
pub mod sqlstate;
