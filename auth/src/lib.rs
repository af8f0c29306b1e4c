//! Identities and credentials for `redshift-iam-proxy`.
//!
//! - [`identity`]: who a client is, read from its verified X.509 certificate.
//! - [`principal`]: a client authenticated by certificate or as a local user.
//! - [`password`]: password logins of local users of `password` listeners (SCRAM-SHA-256,
//!   md5, Redshift's SHA-256 digest).
//! - [`policy`]: which target, database user, database and groups that identity may use.
//! - [`db_credentials`]: the contract for obtaining temporary database credentials.
//! - [`aws`]: the proxy's own AWS credentials (Roles Anywhere, profile, default chain).
//! - [`redshift`]: Redshift credential providers and the credential cache.
//! - [`refresh`]: the refresh-ahead engine behind every expiring credential.

pub mod aws;
pub mod db_credentials;
pub mod identity;
pub mod password;
pub mod policy;
pub mod principal;
pub mod redshift;
pub mod refresh;
