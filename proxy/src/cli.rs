//! Command-line interface.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "redshift-iam-proxy",
    version,
    about = "PostgreSQL-wire proxy to Amazon Redshift: clients authenticate with X.509 \
             certificates, the proxy logs in with temporary IAM database credentials.",
    args_conflicts_with_subcommands = false
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "REDSHIFT_IAM_PROXY_CONFIG",
        default_value = "/etc/redshift-iam-proxy/config.toml"
    )]
    pub config: PathBuf,
    /// Log format; overrides `[log] format`.
    #[arg(long, global = true, env = "REDSHIFT_IAM_PROXY_LOG_FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Log filter such as `info` or `debug`; overrides `[log] level`.
    #[arg(long, global = true, env = "REDSHIFT_IAM_PROXY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Only log warnings and errors (overrides `--log-level` and `[log] level`).
    #[arg(long, short = 'q', global = true, env = "REDSHIFT_IAM_PROXY_QUIET")]
    pub quiet: bool,
    /// Admin listener address; overrides `[admin] bind`.
    #[arg(long, global = true, env = "REDSHIFT_IAM_PROXY_ADMIN_BIND")]
    pub admin_bind: Option<proxy_config::ListenAddress>,
    /// Audit file; overrides `[audit] path`.
    #[arg(long, global = true, env = "REDSHIFT_IAM_PROXY_AUDIT_PATH")]
    pub audit_path: Option<PathBuf>,
    /// This instance's id among its peers; overrides `[peering] id`.
    #[arg(long, global = true, env = "REDSHIFT_IAM_PROXY_PEERING_ID")]
    pub peering_id: Option<u8>,
}

impl GlobalArgs {
    /// The configuration keys given on the command line or in the environment.
    pub fn overrides(&self) -> proxy_config::Overrides {
        proxy_config::Overrides {
            admin_bind: self.admin_bind.clone(),
            audit_path: self.audit_path.clone(),
            peering_id: self.peering_id,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and load every certificate, key and CA file it names.
    CheckConfig,
    /// Prove a setup step by step: AWS credentials, database credentials and, with
    /// --connect, an upstream login running `select 1`.
    Check(CheckArgs),
    /// Print a verifier for `[[listener.users]] password_verifier` (SCRAM-SHA-256, md5 or
    /// Redshift's sha256). The password is typed at the terminal (not echoed, asked twice),
    /// or read from standard input with --stdin.
    HashPassword(HashPasswordArgs),
    /// Print temporary AWS credentials from IAM Roles Anywhere in the AWS `credential_process`
    /// format, as `aws_signing_helper credential-process` does (same flags), for an AWS
    /// profile's `credential_process = redshift-iam-proxy credential-process ...`.
    CredentialProcess(CredentialProcessArgs),
}

/// The flags of `aws_signing_helper credential-process` that name files, ARNs and the
/// session (certificate stores, PKCS#11 and TPM are not supported).
#[derive(Debug, Clone, Args)]
pub struct CredentialProcessArgs {
    /// PEM certificate; certificates after the first are sent as intermediates.
    #[arg(long)]
    pub certificate: PathBuf,
    /// PEM private key (PKCS#1, PKCS#8 or SEC1; not encrypted).
    #[arg(long)]
    pub private_key: PathBuf,
    /// PEM bundle of intermediate CA certificates (`X-Amz-X509-Chain`).
    #[arg(long)]
    pub intermediates: Option<PathBuf>,
    #[arg(long, value_parser = proxy_config::Arn::trust_anchor)]
    pub trust_anchor_arn: proxy_config::Arn,
    #[arg(long, value_parser = proxy_config::Arn::roles_anywhere_profile)]
    pub profile_arn: proxy_config::Arn,
    #[arg(long, value_parser = proxy_config::Arn::iam_role)]
    pub role_arn: proxy_config::Arn,
    /// Region of the CreateSession call (default: the trust anchor ARN's).
    #[arg(long)]
    pub region: Option<String>,
    /// CreateSession endpoint URL, e.g. a VPC endpoint or an emulator: `https://`, or
    /// `http://` to a loopback host.
    #[arg(long, value_parser = endpoint_url)]
    pub endpoint: Option<String>,
    /// Session duration in seconds (900 to 43200).
    #[arg(
        long,
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(900..=43200)
    )]
    pub session_duration: u64,
    /// Role session name (the profile must accept role session names).
    #[arg(long, value_parser = role_session_name)]
    pub role_session_name: Option<String>,
}

fn endpoint_url(text: &str) -> Result<String, String> {
    proxy_config::check_endpoint_url(text).map(|()| text.to_owned())
}

fn role_session_name(text: &str) -> Result<String, String> {
    proxy_config::check_role_session_name(text).map(|()| text.to_owned())
}

#[derive(Debug, Clone, Args)]
pub struct HashPasswordArgs {
    /// Read the password from the first line of standard input (for scripts).
    #[arg(long)]
    pub stdin: bool,
    /// PBKDF2 iterations (4096 to 100000; clients refuse more).
    #[arg(
        long,
        default_value_t = proxy_auth::password::scram::DEFAULT_ITERATIONS,
        value_parser = clap::value_parser!(u32).range(
            proxy_config::MIN_SCRAM_ITERATIONS as i64..=proxy_config::MAX_SCRAM_ITERATIONS as i64
        )
    )]
    pub iterations: u32,
    /// The login method the verifier selects: scram-sha-256 (psql, pgjdbc, psqlODBC,
    /// psycopg), md5 (every PostgreSQL and Redshift driver) or sha256 (Redshift's digest:
    /// the Redshift JDBC, ODBC and Python drivers). See docs/clients.md.
    #[arg(long, value_enum, default_value_t = HashMethodArg::ScramSha256)]
    pub method: HashMethodArg,
    /// The user name: required by md5, whose verifier hashes it with the password.
    #[arg(long)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashMethodArg {
    #[value(name = "scram-sha-256")]
    ScramSha256,
    Md5,
    Sha256,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Target to check (default: the first).
    #[arg(long)]
    pub target: Option<String>,
    /// Database user to request credentials for.
    #[arg(long)]
    pub user: Option<String>,
    /// Database name (default: `dev`).
    #[arg(long)]
    pub database: Option<String>,
    /// Database groups to request.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// IAM role to act as (Roles Anywhere; default: the configured role).
    #[arg(long, value_parser = proxy_config::Arn::iam_role)]
    pub role_arn: Option<proxy_config::Arn>,
    /// Also log in to the upstream over verify-full TLS and run `select 1`.
    #[arg(long)]
    pub connect: bool,
}
