//! Checking a whole configuration: each section's own checks (next to its type), then what
//! ties sections together: listeners and rules naming targets, rules naming listeners and
//! authentication methods, per-rule roles and the credential source, addresses shared by
//! listeners and the admin listener.

use crate::problems::{KeyPath, Problems};
use crate::root::Config;
use std::collections::HashSet;

mod rules;

impl Config {
    /// Every problem of this configuration, each with its key path. Empty for a
    /// configuration the proxy can act on.
    pub fn problems(&self) -> Problems {
        let mut p = Problems::new();
        if self.listeners.is_empty() {
            p.add("listener", "at least one [[listener]] is required");
        }
        if self.targets.is_empty() {
            p.add("target", "at least one [[target]] is required");
        }
        self.log.check(&mut p);
        self.check_targets(&mut p);
        self.check_listeners(&mut p);
        self.policy.check(&mut p);
        rules::check_rules(self, &mut p);
        self.db_credentials.check(&mut p);
        self.aws.check(&mut p);
        self.admin.check(&mut p);
        self.check_admin_bind(&mut p);
        self.audit.check(&mut p);
        self.limits.check(&mut p);
        self.shutdown.check(&mut p);
        self.security.check(&mut p);
        self.peering.check(&mut p);
        p
    }

    fn check_targets(&self, p: &mut Problems) {
        let mut names = HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let path = KeyPath::root("target").index(i);
            t.check(&path, p);
            if !t.name.is_empty() && !names.insert(t.name.as_str()) {
                p.add(
                    path.key("name"),
                    format!("duplicate target name {:?}", t.name),
                );
            }
        }
    }

    /// Each listener, and what listeners share: unique names and addresses, targets.
    fn check_listeners(&self, p: &mut Problems) {
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let path = KeyPath::root("listener").index(i);
            l.check(&path, p);
            if !names.insert(l.display_name()) {
                p.add(
                    path.key("name"),
                    format!("duplicate listener {:?}", l.display_name()),
                );
            }
            // Port 0 (any free port, tests) never collides.
            if !l.bind.is_any_port() && !binds.insert(&l.bind) {
                p.add(
                    path.key("bind"),
                    format!("{:?} is bound by another listener", l.bind.to_string()),
                );
            }
            match &l.target {
                Some(t) => self.check_target_name(path.key("target"), t, p),
                None if self.targets.len() > 1 => p.add(
                    path.key("target"),
                    "required when more than one [[target]] is configured",
                ),
                None => {}
            }
            for (j, cert) in l.certificates.iter().enumerate() {
                if let Some(t) = &cert.target {
                    let key = path.key("certificates").index(j).key("target");
                    self.check_target_name(key, t, p);
                }
            }
        }
    }

    fn check_target_name(&self, key: KeyPath, name: &str, p: &mut Problems) {
        if self.target(name).is_none() {
            p.add(key, format!("no [[target]] named {name:?}"));
        }
    }

    fn check_admin_bind(&self, p: &mut Problems) {
        let Some(bind) = &self.admin.bind else {
            return;
        };
        // Port 0 (any free port, tests) never collides.
        if !bind.is_any_port() && self.listeners.iter().any(|l| &l.bind == bind) {
            p.add(
                "admin.bind",
                format!("{:?} is bound by a [[listener]]", bind.to_string()),
            );
        }
    }
}
