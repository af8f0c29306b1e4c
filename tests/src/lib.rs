//! Test kit of `redshift-iam-proxy`: a real PostgreSQL launcher ([`pg`]), per-run test PKI
//! ([`pki`]), the proxy process launcher ([`proxy`]), a `psql` runner ([`psql`]), and the
//! local AWS emulator ([`emulator`]) with its Redshift stand-ins ([`standin`]).
//!
//! End-to-end tests run in a [`world::World`]: the whole chain from client to database,
//! configured with the typed builder ([`config`]). What they observe of a proxy (its log,
//! audit records, metrics, the admin listener, PostgreSQL's activity, its sockets) is in
//! [`observe`]; how they connect is in [`client`] and, for raw protocol abuse, in
//! [`adversary`]; the real client programs are located by [`programs`].

pub mod adversary;
pub mod balancer;
pub mod client;
pub mod config;
pub mod emulator;
pub mod fleet;
pub mod observe;
pub mod pg;
pub mod pki;
pub mod ports;
pub mod process;
pub mod programs;
pub mod proxy;
pub mod psql;
pub mod redshift_python;
pub mod stack;
pub mod standin;
pub mod world;
