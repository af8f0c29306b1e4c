//! One file per protocol message the proxy builds or inspects.

pub mod authentication_request;
pub mod backend_key_data;
pub mod client_sasl;
pub mod error_response;
pub mod password_response;
pub mod upstream_startup;

pub use error_response::{ErrorResponse, Severity};
pub mod negotiate_protocol_version;
pub mod startup;
