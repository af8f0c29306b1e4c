//! What the listeners' CRLs say, read once per configuration load: which serials each
//! issuer revoked (so a reload that revokes a certificate ends its running sessions), when
//! each list must be replaced (nextUpdate: an expired list fails closed, turns the proxy
//! unready and is a metric), and which `client_ca` certificates are not self-signed.

use proxy_auth::identity::{rfc4514, serial_hex, ClientIdentity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use std::collections::HashSet;
use std::path::Path;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// One CRL of one listener.
#[derive(Debug, Clone)]
pub struct CrlInfo {
    pub listener: String,
    /// The issuer, in the RFC 4514 form identities carry.
    pub issuer: String,
    /// nextUpdate, seconds since the Unix epoch (`None`: the list sets none).
    pub next_update: Option<i64>,
    revoked: HashSet<String>,
}

impl CrlInfo {
    /// Whether the list is past its nextUpdate at `now_unix`.
    pub fn expired(&self, now_unix: i64) -> bool {
        self.next_update.is_some_and(|next| next < now_unix)
    }
}

/// The CRLs of every listener.
#[derive(Debug, Clone, Default)]
pub struct Revocation {
    crls: Vec<CrlInfo>,
}

impl Revocation {
    /// Reads the CRLs `listener` names. Files that cannot be parsed here were already
    /// refused (or accepted) by the TLS setup, which loads the same files; this only
    /// reads what it can.
    pub fn add_listener(&mut self, listener: &str, crl_files: &[impl AsRef<Path>]) {
        for path in crl_files {
            let Ok(iter) = CertificateRevocationListDer::pem_file_iter(path.as_ref()) else {
                continue;
            };
            for der in iter.flatten() {
                let Ok((_, crl)) = CertificateRevocationList::from_der(&der) else {
                    continue;
                };
                let Ok(issuer) = rfc4514(crl.issuer()) else {
                    continue;
                };
                self.crls.push(CrlInfo {
                    listener: listener.to_string(),
                    issuer,
                    next_update: crl.next_update().map(|t| t.timestamp()),
                    revoked: crl
                        .iter_revoked_certificates()
                        .map(|r| serial_hex(r.raw_serial()))
                        .collect(),
                });
            }
        }
    }

    /// Whether a CRL of `listener` from the certificate's issuer revokes it.
    pub fn revokes(&self, listener: &str, id: &ClientIdentity) -> bool {
        self.crls.iter().any(|c| {
            c.listener == listener && c.issuer == id.issuer && c.revoked.contains(&id.serial_hex)
        })
    }

    /// Lists past their nextUpdate at `now_unix`.
    pub fn expired(&self, now_unix: i64) -> impl Iterator<Item = &CrlInfo> {
        self.crls.iter().filter(move |c| c.expired(now_unix))
    }

    pub fn all(&self) -> &[CrlInfo] {
        &self.crls
    }
}

/// Warnings about a `client_ca` bundle: every certificate in it is a trust anchor, and a
/// certificate that is not self-signed (an intermediate) cannot be revoked by any CRL the
/// proxy checks, since no CRL of its own issuer is consulted for an anchor.
pub fn client_ca_warnings(listener: &str, client_ca: &Path) -> Vec<String> {
    let Ok(iter) = CertificateDer::pem_file_iter(client_ca) else {
        return Vec::new();
    };
    iter.flatten()
        .filter_map(|der| {
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).ok()?;
            // Subject equal to issuer: a root (a cross-signed intermediate with the same
            // name would pass too, rare enough for a warning).
            let self_issued = cert.subject().as_raw() == cert.issuer().as_raw();
            (!self_issued).then(|| {
                format!(
                    "listener {listener}: client_ca {} holds {:?}, which is not self-signed: it \
                     becomes a trust anchor no CRL can revoke; put only root CAs in client_ca \
                     and let clients send intermediates with their certificate",
                    client_ca.display(),
                    cert.subject().to_string()
                )
            })
        })
        .collect()
}
