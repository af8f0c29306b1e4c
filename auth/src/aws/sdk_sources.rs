//! The `profile` and `default` credential sources, which aws-config implements. Builds
//! without the `aws-sdk` feature (the fuzz targets) have neither and refuse them.

pub(super) use imp::{default_chain, profile};

#[cfg(feature = "aws-sdk")]
mod imp {
    use aws_credential_types::provider::SharedCredentialsProvider;
    use proxy_config::AwsConfig;

    /// `[aws] source = "profile"`: the named (or default) profile of the shared AWS files,
    /// including `credential_process`.
    pub(crate) fn profile(
        config: &AwsConfig,
    ) -> Result<SharedCredentialsProvider, crate::db_credentials::CredentialError> {
        let mut builder = aws_config::profile::ProfileFileCredentialsProvider::builder();
        if let Some(profile) = &config.profile {
            builder = builder.profile_name(profile);
        }
        Ok(SharedCredentialsProvider::new(builder.build()))
    }

    /// `[aws] source = "default"`: the SDK's default chain (environment, profile, web
    /// identity, container and instance metadata).
    pub(crate) async fn default_chain(
        config: &AwsConfig,
    ) -> Result<SharedCredentialsProvider, crate::db_credentials::CredentialError> {
        let mut builder =
            aws_config::default_provider::credentials::DefaultCredentialsChain::builder();
        if let Some(region) = &config.region {
            builder = builder.region(aws_types::region::Region::new(region.clone()));
        }
        Ok(SharedCredentialsProvider::new(builder.build().await))
    }
}

#[cfg(not(feature = "aws-sdk"))]
mod imp {
    use crate::db_credentials::CredentialError;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use proxy_config::AwsConfig;

    fn unsupported(source: &str) -> CredentialError {
        CredentialError::Invalid(format!(
            "[aws] source = \"{source}\" needs a build with the aws-sdk feature"
        ))
    }

    pub(crate) fn profile(_: &AwsConfig) -> Result<SharedCredentialsProvider, CredentialError> {
        Err(unsupported("profile"))
    }

    pub(crate) async fn default_chain(
        _: &AwsConfig,
    ) -> Result<SharedCredentialsProvider, CredentialError> {
        Err(unsupported("default"))
    }
}
