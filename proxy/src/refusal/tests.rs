use super::*;
use crate::backend::{Phase, TlsFailure};
use crate::frontend::password::PasswordAuthError;

fn code(refusal: Refusal) -> Option<String> {
    refusal.wire().sqlstate().map(str::to_string)
}

#[test]
fn an_unknown_local_user_reads_exactly_like_a_wrong_password() {
    let wire = |e| {
        Refusal::Frontend(FrontendErrorKind::Password {
            user: "x".into(),
            method: PasswordMethod::ScramSha256,
            error: PasswordAuthError::Password(e),
        })
        .wire()
    };
    let (unknown, wrong) = (
        wire(PasswordError::UnknownUser),
        wire(PasswordError::WrongPassword),
    );
    assert_eq!(unknown.response, wrong.response);
    assert_eq!(unknown.reason, wrong.reason);
    let response = wrong.response.expect("told");
    assert_eq!(response.code, "28P01");
    assert_eq!(
        response.message,
        "password authentication failed for user \"x\""
    );
    assert_eq!(
        code(Refusal::Frontend(FrontendErrorKind::Password {
            user: "x".into(),
            method: PasswordMethod::ScramSha256,
            error: PasswordAuthError::Password(PasswordError::ChannelBindingNotOffered),
        })),
        Some("08P01".into())
    );
}

#[test]
fn a_failed_password_reads_as_the_server_the_client_speaks_to_would_say_it() {
    let code_for = |method| {
        code(Refusal::Frontend(FrontendErrorKind::Password {
            user: "x".into(),
            method,
            error: PasswordAuthError::Password(PasswordError::WrongPassword),
        }))
    };
    // PostgreSQL's invalid_password for the PostgreSQL methods, Redshift's 28000 for the
    // digest only Redshift servers ask for.
    assert_eq!(code_for(PasswordMethod::ScramSha256), Some("28P01".into()));
    assert_eq!(code_for(PasswordMethod::Md5), Some("28P01".into()));
    assert_eq!(
        code_for(PasswordMethod::RedshiftSha256),
        Some("28000".into())
    );
}

#[test]
fn nobody_is_told_when_nobody_can_read_it() {
    for kind in [
        FrontendErrorKind::Disconnected,
        FrontendErrorKind::TlsNotConfigured,
        FrontendErrorKind::Startup(StartupError::BadCancelRequest { len: 3 }),
    ] {
        assert!(Refusal::Frontend(kind).wire().response.is_none());
    }
    assert!(Refusal::ClientLeft(std::io::ErrorKind::BrokenPipe.into())
        .wire()
        .response
        .is_none());
}

#[test]
fn a_listener_without_tls_refusing_a_tls_handshake_is_audited_as_a_handshake_failure() {
    let wire = Refusal::Frontend(FrontendErrorKind::TlsNotConfigured).wire();
    assert_eq!(wire.reason, RefusalReason::TlsHandshake);
}

#[test]
fn limits_are_53300() {
    for limit in [
        LimitExceeded::Total,
        LimitExceeded::Listener,
        LimitExceeded::Identity,
    ] {
        assert_eq!(code(Refusal::Limit(limit)), Some("53300".into()));
    }
}

#[test]
fn credential_failures_say_whether_aws_refused_or_was_unavailable() {
    let denied = Refusal::Credentials(CredentialError::Denied("AccessDenied".into())).wire();
    assert_eq!(denied.sqlstate(), Some("28000"));
    assert_eq!(denied.login_outcome, Some("credentials_failed"));
    let unavailable = Refusal::Credentials(CredentialError::Unavailable("throttled".into())).wire();
    assert_eq!(unavailable.sqlstate(), Some("08001"));
    // AWS's own text stays in the operator's log.
    assert!(!denied.response.unwrap().message.contains("AccessDenied"));
}

#[test]
fn upstream_failures_keep_the_upstream_code_and_hide_addresses() {
    let wire = |e| Refusal::Upstream(e).wire().response.expect("told");
    let refused = wire(UpstreamError::AuthFailed {
        sqlstate: "28000".into(),
        message: "password authentication failed for user \"IAMA:alice\"".into(),
    });
    assert_eq!(refused.code, "28000");
    let unreachable = wire(UpstreamError::Connect {
        addr: "10.1.2.3:5439".into(),
        source: std::io::ErrorKind::ConnectionRefused.into(),
    });
    assert_eq!(unreachable.code, "08001");
    assert!(!unreachable.message.contains("10.1.2.3"));
    let tls = wire(UpstreamError::Tls {
        host: "cluster.example".into(),
        failure: TlsFailure::NameMismatch,
        source: std::io::ErrorKind::InvalidData.into(),
    });
    assert!(
        tls.message.contains("not valid for the host name"),
        "{}",
        tls.message
    );
    assert_eq!(
        wire(UpstreamError::Closed {
            phase: Phase::Login
        })
        .code,
        "08006"
    );
}

#[test]
fn sessions_the_proxy_ends_say_why_in_postgresql_terms() {
    assert_eq!(stop_response(StopReason::Shutdown).code, "57P01");
    assert_eq!(stop_response(StopReason::Idle).code, "57P05");
    assert_eq!(
        stop_response(StopReason::CertificateExpired).message,
        "terminating connection: the client certificate has expired"
    );
}
