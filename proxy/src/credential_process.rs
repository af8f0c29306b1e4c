//! `credential-process`: temporary AWS credentials from IAM Roles Anywhere, printed for an
//! AWS profile's `credential_process`, in place of `aws_signing_helper credential-process`.
//!
//! The output follows that helper (`cmd/credential_process.go` in
//! aws/rolesanywhere-credential-helper): one JSON object
//! `{"Version":1,"AccessKeyId":..,"SecretAccessKey":..,"SessionToken":..,"Expiration":..}`
//! written with `json.Marshal` and `fmt.Print`, so without a trailing newline. The SDKs
//! want `Version` 1 and an RFC 3339 `Expiration`, and show the process's standard error in
//! their error message when it exits non-zero (aws-config `CredentialProcessProvider`
//! docs); the AWS CLI guide ("Source credentials with an external process") asks such
//! tools never to write secrets to standard error. So errors go to standard error as one
//! line, from errors that never carry secrets, with exit status 1; nothing else is logged.

use crate::cli::CredentialProcessArgs;
use aws_credential_types::Credentials;
use proxy_auth::aws::roles_anywhere::signer::SignerPem;
use proxy_auth::aws::roles_anywhere::{RolesAnywhere, SessionClient, X509Signer};
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long one CreateSession call may take (retries come on top).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The `credential_process` output, field names and order as the AWS helper prints them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Output<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: String,
}

pub async fn run(args: &CredentialProcessArgs) -> ExitCode {
    let printed = match credentials(args).await {
        Ok(credentials) => output_json(&credentials).and_then(|json| {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(json.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("cannot write to standard output: {e}"))
        }),
        Err(e) => Err(e),
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("redshift-iam-proxy credential-process: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One Roles Anywhere session for the role, with the proxy's own signer and retries.
async fn credentials(args: &CredentialProcessArgs) -> Result<Credentials, String> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {what} {path:?}: {e}"))
    };
    let certificate = read("certificate", &args.certificate)?;
    let private_key = read("private key", &args.private_key)?;
    let chain = args
        .intermediates
        .as_deref()
        .map(|path| read("intermediates", path))
        .transpose()?;
    let signer = X509Signer::from_pem(SignerPem {
        certificate: &certificate,
        private_key: &private_key,
        chain: chain.as_deref(),
        passphrase: None,
        certificate_path: Some(&args.certificate),
        private_key_path: Some(&args.private_key),
        chain_path: args.intermediates.as_deref(),
    })
    .map_err(|e| e.to_string())?;
    let region = args
        .region
        .as_deref()
        .unwrap_or(args.trust_anchor_arn.region());
    let client = SessionClient::new(region, args.endpoint.as_deref(), CALL_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let duration = Duration::from_secs(args.session_duration);
    let roles_anywhere = RolesAnywhere::new(
        client,
        signer,
        args.profile_arn.to_string(),
        args.trust_anchor_arn.to_string(),
        duration,
        // Refreshing does not matter to a process that asks once.
        duration / 4,
    )
    .with_role_session_name(args.role_session_name.clone());
    Arc::new(roles_anywhere)
        .provider(args.role_arn.to_string())
        .credentials()
        .await
        .map_err(|e| e.to_string())
}

/// The JSON the process prints, without a trailing newline.
fn output_json(credentials: &Credentials) -> Result<String, String> {
    let expiration = credentials
        .expiry()
        .ok_or("Roles Anywhere returned credentials without an expiration")?;
    let output = Output {
        version: 1,
        access_key_id: credentials.access_key_id(),
        secret_access_key: credentials.secret_access_key(),
        session_token: credentials.session_token().unwrap_or_default(),
        expiration: rfc3339(expiration),
    };
    serde_json::to_string(&output).map_err(|e| format!("cannot encode the credentials: {e}"))
}

fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    const REQUIRED: &[&str] = &[
        "redshift-iam-proxy",
        "credential-process",
        "--certificate",
        "/pki/proxy.crt",
        "--private-key",
        "/pki/proxy.key",
        "--trust-anchor-arn",
        "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/ta",
        "--profile-arn",
        "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p",
        "--role-arn",
        "arn:aws:iam::123456789012:role/RedshiftAccess",
    ];

    fn parse(extra: &[&str]) -> Result<CredentialProcessArgs, clap::Error> {
        let args: Vec<&str> = REQUIRED.iter().chain(extra).copied().collect();
        match Cli::try_parse_from(args)?.command {
            Some(Command::CredentialProcess(args)) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_helpers_flags_parse_with_its_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.session_duration, 3600);
        assert_eq!(args.region, None);
        assert_eq!(args.role_session_name, None);
        assert_eq!(args.intermediates, None);
        assert_eq!(args.trust_anchor_arn.region(), "eu-west-1");
        let args = parse(&[
            "--region",
            "us-east-2",
            "--endpoint",
            "http://127.0.0.1:8443",
            "--session-duration",
            "900",
            "--role-session-name",
            "alice@corp.example",
            "--intermediates",
            "/pki/chain.pem",
        ])
        .unwrap();
        assert_eq!(args.region.as_deref(), Some("us-east-2"));
        assert_eq!(args.endpoint.as_deref(), Some("http://127.0.0.1:8443"));
        assert_eq!(args.session_duration, 900);
        assert_eq!(
            args.role_session_name.as_deref(),
            Some("alice@corp.example")
        );
    }

    #[test]
    fn wrong_arns_durations_names_and_endpoints_are_refused_by_the_parser() {
        let mut swapped = REQUIRED.to_vec();
        swapped.swap(7, 9);
        assert!(
            Cli::try_parse_from(swapped).is_err(),
            "ARN kinds are checked"
        );
        for bad in [
            &["--session-duration", "899"][..],
            &["--session-duration", "43201"],
            &["--role-session-name", "a"],
            &["--role-session-name", "alice smith"],
            &["--endpoint", "http://rolesanywhere.example.com"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let missing = &REQUIRED[..REQUIRED.len() - 2];
        assert!(
            Cli::try_parse_from(missing).is_err(),
            "--role-arn is required"
        );
    }

    #[test]
    fn the_output_is_the_helpers_json_without_a_trailing_newline() {
        let expiry = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
        let credentials = Credentials::new(
            "ASIAEXAMPLE",
            "secret",
            Some("token".into()),
            Some(expiry),
            "t",
        );
        let json = output_json(&credentials).unwrap();
        assert_eq!(
            json,
            r#"{"Version":1,"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret","SessionToken":"token","Expiration":"2030-03-17T17:46:40Z"}"#
        );
        let without_expiry = Credentials::new("A", "s", None, None, "t");
        assert!(output_json(&without_expiry).is_err());
    }
}
