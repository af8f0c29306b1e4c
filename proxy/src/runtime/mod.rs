//! What the running proxy holds, apart from its sockets: the reloadable [`State`] built
//! from the configuration, the process-lifetime [`Shared`] services, connection
//! admission, readiness and reload. [`crate::server`] wires them to listeners.

mod admission;
mod readiness;
mod reload;
mod scrape;
mod shared;
mod state;

pub use admission::{Admission, ConnectionGuard, IdentityGuard, PendingGuard};
pub use readiness::NotReady;
pub(crate) use reload::unix_now;
pub use reload::ReloadError;
pub use scrape::Scrape;
pub use shared::{Services, Shared};
pub use state::{ListenerContext, SetupError, State, TargetContext};
