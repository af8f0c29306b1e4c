//! Client identity derived from a verified X.509 client certificate.
//!
//! [`ClientIdentity::from_der`] reads the fields the access policy matches on and the
//! templates expand from. The certificate has already been chain-verified by the TLS layer;
//! this module only reads it. Every field is derived deterministically so that policy globs
//! written by operators keep matching across proxy versions:
//!
//! - **`subject`, `issuer`**: RFC 4514 string form. RDNs appear in *reverse* order of their
//!   DER encoding (most specific first, e.g. `CN=alice,OU=BI,O=Corp,C=US`), separated by
//!   `,` without spaces; multi-valued RDNs join their attributes with `+`. Attribute types
//!   use the RFC 4514 short names `CN`, `L`, `ST`, `O`, `OU`, `C`, `STREET`, `DC`, `UID`,
//!   plus `SERIALNUMBER` and `emailAddress`; any other type is written as its dotted OID
//!   (e.g. `2.5.4.42`) with the value as `#` followed by the lowercase hex of its DER
//!   encoding. Values are escaped as RFC 4514 requires: `\` before `"`, `+`, `,`, `;`, `<`,
//!   `>`, `\`, before a leading `#` or space and before a trailing space; NUL and other
//!   control characters become `\XX` (two lowercase hex digits). A value of a known type that
//!   is not a decodable string is also written in the `#hex` form.
//! - **`serial_hex`**: the serial number's magnitude as lowercase hex, two digits per byte,
//!   leading zero bytes removed (so `0x00 0x8f 0x01` gives `8f01`, and serial 1 gives `01`).
//!   This is `openssl x509 -serial` in lowercase.
//! - **`fingerprint_sha256`**: SHA-256 of the DER certificate, 64 lowercase hex digits.
//! - **SANs**: DNS names, URIs and email addresses in certificate order, exactly as encoded
//!   (no case folding, normalisation or percent-decoding).

use sha2::{Digest, Sha256};
use std::fmt;
use x509_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Who a client is, as read from the leaf certificate it authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject common name (first CN), if any.
    pub common_name: Option<String>,
    /// Every subject CN, in certificate order (almost always one or none). The policy
    /// refuses a certificate with several CNs where it matches on the CN, unless the rule
    /// opts in to trying each.
    pub common_names: Vec<String>,
    /// Full subject DN as RFC 4514 text (see the module documentation for the exact form).
    pub subject: String,
    /// Issuer DN as RFC 4514 text, e.g. `CN=Corp Client CA,O=Corp`.
    pub issuer: String,
    /// DNS SANs in certificate order.
    pub san_dns: Vec<String>,
    /// URI SANs, e.g. SPIFFE IDs.
    pub san_uri: Vec<String>,
    /// Email (RFC 822) SANs in certificate order.
    pub san_email: Vec<String>,
    /// Serial number, lowercase hex without separators (whole bytes, leading zero bytes
    /// removed).
    pub serial_hex: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub fingerprint_sha256: String,
    /// Validity end, seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// SHA-256 fingerprints (lowercase hex) of the CA certificates that verified the chain:
    /// the intermediates on the verified path and the trust anchor from `client_ca`. Set by
    /// the listener after verification; empty when nothing verified it (local tests).
    pub verified_by: Vec<String>,
}

/// Why a certificate could not be read as an identity.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate cannot be parsed: {0}")]
    Malformed(String),
}

impl ClientIdentity {
    /// Reads the identity from a DER-encoded (already verified) leaf certificate.
    ///
    /// Fails when the bytes are not exactly one certificate, when the subject alternative
    /// name extension is invalid or duplicated, or when the first subject CN is not text.
    pub fn from_der(der: &[u8]) -> Result<ClientIdentity, IdentityError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed(format!(
                "{} bytes of trailing data after the certificate",
                rest.len()
            )));
        }

        let common_names = cert
            .subject()
            .iter_common_name()
            .map(|attr| {
                decode_string(attr.attr_value()).ok_or_else(|| {
                    IdentityError::Malformed("a subject common name is not a text string".into())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut san_dns = Vec::new();
        let mut san_uri = Vec::new();
        let mut san_email = Vec::new();
        let san = cert.subject_alternative_name().map_err(|e| {
            IdentityError::Malformed(format!("subject alternative name extension: {e}"))
        })?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(s) => san_dns.push((*s).to_owned()),
                    GeneralName::URI(s) => san_uri.push((*s).to_owned()),
                    GeneralName::RFC822Name(s) => san_email.push((*s).to_owned()),
                    // IP addresses, directory names, otherName etc. are not used by the policy.
                    _ => {}
                }
            }
        }

        Ok(ClientIdentity {
            common_name: common_names.first().cloned(),
            common_names,
            subject: rfc4514(cert.subject())?,
            issuer: rfc4514(cert.issuer())?,
            san_dns,
            san_uri,
            san_email,
            serial_hex: serial_hex(cert.raw_serial()),
            fingerprint_sha256: hex::encode(Sha256::digest(der)),
            not_after_unix: cert.validity().not_after.timestamp(),
            verified_by: Vec::new(),
        })
    }
}

impl fmt::Display for ClientIdentity {
    /// A short description for logs: subject, serial and fingerprint.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subject {:?} (serial {}, sha256 {})",
            self.subject, self.serial_hex, self.fingerprint_sha256
        )
    }
}

/// The local part of an email address (everything before its last `@`), if non-empty.
pub fn email_local_part(email: &str) -> Option<&str> {
    let (local, _domain) = email.rsplit_once('@')?;
    (!local.is_empty()).then_some(local)
}

/// The last non-empty path segment of a URI, e.g. `reporting` for
/// `spiffe://corp.example/ns/bi/sa/reporting`.
///
/// The URI is taken literally: query and fragment are cut off, but there is no
/// percent-decoding and no `.`/`..` resolution, so what a template yields is exactly what
/// the certificate says (a segment such as `..` is then rejected as a user name by the
/// policy instead of silently changing meaning).
pub fn uri_path_last_segment(uri: &str) -> Option<&str> {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    let uri = &uri[..end];
    // The scheme is everything before the first ':' as long as no '/' comes earlier.
    let after_scheme = match uri.find(':') {
        Some(i) if !uri[..i].contains('/') => &uri[i + 1..],
        _ => uri,
    };
    let path = match after_scheme.strip_prefix("//") {
        // `//authority/path`: the path starts at the first '/' after the authority.
        Some(authority_and_path) => &authority_and_path[authority_and_path.find('/')?..],
        None => after_scheme,
    };
    path.rsplit('/').find(|segment| !segment.is_empty())
}

/// Serial magnitude as lowercase hex, whole bytes, leading zero bytes removed; `00` for 0
/// (the form of [`ClientIdentity::serial_hex`]).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    if start == raw.len() {
        return "00".into();
    }
    hex::encode(&raw[start..])
}

/// The RFC 4514 string form of a name (see the module documentation), as
/// [`ClientIdentity::issuer`] has it.
pub fn rfc4514(name: &X509Name<'_>) -> Result<String, IdentityError> {
    let mut out = String::new();
    // RFC 4514 §2.1: the RDN encoded last is written first.
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            write_attribute(&mut out, attr)?;
        }
    }
    Ok(out)
}

fn write_attribute(
    out: &mut String,
    attr: &AttributeTypeAndValue<'_>,
) -> Result<(), IdentityError> {
    let oid = attr.attr_type().to_id_string();
    let short_name = match oid.as_str() {
        "2.5.4.3" => Some("CN"),
        "2.5.4.7" => Some("L"),
        "2.5.4.8" => Some("ST"),
        "2.5.4.10" => Some("O"),
        "2.5.4.11" => Some("OU"),
        "2.5.4.6" => Some("C"),
        "2.5.4.9" => Some("STREET"),
        "0.9.2342.19200300.100.1.25" => Some("DC"),
        "0.9.2342.19200300.100.1.1" => Some("UID"),
        "2.5.4.5" => Some("SERIALNUMBER"),
        "1.2.840.113549.1.9.1" => Some("emailAddress"),
        _ => None,
    };
    let text = short_name.and_then(|_| decode_string(attr.attr_value()));
    match (short_name, text) {
        (Some(name), Some(text)) => {
            out.push_str(name);
            out.push('=');
            escape_value(out, &text);
        }
        (name, _) => {
            // RFC 4514 §2.4: types without a string representation (and every type written
            // as a dotted OID) use `#` + hex of the value's BER/DER encoding.
            out.push_str(name.unwrap_or(&oid));
            out.push_str("=#");
            let der = attr
                .attr_value()
                .to_der_vec()
                .map_err(|e| IdentityError::Malformed(format!("name attribute {oid}: {e}")))?;
            out.push_str(&hex::encode(der));
        }
    }
    Ok(())
}

/// Decodes the ASN.1 string types used in names; `None` when the value is not a string or
/// its bytes are not valid for its type.
fn decode_string(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString
        // TeletexString is de facto used for UTF-8/Latin-1; only accept valid UTF-8.
        | Tag::TeletexString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// Appends `value` escaped per RFC 4514 §2.4.
fn escape_value(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            // Control characters are escaped as hex pairs of their UTF-8 bytes so that
            // logs and glob input stay printable.
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        date_time_ymd, CertificateParams, DistinguishedName, DnType, DnValue, Issuer, KeyPair,
        SanType, SerialNumber,
    };

    fn ca() -> (CertificateParams, KeyPair) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Corp");
        params
            .distinguished_name
            .push(DnType::CommonName, "Corp Client CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params, KeyPair::generate().expect("key"))
    }

    /// Issues a leaf from `ca()` with the given subject and SANs; returns its DER.
    fn leaf(subject: &[(DnType, &str)], sans: Vec<SanType>, serial: Option<Vec<u8>>) -> Vec<u8> {
        let (ca_params, ca_key) = ca();
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.subject_alt_names = sans;
        params.serial_number = serial.map(SerialNumber::from);
        params.not_after = date_time_ymd(2031, 3, 4);
        let key = KeyPair::generate().expect("key");
        params
            .signed_by(&key, &issuer)
            .expect("sign")
            .der()
            .to_vec()
    }

    fn ia5(s: &str) -> rcgen::string::Ia5String {
        s.try_into().expect("ia5")
    }

    #[test]
    fn reads_subject_issuer_and_common_name_in_rfc4514_form() {
        let der = leaf(
            &[
                (DnType::OrganizationName, "Corp"),
                (DnType::OrganizationalUnitName, "BI"),
                (DnType::CommonName, "alice"),
            ],
            vec![],
            None,
        );
        let id = ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(id.common_name.as_deref(), Some("alice"));
        assert_eq!(id.subject, "CN=alice,OU=BI,O=Corp");
        assert_eq!(id.issuer, "CN=Corp Client CA,O=Corp,C=US");
    }

    #[test]
    fn reads_spiffe_uri_email_and_dns_sans_in_order() {
        let der = leaf(
            &[(DnType::CommonName, "reporting")],
            vec![
                SanType::URI(ia5("spiffe://corp.example/ns/bi/sa/reporting")),
                SanType::DnsName(ia5("Reporting.BI.corp.example")),
                SanType::Rfc822Name(ia5("alice.smith@corp.example")),
                SanType::DnsName(ia5("second.corp.example")),
                SanType::IpAddress("10.0.0.1".parse().expect("ip")),
            ],
            None,
        );
        let id = ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(id.san_uri, ["spiffe://corp.example/ns/bi/sa/reporting"]);
        assert_eq!(
            id.san_dns,
            ["Reporting.BI.corp.example", "second.corp.example"]
        );
        assert_eq!(id.san_email, ["alice.smith@corp.example"]);
        assert_eq!(id.common_names, ["reporting"]);
    }

    #[test]
    fn certificate_without_cn_or_sans_has_empty_fields() {
        let der = leaf(&[(DnType::OrganizationName, "Corp")], vec![], None);
        let id = ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(id.common_name, None);
        assert!(id.san_dns.is_empty() && id.san_uri.is_empty() && id.san_email.is_empty());
        assert!(id.common_names.is_empty());
    }

    #[test]
    fn serial_is_lowercase_hex_of_whole_bytes_without_leading_zero_bytes() {
        let der = leaf(
            &[(DnType::CommonName, "a")],
            vec![],
            Some(vec![0, 0, 0x01, 0x0a]),
        );
        assert_eq!(
            ClientIdentity::from_der(&der).expect("identity").serial_hex,
            "010a"
        );
        // MSB set: DER adds a 0x00 sign byte, which is not part of the number.
        let der = leaf(&[(DnType::CommonName, "a")], vec![], Some(vec![0x8f, 0xAB]));
        assert_eq!(
            ClientIdentity::from_der(&der).expect("identity").serial_hex,
            "8fab"
        );
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der_and_not_after_is_unix_seconds() {
        let der = leaf(&[(DnType::CommonName, "a")], vec![], None);
        let id = ClientIdentity::from_der(&der).expect("identity");
        let expected = hex::encode(Sha256::digest(&der));
        assert_eq!(id.fingerprint_sha256, expected);
        assert_eq!(id.fingerprint_sha256.len(), 64);
        assert!(id
            .fingerprint_sha256
            .bytes()
            .all(|b| !b.is_ascii_uppercase()));
        // 2031-03-04T00:00:00Z
        assert_eq!(id.not_after_unix, 1_930_348_800);
    }

    #[test]
    fn special_characters_in_names_are_escaped() {
        let der = leaf(
            &[
                (DnType::OrganizationName, "Corp, Inc."),
                (DnType::CommonName, "#a+b; \"c\" "),
            ],
            vec![],
            None,
        );
        let id = ClientIdentity::from_der(&der).expect("identity");
        // The CN itself is reported unescaped; only the DN text is escaped.
        assert_eq!(id.common_name.as_deref(), Some("#a+b; \"c\" "));
        assert_eq!(id.subject, r#"CN=\#a\+b\; \"c\"\ ,O=Corp\, Inc."#);
    }

    #[test]
    fn control_characters_are_hex_escaped() {
        let der = leaf(&[(DnType::CommonName, "a\u{0}b\nc")], vec![], None);
        let id = ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(id.subject, r"CN=a\00b\0ac");
    }

    #[test]
    fn unknown_attribute_types_use_dotted_oid_and_hex() {
        // givenName (2.5.4.42) is not in the short-name table.
        let der = leaf(
            &[
                (DnType::CustomDnType(vec![2, 5, 4, 42]), "Al"),
                (DnType::CommonName, "alice"),
            ],
            vec![],
            None,
        );
        let id = ClientIdentity::from_der(&der).expect("identity");
        // UTF8String (0x0c), length 2, "Al".
        assert_eq!(id.subject, "CN=alice,2.5.4.42=#0c02416c");
    }

    #[test]
    fn bmp_string_common_name_is_decoded() {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            DnValue::BmpString("zoë".try_into().expect("bmp")),
        );
        let key = KeyPair::generate().expect("key");
        let der = params.self_signed(&key).expect("sign").der().to_vec();
        let id = ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(id.common_name.as_deref(), Some("zoë"));
        assert_eq!(id.subject, "CN=zoë");
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        assert!(matches!(
            ClientIdentity::from_der(b"not a certificate"),
            Err(IdentityError::Malformed(_))
        ));
        let mut der = leaf(&[(DnType::CommonName, "a")], vec![], None);
        der.push(0);
        assert!(matches!(
            ClientIdentity::from_der(&der),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn uri_last_segment_takes_the_uri_literally() {
        let last = uri_path_last_segment;
        assert_eq!(
            last("spiffe://corp.example/ns/bi/sa/reporting/"),
            Some("reporting")
        );
        assert_eq!(last("spiffe://corp.example/ns/bi/sa/x?y=z#f"), Some("x"));
        assert_eq!(last("spiffe://corp.example"), None);
        assert_eq!(last("spiffe://corp.example/"), None);
        assert_eq!(last("spiffe://corp.example/a/.."), Some(".."));
        assert_eq!(last("spiffe://corp.example/a/b%2Fc"), Some("b%2Fc"));
        assert_eq!(last("urn:example:thing"), Some("example:thing"));
        assert_eq!(last("mailto:x@y"), Some("x@y"));
    }

    #[test]
    fn email_local_uses_the_last_at_sign_and_needs_a_local_part() {
        assert_eq!(email_local_part("\"a@b\"@corp.example"), Some("\"a@b\""));
        assert_eq!(email_local_part("@corp.example"), None);
        assert_eq!(email_local_part("no-at-sign"), None);
    }
}
