//! End-to-end tests: real clients through the proxy, the real credential chain (Roles
//! Anywhere and Redshift's credential APIs in the AWS emulator) and the Redshift stand-in
//! in front of PostgreSQL. One binary, one module per area.

mod admission;
mod attribution;
mod audit_files;
mod credential_process;
mod hygiene;
mod identity;
mod load_balancer;
mod proxy_protocol;
mod redshift_drivers;
mod revocation;
mod role_sessions;
mod sandbox_fleet;
mod throttling;
