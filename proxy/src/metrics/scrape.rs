//! Values read at scrape time: the credential cache, certificate and CRL expiry, the
//! audit queue. Always current, and free between scrapes.

use super::{labels, CrlExpiry, ScrapeSource};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;
use std::time::SystemTime;

/// Metrics computed from other components' state on each scrape.
pub(super) struct ScrapeTimeCollector {
    pub(super) source: Arc<dyn ScrapeSource>,
}

impl std::fmt::Debug for ScrapeTimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeTimeCollector")
            .finish_non_exhaustive()
    }
}

fn encode_crls(
    encoder: &mut DescriptorEncoder,
    crls: Vec<CrlExpiry>,
) -> Result<(), std::fmt::Error> {
    if crls.is_empty() {
        return Ok(());
    }
    let g = ConstGauge::new(0i64);
    let mut e = encoder.encode_descriptor(
        "crl_next_update_timestamp_seconds",
        "nextUpdate of each listener's client CRLs; past it the CRL's clients are refused",
        None,
        g.metric_type(),
    )?;
    for c in crls {
        let set = labels(&[("listener", &c.listener), ("issuer", &c.issuer)]);
        ConstGauge::new(c.next_update_unix).encode(e.encode_family(&set)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(e)
}

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let g = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(e)
}

impl Collector for ScrapeTimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let audit = self.source.audit_counts();
        counter(
            &mut encoder,
            "audit_records_written",
            "Audit records written",
            audit.written,
        )?;
        counter(
            &mut encoder,
            "audit_records_dropped",
            "Audit records dropped because the writer could not keep up",
            audit.dropped,
        )?;
        counter(
            &mut encoder,
            "audit_write_errors",
            "Audit records the writer failed to write",
            audit.write_errors,
        )?;

        if let Some(s) = self.source.credential_stats() {
            counter(
                &mut encoder,
                "db_credential_cache_hits",
                "Database credential requests served from the cache",
                s.hits,
            )?;
            counter(
                &mut encoder,
                "db_credential_cache_misses",
                "Database credential requests that waited for an AWS call",
                s.misses,
            )?;
            counter(
                &mut encoder,
                "db_credential_cache_refreshes",
                "Background refreshes of cached database credentials ahead of expiry",
                s.refreshes,
            )?;
            counter(
                &mut encoder,
                "db_credential_fetches",
                "AWS calls for database credentials (foreground and background)",
                s.fetches,
            )?;
            counter(
                &mut encoder,
                "db_credential_fetch_errors",
                "AWS calls for database credentials that failed",
                s.fetch_errors,
            )?;
            counter(
                &mut encoder,
                "db_credential_backed_off",
                "Database credential requests answered with a recent failure instead of an AWS \
                 call (backoff)",
                s.backed_off,
            )?;
            gauge(
                &mut encoder,
                "db_credential_cache_entries",
                "Database credentials currently cached",
                s.entries as i64,
            )?;
            if let Some(expiry) = s.earliest_expiry {
                let left = match expiry.duration_since(SystemTime::now()) {
                    Ok(d) => d.as_secs_f64(),
                    Err(e) => -e.duration().as_secs_f64(),
                };
                gauge(
                    &mut encoder,
                    "db_credential_earliest_expiry_seconds",
                    "Seconds until the earliest cached database credential expires",
                    left,
                )?;
            }
        }

        encode_crls(&mut encoder, self.source.crls())?;
        let certs = self.source.certificates();
        if !certs.is_empty() {
            let g = ConstGauge::new(0i64);
            let mut e = encoder.encode_descriptor(
                "certificate_expiry_timestamp_seconds",
                "notAfter of the certificates the proxy uses (server, client_ca, roles_anywhere)",
                None,
                g.metric_type(),
            )?;
            for c in certs {
                let set = labels(&[
                    ("kind", c.kind),
                    ("listener", &c.listener),
                    ("subject", &c.subject),
                ]);
                ConstGauge::new(c.not_after_unix).encode(e.encode_family(&set)?)?;
            }
        }
        Ok(())
    }
}
