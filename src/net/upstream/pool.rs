//! Several backends behind one client: calls are spread over the backends that are up, in turn,
//! and a call the backend certainly did not process moves on to the next one.
//!
//! What counts as "certainly not processed": the connection could not be made ([`UpstreamError::
//! Dial`]: refused, timed out, TLS failed), and a stream the backend refused or caught by its
//! GOAWAY, which each [`Upstream`] already sends once more, to a new connection of the same
//! backend; when that backend is gone, the new dial fails, and the call moves on here. Any other
//! failure (a broken connection, a reset, a deadline) may come from a backend that acted on the
//! call, and is the caller's answer: nothing is resent.
//!
//! A backend whose dial failed is down: calls skip it until a `grpc.health.v1` check of it
//! answers SERVING. A task of the pool checks the down ones every [`PROBE_EVERY`], and every
//! backend, up or down, every [`CHECK_EVERY`], so that one that reports NOT_SERVING (a replica
//! that lost its database) is skipped too. With every backend down, calls try them all anyway:
//! the pool never refuses a call on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tonic::body::Body;

use super::{Reply, Upstream, UpstreamError};

/// How often the backends that are down are checked.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How often every backend is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long one health check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct Member {
    upstream: Upstream,
    up: AtomicBool,
    /// `gateway_backend_up{backend}`: 1 while calls go to it.
    gauge: metrics::Gauge,
}

struct Shared {
    members: Vec<Member>,
    next: AtomicUsize,
    checker: AtomicBool,
}

/// The backends of one gateway. Cheap to clone; with one backend it is that backend's
/// [`Upstream`], with nothing added to a call.
#[derive(Clone)]
pub(crate) struct Pool(Arc<Shared>);

impl Pool {
    /// A pool of `upstreams` (at least one), all taken to be up.
    pub(crate) fn new(upstreams: Vec<Upstream>) -> Self {
        assert!(!upstreams.is_empty(), "a pool has a backend");
        let several = upstreams.len() > 1;
        Self(Arc::new(Shared {
            members: upstreams
                .into_iter()
                .map(|upstream| {
                    // One series per configured backend: the label is the operator's, not a
                    // client's.
                    // One backend is never checked: it has no such series.
                    let gauge = if several {
                        metrics::gauge!(
                            crate::telemetry::BACKEND_UP,
                            "backend" => upstream.origin().to_string()
                        )
                    } else {
                        metrics::Gauge::noop()
                    };
                    gauge.set(1.0);
                    Member {
                        upstream,
                        up: AtomicBool::new(true),
                        gauge,
                    }
                })
                .collect(),
            next: AtomicUsize::new(0),
            checker: AtomicBool::new(false),
        }))
    }

    /// Scheme and authority of the first backend (each call is sent with its own backend's).
    pub(crate) fn origin(&self) -> http::Uri {
        self.0.members[0].upstream.origin()
    }

    /// Starts the health checks, once, from the first call (on the runtime that serves it).
    fn start_checks(&self) {
        if self.0.members.len() < 2 || self.0.checker.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut since_full = Duration::ZERO;
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(shared) = weak.upgrade() else {
                    return; // the gateway is gone
                };
                since_full += PROBE_EVERY;
                let full = since_full >= CHECK_EVERY;
                if full {
                    since_full = Duration::ZERO;
                }
                for member in &shared.members {
                    if full || !member.up.load(Ordering::Relaxed) {
                        let serving = serving(&member.upstream).await;
                        let was = member.up.swap(serving, Ordering::Relaxed);
                        member.gauge.set(f64::from(u8::from(serving)));
                        if was != serving {
                            tracing::warn!(
                                backend = %member.upstream.origin(),
                                up = serving,
                                "backend {}",
                                if serving { "is back" } else { "is not serving" }
                            );
                        }
                    }
                }
            }
        });
    }

    /// Whether any backend answers its health check with SERVING.
    pub(crate) async fn any_serving(&self) -> bool {
        for member in &self.0.members {
            if serving(&member.upstream).await {
                return true;
            }
        }
        false
    }

    async fn dispatch(
        self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Reply>, UpstreamError> {
        let members = &self.0.members;
        self.start_checks();
        let n = members.len();
        let start = self.0.next.fetch_add(1, Ordering::Relaxed);
        if request.extensions().get::<super::StreamingCall>().is_some() {
            // A stream's body is sent as it comes and cannot go to a second backend: the
            // first one up takes it.
            let member = (0..n)
                .map(|i| &members[(start + i) % n])
                .find(|m| m.up.load(Ordering::Relaxed))
                .unwrap_or(&members[start % n]);
            let (mut head, body) = request.into_parts();
            let origin = member.upstream.origin();
            let mut uri = head.uri.clone().into_parts();
            uri.scheme = origin.scheme().cloned();
            uri.authority = origin.authority().cloned();
            if let Ok(uri) = http::Uri::from_parts(uri) {
                head.uri = uri;
            }
            let request = http::Request::from_parts(head, body);
            return tower::ServiceExt::oneshot(member.upstream.clone(), request).await;
        }
        let (head, body) = request.into_parts();
        // Whole, so that it can go to another backend.
        let body = body
            .collect()
            .await
            .map_err(|e| UpstreamError::Request(Arc::new(e)))?
            .to_bytes();
        let mut order: Vec<&Member> = (0..n).map(|i| &members[(start + i) % n]).collect();
        // The ones up first, in turn; the ones down after them, as a last resort.
        order.sort_by_key(|m| !m.up.load(Ordering::Relaxed));
        let mut last = None;
        for member in order {
            let mut head = head.clone();
            let origin = member.upstream.origin();
            let mut uri = head.uri.clone().into_parts();
            uri.scheme = origin.scheme().cloned();
            uri.authority = origin.authority().cloned();
            if let Ok(uri) = http::Uri::from_parts(uri) {
                head.uri = uri;
            }
            let attempt =
                http::Request::from_parts(head, Body::new(http_body_util::Full::new(body.clone())));
            match tower::ServiceExt::oneshot(member.upstream.clone(), attempt).await {
                Err(e @ UpstreamError::Dial(_)) => {
                    member.gauge.set(0.0);
                    if member.up.swap(false, Ordering::Relaxed) {
                        tracing::warn!(backend = %origin, error = %e, "backend down; calls go to the others");
                    }
                    last = Some(e);
                }
                result => return result,
            }
        }
        Err(last.expect("a pool has a backend, and each failure is kept"))
    }
}

/// Whether `upstream` answers `grpc.health.v1.Health/Check` (the whole server) with SERVING.
async fn serving(upstream: &Upstream) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::with_origin(
        upstream.clone(),
        upstream.origin(),
    );
    let check = client.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

impl tower::Service<http::Request<Body>> for Pool {
    type Response = http::Response<Reply>;
    type Error = UpstreamError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, UpstreamError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), UpstreamError>> {
        std::task::Poll::Ready(Ok(())) // each backend's readiness is awaited in its call
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.0.members.as_slice() {
            // One backend: its own call, nothing added.
            [only] => tower::Service::call(&mut only.upstream.clone(), request),
            _ => Box::pin(self.clone().dispatch(request)),
        }
    }
}
