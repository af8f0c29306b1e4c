//! Password authentication of clients (`client_auth = "password"`): SCRAM-SHA-256 in
//! PostgreSQL's SASL messages, as a PostgreSQL server runs it.
//!
//! ```text
//! proxy:  AuthenticationSASL ["SCRAM-SHA-256"]
//! client: SASLInitialResponse "SCRAM-SHA-256" client-first-message
//! proxy:  AuthenticationSASLContinue server-first-message
//! client: SASLResponse client-final-message
//! proxy:  AuthenticationSASLFinal server-final-message
//! ```
//!
//! The AuthenticationOk that completes the login is sent later, with the upstream's login
//! reply. The exchange itself lives in [`proxy_auth::scram`].

use crate::net::framing::{read_message, FramingError};
use crate::net::messages::client_sasl::{
    authentication_sasl, authentication_sasl_continue, authentication_sasl_final,
    SaslInitialResponse, SaslInitialResponseError,
};
use bytes::BytesMut;
use proxy_auth::principal::{LocalAuthMethod, LocalUser};
use proxy_auth::scram::{LocalUsers, ScramError, SCRAM_SHA_256};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// Longest SASL message accepted from a client. Real SCRAM messages are around 100 bytes.
const MAX_SASL_MESSAGE: usize = 4096;

/// Why password authentication did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordAuthError {
    #[error("client disconnected during authentication")]
    Disconnected,
    #[error("i/o error during authentication: {0}")]
    Io(#[source] io::Error),
    #[error("login timeout expired during authentication")]
    Timeout,
    #[error("expected a SASL response, got message type {0:?}")]
    UnexpectedMessage(char),
    #[error("invalid SASL message: {0}")]
    Framing(FramingError),
    #[error("malformed SASL initial response: {0}")]
    InitialResponse(SaslInitialResponseError),
    /// A mechanism that was not offered (`SCRAM-SHA-256-PLUS` included).
    #[error("client selected SASL mechanism {0:?}, which was not offered")]
    Mechanism(String),
    #[error("{0}")]
    Scram(#[from] ScramError),
}

impl PasswordAuthError {
    /// The client failed to prove a password (unknown user or wrong password), as opposed
    /// to breaking the protocol or leaving.
    pub fn is_authentication_failure(&self) -> bool {
        matches!(self, PasswordAuthError::Scram(e) if e.is_authentication_failure())
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

/// Runs SCRAM-SHA-256 with the client for the startup `user`, within `deadline`.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    users: &LocalUsers,
    user: &str,
    deadline: Instant,
    locked: bool,
) -> Result<LocalUser, PasswordAuthError> {
    match timeout_at(deadline, exchange(stream, users, user, locked)).await {
        Ok(result) => result,
        Err(_) => Err(PasswordAuthError::Timeout),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    users: &LocalUsers,
    user: &str,
    locked: bool,
) -> Result<LocalUser, PasswordAuthError> {
    let mut out = BytesMut::new();
    authentication_sasl(&[SCRAM_SHA_256], &mut out);
    send(stream, &mut out).await?;

    let initial = read_sasl(stream).await?;
    let initial =
        SaslInitialResponse::parse(&initial).map_err(PasswordAuthError::InitialResponse)?;
    if initial.mechanism != SCRAM_SHA_256.as_bytes() {
        return Err(PasswordAuthError::Mechanism(
            String::from_utf8_lossy(initial.mechanism).into_owned(),
        ));
    }
    let mut scram = users.begin(user);
    if locked {
        scram.lock();
    }
    // RFC 4422 lets a client leave out its initial response; the server then asks for it
    // with an empty challenge.
    let client_first = match initial.data {
        Some(data) => data.to_vec(),
        None => {
            authentication_sasl_continue(b"", &mut out);
            send(stream, &mut out).await?;
            read_sasl(stream).await?.to_vec()
        }
    };
    let server_first = scram.client_first(&client_first)?;
    authentication_sasl_continue(server_first.as_bytes(), &mut out);
    send(stream, &mut out).await?;

    let client_final = read_sasl(stream).await?;
    let server_final = scram.client_final(&client_final)?;
    authentication_sasl_final(server_final.as_bytes(), &mut out);
    send(stream, &mut out).await?;
    Ok(LocalUser {
        name: user.to_owned(),
        method: LocalAuthMethod::Password,
    })
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
) -> Result<(), PasswordAuthError> {
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}

/// The body of the client's next `p` message.
async fn read_sasl<S: AsyncRead + Unpin>(stream: &mut S) -> Result<BytesMut, PasswordAuthError> {
    let message = read_message(stream, MAX_SASL_MESSAGE)
        .await
        .map_err(|e| match e {
            FramingError::Closed => PasswordAuthError::Disconnected,
            FramingError::Io(e) => e.into(),
            other => PasswordAuthError::Framing(other),
        })?;
    if message.tag != b'p' {
        return Err(PasswordAuthError::UnexpectedMessage(message.tag as char));
    }
    Ok(message.body)
}
