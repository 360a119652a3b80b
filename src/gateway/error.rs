//! One error type for the whole gateway and the one place that maps it to HTTP: routing errors,
//! transcoding errors and backend statuses all leave as a `google.rpc.Status` JSON body
//! `{"code", "message", "details"}` with the status from the standard gRPC -> HTTP table.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use tonic::Code;

use crate::json::Any;
use crate::pb::google::rpc;

/// Metadata key the gateway's codec sets on a status for a reply it could not decode.
pub(crate) const UNDECODABLE_REPLY: &str = "x-gateway-undecodable-reply";

/// Everything that can go wrong between an HTTP request and its reply.
#[derive(Debug)]
pub enum GatewayError {
    /// No route has this path.
    NotFound,
    /// Routes have this path, but not with this method.
    MethodNotAllowed {
        /// The methods that would match.
        allow: Vec<Method>,
    },
    /// The request cannot be turned into a gRPC request; the message says what and where.
    BadRequest(String),
    /// The body is larger than the limit.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The gateway is shutting down and takes no new work.
    Draining,
    /// The client did not send the whole body in time.
    RequestTimeout,
    /// The backend could not be reached.
    Unavailable,
    /// The backend answered with something that is not a valid reply (undecodable message,
    /// protocol error).
    BadBackendReply,
    /// The backend did not answer in time.
    DeadlineExceeded,
    /// A status the backend returned.
    Backend(tonic::Status),
    /// A fault of the gateway itself; the message is logged, not sent.
    Internal(String),
}

impl GatewayError {
    /// A 400 naming what was wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    /// Classifies a status from the tonic client: transport failures are the gateway's
    /// UNAVAILABLE / DEADLINE_EXCEEDED, anything else is the backend's answer.
    pub fn from_client_status(status: tonic::Status) -> Self {
        // A status made on this side carries its cause: a transport error as its source, or
        // the undecodable-reply mark of the gateway's codec. Anything else is the backend's
        // own answer and passes through. Local causes are for the operator's log only.
        let transport = std::error::Error::source(&status).map(|e| format!("{e:?}"));
        let undecodable = status.metadata().contains_key(UNDECODABLE_REPLY);
        if transport.is_none() && !undecodable {
            return Self::Backend(status);
        }
        let error = match &transport {
            _ if undecodable => Self::BadBackendReply,
            Some(t) if t.contains("TimeoutExpired") => Self::DeadlineExceeded,
            _ => Self::Unavailable,
        };
        // The code the client is answered with, not tonic's local one (UNKNOWN for a transport
        // error), so that the log and the reply agree.
        tracing::warn!(code = ?error.parts().0, message = status.message(), cause = ?transport, "backend call failed");
        error
    }

    /// The gRPC code, message and details this error is reported with.
    fn parts(&self) -> (Code, String, Vec<Any>) {
        match self {
            Self::NotFound => (Code::NotFound, "no route matches this path".into(), vec![]),
            Self::MethodNotAllowed { allow } => {
                let allow: Vec<&str> = allow.iter().map(Method::as_str).collect();
                (
                    Code::Unimplemented,
                    format!(
                        "method not allowed on this path; allowed: {}",
                        allow.join(", ")
                    ),
                    vec![],
                )
            }
            Self::BadRequest(m) => (Code::InvalidArgument, m.clone(), vec![]),
            Self::PayloadTooLarge { limit } => (
                Code::ResourceExhausted,
                format!("request body is larger than the limit of {limit} bytes"),
                vec![],
            ),
            Self::RequestTimeout => (
                Code::DeadlineExceeded,
                "the request body did not arrive in time".into(),
                vec![],
            ),
            Self::BadBackendReply => (
                Code::Unavailable,
                "the backend sent a reply the gateway cannot read".into(),
                vec![],
            ),
            Self::Draining => (
                Code::Unavailable,
                "the gateway is shutting down".into(),
                vec![],
            ),
            Self::Unavailable => (
                Code::Unavailable,
                "the backend is unavailable".into(),
                vec![],
            ),
            Self::DeadlineExceeded => (
                Code::DeadlineExceeded,
                "the backend did not answer in time".into(),
                vec![],
            ),
            Self::Backend(status) => {
                let details = rpc::Status::decode(status.details())
                    .map(|s| s.details)
                    .unwrap_or_default();
                (status.code(), status.message().to_string(), details)
            }
            Self::Internal(_) => (Code::Internal, "internal gateway error".into(), vec![]),
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.parts().1)
    }
}

/// The standard gRPC code -> HTTP status table (google.rpc.Code comments, grpc-gateway,
/// Envoy). 499 is "client closed request".
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "gateway fault");
        }
        let (code, message, details) = self.parts();
        let http = match &self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => http_status(code),
        };
        let body = rpc::Status {
            code: code as i32,
            message,
            details,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|e| {
            // Only an undecodable detail can fail here; drop the details rather than the error.
            tracing::warn!(error = %e, "error details could not be rendered");
            serde_json::to_vec(&rpc::Status {
                details: vec![],
                ..body
            })
            .expect("a Status without details always renders")
        });
        let mut resp = (http, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::MethodNotAllowed { allow } = &self {
            let allow: Vec<&str> = allow.iter().map(Method::as_str).collect();
            if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_transport_failure_is_logged_with_the_code_the_client_gets() {
        // What the tonic client makes of a dial that failed: UNKNOWN, with the cause as source.
        let status = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "backend connection failed: Connection refused",
        )));
        assert_eq!(status.code(), Code::Unknown);
        let error = std::cell::RefCell::new(None);
        let logged = crate::telemetry::tests::log_lines(false, &|| {
            *error.borrow_mut() = Some(GatewayError::from_client_status(status.clone()));
        });
        assert!(matches!(error.take(), Some(GatewayError::Unavailable)));
        assert!(logged.contains("backend call failed"), "{logged}");
        assert!(logged.contains("code=Unavailable"), "{logged}");
        assert!(!logged.contains("Unknown"), "{logged}");
    }

    #[test]
    fn the_standard_table() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in table {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn routing_errors_have_their_own_statuses_and_the_same_body() {
        let r = GatewayError::MethodNotAllowed {
            allow: vec![Method::GET, Method::PATCH],
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, PATCH");
        assert_eq!(
            GatewayError::NotFound.into_response().status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            GatewayError::PayloadTooLarge { limit: 1 }
                .into_response()
                .status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            GatewayError::Unavailable.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            GatewayError::Internal("secret".into())
                .into_response()
                .status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
