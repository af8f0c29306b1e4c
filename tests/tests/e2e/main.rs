//! End-to-end tests: real clients through the proxy, the real credential chain (Roles
//! Anywhere and Redshift's credential APIs in the AWS emulator) and the Redshift stand-in
//! in front of PostgreSQL. One binary, one module per area.

mod admission;
mod adversarial;
mod credential_expiry;
mod identity;
mod legacy_clients;
mod load;
mod negotiation;
mod operability;
mod secrets;
mod session;
mod sni_routing;
