//! The Connect protocol's unary calls on the REST port (connectrpc.com/docs/protocol): `POST
//! /<package>.<Service>/<Method>` with the request message as the body, `application/json`
//! (proto3 JSON) or `application/proto` (binary), and the reply message in the same codec. Every
//! method of the route table's services is reachable so, by its gRPC path, beside its REST
//! routes; it is transcoded exactly as a REST call is (the same JSON rules, metadata policy,
//! deadline and limits).
//!
//! Connect's own parts: `Connect-Timeout-Ms` is the call's deadline (capped, as `Grpc-Timeout`
//! is); an error is `{"code": "not_found", "message": ..., "details": [...]}` with the HTTP
//! status of Connect's table; reply metadata comes back as plain headers and trailers as
//! `Trailer-<name>` headers. GET requests (for methods marked `NO_SIDE_EFFECTS`) and streaming
//! are not served.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use tonic::Code;

use super::error::GatewayError;
use super::media::Format;

/// The codec of a Connect unary request, by its `Content-Type`; `None` when it is not one.
pub(crate) fn codec(headers: &HeaderMap) -> Option<Format> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    match ct.split(';').next().unwrap_or_default().trim() {
        "application/json" => Some(Format::Json),
        "application/proto" => Some(Format::Proto),
        _ => None,
    }
}

/// Connect's name of a code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status Connect gives a code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
    }
}

/// A Connect error reply: the JSON error body with the status of Connect's table, the
/// details as `{"type": "google.rpc.BadRequest", "value": "<base64 of the message>"}`.
pub(crate) fn error_response(e: &GatewayError) -> Response {
    let (code, message, details) = e.parts();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let details: Vec<serde_json::Value> = details
        .iter()
        .map(|any| {
            serde_json::json!({
                "type": any.type_url.rsplit('/').next().unwrap_or_default(),
                "value": b64.encode(&any.value),
            })
        })
        .collect();
    let mut body = serde_json::json!({"code": code_name(code), "message": message});
    if !details.is_empty() {
        body["details"] = serde_json::Value::Array(details);
    }
    let mut r = (http_status(code), body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The deadline a `Connect-Timeout-Ms` asks for (at most 10 digits).
pub(crate) fn timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    let text = headers.get("connect-timeout-ms")?.to_str().ok()?;
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().map(std::time::Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeouts_are_at_most_ten_digits() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                "connect-timeout-ms",
                HeaderValue::from_str(v).expect("value"),
            );
            timeout(&h)
        };
        assert_eq!(with("1500"), Some(std::time::Duration::from_millis(1500)));
        assert_eq!(
            with("9999999999"),
            Some(std::time::Duration::from_millis(9_999_999_999))
        );
        for bad in ["", "12345678901", "-1", "1.5", "soon"] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_code_has_a_name_and_a_status() {
        assert_eq!(code_name(Code::NotFound), "not_found");
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(code_name(Code::Cancelled), "canceled");
    }
}
