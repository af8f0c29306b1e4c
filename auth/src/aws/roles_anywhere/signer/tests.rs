use super::key::ec_points_equal;
use super::*;
use crate::aws::roles_anywhere::test_support::{pem, verify_request, TestIdentity};
use aws_lc_rs::signature::EcdsaKeyPair;
use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA256_ASN1};
use p384::pkcs8::DecodePrivateKey as _;
use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
use secrecy::ExposeSecret;
use std::time::{Duration, UNIX_EPOCH};

/// The published Roles Anywhere signing test vector of the `needroleshere` crate
/// (crates.io, Apache-2.0, `src/sign.rs` test `test_signature_rsa`). Public *test* data: an
/// RSA key, its leaf certificate and the intermediate, all made for that test only.
mod published_vector {
    pub const RSA_KEY_PKCS1: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpQIBAAKCAQEAplGYXxClVEdHI171bmq0toNAD9rwEti7g7NFj1NeISbIMi20
Tf/bemDMALEw5soh/sojwaRPPGAtBZ18eHh6YdzHCNBHAAsIJKcLL5HpJHBtR6JU
j3n8CBsFFQXVOBfxFiSdNtyasyhVb5lTJAHSpLw+AloOVQEmd40cGc488U64/VL2
MjNqibOUzFCKg4hfkdRGsfUPrLxegspK8yr9Zd6kdLAVjpNT8DZuuMHVt8NYdzGH
rwed8iwzV7CjLbK/sXHu6uZYvsw0tKfGt2idfLdnk+TSITaM8T9rCEaWgYxEuvF5
llQ5sWgHwyzb19S0OYkNY7DL398znSFKls6IDQIDAQABAoIBAHcR/Xs5yJNQwE5D
YoSdYik0R/3R6YQkpAKCqu8UaVRklnjOHcKlxTSU7hgkwvTHi5UElJrCjnOUC0d0
2zLIVh2P2PKnYd1XCIptCOYSmQ4cazAYuF9LnrMS3Q2S8nZJNbF7nw4y25Id8ySF
aW9i2rJTjjVS0eXrf+WhIZgb/adnY5187ZEB9slynlKWiEJofhpC8ruWwKfp8cF9
fpJVO6m1lKmRpvHhl/VfGn3ghhI3V7O+2TsFUQpYw/lJsnshHkY47ELyFonxO8eD
rkL1CID0TQPsItCQ10yxA1GQ09iKePgHsegP0IkB8bQNyA4DREmS7nrsF9ob5imz
kKqr6aECgYEA2+jI+nDM0j9a0gbdStGBtWdyAB1uNnBLlCBCJVPomOimlmzTM/an
Ejk8oIBvWvG8mnLU4glLpW1Ye5ablRTsddXHQYe60+y3CY5yH3l/AAE1mGB1uDjc
fw5xu48S0eUwad0bbuww5cxaImLvoU1NvdLP4CiyV9sajI/7NLNY2nUCgYEAwZ1E
yZYBLnAKnkM9DZdifAjduPd7wTg8bHQuaeyFNvwRsK34UrsFDlmkOcGwDGa4bgBP
daOPSLi3droP2Hwn/DhDVBus42/HhGtyR0p3N7wuPJuPO/jt+9mrBaayACyaWmLq
OXrwFc3UfMDKJq/lIS8ti+WCI92jOIm4lTEJ1DkCgYEAybBfm+oWwIHgvx4Smcs6
5nCAywAzE/S8LJfFcszZWFyQZQhcUJ1Yr8sVArOo7cUmUJUfEEysN4XpEDiaawns
sUonXL+qpzHE0hv2KU3aH9v8FsvpS9PCzzklMHtRLHbCh2WGAp7XXfulc0JAOzVW
JtIRW6qXnyJR4Dcxky0mQf0CgYEApZQI0tkdM4iQHB7mpKv1hpvSeq/zvx+H1Txa
wS2ME6TowA9X0fCs90PERbyWAVULns9XJQT2sbt+8uNWT86GJ5Y6RkDQz0S1/VIi
TkOpxxmA9UYX7bMKW5sgPln72lhKvMfhBb1Ue2EmunXpq8I7kvCU5BIoBOI0B1MI
b1ab0EkCgYEA0zt4lI9t//jUWEJYqMAafWBlhc9EixZQFhEVqPbZ4rIzOPakGGNP
obytuBoLH0Qx9UPsboeSOnyiB2zRZqyAiihPOobFoUuByETa1FUpuwlFRjYQIYGx
olHtIIM4qpOu8UvB4aku0krZckwMBIZKJC6aOlAxeWYKiuJuj9SNXN8=
-----END RSA PRIVATE KEY-----
";
    /// Leaf certificate, base64 DER (also the expected `X-Amz-X509`).
    pub const LEAF_B64: &str = "MIIDejCCAmKgAwIBAgIUOyDWw0XB0LR8gtffQfuCGxgCXjcwDQYJKoZIhvcNAQELBQAwLzEtMCsGA1UEAxMkcm9sZXNhbnl3aGVyZSB0ZXN0IENBIC0gSW50ZXJtZWRpYXRlMCAXDTIyMDkyNTExMjYwMFoYDzIwNjcwOTE0MTEyNjAwWjAcMRowGAYDVQQDExFsZWFmLnRlc3QuaW52YWxpZDCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBAKZRmF8QpVRHRyNe9W5qtLaDQA/a8BLYu4OzRY9TXiEmyDIttE3/23pgzACxMObKIf7KI8GkTzxgLQWdfHh4emHcxwjQRwALCCSnCy+R6SRwbUeiVI95/AgbBRUF1TgX8RYknTbcmrMoVW+ZUyQB0qS8PgJaDlUBJneNHBnOPPFOuP1S9jIzaomzlMxQioOIX5HURrH1D6y8XoLKSvMq/WXepHSwFY6TU/A2brjB1bfDWHcxh68HnfIsM1ewoy2yv7Fx7urmWL7MNLSnxrdonXy3Z5Pk0iE2jPE/awhGloGMRLrxeZZUObFoB8Ms29fUtDmJDWOwy9/fM50hSpbOiA0CAwEAAaOBnjCBmzAOBgNVHQ8BAf8EBAMCBaAwHQYDVR0lBBYwFAYIKwYBBQUHAwEGCCsGAQUFBwMCMAwGA1UdEwEB/wQCMAAwHQYDVR0OBBYEFP6Aeo6AetCFR+icnOMBuSuLDblBMB8GA1UdIwQYMBaAFM1K0RSR/i53vlVA6b/zGr67wEG6MBwGA1UdEQQVMBOCEWxlYWYudGVzdC5pbnZhbGlkMA0GCSqGSIb3DQEBCwUAA4IBAQCdzpQlre7aJ5n1hlx71sx8SJ6hUEuovmjx9YtAFmG0GAJHDp3ZTZjVoBeIPWdkXv+QDW0bzVVKCgkYbGdLhkUOhHCnZeRBotTcVcIppk/hacJ64qJIaBAkMZKUBa0XFQnnSjDhbBj/pHfo7rLfo3UlbR7N26nkdARb41XMVigSboRoj7tp0BKSWSDs+OkUezbVPaefrZ7/HJvFJocghgFMc4UKkOshWhQ/t/QlTvy44DBX/ZPx1iY8q78GHVhd/fT91ev3bViYX/Yx8Hcurl9AQQLuo5onALBMJ4UUxOh0hcVse09Rn5K7NZdYkUXfyaPN3uIrlwlItonkQi3MMfAd";
    /// Intermediate CA certificate, base64 DER (the expected `X-Amz-X509-Chain`).
    pub const INTERMEDIATE_B64: &str = "MIIDTDCCAjSgAwIBAgIUFmgoL2HLPUTECNUjz59K4zrkNAUwDQYJKoZIhvcNAQELBQAwJzElMCMGA1UEAxMccm9sZXNhbnl3aGVyZSB0ZXN0IENBIC0gUm9vdDAgFw0yMjA5MjUxMTI2MDBaGA8yMDcxMTAxNTAzMjYwMFowLzEtMCsGA1UEAxMkcm9sZXNhbnl3aGVyZSB0ZXN0IENBIC0gSW50ZXJtZWRpYXRlMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoulQWYzu79i8fQDjHIbHHmZHzymr0kRkWIxYEEu4O4OUQqS4u9ksMnyrhCzj6oEy9TCk8pSuWgN78t95NjkGQ6NrBSDkkbtwreUfYMWpb8A199r2Xni4BUhzEqa8vkyq5QsOnxhADDU4CR7OIff4P9IxnM7ZQ8A5s3PkmxYo6XHuxuNfMmpGVNle/WW0vGGAZLHjoFe3q+bApExPjqBYzNCUFGWnWmAKk7kI95Ba32pd+y1qDUfEsqX/Nb56kpRURpst8KSusIJIteBUnMGPAJ711Ls47+xWgSIK9Mp8tTd4OLDVpRIhGWAYfgVCQ7pbfzkm3hr8+ssNd2ooqXUFewIDAQABo2YwZDAOBgNVHQ8BAf8EBAMCAQYwEgYDVR0TAQH/BAgwBgEB/wIBADAdBgNVHQ4EFgQUzUrRFJH+Lne+VUDpv/MavrvAQbowHwYDVR0jBBgwFoAURB3KVRg9yVd6L/wWy+tIBRzVfYYwDQYJKoZIhvcNAQELBQADggEBAJHmA3lVFIIZ1lh+0pze7Q77uYGDk0VCjYhZeIwTC+UJRbBM9UGUGsiXbsvPVE/BVQ6r4+EJSEe5pAPcG9MsstlRHc+TnBawKXyglsu0JfYNvJj5X1W9+LV37kO1Vl0V4VgiVMJetPKnbm9P2n9zvS+ssk4HvXsw21IzVkFYr56Da+sK4ylXLhHdjGB+1YWqBfBAikwF0BLWpzcW38QVyj+cm+Z55jgk/R3tcpf6SQA4w236xpdq6H7WxUHayhNUhWGhDCohTzxzpZ6rpfZBTy6C3bX+dTLAaHkWoA8+5jkI+1ACUYm+JvD2dpJqHF7w+HgJfaiGrX2XwmjtG+X6fyU=";
    pub const SERIAL_DECIMAL: &str = "337562787801933536189724934726614584366112857655";
    /// 2022-08-27T01:02:03Z.
    pub const TIME_UNIX: u64 = 1_661_562_123;
    pub const REGION: &str = "us-east-1";
    pub const SERVICE: &str = "service";
    pub const URI: &str = "https://service.test.invalid/api";
    pub const BODY: &str = "{\"foo\": 123}";
    pub const BODY_SHA256: &str =
        "8ae301e76251dfa937e27312e3f89be4941c49e2094f3dafe614ed3c8235fbf9";
    pub const SIGNATURE: &str = "7f18cf01a29af198006ce4294771b6c8204d5a8d811f1e707131d46e3465665a1f902c2060b28d07f4f7205fd81648585dc3e48ced6b1dc920e698142129985b569fdae3a55d8394a084960bf5362867161de68d43460ac027b7f614b7373597bf93545905051aa2ad062b8fdf452c736ee289e280dd375840b865fc1fc08b0ea6893385663c6171e61252b39777d190acb805cb6c05a790c495167d4d7360245c18858e2e541b6079e7d79c18d0618d283e6a26c1b870d74f3607c85086bb9aa39cecc0b1a1ad5e1bfeeaacbf052b7af8b23ced9142cc1c743b0b7f6fcee0ebfee41bd3ddb17f2985fbc028c0b19ebca79a1fb4e033e40ba410b1115fe7ebd1";
}

fn b64_der_to_pem(b64: &str) -> String {
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    pem("CERTIFICATE", &der)
}

fn json_post(uri: &str, body: &str) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.as_bytes().to_vec())
        .unwrap()
}

fn signer_for(identity: &TestIdentity, key_pem: &str) -> Result<X509Signer, SignerError> {
    let chain = identity.chain_pem_joined();
    X509Signer::from_pem(SignerPem {
        certificate: identity.cert_pem.as_bytes(),
        private_key: key_pem.as_bytes(),
        chain: (!chain.is_empty()).then_some(chain.as_bytes()),
        ..SignerPem::default()
    })
}

fn sign_and_verify(signer: &X509Signer) -> Verified {
    let mut request = json_post(
        "https://rolesanywhere.eu-west-1.amazonaws.com/sessions",
        "{}",
    );
    signer
        .sign(
            &mut request,
            "eu-west-1",
            "rolesanywhere",
            SystemTime::now(),
        )
        .unwrap();
    verify_request("POST", "/sessions", "", request.headers(), request.body()).unwrap()
}

use crate::aws::roles_anywhere::test_support::Verified;

#[test]
fn published_vector_rsa_signature_matches() {
    use published_vector as v;
    // The vector's certificate file holds the leaf followed by the intermediate.
    let certificate = format!(
        "{}{}",
        b64_der_to_pem(v::LEAF_B64),
        b64_der_to_pem(v::INTERMEDIATE_B64)
    );
    let signer = X509Signer::from_pem(SignerPem {
        certificate: certificate.as_bytes(),
        private_key: v::RSA_KEY_PKCS1.as_bytes(),
        ..SignerPem::default()
    })
    .unwrap();
    assert_eq!(signer.serial_decimal(), v::SERIAL_DECIMAL);
    assert_eq!(signer.algorithm(), ALG_RSA);

    let mut request = json_post(v::URI, v::BODY);
    let time = UNIX_EPOCH + Duration::from_secs(v::TIME_UNIX);
    signer
        .sign(&mut request, v::REGION, v::SERVICE, time)
        .unwrap();

    let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-amz-date"), "20220827T010203Z");
    assert_eq!(header("x-amz-x509"), v::LEAF_B64);
    assert_eq!(header("x-amz-x509-chain"), v::INTERMEDIATE_B64);
    assert_eq!(header("host"), "service.test.invalid");
    assert_eq!(
        header("authorization"),
        format!(
            "AWS4-X509-RSA-SHA256 Credential={}/20220827/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain, Signature={}",
            v::SERIAL_DECIMAL,
            v::SIGNATURE
        )
    );
}

#[test]
fn published_vector_canonical_request_text() {
    use published_vector as v;
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("host", "service.test.invalid".parse().unwrap());
    headers.insert("x-amz-date", "20220827T010203Z".parse().unwrap());
    headers.insert("x-amz-x509", v::LEAF_B64.parse().unwrap());
    headers.insert("x-amz-x509-chain", v::INTERMEDIATE_B64.parse().unwrap());
    let canonical = canonical_request(
        "POST",
        &v::URI.parse().unwrap(),
        &headers,
        v::BODY.as_bytes(),
    )
    .unwrap();
    let expected = [
        "POST",
        "/api",
        "",
        "content-type:application/json",
        "host:service.test.invalid",
        "x-amz-date:20220827T010203Z",
        &format!("x-amz-x509:{}", v::LEAF_B64),
        &format!("x-amz-x509-chain:{}", v::INTERMEDIATE_B64),
        "",
        "content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain",
        v::BODY_SHA256,
    ]
    .join("\n");
    assert_eq!(canonical.canonical, expected);
    assert_eq!(
        canonical.signed_headers,
        "content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain"
    );
}

#[test]
fn ecdsa_p256_signature_verifies_with_the_certificate_key() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
    assert_eq!(signer.algorithm(), ALG_ECDSA);
    assert_eq!(signer.key_type(), KeyType::EcP256);
    let verified = sign_and_verify(&signer);
    assert_eq!(verified.algorithm, "AWS4-X509-ECDSA-SHA256");
    assert_eq!(
        verified.signed_headers,
        "content-type;host;x-amz-date;x-amz-x509"
    );
    assert!(verified
        .scope
        .ends_with("/eu-west-1/rolesanywhere/aws4_request"));
}

#[test]
fn ecdsa_p384_signs_a_sha256_digest() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P384_SHA384, None);
    let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
    assert_eq!(signer.key_type(), KeyType::EcP384);
    // The verifier uses ECDSA_P384_SHA256_ASN1: SHA-256 even though the curve is P-384.
    sign_and_verify(&signer);
}

#[test]
fn ecdsa_signatures_verify_against_an_independent_string_to_sign() {
    // Checked directly with aws-lc-rs rather than through the test verifier.
    for (alg, verification) in [
        (&PKCS_ECDSA_P256_SHA256, &ECDSA_P256_SHA256_ASN1),
        (&PKCS_ECDSA_P384_SHA384, &ECDSA_P384_SHA256_ASN1),
    ] {
        let identity = TestIdentity::self_signed(alg, None);
        let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
        let message = b"AWS4-X509-ECDSA-SHA256\n20240101T000000Z\nscope\nhash";
        let signature = signer.key.sign(message).unwrap();
        let (_, cert) = X509Certificate::from_der(&identity.cert_der).unwrap();
        let point = cert.public_key().subject_public_key.data.to_vec();
        UnparsedPublicKey::new(verification, &point)
            .verify(message, &signature)
            .unwrap();
        // A different message must not verify with the same signature.
        assert!(UnparsedPublicKey::new(verification, &point)
            .verify(b"other", &signature)
            .is_err());
    }
}

#[test]
fn rsa_signature_with_generated_key_and_chain_verifies() {
    let identity = TestIdentity::with_intermediate(&PKCS_RSA_SHA256);
    let signer = signer_for(&identity, &identity.key_pkcs1_pem()).unwrap();
    assert_eq!(signer.key_type(), KeyType::Rsa { bits: 2048 });
    assert_eq!(signer.intermediates(), 1);
    let verified = sign_and_verify(&signer);
    assert_eq!(
        verified.signed_headers,
        "content-type;host;x-amz-date;x-amz-x509;x-amz-x509-chain"
    );
}

#[test]
fn chain_header_lists_intermediates_leaf_excluded_in_order() {
    let identity = TestIdentity::with_intermediate(&PKCS_ECDSA_P256_SHA256);
    let other = TestIdentity::with_intermediate(&PKCS_ECDSA_P256_SHA256);
    // One intermediate after the leaf in the certificate file, another in the chain file.
    let certificate = format!("{}{}", identity.cert_pem, identity.chain_pem[0]);
    let signer = X509Signer::from_pem(SignerPem {
        certificate: certificate.as_bytes(),
        private_key: identity.key_pkcs8_pem().as_bytes(),
        chain: Some(other.chain_pem[0].as_bytes()),
        ..SignerPem::default()
    })
    .unwrap();
    let mut request = json_post("https://h.example/sessions", "{}");
    signer
        .sign(&mut request, "r", "rolesanywhere", SystemTime::now())
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        request.headers()["x-amz-x509"].to_str().unwrap(),
        b64.encode(&identity.cert_der)
    );
    assert_eq!(
        request.headers()["x-amz-x509-chain"].to_str().unwrap(),
        format!(
            "{},{}",
            b64.encode(&identity.chain_der[0]),
            b64.encode(&other.chain_der[0])
        )
    );
}

#[test]
fn no_chain_header_without_intermediates() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
    let mut request = json_post("https://h.example/sessions", "{}");
    request
        .headers_mut()
        .insert("x-amz-x509-chain", "stale".parse().unwrap());
    signer
        .sign(&mut request, "r", "rolesanywhere", SystemTime::now())
        .unwrap();
    assert!(request.headers().get("x-amz-x509-chain").is_none());
}

#[test]
fn serial_is_rendered_in_decimal() {
    // 0x00ff..: a serial with the high bit set needs a leading zero byte in DER.
    let serial = vec![0x00, 0xff, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, Some(serial));
    let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
    assert_eq!(
        signer.serial_decimal(),
        u128::from_str_radix("ff0102030405060708", 16)
            .unwrap()
            .to_string()
    );
    let verified = sign_and_verify(&signer);
    assert_eq!(verified.serial, signer.serial_decimal());
}

#[test]
fn loads_every_supported_key_format() {
    let rsa = TestIdentity::self_signed(&PKCS_RSA_SHA256, None);
    let p256 = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let p384 = TestIdentity::self_signed(&PKCS_ECDSA_P384_SHA384, None);

    // SEC1 with the curve parameter present, as `openssl ecparam -genkey` writes it.
    let p256_sec1_with_params = {
        let key = EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &p256.key_pkcs8_der,
        )
        .unwrap();
        use aws_lc_rs::encoding::AsDer;
        pem(
            "EC PRIVATE KEY",
            key.private_key().as_der().unwrap().as_ref(),
        )
    };
    let p384_sec1_with_params = {
        let secret = p384::SecretKey::from_pkcs8_der(&p384.key_pkcs8_der).unwrap();
        pem("EC PRIVATE KEY", &secret.to_sec1_der().unwrap())
    };

    let cases: Vec<(&str, &TestIdentity, String, KeyType)> = vec![
        (
            "RSA PKCS#1",
            &rsa,
            rsa.key_pkcs1_pem(),
            KeyType::Rsa { bits: 2048 },
        ),
        (
            "RSA PKCS#8",
            &rsa,
            rsa.key_pkcs8_pem(),
            KeyType::Rsa { bits: 2048 },
        ),
        ("P-256 PKCS#8", &p256, p256.key_pkcs8_pem(), KeyType::EcP256),
        ("P-384 PKCS#8", &p384, p384.key_pkcs8_pem(), KeyType::EcP384),
        (
            "P-256 SEC1 without curve",
            &p256,
            p256.key_sec1_pem_embedded(),
            KeyType::EcP256,
        ),
        (
            "P-384 SEC1 without curve",
            &p384,
            p384.key_sec1_pem_embedded(),
            KeyType::EcP384,
        ),
        (
            "P-256 SEC1 with curve",
            &p256,
            p256_sec1_with_params,
            KeyType::EcP256,
        ),
        (
            "P-384 SEC1 with curve",
            &p384,
            p384_sec1_with_params,
            KeyType::EcP384,
        ),
    ];
    for (name, identity, key_pem, key_type) in cases {
        let signer = signer_for(identity, &key_pem).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(signer.key_type(), key_type, "{name}");
        sign_and_verify(&signer);
    }
}

#[test]
fn encrypted_pkcs8_keys_need_the_right_passphrase() {
    for alg in [
        &PKCS_RSA_SHA256,
        &PKCS_ECDSA_P256_SHA256,
        &PKCS_ECDSA_P384_SHA384,
    ] {
        let identity = TestIdentity::self_signed(alg, None);
        let encrypted = identity.key_encrypted_pem("correct horse");
        let load = |passphrase: Option<&str>| {
            let passphrase = passphrase.map(|p| SecretString::from(p.to_owned()));
            X509Signer::from_pem(SignerPem {
                certificate: identity.cert_pem.as_bytes(),
                private_key: encrypted.as_bytes(),
                passphrase: passphrase.as_ref(),
                ..SignerPem::default()
            })
        };
        sign_and_verify(&load(Some("correct horse")).unwrap());

        let wrong = load(Some("battery staple")).unwrap_err().to_string();
        assert!(wrong.contains("wrong passphrase"), "{wrong}");
        assert!(
            !wrong.contains("battery staple"),
            "passphrase leaked: {wrong}"
        );

        let missing = load(None).unwrap_err().to_string();
        assert!(missing.contains("no passphrase is configured"), "{missing}");
    }
}

#[test]
fn legacy_openssl_encrypted_pem_is_refused_with_advice() {
    let identity = TestIdentity::self_signed(&PKCS_RSA_SHA256, None);
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    let err = signer_for(&identity, legacy).unwrap_err().to_string();
    assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
}

#[test]
fn key_of_another_type_than_the_certificate_is_a_clear_error() {
    let rsa = TestIdentity::self_signed(&PKCS_RSA_SHA256, None);
    let p256 = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let p384 = TestIdentity::self_signed(&PKCS_ECDSA_P384_SHA384, None);
    let err = signer_for(&rsa, &p256.key_pkcs8_pem()).unwrap_err();
    assert!(matches!(
        &err,
        SignerError::KeyTypeMismatch {
            key: KeyType::EcP256,
            certificate: KeyType::Rsa { bits: 2048 },
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "private key (in memory) is EC P-256 but the certificate's public key is RSA (2048 bits)"
    );
    let err = signer_for(&p256, &p384.key_pkcs8_pem()).unwrap_err();
    assert!(matches!(
        err,
        SignerError::KeyTypeMismatch {
            key: KeyType::EcP384,
            certificate: KeyType::EcP256,
            ..
        }
    ));
}

#[test]
fn key_of_the_right_type_but_another_certificate_is_refused() {
    for alg in [
        &PKCS_RSA_SHA256,
        &PKCS_ECDSA_P256_SHA256,
        &PKCS_ECDSA_P384_SHA384,
    ] {
        let a = TestIdentity::self_signed(alg, None);
        let b = TestIdentity::self_signed(alg, None);
        let err = signer_for(&a, &b.key_pkcs8_pem()).unwrap_err();
        assert!(
            matches!(err, SignerError::KeyCertificateMismatch { .. }),
            "{err}"
        );
    }
}

#[test]
fn certificates_with_unsupported_keys_are_refused() {
    let identity = TestIdentity::self_signed(&PKCS_ED25519, None);
    let err = signer_for(&identity, &identity.key_pkcs8_pem())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not supported by Roles Anywhere"), "{err}");
}

#[test]
fn garbage_inputs_are_errors_not_panics() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    assert!(signer_for(&identity, "").is_err());
    assert!(signer_for(
        &identity,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    .is_err());
    assert!(signer_for(
        &identity,
        "-----BEGIN EC PRIVATE KEY-----\nnot base64!\n-----END EC PRIVATE KEY-----\n"
    )
    .is_err());
    assert!(signer_for(&identity, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n").is_err());
    let no_cert = X509Signer::from_pem(SignerPem {
        certificate: b"nothing here",
        private_key: identity.key_pkcs8_pem().as_bytes(),
        ..SignerPem::default()
    });
    assert!(matches!(no_cert, Err(SignerError::Certificate { .. })));
    let bad_cert = pem("CERTIFICATE", b"\x30\x03\x02\x01\x01");
    let bad = X509Signer::from_pem(SignerPem {
        certificate: bad_cert.as_bytes(),
        private_key: identity.key_pkcs8_pem().as_bytes(),
        ..SignerPem::default()
    });
    assert!(matches!(bad, Err(SignerError::Certificate { .. })));
}

#[test]
fn debug_and_errors_never_show_key_material() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let key_pem = identity.key_pkcs8_pem();
    let key_body: String = key_pem.lines().nth(1).unwrap().to_owned();
    let signer = signer_for(&identity, &key_pem).unwrap();
    let debug = format!("{signer:?}");
    assert!(debug.contains("EcP256"), "{debug}");
    assert!(!debug.contains(&key_body));
    assert!(!debug.contains(
        &identity
            .key_pkcs8_der
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()[..40]
    ));

    // A mismatching key: the message names the problem, not the key.
    let other = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let err = signer_for(&other, &key_pem).unwrap_err();
    assert!(!format!("{err:?}").contains(&key_body));
}

#[test]
fn passphrase_file_loses_one_trailing_newline_only() {
    let dir = tempfile::tempdir().unwrap();
    for (content, expected) in [
        ("secret\n", "secret"),
        ("secret\r\n", "secret"),
        ("secret", "secret"),
        ("secret \n\n", "secret \n"),
    ] {
        let path = dir.path().join("passphrase");
        std::fs::write(&path, content).unwrap();
        let passphrase = read_passphrase(None, Some(&path)).unwrap().unwrap();
        assert_eq!(passphrase.expose_secret(), expected);
    }
    assert!(read_passphrase(None, Some(&dir.path().join("missing"))).is_err());
    assert!(read_passphrase(None, None).unwrap().is_none());
    let err = read_passphrase(Some("PROXY_AUTH_TEST_SURELY_UNSET_VARIABLE"), None).unwrap_err();
    assert!(err
        .to_string()
        .contains("PROXY_AUTH_TEST_SURELY_UNSET_VARIABLE is not set"));
}

#[test]
fn from_config_reads_files_and_decrypts_with_the_passphrase_file() {
    let identity = TestIdentity::with_intermediate(&PKCS_ECDSA_P384_SHA384);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let config = proxy_config::RolesAnywhereConfig {
        certificate: write("cert.crt", &identity.cert_pem),
        private_key: write("key.txt", &identity.key_encrypted_pem("pw")),
        chain: Some(write("chain.crt", &identity.chain_pem_joined())),
        private_key_passphrase_env: None,
        private_key_passphrase_file: Some(write("pass.txt", "pw\n")),
        trust_anchor_arn: proxy_config::Arn::trust_anchor(
            "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/t",
        )
        .unwrap(),
        profile_arn: proxy_config::Arn::roles_anywhere_profile(
            "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p",
        )
        .unwrap(),
        role_arn: proxy_config::Arn::iam_role("arn:aws:iam::123456789012:role/proxy").unwrap(),
        region: None,
        session_duration: Duration::from_secs(3600),
        role_session_name: None,
        max_sessions: 1000,
        endpoint_url: None,
    };
    let signer = X509Signer::from_config(&config).unwrap();
    assert_eq!(signer.intermediates(), 1);
    sign_and_verify(&signer);

    let mut missing = config.clone();
    missing.private_key = dir.path().join("nope");
    let err = X509Signer::from_config(&missing).unwrap_err().to_string();
    assert!(err.starts_with("cannot read private key"), "{err}");
}

#[test]
fn canonical_query_sorts_and_rfc3986_encodes() {
    assert_eq!(canonical_query_string(""), "");
    assert_eq!(canonical_query_string("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
    assert_eq!(
        canonical_query_string("x=a b&y=a+b&z=a%20b"),
        "x=a%20b&y=a%20b&z=a%20b"
    );
    assert_eq!(
        canonical_query_string("k=%7E-._~&e=%3D%26&u=%C3%A9"),
        "e=%3D%26&k=~-._~&u=%C3%A9"
    );
    assert_eq!(
        canonical_query_string("roleArn=arn:aws:iam::1:role/r"),
        "roleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr"
    );
    // Encoded names sort by their encoded form; empty pieces are dropped.
    assert_eq!(canonical_query_string("&&B=1&a=2&"), "B=1&a=2");
}

#[test]
fn canonical_headers_fold_whitespace_and_join_repeats() {
    assert_eq!(canonical_header_value("  a   b \t c  "), "a b c");
    assert_eq!(canonical_header_value(""), "");
    let mut headers = http::HeaderMap::new();
    headers.append("X-Multi", "one".parse().unwrap());
    headers.append("x-multi", "  two   words ".parse().unwrap());
    headers.insert("Host", "example.com".parse().unwrap());
    headers.insert("User-Agent", "ignored".parse().unwrap());
    headers.insert("Content-Length", "0".parse().unwrap());
    let canonical = canonical_request(
        "GET",
        &"https://example.com".parse().unwrap(),
        &headers,
        b"",
    )
    .unwrap();
    assert_eq!(
        canonical.canonical,
        "GET\n/\n\nhost:example.com\nx-multi:one,two words\n\nhost;x-multi\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn canonical_path_encodes_each_segment() {
    assert_eq!(canonical_path("/sessions"), "/sessions");
    assert_eq!(canonical_path("/a b/c~d"), "/a%20b/c~d");
    // Already-encoded input is encoded again, as SigV4 does for non-S3 services.
    assert_eq!(canonical_path("/a%2Fb"), "/a%252Fb");
}

#[test]
fn non_ascii_header_values_cannot_be_signed() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
    let mut request = json_post("https://h.example/sessions", "{}");
    request.headers_mut().insert(
        "x-odd",
        http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
    );
    let err = signer
        .sign(&mut request, "r", "rolesanywhere", SystemTime::now())
        .unwrap_err();
    assert!(err.to_string().contains("x-odd"), "{err}");
}

#[test]
fn host_header_keeps_a_non_default_port() {
    let identity = TestIdentity::self_signed(&PKCS_ECDSA_P256_SHA256, None);
    let signer = signer_for(&identity, &identity.key_pkcs8_pem()).unwrap();
    let mut request = json_post("http://127.0.0.1:8443/sessions", "{}");
    signer
        .sign(&mut request, "r", "rolesanywhere", SystemTime::now())
        .unwrap();
    assert_eq!(request.headers()["host"], "127.0.0.1:8443");
    let verified =
        verify_request("POST", "/sessions", "", request.headers(), request.body()).unwrap();
    assert!(verified.signed_headers.contains("host"));
}

#[test]
fn compressed_certificate_points_match_their_uncompressed_form() {
    let x = [1u8, 2, 3];
    let even_y = [4u8, 5, 6];
    let odd_y = [4u8, 5, 7];
    let uncompressed = |y: &[u8]| [&[4u8][..], &x, y].concat();
    assert!(ec_points_equal(
        &uncompressed(&even_y),
        &[&[2u8][..], &x].concat()
    ));
    assert!(!ec_points_equal(
        &uncompressed(&even_y),
        &[&[3u8][..], &x].concat()
    ));
    assert!(ec_points_equal(
        &uncompressed(&odd_y),
        &[&[3u8][..], &x].concat()
    ));
    assert!(!ec_points_equal(
        &uncompressed(&odd_y),
        &[&[3u8][..], &[1u8, 2, 4][..]].concat()
    ));
    assert!(!ec_points_equal(&uncompressed(&odd_y), &[]));
}
