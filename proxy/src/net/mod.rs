//! PostgreSQL wire basics shared by the client side (`frontend`) and the upstream side
//! (`backend`): message framing and one file per protocol message under [`messages`].

pub mod buffered;
pub mod framing;
pub mod messages;
pub mod tls_names;

pub use tls_names::tls_names;
