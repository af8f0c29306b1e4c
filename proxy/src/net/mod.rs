//! PostgreSQL wire basics shared by the client side (`frontend`) and the upstream side
//! (`backend`): message framing, one file per protocol message under [`messages`], the
//! socket options both sides set, and the PROXY protocol header load balancers put in
//! front of a connection.

pub mod buffered;
pub mod framing;
pub mod messages;
pub mod proxy_header;
pub mod socket_options;
pub mod tls_names;

pub use socket_options::SocketOptions;
pub use tls_names::tls_names;
