use super::*;
use crate::password::{LocalUsers, PasswordLogin};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use proxy_config::PasswordVerifier;

/// `rolpassword` of a role created with `PASSWORD 'pencil'` on PostgreSQL 15.
const PG_PENCIL: &str = "SCRAM-SHA-256$4096:NxzLLSnOL+kfSJxu5E0Vug==$i8/jTNcjsoMWQ7k0fiBfKdWAdDYZJpV9C4MJUIGvyKE=:n+326DETgU6ZGtfT7+oeq8hnKskmglb7EK37hajcxoA=";

/// The SCRAM exchange of a user whose verifier (or listener's mock) is SCRAM.
trait BeginScram {
    fn begin_scram(&self, user: &str) -> ScramExchange;
}

impl BeginScram for LocalUsers {
    fn begin_scram(&self, user: &str) -> ScramExchange {
        match self.begin(user) {
            PasswordLogin::Scram(exchange) => exchange,
            other => panic!("expected SCRAM, got {:?}", other.method()),
        }
    }
}

fn users(list: &[(&str, &str)]) -> LocalUsers {
    LocalUsers::new(
        list.iter()
            .map(|(n, v)| (n.to_string(), PasswordVerifier::parse(v).unwrap())),
    )
}

/// Runs tokio-postgres's SCRAM client (`password`, offering `binding`) against an exchange
/// for `user`; the error is the server's.
fn login(
    users: &LocalUsers,
    user: &str,
    password: &str,
    binding: ChannelBinding,
) -> Result<(), PasswordError> {
    let mut exchange = users.begin_scram(user);
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let server_first = exchange.client_first(client.message())?;
    client
        .update(server_first.as_bytes())
        .expect("the client accepts the server-first-message");
    let server_final = exchange.client_final(client.message())?;
    client
        .finish(server_final.as_bytes())
        .expect("the client verifies the server's signature");
    Ok(())
}

#[test]
fn rfc7677_example_exchange() {
    let verifier = hash_password_with_salt(
        "pencil",
        &STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
        4096,
    );
    let users = LocalUsers::new([("user".to_string(), PasswordVerifier::ScramSha256(verifier))]);
    let mut exchange = users.begin_scram("user");
    let server_first = exchange
        .client_first_with_nonce(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
    assert_eq!(
        server_first,
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let server_final = exchange
        .client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(
        server_final,
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn a_verifier_made_by_postgresql_accepts_its_password_only() {
    let users = users(&[("etl", PG_PENCIL)]);
    assert_eq!(
        login(&users, "etl", "pencil", ChannelBinding::unsupported()),
        Ok(())
    );
    assert_eq!(
        login(&users, "etl", "pencil2", ChannelBinding::unsupported()),
        Err(PasswordError::WrongPassword)
    );
}

#[test]
fn hash_password_round_trips_through_a_real_client() {
    let verifier = hash_password("correct horse", DEFAULT_ITERATIONS);
    assert_eq!(verifier.iterations, 4096);
    assert_eq!(verifier.salt.len(), 16);
    let text = verifier.to_text();
    assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
    let users = users(&[("etl", &text)]);
    assert_eq!(
        login(
            &users,
            "etl",
            "correct horse",
            ChannelBinding::unsupported()
        ),
        Ok(())
    );
    assert_eq!(
        login(
            &users,
            "etl",
            "Correct horse",
            ChannelBinding::unsupported()
        ),
        Err(PasswordError::WrongPassword)
    );
    assert_ne!(
        hash_password("correct horse", DEFAULT_ITERATIONS).salt,
        verifier.salt,
        "salts are random"
    );
}

#[test]
fn passwords_are_saslprep_normalised_like_postgresql_does() {
    // U+00A0 (no-break space) maps to a space under SASLprep; libpq normalises the same way.
    let verifier = hash_password("a\u{a0}b", DEFAULT_ITERATIONS);
    let users = LocalUsers::new([("u".to_string(), PasswordVerifier::ScramSha256(verifier))]);
    assert_eq!(
        login(&users, "u", "a b", ChannelBinding::unsupported()),
        Ok(())
    );
}

#[test]
fn a_client_that_could_bind_but_was_not_offered_binding_is_accepted() {
    // `y`: the client supports channel binding and believes the server does not, which is
    // true: only SCRAM-SHA-256 is offered.
    let users = users(&[("etl", PG_PENCIL)]);
    assert_eq!(
        login(&users, "etl", "pencil", ChannelBinding::unrequested()),
        Ok(())
    );
}

#[test]
fn a_client_demanding_channel_binding_is_refused() {
    let users = users(&[("etl", PG_PENCIL)]);
    let err = login(
        &users,
        "etl",
        "pencil",
        ChannelBinding::tls_server_end_point(vec![0; 32]),
    )
    .unwrap_err();
    assert_eq!(err, PasswordError::ChannelBindingNotOffered);
}

#[test]
fn unknown_user_fails_exactly_like_a_wrong_password() {
    let users = users(&[("etl", PG_PENCIL)]);
    let unknown = login(&users, "nobody", "pencil", ChannelBinding::unsupported()).unwrap_err();
    let wrong = login(&users, "etl", "nope", ChannelBinding::unsupported()).unwrap_err();
    assert_eq!(unknown, PasswordError::UnknownUser);
    assert_eq!(wrong, PasswordError::WrongPassword);
    // What the client reads is the same for both: proxy/src/refusal/tests.rs.
    assert!(unknown.is_authentication_failure() && wrong.is_authentication_failure());
}

#[test]
fn unknown_users_get_a_stable_salt_of_the_real_shape() {
    let first = |users: &LocalUsers, user: &str| {
        users
            .begin_scram(user)
            .client_first(b"n,,n=,r=abc")
            .unwrap()
    };
    let salt_and_iterations =
        |server_first: &str| server_first.split_once(",s=").unwrap().1.to_string();
    let a = users(&[("etl", PG_PENCIL)]);
    let b = users(&[("etl", PG_PENCIL)]);
    let real = salt_and_iterations(&first(&a, "etl"));
    let mock = salt_and_iterations(&first(&a, "nobody"));
    // Same across instances built from the same configuration (restarts)...
    assert_eq!(mock, salt_and_iterations(&first(&b, "nobody")));
    // ...different per user, and shaped like a real one (16-byte salt, same iterations).
    assert_ne!(mock, salt_and_iterations(&first(&a, "somebody")));
    let (real_salt, real_i) = real.split_once(",i=").unwrap();
    let (mock_salt, mock_i) = mock.split_once(",i=").unwrap();
    assert_eq!(real_i, mock_i);
    assert_eq!(real_salt.len(), mock_salt.len());
}

#[test]
fn malformed_client_first_messages_are_refused_the_same_for_any_user() {
    let users = users(&[("etl", PG_PENCIL)]);
    let cases: &[(&[u8], PasswordError)] = &[
        (
            b"",
            PasswordError::scram("Comma expected after the channel-binding flag."),
        ),
        (
            b"x,,n=,r=abc",
            PasswordError::scram("Unexpected channel-binding flag in client-first-message."),
        ),
        (
            b"p=tls-server-end-point,,n=,r=abc",
            PasswordError::ChannelBindingNotOffered,
        ),
        (b"n,a=admin,n=,r=abc", PasswordError::AuthorizationIdentity),
        (
            b"n,,m=ext,n=,r=abc",
            PasswordError::scram("Mandatory extensions are not supported."),
        ),
        (
            b"n,,r=abc",
            PasswordError::scram("Expected the user name attribute \"n\"."),
        ),
        (
            b"n,,n=",
            PasswordError::scram("Expected the nonce attribute \"r\"."),
        ),
        (
            b"n,,n=,r=",
            PasswordError::scram("The client nonce is not printable."),
        ),
        (
            b"n,,n=,r=a b",
            PasswordError::scram("The client nonce is not printable."),
        ),
        (
            b"n,,n=,r=abc,,",
            PasswordError::scram("Malformed extension in client-first-message."),
        ),
        (
            b"n,,n=,r=abc\0",
            PasswordError::scram("The message contains a NUL byte."),
        ),
        (
            b"n,,n=\xff,r=abc",
            PasswordError::scram("The message is not valid UTF-8."),
        ),
    ];
    for (message, expected) in cases {
        for user in ["etl", "nobody"] {
            let got = users.begin_scram(user).client_first(message).unwrap_err();
            assert_eq!(
                &got,
                expected,
                "{user}: {}",
                String::from_utf8_lossy(message)
            );
        }
    }
}

/// Drives an exchange up to the client-final-message; returns it with the combined nonce.
fn after_first(users: &LocalUsers, user: &str, flag: &str) -> (ScramExchange, String) {
    let mut exchange = users.begin_scram(user);
    let server_first = exchange
        .client_first(format!("{flag},,n=,r=clientnonce").as_bytes())
        .unwrap();
    let nonce = server_first
        .strip_prefix("r=")
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    (exchange, nonce)
}

#[test]
fn malformed_or_mismatched_client_final_messages_are_refused() {
    let users = users(&[("etl", PG_PENCIL)]);
    let proof = STANDARD.encode([7u8; 32]);
    let biws = "biws"; // base64("n,,")
    let cases: Vec<(String, PasswordError)> = vec![
        (
            "r=x,p=y".into(),
            PasswordError::scram("Expected the channel binding attribute \"c\"."),
        ),
        (
            format!("c={biws}"),
            PasswordError::scram("Expected the nonce attribute \"r\"."),
        ),
        (
            format!("c={biws},r=NONCE"),
            PasswordError::scram(
                "Expected the proof attribute \"p\" at the end of client-final-message.",
            ),
        ),
        (
            format!("c={biws},r=NONCE,p={proof},x=1"),
            PasswordError::scram(
                "Expected the proof attribute \"p\" at the end of client-final-message.",
            ),
        ),
        (
            format!("c={biws},r=NONCE,1,p={proof}"),
            PasswordError::scram("Malformed extension in client-final-message."),
        ),
        (
            format!("c=!!,r=NONCE,p={proof}"),
            PasswordError::scram("Invalid base64 in the channel binding attribute."),
        ),
        (
            format!("c={biws},r=NONCE,p=c2hvcnQ="),
            PasswordError::scram("Malformed proof in client-final-message."),
        ),
        // base64("y,,"): the header of the first message was "n,,".
        (
            format!("c=eSws,r=NONCE,p={proof}"),
            PasswordError::ChannelBindingMismatch,
        ),
        // Channel-binding data smuggled into c= of a client that sent "n".
        (
            format!("c={},r=NONCE,p={proof}", STANDARD.encode(b"n,,junk")),
            PasswordError::ChannelBindingMismatch,
        ),
        (
            format!("c={biws},r=othernonce,p={proof}"),
            PasswordError::NonceMismatch,
        ),
    ];
    for (message, expected) in cases {
        for user in ["etl", "nobody"] {
            let (mut exchange, nonce) = after_first(&users, user, "n");
            let message = message.replace("NONCE", &nonce);
            let got = exchange.client_final(message.as_bytes()).unwrap_err();
            assert_eq!(got, expected, "{user}: {message}");
        }
    }
    // A well-formed message with a wrong proof is an authentication failure.
    let (mut exchange, nonce) = after_first(&users, "etl", "n");
    assert_eq!(
        exchange.client_final(format!("c={biws},r={nonce},p={proof}").as_bytes()),
        Err(PasswordError::WrongPassword)
    );
}

#[test]
fn messages_out_of_order_are_refused() {
    let users = users(&[("etl", PG_PENCIL)]);
    let mut exchange = users.begin_scram("etl");
    assert_eq!(
        exchange.client_final(b"c=biws,r=x,p=y"),
        Err(PasswordError::OutOfOrder)
    );
    let (mut exchange, _) = after_first(&users, "etl", "n");
    assert_eq!(
        exchange.client_first(b"n,,n=,r=abc"),
        Err(PasswordError::OutOfOrder)
    );
}

#[test]
fn debug_output_reveals_no_verifier() {
    let users = users(&[("etl", PG_PENCIL)]);
    let text = format!("{users:?} {:?}", users.begin_scram("etl"));
    assert!(!text.contains("NxzLL"), "{text}");
}

#[test]
fn random_messages_never_panic() {
    use rand::{Rng, SeedableRng};
    let users = users(&[("etl", PG_PENCIL)]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5c4a);
    let alphabet = b"npyr=ca,SCRAM-biws0123456789+/\0\xff";
    for _ in 0..2000 {
        let len = rng.random_range(0..64);
        let junk: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let mut exchange = users.begin_scram("etl");
        if exchange.client_first(&junk).is_ok() {
            let _ = exchange.client_final(&junk);
        }
        let (mut exchange, _) = after_first(&users, "etl", "y");
        assert!(exchange.client_final(&junk).is_err());
    }
}
