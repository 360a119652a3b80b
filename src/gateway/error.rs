//! One error type for the whole gateway and the one place that maps it to HTTP: routing errors,
//! transcoding errors and backend statuses all leave as a `google.rpc.Status` JSON body
//! `{"code", "message", "details"}` with the status from the standard gRPC -> HTTP table.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use tonic::Code;

use crate::json::Any;
use crate::net::UpstreamError;
use crate::pb::google::rpc;

/// The request body encodings the gateway decodes (see `edge.rs`).
const ACCEPTED_ENCODINGS: &str = "gzip, br, zstd";

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
    /// The body is sent with a `Content-Encoding` the gateway cannot decode.
    UnsupportedEncoding(String),
    /// The body's `Content-Type` is not one the gateway reads.
    UnsupportedMediaType(String),
    /// The reply cannot be given in the format the client accepts.
    NotAcceptable(String),
    /// The headers the gateway would forward to the backend as metadata are larger than the
    /// limit.
    MetadataTooLarge {
        /// The limit in bytes, counted as HTTP/2 counts a header list.
        limit: usize,
    },
    /// The gateway is shutting down and takes no new work.
    Draining,
    /// The client did not send the whole body in time.
    RequestTimeout,
    /// The backend says it is not serving (its health check).
    NotServing,
    /// The call failed on the gateway's side of the backend: no connection, a broken one, its
    /// deadline, or a reply the gateway cannot take.
    Upstream(UpstreamError),
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

    /// Classifies the status a backend call failed with: one made on this side carries an
    /// [`UpstreamError`] as its source; anything else is the backend's own answer and passes
    /// through.
    pub(crate) fn from_call(status: tonic::Status) -> Self {
        match UpstreamError::of(&status) {
            Some(e) => Self::Upstream(e.clone()),
            None => Self::Backend(status),
        }
    }

    /// Logs what the operator should know of this error, once, where the request ends:
    /// backend failures with the code the client is answered with (not tonic's local one), and
    /// faults of the gateway. A client's own mistake is only in the access log.
    pub(crate) fn report(&self) {
        match self {
            Self::Upstream(cause) => {
                tracing::warn!(code = ?self.parts().0, %cause, "backend call failed");
            }
            Self::Internal(detail) => tracing::error!(%detail, "gateway fault"),
            _ => {}
        }
    }

    /// The status a gRPC client is given for this error (gRPC-Web, Connect).
    pub(crate) fn status(&self) -> tonic::Status {
        let (code, message, _) = self.parts();
        tonic::Status::new(code, message)
    }

    /// The gRPC code, message and details this error is reported with.
    pub(crate) fn parts(&self) -> (Code, String, Vec<Any>) {
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
            Self::UnsupportedEncoding(encoding) => (
                Code::InvalidArgument,
                format!(
                    "the request body's Content-Encoding {encoding:?} is not supported; use {ACCEPTED_ENCODINGS} or none"
                ),
                vec![],
            ),
            Self::UnsupportedMediaType(media) => (
                Code::InvalidArgument,
                format!(
                    "the request body's Content-Type {media:?} is not supported; send application/json or application/x-protobuf"
                ),
                vec![],
            ),
            Self::NotAcceptable(why) => (Code::InvalidArgument, why.clone(), vec![]),
            Self::MetadataTooLarge { limit } => (
                Code::ResourceExhausted,
                format!(
                    "the headers forwarded to the backend (Authorization, Idempotency-Key, X-Request-Id, X-Client-Request-Id, Grpc-Metadata-*) are larger than the limit of {limit} bytes"
                ),
                vec![],
            ),
            Self::RequestTimeout => (
                Code::DeadlineExceeded,
                "the request body did not arrive in time".into(),
                vec![],
            ),
            Self::Draining => (
                Code::Unavailable,
                "the gateway is shutting down".into(),
                vec![],
            ),
            Self::NotServing
            | Self::Upstream(UpstreamError::Dial(_) | UpstreamError::Broken(_)) => (
                Code::Unavailable,
                "the backend is unavailable".into(),
                vec![],
            ),
            Self::Upstream(UpstreamError::Undecodable(_)) => (
                Code::Unavailable,
                "the backend sent a reply the gateway cannot read".into(),
                vec![],
            ),
            Self::Upstream(UpstreamError::Deadline(_)) => (
                Code::DeadlineExceeded,
                "the backend did not answer in time".into(),
                vec![],
            ),
            // The gateway's own limit, not the client's mistake: a 5xx.
            Self::Upstream(UpstreamError::ReplyTooLarge { limit }) => (
                Code::Internal,
                format!("the backend's reply is larger than the gateway's limit of {limit} bytes"),
                vec![],
            ),
            Self::Backend(status) => {
                let details = rpc::Status::decode(status.details())
                    .map(|s| s.details)
                    .unwrap_or_default();
                (status.code(), status.message().to_string(), details)
            }
            Self::Upstream(UpstreamError::Request(_)) | Self::Internal(_) => {
                (Code::Internal, "internal gateway error".into(), vec![])
            }
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
pub(crate) fn http_status(code: Code) -> StatusCode {
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

/// `Retry-After` (whole seconds, rounded up) of a status that carries a `google.rpc.RetryInfo`,
/// as a rate limit's RESOURCE_EXHAUSTED does.
fn retry_after(details: &[crate::json::Any]) -> Option<HeaderValue> {
    let info = details
        .iter()
        .find(|d| d.type_url.ends_with("/google.rpc.RetryInfo"))
        .and_then(|d| <rpc::RetryInfo as prost::Message>::decode(d.value.as_slice()).ok())?;
    let delay = info.retry_delay?;
    let seconds = delay.seconds.max(0) + i64::from(delay.nanos > 0);
    HeaderValue::from_str(&seconds.max(1).to_string()).ok()
}

/// The JSON of a `google.rpc.Status`.
fn status_json(body: &rpc::Status) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|e| {
        // Only an undecodable detail can fail here; drop the details rather than the error.
        tracing::warn!(error = %e, "error details could not be rendered");
        serde_json::to_vec(&rpc::Status {
            details: vec![],
            ..body.clone()
        })
        .expect("a Status without details always renders")
    })
}

impl GatewayError {
    /// The `google.rpc.Status` JSON of this error (the body of its REST reply).
    pub(crate) fn status_json(&self) -> Vec<u8> {
        let (code, message, details) = self.parts();
        status_json(&rpc::Status {
            code: code as i32,
            message,
            details,
        })
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (code, message, details) = self.parts();
        // NOT_FOUND is 404 by the table already.
        let http = match &self {
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedEncoding(_) | Self::UnsupportedMediaType(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::MetadataTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => http_status(code),
        };
        let body = rpc::Status {
            code: code as i32,
            message,
            details,
        };
        let bytes = status_json(&body);
        let mut resp = (http, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::UnsupportedEncoding(_) = &self {
            // RFC 7694 §3: the encodings that would have been taken.
            resp.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static(ACCEPTED_ENCODINGS),
            );
        }
        if let Some(after) = retry_after(&body.details) {
            resp.headers_mut().insert(header::RETRY_AFTER, after);
        }
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
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let status = tonic::Status::from_error(Box::new(UpstreamError::Dial(
            crate::net::DialError::Failed(std::sync::Arc::new(refused)),
        )));
        assert_eq!(status.code(), Code::Unknown);
        let error = GatewayError::from_call(status);
        let logged = crate::telemetry::tests::log_lines(false, &|| error.report());
        assert!(matches!(
            error,
            GatewayError::Upstream(UpstreamError::Dial(_))
        ));
        assert_eq!(
            error.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
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
            GatewayError::NotServing.into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            GatewayError::Internal("secret".into())
                .into_response()
                .status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn each_limit_has_its_status_and_details_reach_the_body() {
        for (error, status, code) in [
            (GatewayError::RequestTimeout, 408, 4),
            (GatewayError::MetadataTooLarge { limit: 8 }, 431, 8),
            (GatewayError::PayloadTooLarge { limit: 8 }, 413, 8),
            (
                GatewayError::Upstream(UpstreamError::ReplyTooLarge { limit: 8 }),
                500,
                13,
            ),
        ] {
            let r = error.into_response();
            assert_eq!(r.status().as_u16(), status);
            let bytes = futures_body(r);
            let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(body["code"], code, "{body}");
        }
        let details = rpc::Status {
            code: Code::InvalidArgument as i32,
            message: "bad".into(),
            details: vec![Any::pack(&rpc::BadRequest {
                field_violations: vec![rpc::bad_request::FieldViolation {
                    field: "name".into(),
                    description: "is bad".into(),
                }],
            })],
        };
        let status = tonic::Status::with_details(
            Code::InvalidArgument,
            "bad",
            details.encode_to_vec().into(),
        );
        let bytes = futures_body(GatewayError::from_call(status).into_response());
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            body["details"][0]["fieldViolations"][0]["field"], "name",
            "{body}"
        );
        // A detail that cannot be rendered is dropped; the error itself still goes out.
        let garbled = rpc::Status {
            code: Code::InvalidArgument as i32,
            message: "bad".into(),
            details: vec![Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: vec![0xff, 0xff, 0xff],
            }],
        };
        let status = tonic::Status::with_details(
            Code::InvalidArgument,
            "bad",
            garbled.encode_to_vec().into(),
        );
        let r = GatewayError::from_call(status).into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(&futures_body(r)).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"code": 3, "message": "bad", "details": []})
        );
    }

    #[test]
    fn faults_of_the_gateway_are_logged_and_a_client_mistake_is_not() {
        let logged = crate::telemetry::tests::log_lines(false, &|| {
            GatewayError::Internal("the disk is on fire".into()).report();
        });
        assert!(logged.contains("gateway fault"), "{logged}");
        assert!(logged.contains("the disk is on fire"), "{logged}");
        let quiet = crate::telemetry::tests::log_lines(false, &|| {
            GatewayError::bad_request("no").report();
            GatewayError::NotFound.report();
        });
        assert_eq!(quiet, "");
    }

    /// The whole body of a reply built in memory.
    fn futures_body(r: Response) -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(axum::body::to_bytes(r.into_body(), usize::MAX))
            .expect("a body in memory")
            .to_vec()
    }
}
