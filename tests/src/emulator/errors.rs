//! AWS error responses, rendered in each service's wire protocol.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The wire protocol of a service, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// IAM Roles Anywhere (restJson1): `{"message"}` + `x-amzn-errortype`.
    RestJson,
    /// Redshift (awsQuery): `<ErrorResponse><Error>...`.
    Query,
    /// Redshift Serverless (awsJson1_1): `{"__type", "message"}`.
    Json11,
}

/// An AWS error: status, error code, human message. Messages never contain secrets.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Throttling as the given protocol's services report it (research aws-iam.md §4):
    /// query-protocol services (Redshift) answer 400 `Throttling` "Rate exceeded"; the
    /// Redshift Serverless model gives `ThrottlingException` HTTP 429; Roles Anywhere's model
    /// has no throttling shape, so its 429 `ThrottlingException` is UNCONFIRMED.
    pub(crate) fn throttled(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Query => Self::bad_request("Throttling", "Rate exceeded"),
            Protocol::RestJson | Protocol::Json11 => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException",
                "Rate exceeded",
            ),
        }
    }

    /// A server-side failure as the given protocol's services report it.
    pub(crate) fn server_error(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Query => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is unavailable. Please try again later.",
            ),
            Protocol::RestJson | Protocol::Json11 => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "The request processing has failed because of an unknown error, exception or failure.",
            ),
        }
    }

    /// Renders the error for `protocol`, tagged with `request_id`.
    pub(crate) fn into_response(self, protocol: Protocol, request_id: &str) -> Response {
        let (content_type, body) = match protocol {
            Protocol::RestJson => (
                "application/json",
                serde_json::json!({ "message": self.message }).to_string(),
            ),
            Protocol::Json11 => (
                "application/x-amz-json-1.1",
                serde_json::json!({ "__type": self.code, "message": self.message }).to_string(),
            ),
            Protocol::Query => {
                let kind = if self.status.is_server_error() {
                    "Receiver"
                } else {
                    "Sender"
                };
                (
                    "text/xml",
                    format!(
                        "<ErrorResponse xmlns=\"http://redshift.amazonaws.com/doc/2012-12-01/\">\
                         <Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                         <RequestId>{request_id}</RequestId></ErrorResponse>",
                        code = xml_escape(self.code),
                        message = xml_escape(&self.message),
                        request_id = xml_escape(request_id),
                    ),
                )
            }
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if protocol != Protocol::Query {
            headers.insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        }
        insert_request_id(headers, request_id);
        response
    }
}

/// Adds `x-amzn-requestid`, the header all three SDK protocols read the request id from.
pub(crate) fn insert_request_id(headers: &mut axum::http::HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
}

/// Escapes text for an XML element body.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_neutralises_markup() {
        assert_eq!(xml_escape("a<b>&'\""), "a&lt;b&gt;&amp;&apos;&quot;");
    }

    #[tokio::test]
    async fn query_error_has_the_wrapped_shape_with_request_id() {
        let response = ApiError::bad_request("InvalidParameterValue", "bad <value>")
            .into_response(Protocol::Query, "req-1");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-amzn-requestid"], "req-1");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains(
            "<Error><Type>Sender</Type><Code>InvalidParameterValue</Code><Message>bad &lt;value&gt;</Message></Error>"
        ));
        assert!(body.contains("<RequestId>req-1</RequestId>"));
    }

    #[tokio::test]
    async fn json11_error_carries_type_and_message() {
        let response =
            ApiError::server_error(Protocol::Json11).into_response(Protocol::Json11, "r");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-amzn-errortype"], "InternalFailure");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["__type"], "InternalFailure");
    }
}
