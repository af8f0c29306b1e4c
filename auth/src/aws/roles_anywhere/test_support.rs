//! Test fixtures: certificates and keys generated at test time, PEM re-encodings of them,
//! and an independent verifier of Roles Anywhere signatures (what AWS does on its side).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine as _;
use pkcs8::der::pem::LineEnding;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SignatureAlgorithm};
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// A leaf certificate and its key (PKCS#8 DER), optionally issued by an intermediate.
pub struct TestIdentity {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pkcs8_der: Vec<u8>,
    /// Intermediate CA certificates (PEM), leaf excluded, when issued through a chain.
    pub chain_pem: Vec<String>,
    pub chain_der: Vec<Vec<u8>>,
}

impl TestIdentity {
    /// A self-signed leaf.
    pub fn self_signed(alg: &'static SignatureAlgorithm, serial: Option<Vec<u8>>) -> Self {
        let key = generate(alg);
        let mut params = CertificateParams::new(vec!["proxy.test.invalid".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "redshift-iam-proxy test");
        params.serial_number = serial.map(rcgen::SerialNumber::from);
        let cert = params.self_signed(&key).unwrap();
        TestIdentity {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pkcs8_der: key.serialize_der(),
            chain_pem: Vec::new(),
            chain_der: Vec::new(),
        }
    }

    /// A leaf issued by an intermediate issued by a root; the chain holds the intermediate.
    pub fn with_intermediate(alg: &'static SignatureAlgorithm) -> Self {
        let root_key = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test root");
        let root = Issuer::new(root_params.clone(), root_key);

        let int_key = generate(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut int_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        int_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        int_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test intermediate");
        let int_cert = int_params.signed_by(&int_key, &root).unwrap();
        let intermediate = Issuer::new(int_params, int_key);

        let key = generate(alg);
        let mut params = CertificateParams::new(vec!["proxy.test.invalid".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "proxy leaf");
        let cert = params.signed_by(&key, &intermediate).unwrap();
        TestIdentity {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pkcs8_der: key.serialize_der(),
            chain_pem: vec![int_cert.pem()],
            chain_der: vec![int_cert.der().to_vec()],
        }
    }

    pub fn key_pkcs8_pem(&self) -> String {
        pem("PRIVATE KEY", &self.key_pkcs8_der)
    }

    /// The key as `RSA PRIVATE KEY` (the PKCS#8 payload of an RSA key is its PKCS#1 form).
    pub fn key_pkcs1_pem(&self) -> String {
        let info = pkcs8::PrivateKeyInfo::try_from(self.key_pkcs8_der.as_slice()).unwrap();
        pem("RSA PRIVATE KEY", info.private_key)
    }

    /// The key as `EC PRIVATE KEY` exactly as embedded in the PKCS#8 document; such keys
    /// usually omit the curve parameter (it is in the PKCS#8 algorithm identifier).
    pub fn key_sec1_pem_embedded(&self) -> String {
        let info = pkcs8::PrivateKeyInfo::try_from(self.key_pkcs8_der.as_slice()).unwrap();
        pem("EC PRIVATE KEY", info.private_key)
    }

    pub fn key_encrypted_pem(&self, passphrase: &str) -> String {
        let info = pkcs8::PrivateKeyInfo::try_from(self.key_pkcs8_der.as_slice()).unwrap();
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &[7u8; 16], &[9u8; 16])
                .unwrap();
        let encrypted = info.encrypt_with_params(params, passphrase).unwrap();
        encrypted
            .to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
            .unwrap()
            .to_string()
    }

    pub fn chain_pem_joined(&self) -> String {
        self.chain_pem.concat()
    }
}

pub fn generate(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).unwrap()
}

pub fn pem(label: &'static str, der: &[u8]) -> String {
    pkcs8::der::pem::encode_string(label, LineEnding::LF, der).unwrap()
}

/// What a verified request said.
#[derive(Debug)]
pub struct Verified {
    pub algorithm: String,
    pub serial: String,
    pub scope: String,
    pub signed_headers: String,
}

/// Verifies a Roles Anywhere signature the way the service does, without using the signer's
/// canonicalisation code: rebuilds the canonical request from the signed-headers list, then
/// checks the signature with the public key of the certificate in `X-Amz-X509`.
pub fn verify_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Verified, String> {
    let header = |name: &str| -> Result<String, String> {
        headers
            .get(name)
            .ok_or_else(|| format!("missing header {name}"))?
            .to_str()
            .map(str::to_owned)
            .map_err(|_| format!("header {name} not ASCII"))
    };
    let authorization = header("authorization")?;
    let (algorithm, rest) = authorization
        .split_once(' ')
        .ok_or("authorization has no algorithm")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature_hex = None;
    for part in rest.split(", ") {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v.to_owned()),
            Some(("SignedHeaders", v)) => signed_headers = Some(v.to_owned()),
            Some(("Signature", v)) => signature_hex = Some(v.to_owned()),
            _ => return Err(format!("unexpected authorization part {part:?}")),
        }
    }
    let credential = credential.ok_or("no Credential")?;
    let signed_headers = signed_headers.ok_or("no SignedHeaders")?;
    let signature = hex::decode(signature_hex.ok_or("no Signature")?).map_err(|e| e.to_string())?;
    let (serial, scope) = credential.split_once('/').ok_or("bad Credential")?;

    let mut canonical = format!("{method}\n{path}\n{canonical_query}\n");
    for name in signed_headers.split(';') {
        let value = header(name)?;
        canonical.push_str(&format!("{name}:{}\n", value.trim()));
    }
    canonical.push_str(&format!(
        "\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    ));
    let amz_date = header("x-amz-date")?;
    if !scope.starts_with(&amz_date[..8]) {
        return Err("scope date differs from x-amz-date".into());
    }
    let string_to_sign = format!(
        "{algorithm}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );

    let cert_der = base64::engine::general_purpose::STANDARD
        .decode(header("x-amz-x509")?)
        .map_err(|e| e.to_string())?;
    let (_, cert) = X509Certificate::from_der(&cert_der).map_err(|e| e.to_string())?;
    if cert.serial.to_str_radix(10) != serial {
        return Err(format!(
            "credential serial {serial} is not the certificate's"
        ));
    }
    let spki = cert.public_key();
    let key = spki.subject_public_key.data.as_ref();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let verification: &dyn signature::VerificationAlgorithm = match (algorithm, curve.as_deref()) {
        ("AWS4-X509-RSA-SHA256", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        ("AWS4-X509-ECDSA-SHA256", Some("1.2.840.10045.3.1.7")) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        ("AWS4-X509-ECDSA-SHA256", Some("1.3.132.0.34")) => &signature::ECDSA_P384_SHA256_ASN1,
        other => return Err(format!("unexpected algorithm/curve {other:?}")),
    };
    UnparsedPublicKey::new(verification, key)
        .verify(string_to_sign.as_bytes(), &signature)
        .map_err(|_| "signature does not verify".to_owned())?;
    Ok(Verified {
        algorithm: algorithm.to_owned(),
        serial: serial.to_owned(),
        scope: scope.to_owned(),
        signed_headers,
    })
}

/// One request the fake service received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub body: serde_json::Value,
    /// The outcome of verifying its signature independently.
    pub verified: Result<String, String>,
    pub content_type: Option<String>,
}

/// What the fake service answers to the n-th call (0-based).
#[derive(Debug, Clone)]
pub enum Reply {
    /// 201 with credentials `AKID<n>` / `secret<n>` / `token<n>`.
    Success { expiration: std::time::SystemTime },
    Error {
        status: u16,
        code: &'static str,
        message: &'static str,
    },
    /// Like `Success`, after a delay (to make concurrent callers overlap).
    SlowSuccess {
        expiration: std::time::SystemTime,
        delay: std::time::Duration,
    },
    /// Never answers (for timeouts).
    Hang,
}

/// A tiny CreateSession server on loopback that verifies every signature it receives and
/// refuses bad ones with AccessDeniedException, like the real service.
pub struct FakeRolesAnywhere {
    pub endpoint: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRolesAnywhere {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRolesAnywhere {
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        use http_body_util::BodyExt;
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let script = Arc::new(script);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = recorded.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let recorded = recorded.clone();
                            let script = script.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let verified = verify_request(
                                    parts.method.as_str(),
                                    parts.uri.path(),
                                    "",
                                    &parts.headers,
                                    &body,
                                )
                                .map(|v| v.signed_headers);
                                let index = {
                                    let mut all = recorded.lock().unwrap();
                                    all.push(Recorded {
                                        body: serde_json::from_slice(&body).unwrap_or_default(),
                                        verified: verified.clone(),
                                        content_type: parts
                                            .headers
                                            .get("content-type")
                                            .map(|v| v.to_str().unwrap().to_owned()),
                                    });
                                    all.len() - 1
                                };
                                let reply = match verified {
                                    Err(_) => Reply::Error {
                                        status: 403,
                                        code: "AccessDeniedException",
                                        message: "Invalid signature",
                                    },
                                    Ok(_) if parts.uri.path() != "/sessions" => Reply::Error {
                                        status: 404,
                                        code: "ResourceNotFoundException",
                                        message: "no such path",
                                    },
                                    Ok(_) => script(index),
                                };
                                let reply = match reply {
                                    Reply::SlowSuccess { expiration, delay } => {
                                        tokio::time::sleep(delay).await;
                                        Reply::Success { expiration }
                                    }
                                    other => other,
                                };
                                let response = match reply {
                                    Reply::Success { expiration } => {
                                        let expiration = time::OffsetDateTime::from(expiration)
                                            .format(&time::format_description::well_known::Rfc3339)
                                            .unwrap();
                                        let body = serde_json::json!({
                                            "credentialSet": [{
                                                "credentials": {
                                                    "accessKeyId": format!("AKID{index}"),
                                                    "secretAccessKey": format!("secret{index}"),
                                                    "sessionToken": format!("token{index}"),
                                                    "expiration": expiration,
                                                },
                                                "assumedRoleUser": {
                                                    "arn": "arn:aws:sts::123456789012:assumed-role/r/s",
                                                    "assumedRoleId": "AROA:s"
                                                },
                                                "roleArn": "arn:aws:iam::123456789012:role/r",
                                                "sourceIdentity": "CN=proxy",
                                                "packedPolicySize": 0
                                            }],
                                            "subjectArn": "arn:aws:rolesanywhere:eu-west-1:123456789012:subject/s"
                                        });
                                        http::Response::builder()
                                            .status(201)
                                            .header("x-amzn-requestid", format!("req-{index}"))
                                            .body(http_body_util::Full::new(bytes::Bytes::from(
                                                body.to_string(),
                                            )))
                                            .unwrap()
                                    }
                                    Reply::Error {
                                        status,
                                        code,
                                        message,
                                    } => http::Response::builder()
                                        .status(status)
                                        .header("x-amzn-requestid", format!("req-{index}"))
                                        .header(
                                            "x-amzn-errortype",
                                            format!("{code}:http://internal.amazon.com/coral/"),
                                        )
                                        .body(http_body_util::Full::new(bytes::Bytes::from(
                                            serde_json::json!({ "message": message }).to_string(),
                                        )))
                                        .unwrap(),
                                    Reply::Hang | Reply::SlowSuccess { .. } => {
                                        std::future::pending::<()>().await;
                                        unreachable!()
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeRolesAnywhere {
            endpoint,
            requests,
            task,
        }
    }

    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}
