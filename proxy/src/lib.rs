//! `redshift-iam-proxy`: a PostgreSQL-wire proxy that authenticates clients by X.509
//! certificate and logs them in to Amazon Redshift with temporary IAM credentials.
//!
//! - [`frontend`]: listeners' client side: negotiation, client TLS and certificates.
//! - [`backend`]: the upstream side: verify-full TLS, login, cancel forwarding.
//! - [`session`]: one connection from accept to close; [`relay`] splices it after login.
//! - [`cancel`]: routing CancelRequests to the right upstream backend.
//! - [`server`]: reloadable state built from the configuration, the accept loops, limits,
//!   reload and graceful shutdown.
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
pub mod frontend;
pub mod hash_password;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod relay;
pub mod server;
pub mod session;
