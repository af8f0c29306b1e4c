//! Redshift-side attribution: the `application_name` a target's template makes from who the
//! client is, so Redshift's connection log (STL_CONNECTION_LOG / SYS_CONNECTION_LOG, which
//! record `application_name`) names the person behind each session even when every session
//! logs in as one IAM role.

use proxy_auth::principal::ClientPrincipal;

/// Longest name sent. PostgreSQL keeps 63 bytes of `application_name` (NAMEDATALEN - 1);
/// Redshift's connection log column is wider, but a name cut by the server would lose the
/// identity at its end.
pub const MAX_APPLICATION_NAME: usize = 63;
/// Most of the name the client's own `application_name` may take, so a client cannot
/// push the identity out of the name by sending a long one.
pub const MAX_CLIENT_APPLICATION: usize = 24;

/// What a template may draw on.
pub struct Attribution<'a> {
    pub principal: &'a ClientPrincipal,
    /// The `application_name` the client sent, if any.
    pub client_application: Option<&'a str>,
    pub session_id: &'a str,
}

impl Attribution<'_> {
    /// `template` with its placeholders filled (validation admitted only known ones;
    /// a value that is absent renders empty). Control characters and non-ASCII are
    /// replaced with `?`, as PostgreSQL does to `application_name`, and the result is cut
    /// to [`MAX_APPLICATION_NAME`] bytes.
    pub fn render(&self, template: &str) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                rest = "";
                break;
            };
            out.push_str(self.value(&after[..close]));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        let mut clean: String = out
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        clean.truncate(MAX_APPLICATION_NAME);
        clean
    }

    fn value(&self, name: &str) -> &str {
        let cn = || {
            self.principal
                .certificate()
                .and_then(|c| c.common_name.as_deref())
        };
        let local = || self.principal.local_user().map(|u| u.name.as_str());
        match name {
            "cn" => cn().unwrap_or_default(),
            "local_user" => local().unwrap_or_default(),
            "identity" => self.principal.short_name(),
            "client_application" => {
                let app = self.client_application.unwrap_or_default();
                let mut end = app.len().min(MAX_CLIENT_APPLICATION);
                while !app.is_char_boundary(end) {
                    end -= 1;
                }
                &app[..end]
            }
            "session_id" => self.session_id,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proxy_auth::principal::{LocalAuthMethod, LocalUser};

    fn local(name: &str) -> ClientPrincipal {
        ClientPrincipal::LocalUser(LocalUser {
            name: name.into(),
            method: LocalAuthMethod::Password,
            password_method: None,
        })
    }

    #[test]
    fn fills_the_placeholders_from_who_the_client_is() {
        let principal = local("etl");
        let a = Attribution {
            principal: &principal,
            client_application: Some("Tableau"),
            session_id: "6f1c",
        };
        assert_eq!(
            a.render("{client_application} via proxy for {identity}"),
            "Tableau via proxy for etl"
        );
        assert_eq!(a.render("{cn}|{local_user}|{session_id}"), "|etl|6f1c");
    }

    #[test]
    fn what_a_client_chose_cannot_break_out_or_grow_the_name() {
        let principal = local("etl");
        let a = Attribution {
            principal: &principal,
            client_application: Some("evil\nname\u{7f}\u{e9}"),
            session_id: "s",
        };
        assert_eq!(
            a.render("{client_application} for {identity}"),
            "evil?name?? for etl"
        );
        // A long name of the client's own cannot push the identity out.
        let long = "x".repeat(200);
        let a = Attribution {
            client_application: Some(&long),
            ..a
        };
        let name = a.render("{client_application} via redshift-iam-proxy for {identity}");
        assert!(name.ends_with(" for etl"), "{name}");
        assert!(name.len() <= MAX_APPLICATION_NAME);
        assert_eq!(a.render(&"y".repeat(100)).len(), MAX_APPLICATION_NAME);
    }
}
