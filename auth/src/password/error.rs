//! [`PasswordError`]: why a local user's password login failed.

/// Why a login failed. `Display` is for the operator and tells an unknown user from a
/// wrong password, which the client never learns (the proxy's refusal mapping answers
/// both alike).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("malformed {method} message: {detail}")]
    Malformed {
        method: &'static str,
        detail: &'static str,
    },
    /// The client demands channel binding (`p=`), which was not offered.
    #[error("the client requires channel binding, which the proxy does not offer")]
    ChannelBindingNotOffered,
    #[error("the client uses an authorization identity, which is not supported")]
    AuthorizationIdentity,
    /// `c=` of the final message does not repeat the first message's GS2 header.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    #[error("SCRAM nonce does not match")]
    NonceMismatch,
    #[error("SCRAM message out of order")]
    OutOfOrder,
    #[error("no such local user")]
    UnknownUser,
    #[error("wrong password")]
    WrongPassword,
    /// The user or the client's address is locked after repeated failures: refused
    /// whatever the proof, exactly like a wrong password.
    #[error("locked after repeated failures")]
    Locked,
}

impl PasswordError {
    /// Whether the client simply failed to prove the password (as opposed to breaking the
    /// protocol).
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            PasswordError::UnknownUser | PasswordError::WrongPassword | PasswordError::Locked
        )
    }

    pub(crate) fn scram(detail: &'static str) -> Self {
        PasswordError::Malformed {
            method: "SCRAM",
            detail,
        }
    }
}
