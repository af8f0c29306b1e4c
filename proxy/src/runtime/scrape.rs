//! The metrics that are read when `/metrics` is scraped rather than updated as they change.

use super::state::State;
use crate::audit::AuditLog;
use crate::metrics::{AuditCounts, CertificateExpiry, CredentialStats, CrlExpiry, ScrapeSource};
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Metrics read at scrape time.
pub struct Scrape {
    pub state: Arc<ArcSwap<State>>,
    pub audit: Arc<AuditLog>,
    pub stats: Option<Arc<dyn CredentialStats>>,
}

impl ScrapeSource for Scrape {
    fn certificates(&self) -> Vec<CertificateExpiry> {
        self.state.load().certificates.clone()
    }
    fn crls(&self) -> Vec<CrlExpiry> {
        self.state
            .load()
            .revocation
            .all()
            .iter()
            .filter_map(|c| {
                Some(CrlExpiry {
                    listener: c.listener.clone(),
                    issuer: c.issuer.clone(),
                    next_update_unix: c.next_update?,
                })
            })
            .collect()
    }
    fn audit_counts(&self) -> AuditCounts {
        AuditCounts {
            written: self.audit.written(),
            dropped: self.audit.dropped(),
            write_errors: self.audit.write_errors(),
            statements_written: self.audit.statements_written(),
            statements_dropped: self.audit.statements_dropped(),
        }
    }
    fn credential_stats(&self) -> Option<proxy_auth::redshift::CacheStats> {
        self.stats.as_ref().map(|s| s.stats())
    }
}
