//! Redshift database credential providers and their cache.
//!
//! - [`RedshiftCredentials`]: the [`DbCredentialSource`](crate::db_credentials::DbCredentialSource)
//!   the proxy uses, a cache with single-flight fetches and refresh ahead of expiry.
//! - [`AwsCredentialFetcher`]: one uncached call to `GetClusterCredentials`,
//!   `GetClusterCredentialsWithIAM` or serverless `GetCredentials` through the AWS SDK.
//! - [`endpoint`]: region and cluster / workgroup of each `[[target]]`.

mod aws_error;
pub mod cache;
pub mod endpoint;
pub mod fetcher;
mod provisioned;
mod serverless;

pub use cache::{CacheStats, RedshiftCredentials};
pub use endpoint::{ResolvedTarget, ResourceName, TargetApi};
pub use fetcher::{AwsCredentialFetcher, FetchDbCredential};

#[cfg(test)]
mod sdk_tests;
