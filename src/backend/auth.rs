//! Authentication and authorization in one place for both ports (REST reaches the backend as
//! gRPC): a tower layer on the gRPC server that turns each call's `Authorization: Bearer
//! <token>` into a [`Caller`] in the request's extensions, refusing the call (UNAUTHENTICATED)
//! under `--auth iam` when there is no valid token; and [`Access`], which every RPC asks, with
//! the resource it found, whether the caller holds the permission the one table
//! ([`permission_of`]) names for it (PERMISSION_DENIED naming the permission otherwise).
//! Health, reflection, endpoint discovery and the token exchange itself stay open.
//!
//! With `--rate-limit`, the same layer counts each caller's calls (governor's GCRA, keyed by the
//! subject, or by the client's address for a call without a valid token; health is not
//! counted): past the rate and its burst a call is RESOURCE_EXHAUSTED with a
//! `google.rpc.RetryInfo` that says when to come back (the gateway's 429 has it as
//! `Retry-After`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use prost::Message;
use tonic::Status;
use tower::{Layer, Service};

use super::tokens::{Caller, Subject, TokenError, Tokens};
use crate::iam::{AuthMode, Permission, allows};
use crate::pb::yandex::cloud::access::AccessBinding;

/// Calls anyone may make, with or without a token.
fn open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
        || path.starts_with("/yandex.cloud.endpoint.ApiEndpointService/")
        || path == "/yandex.cloud.iam.v1.IamTokenService/Create"
        || path == "/yandex.cloud.iam.v1.IamTokenService/Revoke"
}

/// The bearer token of an `authorization` value, if it carries one.
fn bearer(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The opaque id of a caller without a valid token (`--auth none`): stable for the same
/// `Authorization` value (FNV-1a, stable across runs), `anonymous` without one; never the
/// value itself.
fn anonymous(value: Option<&[u8]>) -> Caller {
    let Some(value) = value else {
        return Caller::Anonymous("anonymous".into());
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    Caller::Anonymous(format!("aje{h:016x}"))
}

/// The most calls a caller may make per second, and how many at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls per second.
    pub per_second: NonZeroU32,
    /// Calls in a burst.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `N/s`, with a burst of N.
    pub fn parse(text: &str) -> Result<Self, String> {
        let n = text
            .strip_suffix("/s")
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(NonZeroU32::new)
            .ok_or_else(|| format!("{text:?}: expected calls per second, as 100/s"))?;
        Ok(Self {
            per_second: n,
            burst: n,
        })
    }
}

/// Callers' call rates.
pub(crate) struct Limiter {
    limit: RateLimit,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        Self {
            limit,
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        }
    }

    /// Counts one call of `key`; RESOURCE_EXHAUSTED with a RetryInfo when it is over its rate.
    fn check(&self, key: &str) -> Result<(), Status> {
        // The key is copied only when the caller has no state yet (its first call, or its
        // first since it was forgotten).
        let outcome = self.limiter.check_key(&key.to_string());
        let Err(not_until) = outcome else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let wait = wait.max(Duration::from_millis(1));
        let info = crate::pb::google::rpc::RetryInfo {
            retry_delay: Some(pbjson_types::Duration {
                seconds: wait.as_secs() as i64,
                nanos: wait.subsec_nanos() as i32,
            }),
        };
        let details = crate::pb::google::rpc::Status {
            code: tonic::Code::ResourceExhausted as i32,
            message: String::new(),
            details: vec![crate::json::Any::pack(&info)],
        };
        Err(Status::with_details(
            tonic::Code::ResourceExhausted,
            format!(
                "rate limit of {} calls per second (burst {}) exceeded; retry in {} ms",
                self.limit.per_second,
                self.limit.burst,
                wait.as_millis().max(1)
            ),
            details.encode_to_vec().into(),
        ))
    }

    /// Forgets callers whose state is back to a full burst: the map holds the callers of the
    /// last moments, not every caller ever seen.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The key a call is counted under: its subject, or for a call without a valid token, the
/// client's address. Calls that come through the gateway of this process (the in-process
/// connection has no address) are counted by the client address the gateway forwarded.
fn rate_key<B>(caller: &Caller, req: &http::Request<B>) -> String {
    if let Caller::Subject(s) = caller {
        return format!("subject:{}", s.id);
    }
    let peer = req
        .extensions()
        .get::<crate::net::Peer>()
        .and_then(|p| p.remote);
    match peer {
        Some(addr) => format!("ip:{}", addr.ip()),
        None => {
            let forwarded = req
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .unwrap_or("in-process");
            format!("ip:{forwarded}")
        }
    }
}

/// What the auth layer and every RPC share.
pub(crate) struct Access {
    pub(crate) mode: AuthMode,
    pub(crate) tokens: Tokens,
    pub(crate) limiter: Option<Limiter>,
}

impl Access {
    /// The caller of a call with this `authorization` value on `path`, or the status that
    /// refuses the call.
    fn caller(&self, path: &str, authorization: Option<&[u8]>) -> Result<Caller, Status> {
        let checked = match authorization.map(bearer) {
            Some(Some(token)) => self.tokens.check(token),
            Some(None) => Err(TokenError::Refused(
                "Authorization must be \"Bearer <IAM token>\"".into(),
            )),
            None => Err(TokenError::Refused(
                "the call needs an IAM token: Authorization: Bearer <token>".into(),
            )),
        };
        match (checked, self.mode) {
            (Ok(subject), _) => Ok(Caller::Subject(subject)),
            (Err(TokenError::Store(e)), AuthMode::Iam) => Err(e.into()),
            (Err(TokenError::Refused(why)), AuthMode::Iam) if !open(path) => {
                Err(Status::unauthenticated(why))
            }
            (Err(_), _) => Ok(anonymous(authorization)),
        }
    }

    /// Whether `caller` may use `permission` on a resource of `folder_id` with these access
    /// bindings of its own (an image's); PERMISSION_DENIED naming the permission and the
    /// resource otherwise. Anyone may, under `--auth none`.
    pub(crate) fn require(
        &self,
        caller: &Caller,
        permission: Permission,
        resource: &str,
        folder_id: &str,
        own: &[AccessBinding],
    ) -> Result<(), Status> {
        if self.mode == AuthMode::None {
            return Ok(());
        }
        let allowed = match caller {
            Caller::Subject(Subject { id, kind }) => {
                allows(self.tokens.config().folder(folder_id), id, kind, permission)
                    || allows(own, id, kind, permission)
            }
            Caller::Anonymous(_) => false,
        };
        if allowed {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "permission {} is required on {resource} (folder {folder_id})",
            permission.name()
        )))
    }
}

/// The caller a call's handler sees (the layer always puts one in).
pub(crate) fn caller_of(extensions: &http::Extensions) -> Caller {
    extensions
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller::Anonymous("anonymous".into()))
}

/// Adds [`Authenticate`] to a service.
#[derive(Clone)]
pub(super) struct AuthLayer(pub(super) Arc<Access>);

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            access: self.0.clone(),
        }
    }
}

/// Puts each call's [`Caller`] in its extensions, or answers UNAUTHENTICATED.
#[derive(Clone)]
pub(super) struct Authenticate<S> {
    inner: S,
    access: Arc<Access>,
}

/// Most of a refused call's request read before the refusal is sent (this API's requests are
/// far smaller); past it the refusal goes at once.
const DRAIN_BYTES: usize = 64 * 1024;

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let authorization = req.headers().get("authorization").map(|v| v.as_bytes());
        let counted = !path.starts_with("/grpc.health.v1.");
        let admitted = self.access.caller(path, authorization).and_then(|caller| {
            if let Some(limiter) = self.access.limiter.as_ref().filter(|_| counted) {
                limiter.check(&rate_key(&caller, &req))?;
            }
            Ok(caller)
        });
        match admitted {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                // The request is read first: an HTTP/2 reply that ends before the request
                // does is followed by a reset of the stream, which a client may report in
                // place of the reply (the gateway saw 503s for these 401s).
                let body = http_body_util::Limited::new(req.into_body(), DRAIN_BYTES);
                Box::pin(async move {
                    let _ = http_body_util::BodyExt::collect(body).await;
                    Ok(status.into_http())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_and_anything_else_is_not() {
        assert_eq!(bearer(b"Bearer t1.abc"), Some("t1.abc"));
        assert_eq!(bearer(b"bearer  t1.abc "), Some("t1.abc"));
        assert_eq!(bearer(b"Basic dXNlcg=="), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"t1.abc"), None);
        assert_eq!(bearer(&[0xff, b' ', b'x']), None);
        assert_ne!(anonymous(Some(b"Bearer a")), anonymous(Some(b"Bearer b")));
        assert_eq!(anonymous(None), Caller::Anonymous("anonymous".into()));
    }
}
