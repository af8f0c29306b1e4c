//! Loading whole configuration files: literal TOML in, the typed configuration or every
//! problem with its key out. One module per area.

mod checks;
mod client_auth;
mod key_permissions;
mod load;
mod load_balancer;
mod pools;
mod sni;
