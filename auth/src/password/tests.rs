use super::*;

const SCRAM_PENCIL: &str = "SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=";

fn users(list: &[(&str, PasswordVerifier)]) -> LocalUsers {
    LocalUsers::new(list.iter().map(|(n, v)| (n.to_string(), v.clone())))
}

fn scram() -> PasswordVerifier {
    PasswordVerifier::parse(SCRAM_PENCIL).unwrap()
}

fn md5(user: &str) -> PasswordVerifier {
    PasswordVerifier::Md5(md5::hash_password(user, "pencil"))
}

fn sha256() -> PasswordVerifier {
    PasswordVerifier::RedshiftSha256(redshift_digest::hash_password("pencil"))
}

#[test]
fn each_user_is_challenged_with_the_method_of_its_verifier() {
    let users = users(&[("a", scram()), ("b", md5("b")), ("c", sha256())]);
    assert_eq!(users.begin("a").method(), PasswordMethod::ScramSha256);
    assert_eq!(users.begin("b").method(), PasswordMethod::Md5);
    assert_eq!(users.begin("c").method(), PasswordMethod::RedshiftSha256);
}

#[test]
fn unknown_users_get_the_listeners_most_common_method() {
    let only_md5 = users(&[("a", md5("a")), ("b", md5("b"))]);
    assert_eq!(only_md5.begin("nobody").method(), PasswordMethod::Md5);
    let mostly_digest = users(&[("a", md5("a")), ("b", sha256()), ("c", sha256())]);
    assert_eq!(
        mostly_digest.begin("nobody").method(),
        PasswordMethod::RedshiftSha256
    );
    // A tie goes to the method listed first.
    let tie = users(&[("a", sha256()), ("b", scram())]);
    assert_eq!(tie.begin("nobody").method(), PasswordMethod::RedshiftSha256);
    assert_eq!(
        users(&[]).begin("nobody").method(),
        PasswordMethod::ScramSha256
    );
}

#[test]
fn an_unknown_users_digest_salt_is_stable_per_name_and_shaped_like_a_real_one() {
    let salt = |users: &LocalUsers, user: &str| match users.begin(user) {
        PasswordLogin::RedshiftSha256(c) => c.salt().to_vec(),
        other => panic!("{:?}", other.method()),
    };
    let verifier = sha256();
    let a = users(&[("etl", verifier.clone())]);
    let b = users(&[("etl", verifier)]);
    assert_eq!(salt(&a, "nobody"), salt(&b, "nobody"));
    assert_ne!(salt(&a, "nobody"), salt(&a, "somebody"));
    assert_eq!(salt(&a, "nobody").len(), salt(&a, "etl").len());
}

#[test]
fn an_unknown_digest_user_fails_at_the_proof_like_a_wrong_password() {
    let users = users(&[("etl", sha256())]);
    let PasswordLogin::RedshiftSha256(challenge) = users.begin("nobody") else {
        panic!("expected the digest method")
    };
    let salted = redshift_digest::salted_password(b"pencil", challenge.salt());
    let nonce = b"1764979200000";
    let answer = redshift_digest::digest(&salted, challenge.server_nonce(), nonce);
    let err = challenge.verify(&answer, nonce).unwrap_err();
    assert_eq!(err, PasswordError::UnknownUser);
    assert!(err.is_authentication_failure());
}

#[test]
fn debug_output_reveals_no_verifier() {
    let users = users(&[("etl", sha256())]);
    let shown = format!("{users:?} {:?}", users.begin("etl"));
    assert!(!shown.contains("sha256|"), "{shown}");
}
