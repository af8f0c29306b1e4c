//! End-to-end tests: real clients through the proxy, the real credential chain (Roles
//! Anywhere and Redshift's credential APIs in the AWS emulator) and the Redshift stand-in
//! in front of PostgreSQL. One binary, one module per area; the tests share the binary's
//! PostgreSQL server and its captured log (`proxy_testkit::observe`), each in a `World` of
//! its own names.

mod admission;
mod adversarial;
mod attribution;
mod audit_files;
mod credential_expiry;
mod credential_process;
mod hygiene;
mod iam_chain;
mod identity;
mod legacy_clients;
mod load;
mod load_balancer;
mod negotiation;
mod operability;
mod proxy_protocol;
mod redshift_drivers;
mod revocation;
mod role_sessions;
mod sandbox_fleet;
mod secrets;
mod session;
mod session_reuse;
mod sni_routing;
mod throttling;
mod upstream_login;
mod upstream_pools;
