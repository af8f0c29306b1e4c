//! `redshift-iam-proxy` binary: parses the command line and dispatches.

use clap::Parser;
use redshift_iam_proxy::cli::{Cli, Command, LogFormatArg};
use redshift_iam_proxy::{commands, credential_process, hash_password, logging};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
