//! Cross-field validation. Returns the failing key and the problem; `Config::from_toml`
//! adds the file name.

use crate::schema::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

type Problem = (String, String);

fn problem(key: impl Into<String>, text: impl Into<String>) -> Problem {
    (key.into(), text.into())
}

pub(crate) fn validate(c: &Config) -> Result<(), Problem> {
    if c.listeners.is_empty() {
        return Err(problem("listener", "at least one [[listener]] is required"));
    }
    if c.targets.is_empty() {
        return Err(problem("target", "at least one [[target]] is required"));
    }
    if let Err(e) = c.log.level.parse::<LevelCheck>() {
        return Err(problem("log.level", e));
    }

    let mut target_names = HashSet::new();
    for (i, t) in c.targets.iter().enumerate() {
        let key = |k: &str| format!("target[{i}].{k}");
        if t.name.is_empty() {
            return Err(problem(key("name"), "must not be empty"));
        }
        if !target_names.insert(t.name.as_str()) {
            return Err(problem(
                key("name"),
                format!("duplicate target name {:?}", t.name),
            ));
        }
        if t.host.is_empty() {
            return Err(problem(key("host"), "must not be empty"));
        }
        if t.port == 0 {
            return Err(problem(key("port"), "must not be 0"));
        }
        let d = t.credential_duration;
        if d < Duration::from_secs(900) || d > Duration::from_secs(3600) {
            return Err(problem(
                key("credential_duration"),
                format!("must be between 15m and 1h (got {}s)", d.as_secs()),
            ));
        }
        match t.kind {
            TargetKind::Serverless => {
                if t.cluster_identifier.is_some() {
                    return Err(problem(
                        key("cluster_identifier"),
                        "only applies to kind = \"provisioned\"",
                    ));
                }
                if t.with_iam || t.auto_create {
                    return Err(problem(
                        key(if t.with_iam {
                            "with_iam"
                        } else {
                            "auto_create"
                        }),
                        "only applies to kind = \"provisioned\"",
                    ));
                }
            }
            TargetKind::Provisioned => {
                if t.workgroup.is_some() {
                    return Err(problem(
                        key("workgroup"),
                        "only applies to kind = \"serverless\"",
                    ));
                }
                if t.with_iam && t.auto_create {
                    return Err(problem(
                        key("auto_create"),
                        "GetClusterCredentialsWithIAM has no AutoCreate; remove it or with_iam",
                    ));
                }
            }
        }
        if let Some(url) = &t.aws_endpoint_url {
            check_url(url).map_err(|e| problem(key("aws_endpoint_url"), e))?;
        }
    }

    let mut listener_names = HashSet::new();
    let mut binds = HashSet::new();
    for (i, l) in c.listeners.iter().enumerate() {
        let key = |k: &str| format!("listener[{i}].{k}");
        if l.address().is_none() {
            return Err(problem(
                key("bind"),
                format!(
                    "{:?} is not an address such as 127.0.0.1:5439, [::]:5439 or \
                     unix:/run/redshift-iam-proxy/.s.PGSQL.5439",
                    l.bind
                ),
            ));
        }
        if l.name.as_deref() == Some("") {
            return Err(problem(key("name"), "must not be empty"));
        }
        if !listener_names.insert(l.display_name()) {
            return Err(problem(
                key("name"),
                format!("duplicate listener {:?}", l.display_name()),
            ));
        }
        // Port 0 (any free port, tests) never collides.
        let any_port = matches!(l.address(), Some(ListenAddress::Tcp(a)) if a.port() == 0);
        if !any_port && !binds.insert(l.bind.as_str()) {
            return Err(problem(
                key("bind"),
                format!("{:?} is bound by another listener", l.bind),
            ));
        }
        match &l.target {
            Some(t) if !target_names.contains(t.as_str()) => {
                return Err(problem(key("target"), format!("no [[target]] named {t:?}")));
            }
            None if c.targets.len() > 1 => {
                return Err(problem(
                    key("target"),
                    "required when more than one [[target]] is configured",
                ));
            }
            _ => {}
        }
        if l.max_connections == Some(0) {
            return Err(problem(
                key("max_connections"),
                "must be greater than 0 (omit it to use [limits] max_connections_per_listener)",
            ));
        }
        if l.login_timeout.is_zero() {
            return Err(problem(key("login_timeout"), "must be greater than 0"));
        }
        validate_listener_certificates(i, l, &target_names)?;
        validate_listener_auth(i, l)?;
    }

    if c.policy.placeholder_users.iter().any(String::is_empty) {
        return Err(problem(
            "policy.placeholder_users",
            "entries must not be empty (an empty startup user already counts as a placeholder)",
        ));
    }
    let refresh = c.db_credentials.refresh_before;
    if refresh.is_zero() || refresh >= Duration::from_secs(900) {
        return Err(problem(
            "db_credentials.refresh_before",
            "must be greater than 0 and less than 15m (the shortest credential lifetime)",
        ));
    }
    if c.policy.rules.is_empty() {
        return Err(problem(
            "policy.rule",
            "at least one [[policy.rule]] is required; without rules nobody can log in",
        ));
    }
    let mut rule_names = HashSet::new();
    for (i, r) in c.policy.rules.iter().enumerate() {
        let key = |k: &str| format!("policy.rule[{i}].{k}");
        if !rule_names.insert(r.name.as_str()) {
            return Err(problem(
                key("name"),
                format!("duplicate rule name {:?}", r.name),
            ));
        }
        if r.matches.is_empty() {
            return Err(problem(
                key("match"),
                "needs at least one of cn, san_uri, san_dns, san_email, issuer, local_user",
            ));
        }
        if r.matches.local_user.is_some() && r.matches.has_certificate_fields() {
            return Err(problem(
                key("match"),
                "local_user cannot be combined with certificate fields (cn, san_uri, san_dns, \
                 san_email, issuer): a client is either a certificate or a local user, so such \
                 a rule would match nobody; write two rules",
            ));
        }
        if r.targets.is_empty() {
            return Err(problem(
                key("targets"),
                "must list at least one target or \"*\"",
            ));
        }
        for t in &r.targets {
            if t != "*" && !target_names.contains(t.as_str()) {
                return Err(problem(
                    key("targets"),
                    format!("no [[target]] named {t:?}"),
                ));
            }
        }
        if r.users.is_empty() {
            return Err(problem(
                key("users"),
                "must list at least one database user",
            ));
        }
        if r.name.is_empty() {
            return Err(problem(key("name"), "must not be empty"));
        }
        for u in &r.users {
            check_template(u).map_err(|e| problem(key("users"), e))?;
        }
        if let Some(u) = &r.default_user {
            check_template(u).map_err(|e| problem(key("default_user"), e))?;
        }
        if r.databases.is_empty() {
            return Err(problem(
                key("databases"),
                "must list at least one database or \"*\"",
            ));
        }
        if r.role_arn.is_some() && c.aws.source != AwsCredentialSource::RolesAnywhere {
            return Err(problem(
                key("role_arn"),
                "per-rule roles need [aws] source = \"roles_anywhere\"",
            ));
        }
        if let Some(arn) = &r.role_arn {
            check_arn(arn, "iam", "role/").map_err(|e| problem(key("role_arn"), e))?;
        }
    }

    validate_aws(&c.aws)?;
    validate_operations(c)
}

/// `[[listener.certificates]]`: names must be usable as SNI patterns and unambiguous, and
/// targets must exist. Whether each certificate covers its names is checked when the
/// certificate files are loaded.
fn validate_listener_certificates(
    i: usize,
    l: &ListenerConfig,
    target_names: &HashSet<&str>,
) -> Result<(), Problem> {
    if l.strict_sni && l.certificates.is_empty() {
        return Err(problem(
            format!("listener[{i}].strict_sni"),
            "needs at least one [[listener.certificates]] entry (otherwise every client is refused)",
        ));
    }
    // Unix sockets, which carry no TLS at all, are refused with their own message.
    let unix = matches!(l.address(), Some(ListenAddress::Unix(_)));
    if !l.certificates.is_empty() && l.tls_cert.is_none() && !unix {
        return Err(problem(
            format!("listener[{i}].tls_cert"),
            "required with [[listener.certificates]]: tls_cert and tls_key are the default \
             certificate, for clients that send no server name or one no entry serves",
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (j, cert) in l.certificates.iter().enumerate() {
        let key = |k: &str| format!("listener[{i}].certificates[{j}].{k}");
        if cert.server_names.is_empty() {
            return Err(problem(
                key("server_names"),
                "must list at least one DNS name",
            ));
        }
        for name in &cert.server_names {
            check_server_name(name).map_err(|e| problem(key("server_names"), e))?;
            if let Some(other) = seen.insert(name.to_ascii_lowercase(), j) {
                return Err(problem(
                    key("server_names"),
                    format!("{name:?} is also listed in listener[{i}].certificates[{other}]"),
                ));
            }
        }
        if let Some(t) = &cert.target {
            if !target_names.contains(t.as_str()) {
                return Err(problem(key("target"), format!("no [[target]] named {t:?}")));
            }
        }
    }
    Ok(())
}

/// A DNS name, or `*.` followed by one (a wildcard for exactly one leading label).
fn check_server_name(name: &str) -> Result<(), String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address; clients never send one as a server name (SNI), so \
             clients connecting by address get the listener's default certificate"
        ));
    }
    let base = name.strip_prefix("*.").unwrap_or(name);
    if base.contains('*') {
        return Err(format!(
            "{name:?}: only a whole leading label may be a wildcard, as in \"*.corp.example\""
        ));
    }
    let labels_ok = !base.is_empty()
        && base.len() <= 253
        && base.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !labels_ok {
        return Err(format!("{name:?} is not a DNS name"));
    }
    Ok(())
}

fn validate_operations(c: &Config) -> Result<(), Problem> {
    if let Some(bind) = &c.admin.bind {
        let addr: SocketAddr = bind.parse().map_err(|_| {
            problem(
                "admin.bind",
                format!("{bind:?} is not an address such as 127.0.0.1:9187"),
            )
        })?;
        if !addr.ip().is_loopback() && !c.admin.allow_remote {
            return Err(problem(
                "admin.bind",
                format!(
                    "{bind:?} is not a loopback address; the admin endpoints are \
                     unauthenticated, set admin.allow_remote = true to expose them"
                ),
            ));
        }
        // Port 0 (any free port, tests) never collides.
        if addr.port() != 0 && c.listeners.iter().any(|l| &l.bind == bind) {
            return Err(problem(
                "admin.bind",
                format!("{bind:?} is bound by a [[listener]]"),
            ));
        }
    } else if c.admin.allow_remote {
        return Err(problem("admin.allow_remote", "only used with admin.bind"));
    }
    if c.audit.queue_capacity == 0 {
        return Err(problem("audit.queue_capacity", "must be greater than 0"));
    }
    if c.audit.path.is_some() && !c.audit.enabled {
        return Err(problem("audit.path", "set, but audit.enabled = false"));
    }
    let l = &c.limits;
    for (key, v) in [
        ("limits.max_connections", l.max_connections),
        (
            "limits.max_connections_per_listener",
            l.max_connections_per_listener,
        ),
        (
            "limits.max_connections_per_identity",
            l.max_connections_per_identity,
        ),
    ] {
        if v == Some(0) {
            return Err(problem(
                key,
                "must be greater than 0 (omit it for no limit)",
            ));
        }
    }
    if l.max_handshakes == 0 {
        return Err(problem("limits.max_handshakes", "must be greater than 0"));
    }
    for (key, v) in [
        ("limits.idle_timeout", l.idle_timeout),
        ("limits.max_session_lifetime", l.max_session_lifetime),
        ("limits.tcp_user_timeout", l.tcp_user_timeout),
    ] {
        if v.is_some_and(|d| d.is_zero()) {
            return Err(problem(
                key,
                "must be greater than 0 (omit it to turn it off)",
            ));
        }
    }
    if !l.tcp_keepalive.is_zero() {
        if l.tcp_keepalive_interval.is_zero() {
            return Err(problem(
                "limits.tcp_keepalive_interval",
                "must be greater than 0",
            ));
        }
        if l.tcp_keepalive_retries == 0 {
            return Err(problem(
                "limits.tcp_keepalive_retries",
                "must be greater than 0",
            ));
        }
    }
    if c.shutdown.drain_timeout.is_zero() {
        return Err(problem("shutdown.drain_timeout", "must be greater than 0"));
    }
    Ok(())
}

fn validate_aws(aws: &AwsConfig) -> Result<(), Problem> {
    match aws.source {
        AwsCredentialSource::Profile if aws.profile.is_none() => {
            return Err(problem("aws.profile", "required when source = \"profile\""));
        }
        AwsCredentialSource::RolesAnywhere if aws.roles_anywhere.is_none() => {
            return Err(problem(
                "aws.roles_anywhere",
                "an [aws.roles_anywhere] table is required when source = \"roles_anywhere\"",
            ));
        }
        _ => {}
    }
    if aws.profile.is_some() && aws.source != AwsCredentialSource::Profile {
        return Err(problem(
            "aws.profile",
            "only used when source = \"profile\"",
        ));
    }
    if aws.refresh_before.is_some_and(|d| d.is_zero()) {
        return Err(problem("aws.refresh_before", "must be greater than 0"));
    }
    if let Some(ra) = &aws.roles_anywhere {
        if aws.source != AwsCredentialSource::RolesAnywhere {
            return Err(problem(
                "aws.roles_anywhere",
                "only used when source = \"roles_anywhere\"",
            ));
        }
        check_arn(&ra.trust_anchor_arn, "rolesanywhere", "trust-anchor/")
            .map_err(|e| problem("aws.roles_anywhere.trust_anchor_arn", e))?;
        check_arn(&ra.profile_arn, "rolesanywhere", "profile/")
            .map_err(|e| problem("aws.roles_anywhere.profile_arn", e))?;
        check_arn(&ra.role_arn, "iam", "role/")
            .map_err(|e| problem("aws.roles_anywhere.role_arn", e))?;
        let d = ra.session_duration;
        if d < Duration::from_secs(900) || d > Duration::from_secs(43200) {
            return Err(problem(
                "aws.roles_anywhere.session_duration",
                format!("must be between 15m and 12h (got {}s)", d.as_secs()),
            ));
        }
        if ra.private_key_passphrase_env.is_some() && ra.private_key_passphrase_file.is_some() {
            return Err(problem(
                "aws.roles_anywhere.private_key_passphrase_file",
                "give either private_key_passphrase_env or private_key_passphrase_file, not both",
            ));
        }
        if aws.refresh_before() >= d {
            return Err(problem(
                "aws.refresh_before",
                "must be shorter than aws.roles_anywhere.session_duration",
            ));
        }
        if let Some(name) = &ra.role_session_name {
            let ok = (2..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=,.@-_".contains(&b));
            if !ok {
                return Err(problem(
                    "aws.roles_anywhere.role_session_name",
                    "must be 2-64 characters of letters, digits and =,.@-_",
                ));
            }
        }
        if let Some(url) = &ra.endpoint_url {
            check_url(url).map_err(|e| problem("aws.roles_anywhere.endpoint_url", e))?;
        }
    }
    Ok(())
}

/// Longest Unix socket path: `sun_path` is 108 bytes on Linux, including the NUL.
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// `client_auth` and what goes with it: the TLS files each mode needs, local users, the
/// trust identity, and where plaintext and `trust` are allowed (loopback and Unix sockets
/// only, because anyone who can reach the socket gets in or sees the exchange).
fn validate_listener_auth(i: usize, l: &ListenerConfig) -> Result<(), Problem> {
    let key = |k: &str| format!("listener[{i}].{k}");
    let name = l.display_name();
    let mode = l.client_auth;
    let quoted_mode = format!("client_auth = {:?}", mode.as_str());
    let unix = match l.address() {
        Some(ListenAddress::Unix(path)) => {
            let text = path.to_string_lossy();
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(problem(
                    key("bind"),
                    format!(
                        "{:?}: a Unix socket path must be absolute and end in a file name",
                        l.bind
                    ),
                ));
            }
            if text.len() > MAX_UNIX_SOCKET_PATH {
                return Err(problem(
                    key("bind"),
                    format!(
                        "the Unix socket path is {} bytes long; the system limit is {MAX_UNIX_SOCKET_PATH}",
                        text.len()
                    ),
                ));
            }
            true
        }
        _ => false,
    };
    if let Some(m) = l.unix_socket_mode {
        if !unix {
            return Err(problem(
                key("unix_socket_mode"),
                "only applies to Unix-socket listeners (bind = \"unix:/path\")",
            ));
        }
        if m > 0o777 {
            return Err(problem(
                key("unix_socket_mode"),
                format!("{m:#o} is not a permission mode (0o000 to 0o777)"),
            ));
        }
    }
    let only_for = |field: &str, modes: &str| {
        problem(
            key(field),
            format!("only used with {modes}; listener {name:?} has {quoted_mode}"),
        )
    };
    if mode != ClientAuthMode::Certificate {
        if l.client_ca.is_some() {
            return Err(only_for(
                "client_ca",
                "client_auth = \"certificate\" (password and trust listeners request no client certificate)",
            ));
        }
        if !l.client_crls.is_empty() {
            return Err(only_for("client_crls", "client_auth = \"certificate\""));
        }
    }
    if mode != ClientAuthMode::Password && !l.users.is_empty() {
        return Err(only_for("users", "client_auth = \"password\""));
    }
    if mode != ClientAuthMode::Trust && l.trust_user.is_some() {
        return Err(only_for("trust_user", "client_auth = \"trust\""));
    }
    if l.tls_cert.is_some() != l.tls_key.is_some() {
        let missing = if l.tls_cert.is_some() {
            "tls_key"
        } else {
            "tls_cert"
        };
        return Err(problem(
            key(missing),
            "tls_cert and tls_key go together: give both or neither",
        ));
    }
    let has_tls = l.tls_cert.is_some();
    if unix && (has_tls || !l.certificates.is_empty()) {
        return Err(problem(
            key(if has_tls { "tls_cert" } else { "certificates" }),
            format!(
                "listener {name:?} is a Unix socket, which never carries TLS (libpq does not \
                 use TLS over Unix sockets); remove its TLS certificates"
            ),
        ));
    }

    match mode {
        ClientAuthMode::Certificate => {
            if unix {
                return Err(problem(
                    key("client_auth"),
                    format!(
                        "listener {name:?} is a Unix socket, which cannot carry TLS, so client \
                         certificates cannot be used there; use client_auth = \"password\" (with \
                         allow_plaintext = true) or client_auth = \"trust\""
                    ),
                ));
            }
            for (field, given) in [
                ("tls_cert", l.tls_cert.is_some()),
                ("tls_key", l.tls_key.is_some()),
                ("client_ca", l.client_ca.is_some()),
            ] {
                if !given {
                    return Err(problem(
                        key(field),
                        "required for client_auth = \"certificate\" (the default)",
                    ));
                }
            }
            if l.allow_plaintext {
                return Err(problem(
                    key("allow_plaintext"),
                    "certificate authentication needs TLS; allow_plaintext only applies to \
                     client_auth = \"password\" or \"trust\"",
                ));
            }
        }
        ClientAuthMode::Password => {
            if l.users.is_empty() {
                return Err(problem(
                    key("users"),
                    "client_auth = \"password\" needs at least one [[listener.users]] entry",
                ));
            }
            let mut seen = HashSet::new();
            for (j, u) in l.users.iter().enumerate() {
                check_local_user_name(&u.name)
                    .map_err(|e| problem(format!("listener[{i}].users[{j}].name"), e))?;
                u.scram_verifier.parse().map_err(|e| {
                    problem(
                        format!("listener[{i}].users[{j}].scram_verifier"),
                        e.to_string(),
                    )
                })?;
                if !seen.insert(u.name.as_str()) {
                    return Err(problem(
                        format!("listener[{i}].users[{j}].name"),
                        format!("duplicate user {:?}", u.name),
                    ));
                }
            }
        }
        ClientAuthMode::Trust => {
            if !l.is_local_only() {
                return Err(problem(
                    key("client_auth"),
                    format!(
                        "client_auth = \"trust\" lets in anyone who can connect, without \
                         authentication; listener {name:?} binds {:?}, which is neither a loopback \
                         address nor a Unix socket",
                        l.bind
                    ),
                ));
            }
            let user = l.trust_user.as_deref().ok_or_else(|| {
                problem(
                    key("trust_user"),
                    "required for client_auth = \"trust\": the local user every client of \
                     this listener is, for the policy's match.local_user",
                )
            })?;
            check_local_user_name(user).map_err(|e| problem(key("trust_user"), e))?;
        }
    }

    if mode != ClientAuthMode::Certificate {
        if l.allow_plaintext && !l.is_local_only() {
            return Err(problem(
                key("allow_plaintext"),
                format!(
                    "plaintext is only allowed on loopback addresses and Unix sockets; listener \
                     {name:?} binds {:?}",
                    l.bind
                ),
            ));
        }
        if unix && mode == ClientAuthMode::Password && !l.allow_plaintext {
            return Err(problem(
                key("allow_plaintext"),
                format!(
                    "listener {name:?} is a Unix socket, which never carries TLS: set \
                     allow_plaintext = true to accept password logins over it"
                ),
            ));
        }
        if !unix && !has_tls && !l.allow_plaintext {
            return Err(problem(
                key("tls_cert"),
                format!(
                    "required for {quoted_mode} unless allow_plaintext = true (loopback only): \
                     clients must use TLS"
                ),
            ));
        }
    }
    Ok(())
}

/// Local user names (`[[listener.users]] name`, `trust_user`): what a startup `user` can
/// carry (PostgreSQL's 63-byte limit), printable, so that logs and audit stay readable.
fn check_local_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} contains control characters"));
    }
    Ok(())
}

/// `arn:aws:<service>:<region>:<account>:<resource>`; IAM ARNs have an empty region.
fn check_arn(arn: &str, service: &str, resource_prefix: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == service
        && (service == "iam" || !parts[3].is_empty())
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with(resource_prefix)
        && parts[5].len() > resource_prefix.len();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{arn:?} is not an ARN of the form arn:aws:{service}:{}:123456789012:{resource_prefix}...",
            if service == "iam" { "" } else { "REGION" }
        ))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("{url:?} must be an http:// or https:// URL"))
    }
}

/// Placeholders a user template may contain; the policy fills them from the certificate
/// (or, for `local_user`, from the local user of a `password` or `trust` listener).
pub const TEMPLATE_PLACEHOLDERS: &[&str] =
    &["cn", "email_local", "san_dns", "san_uri_path", "local_user"];

fn check_template(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("user names must not be empty".into());
    }
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{t:?}: unclosed '{{'"))?;
        let name = &after[..close];
        if !TEMPLATE_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "{t:?}: unknown placeholder {{{name}}}; known: {}",
                TEMPLATE_PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{p}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("{t:?}: unmatched '}}'"));
    }
    Ok(())
}

/// Minimal syntax check of a tracing filter directive list, so a typo fails at load time
/// rather than silently logging nothing.
struct LevelCheck;

impl std::str::FromStr for LevelCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
        for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let level = directive.rsplit('=').next().unwrap_or(directive);
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) && directive.contains('=') {
                return Err(format!("{directive:?}: unknown level {level:?}"));
            }
            if !directive.contains('=')
                && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
                && !directive
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                return Err(format!(
                    "{directive:?} is not a level or target=level directive"
                ));
            }
        }
        Ok(LevelCheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_shapes() {
        assert!(check_arn("arn:aws:iam::123456789012:role/Redshift", "iam", "role/").is_ok());
        assert!(check_arn(
            "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/abc",
            "rolesanywhere",
            "trust-anchor/"
        )
        .is_ok());
        assert!(check_arn("arn:aws:iam::12345:role/x", "iam", "role/").is_err());
        assert!(check_arn(
            "arn:aws:rolesanywhere::123456789012:profile/x",
            "rolesanywhere",
            "profile/"
        )
        .is_err());
    }

    #[test]
    fn templates() {
        assert!(check_template("{cn}").is_ok());
        assert!(check_template("svc_{email_local}").is_ok());
        assert!(check_template("{nope}").is_err());
        assert!(check_template("{cn").is_err());
        assert!(check_template("a}").is_err());
    }
}
