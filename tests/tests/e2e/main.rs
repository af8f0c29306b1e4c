//! End-to-end tests: real clients through the proxy, the real credential chain (Roles
//! Anywhere and Redshift's credential APIs in the AWS emulator) and the Redshift stand-in
//! in front of PostgreSQL. One binary, one module per area.

mod admission;
mod hygiene;
mod identity;
mod revocation;
mod session_reuse;
mod throttling;
mod upstream_pools;
