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
    /// Print a SCRAM-SHA-256 verifier for `[[listener.users]] scram_verifier`. The password
    /// is typed at the terminal (not echoed, asked twice), or read from standard input with
    /// --stdin.
    HashPassword(HashPasswordArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HashPasswordArgs {
    /// Read the password from the first line of standard input (for scripts).
    #[arg(long)]
    pub stdin: bool,
    /// PBKDF2 iterations (4096 to 100000; clients refuse more).
    #[arg(
        long,
        default_value_t = proxy_auth::scram::DEFAULT_ITERATIONS,
        value_parser = clap::value_parser!(u32).range(
            proxy_config::MIN_SCRAM_ITERATIONS as i64..=proxy_config::MAX_SCRAM_ITERATIONS as i64
        )
    )]
    pub iterations: u32,
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
