//! Identities and credentials for `redshift-iam-proxy`.
//!
//! - [`identity`]: who a client is, read from its verified X.509 certificate.
//! - [`principal`]: a client authenticated by certificate or as a local user.
//! - [`scram`]: SCRAM-SHA-256 for local users of `password` listeners.
//! - [`policy`]: which target, database user, database and groups that identity may use.
//! - [`db_credentials`]: the contract for obtaining temporary database credentials.
//! - [`aws`]: the proxy's own AWS credentials (Roles Anywhere, profile, default chain).
//! - [`redshift`]: Redshift credential providers and the credential cache.
//! - [`refresh`]: the refresh-ahead engine behind every expiring credential.

pub mod aws;
pub mod db_credentials;
pub mod identity;
pub mod policy;
pub mod principal;
pub mod redshift;
pub mod refresh;
pub mod scram;
