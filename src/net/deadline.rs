//! Deadlines of gRPC calls: the `grpc-timeout` header of the gRPC over HTTP/2 protocol (at most
//! 8 ASCII digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`), and a layer that ends a call at the
//! sooner of the client's deadline and the server's own limit, with DEADLINE_EXCEEDED as a
//! trailers-only reply (what grpc-go's server answers when a call's context expires).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

/// The duration a `grpc-timeout` value names, or `None` when it is not one (the protocol
/// allows at most 8 digits, so a value never overflows).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A `grpc-timeout` value for `d`: microseconds while they fit the 8 digits the protocol
/// allows, milliseconds beyond (up to 27 hours).
pub fn grpc_timeout_value(d: Duration) -> http::HeaderValue {
    let micros = d.as_micros();
    let text = if micros <= 99_999_999 {
        format!("{micros}u")
    } else {
        format!("{}m", d.as_millis().min(99_999_999))
    };
    http::HeaderValue::from_str(&text).expect("digits and a unit are a valid header value")
}

/// Ends each call at the sooner of its `grpc-timeout` and `limit`.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    limit: Duration,
}

impl DeadlineLayer {
    /// No call runs longer than `limit`, whatever deadline its client asks for.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            limit: self.limit,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S, B, RB> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let limit = asked.map_or(self.limit, |asked| asked.min(self.limit));
        let call = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, call).await {
                Ok(reply) => reply,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "the call did not finish within its deadline of {} ms",
                    limit.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values_follow_the_protocol() {
        let table: &[(&str, Option<Duration>)] = &[
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("1n", Some(Duration::from_nanos(1))),
            ("99999999S", Some(Duration::from_secs(99_999_999))),
            ("0m", Some(Duration::ZERO)),
            // 9 digits, no unit, no digits, an unknown unit, a sign, a space.
            ("123456789S", None),
            ("10", None),
            ("S", None),
            ("5s", None),
            ("1x", None),
            ("1.5S", None),
            ("-5S", None),
            (" 5S", None),
            ("", None),
        ];
        for (value, want) in table {
            assert_eq!(parse_grpc_timeout(value.as_bytes()), *want, "{value:?}");
        }
    }

    #[test]
    fn deadlines_are_written_in_the_finest_unit_that_fits() {
        for (d, text) in [
            (Duration::from_nanos(1), "0u"),
            (Duration::from_millis(250), "250000u"),
            (Duration::from_secs(99), "99000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(1 << 40), "99999999m"),
        ] {
            assert_eq!(grpc_timeout_value(d), text);
            assert!(parse_grpc_timeout(text.as_bytes()).is_some());
        }
    }
}
