//! Which of a client's startup parameters go upstream, per target kind.
//!
//! Redshift knows a closed list of startup parameters and ends the login with FATAL 42704
//! `unrecognized configuration parameter` for the rest, so a client library that sends a
//! PostgreSQL setting Redshift lacks cannot log in at all. The proxy forwards what Redshift
//! accepts and drops what it refuses, so such a client logs in through the proxy as it
//! would against PostgreSQL. Sources: research notes `redshift-server.md` §4 and §5, which
//! cite the AWS drivers (Redshift JDBC `ConnectionFactoryImpl`, redshift_connector
//! `core.py`, the ODBC driver's libpq) and client issue threads for each refusal.
//!
//! docs/clients.md has this table for operators; keep the two in step.

use proxy_config::TargetKind;

/// What happens to one parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Sent upstream as the client sent it.
    Forward,
    /// Sent upstream only when the listener has `allow_options`, without the settings in
    /// it the target refuses.
    Options,
    /// Not sent; the reason is for the log line.
    Drop(&'static str),
}

/// One row of a target kind's table.
#[derive(Debug)]
pub struct Rule {
    /// Compared case-insensitively: GUC names are.
    pub name: &'static str,
    pub disposition: Disposition,
}

const REFUSED: &str = "Redshift refuses it at login (FATAL 42704)";
const IDP: &str = "the proxy authenticates the client itself; it would make Redshift ask for an identity-provider token";

const fn rule(name: &'static str, disposition: Disposition) -> Rule {
    Rule { name, disposition }
}

/// Redshift, provisioned and serverless alike.
pub const REDSHIFT: &[Rule] = &[
    // Session settings Redshift has; the AWS drivers send them.
    rule("application_name", Disposition::Forward),
    rule("client_encoding", Disposition::Forward),
    rule("DateStyle", Disposition::Forward),
    rule("TimeZone", Disposition::Forward),
    rule("extra_float_digits", Disposition::Forward),
    rule("search_path", Disposition::Forward),
    rule("options", Disposition::Options),
    // Redshift's protocol level and driver metadata: `client_protocol_version` makes the
    // server answer `server_protocol_version` and send Redshift's extended RowDescription,
    // which spares the drivers a catalog query per ResultSetMetaData call.
    rule("client_protocol_version", Disposition::Forward),
    rule("driver_version", Disposition::Forward),
    rule("os_version", Disposition::Forward),
    rule("plugin_name", Disposition::Forward),
    rule("driver_discovery_version", Disposition::Forward),
    // PostgreSQL settings Redshift does not have.
    rule("IntervalStyle", Disposition::Drop(REFUSED)),
    rule("standard_conforming_strings", Disposition::Drop(REFUSED)),
    rule("geqo", Disposition::Drop(REFUSED)),
    rule("jit", Disposition::Drop(REFUSED)),
    // Redshift's native IdP / IAM Identity Center login.
    rule("idp_type", Disposition::Drop(IDP)),
    rule("provider_name", Disposition::Drop(IDP)),
    rule("token_type", Disposition::Drop(IDP)),
    rule("identity_namespace", Disposition::Drop(IDP)),
    rule("idc_client_display_name", Disposition::Drop(IDP)),
];

/// Parameters no row names.
pub const UNKNOWN: &str = "not a parameter Redshift knows";

/// The table of a target kind.
pub fn table(kind: TargetKind) -> &'static [Rule] {
    match kind {
        TargetKind::Provisioned | TargetKind::Serverless => REDSHIFT,
    }
}

/// The parameters to send upstream, and the names dropped with why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpstreamParams {
    pub forwarded: Vec<(String, String)>,
    pub dropped: Vec<(String, &'static str)>,
}

impl UpstreamParams {
    /// Sends `name` with `value`, in place of what the client sent under any spelling.
    pub fn set(&mut self, name: &str, value: String) {
        self.forwarded
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.forwarded.push((name.to_owned(), value));
    }
}

/// Applies `kind`'s table to the client's parameters (names and values as sent, `user`
/// and `database` already taken out).
pub fn upstream_params(
    kind: TargetKind,
    params: &[(String, String)],
    allow_options: bool,
) -> UpstreamParams {
    let table = table(kind);
    let mut out = UpstreamParams::default();
    for (name, value) in params {
        let disposition = table
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .map_or(Disposition::Drop(UNKNOWN), |r| r.disposition);
        match disposition {
            Disposition::Forward => out.forwarded.push((name.clone(), value.clone())),
            Disposition::Options if !allow_options => out
                .dropped
                .push((name.clone(), "the listener does not allow options")),
            Disposition::Options => {
                let kept = filter_options(table, value);
                if kept.trim().is_empty() {
                    out.dropped
                        .push((name.clone(), "every setting in it is refused upstream"));
                } else {
                    if kept != *value {
                        out.dropped
                            .push((format!("{name} (some settings)"), REFUSED));
                    }
                    out.forwarded.push((name.clone(), kept));
                }
            }
            Disposition::Drop(why) => out.dropped.push((name.clone(), why)),
        }
    }
    out
}

/// `options` without the `-c name=value` / `--name=value` settings the table drops. Other
/// settings and switches stay as they were.
fn filter_options(table: &[Rule], options: &str) -> String {
    let refused = |setting: &str| {
        let name = setting.split_once('=').map_or(setting, |(n, _)| n);
        // PostgreSQL reads `--some-name` as `some_name`.
        let name = name.replace('-', "_");
        table.iter().any(|r| {
            r.name.eq_ignore_ascii_case(&name) && matches!(r.disposition, Disposition::Drop(_))
        })
    };
    let tokens = split_options(options);
    let mut kept: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        let (setting, width) = if token == "-c" {
            (tokens.get(i + 1).map(String::as_str), 2)
        } else if let Some(s) = token
            .strip_prefix("--")
            .or_else(|| token.strip_prefix("-c"))
        {
            (Some(s), 1)
        } else {
            (None, 1)
        };
        let end = (i + width).min(tokens.len());
        if !setting.is_some_and(refused) {
            kept.extend(tokens[i..end].iter().cloned());
        }
        i = end;
    }
    join_options(&kept)
}

/// PostgreSQL's `pg_split_opts`: words separated by white space, a backslash makes the next
/// character literal.
fn split_options(options: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_whitespace() => {
                if in_token {
                    tokens.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            '\\' => {
                in_token = true;
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c => {
                in_token = true;
                current.push(c);
            }
        }
    }
    if in_token {
        tokens.push(current);
    }
    tokens
}

/// The inverse of [`split_options`].
fn join_options(tokens: &[String]) -> String {
    let mut out = String::new();
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for c in token.chars() {
            if c == '\\' || c.is_ascii_whitespace() {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn names(dropped: &[(String, &str)]) -> Vec<String> {
        dropped.iter().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn a_redshift_jdbc_startup_keeps_its_protocol_level_and_metadata() {
        let params = pairs(&[
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            ("extra_float_digits", "2"),
            ("application_name", "DBeaver"),
            ("driver_version", "Redshift JDBC Driver 2.2.6"),
            ("os_version", "Linux 6.1 amd64"),
            ("plugin_name", "none"),
            ("client_protocol_version", "3"),
            ("search_path", "public"),
        ]);
        let out = upstream_params(TargetKind::Provisioned, &params, false);
        assert_eq!(out.forwarded, params);
        assert!(out.dropped.is_empty());
    }

    #[test]
    fn redshift_refusals_idp_keys_and_unknown_names_are_dropped() {
        let params = pairs(&[
            ("IntervalStyle", "iso_8601"),
            ("geqo", "on"),
            ("standard_conforming_strings", "on"),
            ("jit", "off"),
            ("idp_type", "AzureAD"),
            ("some_bi_tool_flag", "1"),
            ("driver_discovery_version", "1"),
        ]);
        let out = upstream_params(TargetKind::Serverless, &params, true);
        assert_eq!(out.forwarded, pairs(&[("driver_discovery_version", "1")]));
        assert_eq!(
            names(&out.dropped),
            [
                "IntervalStyle",
                "geqo",
                "standard_conforming_strings",
                "jit",
                "idp_type",
                "some_bi_tool_flag"
            ]
        );
    }

    #[test]
    fn names_compare_case_insensitively_and_keep_the_clients_spelling() {
        let params = pairs(&[("datestyle", "ISO"), ("INTERVALSTYLE", "postgres")]);
        let out = upstream_params(TargetKind::Provisioned, &params, false);
        assert_eq!(out.forwarded, pairs(&[("datestyle", "ISO")]));
        assert_eq!(names(&out.dropped), ["INTERVALSTYLE"]);
    }

    #[test]
    fn options_go_only_where_allowed_and_lose_the_settings_redshift_refuses() {
        let params = pairs(&[(
            "options",
            "-c statement_timeout=0 -c IntervalStyle=iso_8601 --geqo=off -cquery_group=etl",
        )]);
        let denied = upstream_params(TargetKind::Provisioned, &params, false);
        assert!(denied.forwarded.is_empty());
        let allowed = upstream_params(TargetKind::Provisioned, &params, true);
        assert_eq!(
            allowed.forwarded,
            pairs(&[("options", "-c statement_timeout=0 -cquery_group=etl")])
        );
        let only_refused = pairs(&[("options", "-c IntervalStyle=iso_8601")]);
        let out = upstream_params(TargetKind::Provisioned, &only_refused, true);
        assert!(out.forwarded.is_empty());
        assert_eq!(names(&out.dropped), ["options"]);
    }

    #[test]
    fn options_keep_escaped_spaces() {
        let value = r"-c search_path=my\ schema -c geqo=on";
        let out = upstream_params(TargetKind::Provisioned, &pairs(&[("options", value)]), true);
        assert_eq!(
            out.forwarded,
            pairs(&[("options", r"-c search_path=my\ schema")])
        );
        assert_eq!(split_options(r"a\\b c"), ["a\\b", "c"]);
        assert_eq!(join_options(&split_options(r"x\ y z")), r"x\ y z");
    }

    #[test]
    fn every_row_is_named_once() {
        for (i, a) in REDSHIFT.iter().enumerate() {
            for b in &REDSHIFT[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name), "{}", a.name);
            }
        }
    }
}
