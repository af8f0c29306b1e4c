//! The client matrix: real clients (psql/libpq, pgjdbc, psqlODBC, psycopg, tokio-postgres)
//! through the proxy and the real credential chain (the AWS emulator, the Redshift
//! stand-in), each running the same steps (`common`). One binary, one module per client;
//! the clients it needs are listed in `proxy_testkit::programs::APT_INSTALL`.

mod common;
mod odbc;
mod pgjdbc;
mod psql;
mod psycopg;
mod tokio_postgres;
