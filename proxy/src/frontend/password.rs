//! Password authentication of clients (`client_auth = "password"`), in the method the
//! user's verifier selects, as a PostgreSQL or Redshift server runs it:
//!
//! ```text
//! SCRAM-SHA-256:  R 10 ["SCRAM-SHA-256"]     p SASLInitialResponse
//!                 R 11 server-first          p client-final
//!                 R 12 server-final
//! md5:            R 5 salt                   p "md5..."
//! SHA-256 digest: R 13 0 salt server-nonce   d digest client-nonce
//! ```
//!
//! The AuthenticationOk that completes the login is sent later, with the upstream's login
//! reply. The exchanges themselves live in [`proxy_auth::password`].

use crate::net::framing::{read_message, FramingError};
use crate::net::messages::password_response::{PasswordParseError, SaslInitialResponseError};
use crate::net::messages::{
    AuthenticationRequest, Decode, DigestResponse, Encode, PasswordMessage, SaslInitialResponse,
    SaslResponse,
};
use bytes::BytesMut;
use proxy_auth::password::md5::Md5Challenge;
use proxy_auth::password::redshift_digest::{DigestChallenge, ALGORITHM_SHA256};
use proxy_auth::password::scram::{ScramExchange, SCRAM_SHA_256};
use proxy_auth::password::{LocalUsers, PasswordError, PasswordLogin};
use proxy_auth::principal::{LocalAuthMethod, LocalUser};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// Longest password-phase message accepted from a client. Real SCRAM messages are around
/// 100 bytes, md5 answers 36, digest answers about 60.
const MAX_PASSWORD_MESSAGE: usize = 4096;

/// Why password authentication did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordAuthError {
    #[error("client disconnected during authentication")]
    Disconnected,
    #[error("i/o error during authentication: {0}")]
    Io(#[source] io::Error),
    #[error("login timeout expired during authentication")]
    Timeout,
    #[error("expected a {expected} message, got message type {got:?}")]
    UnexpectedMessage { expected: &'static str, got: char },
    #[error("invalid password message: {0}")]
    Framing(FramingError),
    #[error("malformed SASL initial response: {0}")]
    InitialResponse(SaslInitialResponseError),
    #[error("malformed password response: {0}")]
    Response(PasswordParseError),
    /// A mechanism that was not offered (`SCRAM-SHA-256-PLUS` included).
    #[error("client selected SASL mechanism {0:?}, which was not offered")]
    Mechanism(String),
    #[error("{0}")]
    Password(#[from] PasswordError),
}

impl PasswordAuthError {
    /// The client failed to prove a password (unknown user or wrong password), as opposed
    /// to breaking the protocol or leaving.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(self, PasswordAuthError::Password(e) if e.is_authentication_failure())
    }
}

impl From<io::Error> for PasswordAuthError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => PasswordAuthError::Disconnected,
            _ => PasswordAuthError::Io(e),
        }
    }
}

/// Runs the login of the startup `user` within `deadline`.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    users: &LocalUsers,
    user: &str,
    deadline: Instant,
    locked: bool,
) -> Result<LocalUser, PasswordAuthError> {
    let mut login = users.begin(user);
    if locked {
        login.lock();
    }
    let method = login.method();
    let exchange = async {
        match login {
            PasswordLogin::Scram(exchange) => scram(stream, exchange).await,
            PasswordLogin::Md5(challenge) => md5(stream, &challenge).await,
            PasswordLogin::RedshiftSha256(challenge) => digest(stream, &challenge).await,
        }
    };
    match timeout_at(deadline, exchange).await {
        Ok(result) => result?,
        Err(_) => return Err(PasswordAuthError::Timeout),
    }
    Ok(LocalUser {
        name: user.to_owned(),
        method: LocalAuthMethod::Password,
        password_method: Some(method),
    })
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    mut scram: ScramExchange,
) -> Result<(), PasswordAuthError> {
    let mechanisms = vec![SCRAM_SHA_256];
    send(stream, AuthenticationRequest::Sasl { mechanisms }).await?;

    let initial = read(stream, SaslInitialResponse::TAG, "SASL response").await?;
    let initial =
        SaslInitialResponse::decode(&initial).map_err(PasswordAuthError::InitialResponse)?;
    if initial.mechanism != SCRAM_SHA_256.as_bytes() {
        return Err(PasswordAuthError::Mechanism(
            String::from_utf8_lossy(initial.mechanism).into_owned(),
        ));
    }
    // RFC 4422 lets a client leave out its initial response; the server then asks for it
    // with an empty challenge.
    let client_first = match initial.data {
        Some(data) => data.to_vec(),
        None => {
            send(stream, AuthenticationRequest::SaslContinue { data: b"" }).await?;
            let response = read(stream, SaslResponse::TAG, "SASL response").await?;
            let Ok(SaslResponse { data }) = SaslResponse::decode(&response);
            data.to_vec()
        }
    };
    let server_first = scram.client_first(&client_first)?;
    let data = server_first.as_bytes();
    send(stream, AuthenticationRequest::SaslContinue { data }).await?;

    let client_final = read(stream, SaslResponse::TAG, "SASL response").await?;
    let Ok(SaslResponse { data }) = SaslResponse::decode(&client_final);
    let server_final = scram.client_final(data)?;
    let data = server_final.as_bytes();
    send(stream, AuthenticationRequest::SaslFinal { data }).await
}

async fn md5<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    challenge: &Md5Challenge,
) -> Result<(), PasswordAuthError> {
    let salt = challenge.salt();
    send(stream, AuthenticationRequest::Md5Password { salt }).await?;
    let body = read(stream, PasswordMessage::TAG, "password").await?;
    let answer = PasswordMessage::decode(&body).map_err(PasswordAuthError::Response)?;
    Ok(challenge.verify(answer.password)?)
}

async fn digest<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    challenge: &DigestChallenge,
) -> Result<(), PasswordAuthError> {
    let request = AuthenticationRequest::Digest {
        algorithm: ALGORITHM_SHA256,
        salt: challenge.salt(),
        server_nonce: challenge.server_nonce(),
    };
    send(stream, request).await?;
    let body = read(stream, DigestResponse::TAG, "digest response").await?;
    let answer = DigestResponse::decode(&body).map_err(PasswordAuthError::Response)?;
    Ok(challenge.verify(answer.digest, answer.client_nonce)?)
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: AuthenticationRequest<'_>,
) -> Result<(), PasswordAuthError> {
    stream.write_all(&request.encode()).await?;
    stream.flush().await?;
    Ok(())
}

/// The body of the client's next message, which must be a `tag` message.
async fn read<S: AsyncRead + Unpin>(
    stream: &mut S,
    tag: u8,
    expected: &'static str,
) -> Result<BytesMut, PasswordAuthError> {
    let message = read_message(stream, MAX_PASSWORD_MESSAGE)
        .await
        .map_err(|e| match e {
            FramingError::Closed => PasswordAuthError::Disconnected,
            FramingError::Io(e) => e.into(),
            other => PasswordAuthError::Framing(other),
        })?;
    if message.tag != tag {
        return Err(PasswordAuthError::UnexpectedMessage {
            expected,
            got: message.tag as char,
        });
    }
    Ok(message.body)
}

#[cfg(test)]
mod tests;
