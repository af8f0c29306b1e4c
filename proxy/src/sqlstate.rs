//! Every SQLSTATE the proxy sends, by PostgreSQL's condition name (Appendix A of the
//! PostgreSQL manual). The one place codes are spelled out; [`crate::refusal`] decides which
//! error gets which.

/// `protocol_violation`: malformed or unexpected messages.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// `sqlclient_unable_to_establish_sqlconnection`: the upstream could not be reached,
/// trusted or logged in to, or AWS would not issue a credential.
pub const UNABLE_TO_CONNECT: &str = "08001";
/// `connection_failure`: the upstream connection broke mid-login.
pub const CONNECTION_FAILURE: &str = "08006";
/// `invalid_authorization_specification`: who the client is may not log in this way.
pub const INVALID_AUTHORIZATION: &str = "28000";
/// `invalid_password`: password authentication failed.
pub const INVALID_PASSWORD: &str = "28P01";
/// `feature_not_supported`.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `invalid_parameter_value`: a startup parameter the upstream login cannot carry.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// `too_many_connections`: a connection limit.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `configuration_limit_exceeded`: a client identity spent its budget of AWS calls.
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
/// `admin_shutdown`: the proxy ended the session (drain, lifetime, certificate expiry).
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `cannot_connect_now`: the server is starting up (recognised from the upstream, never
/// sent).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// `idle_session_timeout`.
pub const IDLE_SESSION_TIMEOUT: &str = "57P05";
/// `internal_error`: an upstream ErrorResponse that carried no code.
pub const INTERNAL_ERROR: &str = "XX000";
