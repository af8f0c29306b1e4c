//! `redshift-iam-proxy` binary: parses the command line and dispatches.

use clap::Parser;
use redshift_iam_proxy::cli::{Cli, Command, LogFormatArg};
use redshift_iam_proxy::{commands, credential_process, hash_password, logging};
use std::process::ExitCode;

/// Worker threads unless `TOKIO_WORKER_THREADS` says otherwise. One, like PgBouncer's one
/// thread: with several, tokio wakes idle workers to share every new event, and on the
/// relay path those wake-ups (futex calls and context switches, about two per query) cost
/// more CPU than the relaying itself (docs/benchmarks.md). One worker relays ~40,000 small
/// queries or ~900 MB/s of COPY per second; hosts that need more set the variable.
const DEFAULT_WORKER_THREADS: usize = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(DEFAULT_WORKER_THREADS);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    let format_override = cli.global.log_format.map(|f| match f {
        LogFormatArg::Text => proxy_config::LogFormat::Text,
        LogFormatArg::Json => proxy_config::LogFormat::Json,
    });
    let init_logging = |config: Option<&proxy_config::Config>| {
        let format = format_override
            .or(config.map(|c| c.log.format))
            .unwrap_or_default();
        let level = if cli.global.quiet {
            "warn".to_string()
        } else {
            cli.global
                .log_level
                .clone()
                .or(config.map(|c| c.log.level.clone()))
                .unwrap_or_else(|| "info".into())
        };
        logging::init(format, &level);
    };
    runtime.block_on(async {
        match command {
            Command::Run => {
                commands::run(&cli.global.config, &cli.global.overrides(), init_logging).await
            }
            Command::CheckConfig => commands::check_config(&cli.global.config),
            Command::Check(args) => commands::check(&cli.global.config, &args, init_logging).await,
            Command::HashPassword(args) => hash_password::run(&args),
            Command::CredentialProcess(args) => credential_process::run(&args).await,
        }
    })
}
