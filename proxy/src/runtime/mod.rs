//! What the running proxy holds, apart from its sockets: the reloadable [`State`] built
//! from the configuration, the process-lifetime [`Shared`] services, connection
//! admission, readiness and reload. [`crate::server`] wires them to listeners.

mod admission;
mod readiness;
mod reload;
mod revocation;
mod scrape;
mod shared;
mod state;
mod throttle;

pub use admission::{Admission, ConnectionGuard, IdentityGuard, PendingGuard};
pub use readiness::NotReady;
pub(crate) use reload::unix_now;
pub use reload::ReloadError;
pub use revocation::{CrlInfo, Revocation};
pub use scrape::Scrape;
pub use shared::{Services, Shared};
pub use state::{ListenerContext, SetupError, State, TargetContext};
pub use throttle::{PasswordThrottle, Verdict};
