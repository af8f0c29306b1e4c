//! Test kit of `redshift-iam-proxy`: a real PostgreSQL launcher ([`pg`]), per-run test PKI
//! ([`pki`]), the proxy process launcher ([`proxy`]), a `psql` runner ([`psql`]), and the
//! local AWS emulator ([`emulator`]) with its Redshift stand-ins ([`standin`]).

pub mod adversary;
pub mod client;
pub mod config;
pub mod emulator;
pub mod harness;
pub mod observe;
pub mod pg;
pub mod pki;
pub mod ports;
pub mod process;
pub mod programs;
pub mod proxy;
pub mod psql;
pub mod stack;
pub mod standin;
pub mod world;
