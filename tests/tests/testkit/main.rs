//! The test kit's own tests and the product as an operator first meets it: the AWS
//! emulator and the Redshift stand-ins against the real AWS SDK and PostgreSQL
//! (`emulator`, `redshift_credentials`), the kit's launchers and PKI (`selftest`), the
//! README (`readme`), the sandbox (`sandbox`) and the binary's command line (`cli`).

mod cli;
mod emulated;
mod emulator;
mod readme;
mod redshift_credentials;
mod sandbox;
mod selftest;
