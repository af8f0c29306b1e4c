//! Names of a TLS connection's protocol version and cipher suite, for logs and audit
//! records, the same on the client and the upstream side.

/// `("TLSv1.3", "TLS13_AES_256_GCM_SHA384")`; empty before the handshake completes.
pub fn tls_names(conn: &rustls::CommonState) -> (String, String) {
    let version = conn
        .protocol_version()
        .map(|v| match v {
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default();
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let suite = s.suite();
            suite
                .as_str()
                .map_or_else(|| format!("{suite:?}"), str::to_string)
        })
        .unwrap_or_default();
    (version, cipher)
}
