//! The side-by-side benchmark of issue 8 (binary `bench`): the proxy against a direct TLS
//! connection and PgBouncer, on a stack the benchmark starts itself.

pub mod endpoint;
pub mod latency;
pub mod link;
pub mod pgbouncer;
pub mod procfs;
pub mod report;
pub mod stack;
pub mod stats;
pub mod workloads;
