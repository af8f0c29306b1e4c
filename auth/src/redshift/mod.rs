//! Redshift database credential providers and their cache.
//!
//! - [`RedshiftCredentials`]: the [`DbCredentialSource`](crate::db_credentials::DbCredentialSource)
//!   the proxy uses, a cache with single-flight fetches and refresh ahead of expiry.
//! - [`AwsCredentialFetcher`]: one uncached call to `GetClusterCredentials`,
//!   `GetClusterCredentialsWithIAM` or serverless `GetCredentials` through the AWS SDK.
//! - [`endpoint`]: region and cluster / workgroup of each `[[target]]`.

pub mod cache;
pub mod endpoint;

pub use cache::{
    refresh_policy, CacheStats, FetchDbCredential, IdentityBudget, RedshiftCredentials,
};
pub use endpoint::{ResolvedTarget, ResourceName, TargetApi};

// The AWS SDK calls: everything above builds without them (feature `aws-sdk`).
#[cfg(feature = "aws-sdk")]
mod aws_error;
#[cfg(feature = "aws-sdk")]
pub mod fetcher;
#[cfg(feature = "aws-sdk")]
mod issued;
#[cfg(feature = "aws-sdk")]
mod provisioned;
#[cfg(all(test, feature = "aws-sdk"))]
mod sdk_tests;
#[cfg(feature = "aws-sdk")]
mod serverless;

#[cfg(feature = "aws-sdk")]
pub use fetcher::AwsCredentialFetcher;
