//! The subcommands: `run`, `check-config` and `check`.

use crate::backend::{self, LoginRequest, UpstreamEndpoint};
use crate::cli::CheckArgs;
use crate::metrics::AwsCallMetrics;
use crate::net::framing::read_message;
use crate::net::messages::{
    DataRow, Decode, Encode, ErrorResponse, Query, ReadyForQuery, Terminate,
};
use crate::runtime::State;
use crate::server::{Proxy, RunningProxy};
use bytes::BytesMut;
use proxy_auth::aws::{AwsCallObserver, AwsCredentials};
use proxy_auth::db_credentials::{DbCredentialRequest, DbCredentialSource};
use proxy_auth::redshift::RedshiftCredentials;
use proxy_config::{
    AwsCredentialSource, ClientAuthMode, Config, ConfigError, ListenerConfig, Overrides,
};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::io::AsyncWriteExt;
use tracing::{error, info, warn};

/// The production credential chain: the proxy's AWS credentials, then Redshift.
pub async fn credential_source(
    config: &Config,
) -> Result<(Arc<AwsCredentials>, Arc<RedshiftCredentials>), String> {
    credential_source_observed(config, proxy_auth::aws::observe::no_observer()).await
}

/// [`credential_source`], reporting every AWS call to `observer`.
pub async fn credential_source_observed(
    config: &Config,
    observer: Arc<dyn AwsCallObserver>,
) -> Result<(Arc<AwsCredentials>, Arc<RedshiftCredentials>), String> {
    let aws = Arc::new(
        AwsCredentials::from_config_observed(&config.aws, observer.clone())
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?,
    );
    let redshift = RedshiftCredentials::new_observed(config, aws.clone(), observer)
        .map_err(|e| format!("Redshift credentials: {e}"))?;
    Ok((aws, Arc::new(redshift)))
}

/// `run`: serve until SIGINT or SIGTERM; SIGHUP reloads.
pub async fn run(
    path: &Path,
    overrides: &Overrides,
    init_logging: impl FnOnce(Option<&Config>),
) -> ExitCode {
    let config = match Config::load_with_overrides(path, overrides) {
        Ok(c) => c,
        Err(e) => {
            init_logging(None);
            log_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    init_logging(Some(&config));
    log_warnings(path, &config);
    let aws_calls = AwsCallMetrics::default();
    let (aws, credentials) =
        match credential_source_observed(&config, Arc::new(aws_calls.clone())).await {
            Ok(chain) => chain,
            Err(e) => {
                error!("cannot set up credentials: {e}");
                return ExitCode::FAILURE;
            }
        };
    let proxy = match Proxy::new(&config, credentials.clone()) {
        Ok(p) => p
            .with_config_path(path, overrides.clone())
            .with_credential_stats(credentials)
            .with_aws_credentials(aws)
            .with_aws_call_metrics(aws_calls),
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match proxy.bind().await {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "redshift-iam-proxy ready"
    );
    serve_until_signalled(running).await
}

/// Reloads on SIGHUP; on SIGTERM/SIGINT drains gracefully and exits 0, unless a second
/// SIGTERM/SIGINT arrives first, which exits at once.
pub async fn serve_until_signalled(running: RunningProxy) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers");
        running.shutdown().await;
        return ExitCode::FAILURE;
    };
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                // Failures are logged and counted by reload itself.
                let _ = running.reload().await;
            }
        }
    };
    info!(
        signal = name,
        "shutting down gracefully; send it again to exit at once"
    );
    let shutdown = running.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        report = &mut shutdown => {
            info!(terminated = report.terminated, "exiting");
            ExitCode::SUCCESS
        }
        s = async {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        } => {
            warn!(signal = s, "second signal: exiting without waiting for sessions");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: check the configuration, then build what startup builds from it (listener
/// TLS, CA bundles and CRLs, upstream endpoints, the compiled policy, the Roles Anywhere
/// certificate and key) and print a summary and any warnings. No network access.
pub fn check_config(path: &Path) -> ExitCode {
    match check_config_inner(path) {
        Ok((summary, warnings)) => {
            print!("{summary}");
            for w in &warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            match warnings.len() {
                0 => println!("configuration OK"),
                n => println!("configuration OK, {n} warning(s)"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The summary and warnings, or `error: ` lines (one per problem).
fn check_config_inner(path: &Path) -> Result<(String, Vec<String>), String> {
    let config = Config::load(path).map_err(|e| error_lines(&e))?;
    // Templates, patterns and group names are compiled here, with the rest of the state.
    let state = State::build(&config, 0).map_err(|e| format!("error: {e}"))?;
    // A CRL past its nextUpdate fails closed at run time; here it is an error.
    let now = crate::runtime::unix_now();
    let expired: Vec<String> = state
        .revocation
        .expired(now)
        .map(|crl| {
            format!(
                "error: listener {}: the certificate revocation list of {:?} expired (nextUpdate \
                 passed); clients of that CA would be refused",
                crl.listener, crl.issuer
            )
        })
        .collect();
    if !expired.is_empty() {
        return Err(expired.join("\n"));
    }
    if let Some(ra) = &config.aws.roles_anywhere {
        proxy_auth::aws::roles_anywhere::X509Signer::from_config(ra)
            .map_err(|e| format!("error: aws.roles_anywhere: {e}"))?;
    }
    let warnings = config
        .warnings()
        .iter()
        .map(ToString::to_string)
        .chain(state.warnings.iter().cloned())
        .collect();
    Ok((summary(path, &config), warnings))
}

/// `error: file: key: problem` for each problem of an invalid configuration, else the
/// error on one line.
fn error_lines(e: &ConfigError) -> String {
    if e.problems().is_empty() {
        return format!("error: {e}");
    }
    e.to_string()
        .lines()
        .map(|line| format!("error: {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Logs an invalid configuration, one line per problem.
fn log_config_error(e: &ConfigError) {
    if e.problems().is_empty() {
        error!("invalid configuration: {e}");
    } else {
        for line in e.to_string().lines() {
            error!("invalid configuration: {line}");
        }
    }
}

/// Logs the configuration's warnings (at startup; reload logs its own).
fn log_warnings(path: &Path, config: &Config) {
    for w in config.warnings() {
        warn!("configuration warning: {}: {w}", path.display());
    }
}

fn summary(path: &Path, config: &Config) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "configuration: {}", path.display());
    for l in &config.listeners {
        listener_summary(config, l, &mut out);
    }
    for t in &config.targets {
        let dial = t
            .dial
            .as_deref()
            .map(|d| format!(" via {d}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "target {}: {}:{}{dial} (verify-full), credentials by {}, {}s lifetime",
            t.name,
            t.host,
            t.port,
            t.credential_api(),
            t.credential_duration.as_secs()
        );
    }
    let _ = writeln!(out, "policy: {} rule(s)", config.policy.rules.len());
    let source = match config.aws.source {
        AwsCredentialSource::Default => "default AWS credential chain".to_string(),
        AwsCredentialSource::Profile => format!(
            "AWS profile {:?}",
            config.aws.profile.as_deref().unwrap_or_default()
        ),
        AwsCredentialSource::RolesAnywhere => match &config.aws.roles_anywhere {
            Some(ra) => format!(
                "IAM Roles Anywhere, role {}, certificate {}",
                ra.role_arn,
                ra.certificate.display()
            ),
            None => "IAM Roles Anywhere".to_string(),
        },
    };
    let _ = writeln!(out, "aws: {source}");
    out
}

fn listener_summary(config: &Config, l: &ListenerConfig, out: &mut String) {
    use std::fmt::Write;
    let target = config
        .listener_target(l)
        .map(|t| t.name.as_str())
        .unwrap_or("?");
    let tls = match &l.tls_cert {
        Some(cert) => format!("TLS certificate {}", cert.display()),
        None => "no TLS".to_string(),
    };
    let auth = match l.client_auth {
        ClientAuthMode::Certificate => format!(
            "client certificates from {}, {} CRL file(s)",
            l.client_ca.as_deref().unwrap_or(Path::new("?")).display(),
            l.client_crls.len()
        ),
        ClientAuthMode::Password => {
            format!("password (SCRAM-SHA-256), {} user(s)", l.users.len())
        }
        ClientAuthMode::Trust => format!(
            "trust as local user {:?}",
            l.trust_user.as_deref().unwrap_or_default()
        ),
    };
    let plaintext = if l.accepts_plaintext() {
        ", plaintext accepted"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "listener {}: {} -> target {target}; {tls}; {auth}{plaintext}",
        l.display_name(),
        l.bind,
    );
    for c in &l.certificates {
        let _ = writeln!(
            out,
            "  server name(s) {} -> target {}; certificate {}",
            c.server_names.join(", "),
            c.target.as_deref().unwrap_or(target),
            c.tls_cert.display()
        );
    }
    if l.strict_sni {
        let _ = writeln!(out, "  strict_sni: other server names are refused");
    }
}

/// `check`: walk the credential chain step by step and report each outcome.
pub async fn check(
    path: &Path,
    args: &CheckArgs,
    init_logging: impl FnOnce(Option<&Config>),
) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", error_lines(&e));
            return ExitCode::FAILURE;
        }
    };
    init_logging(Some(&config));
    log_warnings(path, &config);
    let ok = check_steps(&config, args).await;
    if ok {
        println!("all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("check failed");
        ExitCode::FAILURE
    }
}

/// Prints one step of `check` and whether it passed.
fn step(name: &str, outcome: Result<String, String>) -> bool {
    match outcome {
        Ok(detail) => {
            println!("[ OK ] {name}: {detail}");
            true
        }
        Err(detail) => {
            println!("[FAIL] {name}: {detail}");
            false
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into())
}

async fn check_steps(config: &Config, args: &CheckArgs) -> bool {
    let target = match &args.target {
        Some(name) => config.target(name),
        None => config.targets.first(),
    };
    let Some(target) = target else {
        return step("target", Err(format!("no target named {:?}", args.target)));
    };
    step(
        "target",
        Ok(format!("{} ({}:{})", target.name, target.host, target.port)),
    );

    let (aws, redshift) = match credential_source(config).await {
        Ok(c) => c,
        Err(e) => return step("credential setup", Err(e)),
    };
    let summary = aws.check(args.role_arn.as_ref()).await;
    let aws_ok = step(
        "AWS credentials",
        summary.map(|s| s.to_string()).map_err(|e| e.to_string()),
    );
    if !aws_ok {
        return false;
    }

    let db_user = args.user.clone().unwrap_or_else(|| "check".into());
    let database = args.database.clone().unwrap_or_else(|| "dev".into());
    let mut groups = args.groups.clone();
    groups.sort();
    groups.dedup();
    let request = DbCredentialRequest {
        target: target.name.clone(),
        role_arn: args.role_arn.clone(),
        db_user,
        db_name: database.clone(),
        db_groups: groups,
        role_session_name: None,
    };
    let credential = match redshift.credential(&request, "check").await {
        Ok(c) => {
            step(
                "database credentials",
                Ok(format!(
                    "user {:?}, expires {}, AWS request id(s) {}",
                    c.user,
                    rfc3339(c.expiration),
                    c.aws_request_ids.join(", ")
                )),
            );
            c
        }
        Err(e) => return step("database credentials", Err(e.to_string())),
    };
    if !args.connect {
        return true;
    }

    let endpoint = match UpstreamEndpoint::from_config(target) {
        Ok(e) => e,
        Err(e) => return step("upstream", Err(e.to_string())),
    };
    let started = Instant::now();
    let login = LoginRequest {
        user: &credential.user,
        password: &credential.password,
        database: &database,
        params: &[("application_name".into(), "redshift-iam-proxy check".into())],
    };
    let mut session = match backend::connect_and_login(&endpoint, &login).await {
        Ok(s) => s,
        Err(e) => return step("upstream login", Err(e.to_string())),
    };
    step(
        "upstream login",
        Ok(format!(
            "{}:{} as {:?}, {} {} verify-full, {} authentication, {} ms",
            endpoint.dial_host,
            endpoint.dial_port,
            credential.user,
            session.tls_version,
            session.tls_cipher,
            session.auth_method,
            started.elapsed().as_millis()
        )),
    );
    let result = select_one(&mut session.stream).await;
    step("select 1", result)
}

/// Runs `select 1` with the simple query protocol and checks the answer.
async fn select_one<S>(stream: &mut S) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut query = BytesMut::new();
    Query { sql: "select 1" }.encode_into(&mut query);
    Terminate.encode_into(&mut query);
    stream
        .write_all(&query)
        .await
        .map_err(|e| format!("send: {e}"))?;
    stream.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut value = None;
    loop {
        let m = read_message(stream, 64 * 1024)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        match m.tag {
            DataRow::TAG => {
                if let Ok(DataRow { columns }) = DataRow::decode(&m.body) {
                    if let [Some(v)] = columns[..] {
                        value = Some(String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
            ErrorResponse::TAG => {
                let e = ErrorResponse::decode(&m.body)
                    .map(|e| format!("{} (SQLSTATE {})", e.message, e.code))
                    .unwrap_or_else(|e| e.to_string());
                return Err(e);
            }
            ReadyForQuery::TAG => break,
            _ => {}
        }
    }
    match value.as_deref() {
        Some("1") => Ok("returned 1".into()),
        other => Err(format!("unexpected result {other:?}")),
    }
}
