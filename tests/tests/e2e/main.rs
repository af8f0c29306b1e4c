//! End-to-end tests: real clients through the proxy, the real credential chain (Roles
//! Anywhere and Redshift's credential APIs in the AWS emulator) and the Redshift stand-in
//! in front of PostgreSQL. One binary, one module per area; the tests share the binary's
//! PostgreSQL server and its captured log (`proxy_testkit::observe`), each in a `World` of
//! its own names.

mod admission;
mod adversarial;
mod credential_expiry;
mod iam_chain;
mod identity;
mod legacy_clients;
mod load;
mod negotiation;
mod operability;
mod secrets;
mod session;
mod sni_routing;
mod upstream_login;
