//! `aws-emulator --config emulator.toml [--ready-file PATH] [--listen ADDR]`: runs the local
//! AWS emulator (see `proxy_testkit::emulator`) and its Redshift stand-ins (one per cluster
//! and workgroup) until SIGINT/SIGTERM. Prints its URL on stdout and, once everything
//! listens, writes the ready file (JSON):
//!
//! ```text
//! {"url": "http://127.0.0.1:PORT",
//!  "standins": [{"kind": "cluster", "name": "...", "host": "localhost", "port": N,
//!                "ca_cert": "/path/ca.pem"}, ...]}
//! ```

use anyhow::Context as _;
use clap::Parser;
use proxy_testkit::emulator::{AwsEmulator, EmulatorConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(about = "Local emulator of IAM Roles Anywhere, Redshift and Redshift Serverless")]
struct Args {
    /// TOML file with the emulator configuration.
    #[arg(long)]
    config: PathBuf,
    /// Written (atomically) once the emulator and its stand-ins listen: JSON with the
    /// emulator's URL and each stand-in's port and CA certificate.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: EmulatorConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    let emulator = AwsEmulator::start_on(config, args.listen).await?;
    println!("{}", emulator.url());
    if let Some(path) = &args.ready_file {
        let standins: Vec<serde_json::Value> = emulator
            .standins()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "kind": s.target().kind,
                    "name": s.target().name,
                    "host": s.endpoint().host,
                    "port": s.endpoint().port(),
                    "ca_cert": s.endpoint().ca_cert,
                })
            })
            .collect();
        let ready = serde_json::json!({"url": emulator.url(), "standins": standins});
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{ready:#}\n"))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(url = %emulator.url(), "AWS emulator listening");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emulator.shutdown().await;
    Ok(())
}
