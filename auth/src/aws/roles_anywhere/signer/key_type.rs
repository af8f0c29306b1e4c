//! What kind of key a certificate or a private key holds, named for messages and
//! compared by family (a certificate and its key must agree).

use std::fmt;

/// The kind of a public or private key, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyType {
    Rsa {
        bits: usize,
    },
    EcP256,
    EcP384,
    /// A key this signer cannot use, described by its algorithm (e.g. an OID).
    Unsupported(String),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::Rsa { bits } => write!(f, "RSA ({bits} bits)"),
            KeyType::EcP256 => f.write_str("EC P-256"),
            KeyType::EcP384 => f.write_str("EC P-384"),
            KeyType::Unsupported(what) => write!(f, "unsupported ({what})"),
        }
    }
}

impl KeyType {
    pub(super) fn same_family(&self, other: &KeyType) -> bool {
        matches!(
            (self, other),
            (KeyType::Rsa { .. }, KeyType::Rsa { .. })
                | (KeyType::EcP256, KeyType::EcP256)
                | (KeyType::EcP384, KeyType::EcP384)
        )
    }
}
