//! Redshift's startup parameters (research redshift-server.md §4).
//!
//! Redshift knows a closed list of parameters. Anything else — PostgreSQL settings it does
//! not have, such as `IntervalStyle` (skunk#229, LibPQ.jl#71) and
//! `standard_conforming_strings` (sqlalchemy#9494), settings of newer PostgreSQL such as
//! `jit`, `geqo` (UNCONFIRMED: libpq sends it from PGGEQO; Redshift is 8.0-based), and
//! unknown names — ends the login with FATAL 42704
//! `unrecognized configuration parameter "<name as sent>"`. GUC names compare
//! case-insensitively, the error echoes the name in the client's case.
//!
//! Of the known ones only real PostgreSQL settings are forwarded to the PostgreSQL behind
//! the stand-in; Redshift-only ones (driver metadata, `client_protocol_version`, IdP keys,
//! `_pq_.compression`) are recorded, not forwarded.

/// Known to Redshift and to PostgreSQL: forwarded, and accepted inside `options`
/// (`-c name=value`). (`options` itself is forwarded too, rebuilt from its accepted
/// settings.)
const FORWARDED: &[&str] = &[
    "client_encoding",
    "datestyle",
    "timezone",
    "extra_float_digits",
    "application_name",
    "search_path",
];

/// Known to Redshift only (what the AWS drivers send, research §4): recorded.
const REDSHIFT_ONLY: &[&str] = &[
    "client_protocol_version",
    "driver_version",
    "os_version",
    "plugin_name",
    "driver_discovery_version",
    "idp_type",
    "provider_name",
    "token_type",
    "identity_namespace",
    "idc_client_display_name",
    "_pq_.compression",
];

/// What the Redshift JDBC driver sends besides `user` and `database` (research §4).
pub const JDBC_DRIVER_PARAMETERS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "2"),
    ("application_name", "[main]Job"),
    ("driver_version", "Redshift JDBC Driver 2.2.6"),
    ("os_version", "Linux"),
    ("client_protocol_version", "3"),
];

/// Settings accepted inside `options` besides the forwarded ones: `statement_timeout`,
/// which both Redshift and PostgreSQL have.
const OPTION_ONLY_GUCS: &[&str] = &["statement_timeout"];

/// Redshift-only settings a client may set in `options`; accepted and dropped (PostgreSQL
/// would refuse them). DG r_*.md, research §4.
const OPTION_REDSHIFT_ONLY: &[&str] = &[
    "query_group",
    "json_serialization_enable",
    "enable_case_sensitive_identifier",
    "describe_field_name_in_uppercase",
    "enable_result_cache_for_session",
];

/// The startup parameters, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Classified {
    /// `user`.
    pub(crate) user: Option<String>,
    /// `database`.
    pub(crate) database: Option<String>,
    /// For PostgreSQL, names and values as sent (`options` rebuilt from the accepted
    /// settings).
    pub(crate) forwarded: Vec<(String, String)>,
    /// Redshift-only parameters (recorded, not forwarded).
    pub(crate) redshift_only: Vec<(String, String)>,
    /// The first parameter Redshift does not know, as sent: the login fails with 42704.
    pub(crate) unrecognized: Option<String>,
}

impl Classified {
    /// The value of `client_protocol_version`, if sent.
    pub(crate) fn client_protocol_version(&self) -> Option<&str> {
        self.redshift_only
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case("client_protocol_version"))
            .map(|(_, v)| v.as_str())
    }
}

fn known(list: &[&str], name: &str) -> bool {
    list.iter().any(|k| k.eq_ignore_ascii_case(name))
}

/// Sorts `params` (later duplicates win, as in PostgreSQL).
pub(crate) fn classify(params: &[(String, String)]) -> Classified {
    let mut out = Classified::default();
    for (name, value) in params {
        match name.as_str() {
            // Exact names, as PostgreSQL compares them.
            "user" => out.user = Some(value.clone()),
            "database" => out.database = Some(value.clone()),
            _ if name.eq_ignore_ascii_case("options") => match parse_options(value) {
                Ok(settings) => {
                    out.forwarded
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("options"));
                    let kept: Vec<(String, String)> = settings
                        .into_iter()
                        .filter(|(n, _)| !known(OPTION_REDSHIFT_ONLY, n))
                        .collect();
                    if !kept.is_empty() {
                        out.forwarded.push((name.clone(), encode_options(&kept)));
                    }
                }
                Err(unknown) => {
                    out.unrecognized.get_or_insert(unknown);
                }
            },
            _ if known(FORWARDED, name) => {
                out.forwarded.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                out.forwarded.push((name.clone(), value.clone()));
            }
            _ if known(REDSHIFT_ONLY, name) => {
                out.redshift_only.push((name.clone(), value.clone()));
            }
            _ => {
                out.unrecognized.get_or_insert_with(|| name.clone());
            }
        }
    }
    out
}

/// `-c name=value` and `--name=value` settings of `options` (backslash escapes a space or a
/// backslash, as PostgreSQL's `pg_split_opts`). Returns the first unknown name as sent.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next().unwrap_or_default()
        } else if let Some(rest) = word.strip_prefix("-c") {
            rest.to_owned()
        } else if let Some(rest) = word.strip_prefix("--") {
            rest.to_owned()
        } else {
            // Other postgres command-line switches: Redshift's behaviour is UNCONFIRMED;
            // refused like an unknown setting.
            return Err(word);
        };
        let (name, value) = setting.split_once('=').unwrap_or((setting.as_str(), ""));
        let name = name.replace('-', "_");
        let accepted = [FORWARDED, OPTION_ONLY_GUCS, OPTION_REDSHIFT_ONLY];
        if !accepted.iter().any(|list| known(list, &name)) {
            return Err(name);
        }
        settings.push((name, value.to_owned()));
    }
    Ok(settings)
}

fn encode_options(settings: &[(String, String)]) -> String {
    settings
        .iter()
        .map(|(n, v)| {
            let escaped: String = v
                .chars()
                .flat_map(|c| match c {
                    ' ' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("-c {n}={escaped}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn what_the_jdbc_driver_sends_is_accepted() {
        let mut sent = vec![("user", "IAMA:alice"), ("database", "dev")];
        sent.extend_from_slice(JDBC_DRIVER_PARAMETERS);
        let c = classify(&p(&sent));
        assert_eq!(c.unrecognized, None);
        assert_eq!(c.user.as_deref(), Some("IAMA:alice"));
        assert_eq!(c.forwarded.len(), 5);
        assert_eq!(c.redshift_only.len(), 3);
        assert_eq!(c.client_protocol_version(), Some("3"));
    }

    #[test]
    fn postgres_only_and_unknown_names_are_refused_as_sent() {
        for name in [
            "IntervalStyle",
            "standard_conforming_strings",
            "geqo",
            "jit",
            "replication",
            "no_such_thing",
        ] {
            let c = classify(&p(&[("user", "u"), (name, "x")]));
            assert_eq!(c.unrecognized.as_deref(), Some(name));
        }
        let c = classify(&p(&[
            ("user", "u"),
            ("options", "-c IntervalStyle=iso_8601"),
        ]));
        assert_eq!(c.unrecognized.as_deref(), Some("IntervalStyle"));
    }

    #[test]
    fn options_keep_known_settings_and_drop_redshift_only_ones() {
        let c = classify(&p(&[(
            "options",
            "-c search_path=a\\ b --statement-timeout=5s -cquery_group=etl",
        )]));
        assert_eq!(c.unrecognized, None);
        assert_eq!(
            c.forwarded,
            p(&[("options", "-c search_path=a\\ b -c statement_timeout=5s")])
        );
    }
}
