//! Header policy: which HTTP headers of a request reach the backend as gRPC metadata, and which
//! metadata of the backend's reply come back as HTTP headers (grpc-gateway v2's conventions).
//!
//! Out to the backend:
//! - `Authorization`, `Idempotency-Key`, `X-Client-Request-Id` and the request's `X-Request-Id`;
//! - every `Grpc-Metadata-<name>` as `<name>` (a `-Bin` name's value is base64, decoded);
//! - every header whose name matches a `--forward-header` pattern, under its own name;
//! - `X-Forwarded-For` (the client's address appended), `X-Forwarded-Host` and
//!   `X-Forwarded-Proto` (kept when the client sent them, else this request's);
//! - the client's `User-Agent` as `grpcgateway-user-agent` (the connection itself announces
//!   the gateway in its own `user-agent`);
//! - W3C trace context: `traceparent` naming the gateway's own span (see [`TraceParent`]),
//!   `tracestate` and `baggage` unchanged.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1), the message's own framing (`Content-*`, `Host`, `TE`)
//! and gRPC's reserved names (`grpc-*`) never go out, whatever a pattern says. At most
//! [`MAX_FORWARDED_METADATA_BYTES`] go out; past it the request is refused with 431.
//!
//! Back to the client: the reply's header metadata as `Grpc-Metadata-<name>` and its trailers
//! as `Grpc-Trailer-<name>`, both as ordinary headers (the gateway has the whole reply before it
//! answers, so there is no need for HTTP trailers, which browsers cannot read); an
//! `x-http-code` header metadata sets the status of a successful reply (grpc-gateway's recipe
//! for 201 and the like) and is not passed on.

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::Engine as _;
use tonic::metadata::{
    AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, KeyAndValueRef,
    MetadataMap,
};

use super::error::GatewayError;
use crate::net::TraceParent;

/// The most bytes of metadata forwarded with one call, counted as HTTP/2 counts a header list
/// (name, value and 32 bytes per entry). Backends commonly refuse header lists over 16 KiB
/// (hyper's and so tonic's default), and one that is refused can take the whole shared
/// connection down with it, failing other clients' calls; past this the request is answered
/// 431 and nothing is sent.
pub(crate) const MAX_FORWARDED_METADATA_BYTES: usize = 8 * 1024;

/// Headers that are never forwarded either way: hop-by-hop ones, the message's framing, and
/// what HTTP/2 and gRPC reserve.
pub(crate) fn never_forwarded(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
            | "content-type"
            | "content-encoding"
            | "accept-encoding"
            | "user-agent"
            | "date"
    ) || name.starts_with("grpc-")
        || name.starts_with(':')
}

/// A `--forward-header` pattern: a header name, lower-cased, in which `*` stands for any run
/// of characters (`x-tenant-*`, `x-b3-*`, `*`).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaderPattern(String);

impl HeaderPattern {
    /// The pattern `text`; `Err` says why it is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let name_chars = lower
            .chars()
            .all(|c| c == '*' || c == '-' || c == '_' || c == '.' || c.is_ascii_alphanumeric());
        if lower.is_empty() || !name_chars {
            return Err(format!(
                "--forward-header {text:?} is not a header name pattern (letters, digits, '-', '_', '.', and '*' for any run of them)"
            ));
        }
        Ok(Self(lower))
    }

    /// Whether `name` (lower-case, as `http` keeps names) matches.
    fn matches(&self, name: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = name.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty(); // no `*`: the whole name
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.ends_with(last)
    }
}

/// What the gateway knows of a request besides its headers, for the `X-Forwarded-*` metadata.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Origin<'a> {
    /// The client's address, if the connection has one.
    pub(crate) peer: Option<SocketAddr>,
    /// Whether the client connected over TLS.
    pub(crate) tls: bool,
    /// The authority the client asked for (`Host`, or the URI's on HTTP/2).
    pub(crate) host: Option<&'a str>,
}

/// Metadata being gathered, within the byte budget.
struct Outgoing {
    md: MetadataMap,
    bytes: usize,
}

impl Outgoing {
    fn count(&mut self, name: &str, value_len: usize) -> Result<(), GatewayError> {
        self.bytes += name.len() + value_len + 32;
        if self.bytes > MAX_FORWARDED_METADATA_BYTES {
            return Err(GatewayError::MetadataTooLarge {
                limit: MAX_FORWARDED_METADATA_BYTES,
            });
        }
        Ok(())
    }

    /// Adds a value under a fixed name (no parsing of the name, no allocation for it).
    fn add_fixed(
        &mut self,
        name: &'static str,
        value: AsciiMetadataValue,
        sensitive: bool,
    ) -> Result<(), GatewayError> {
        self.count(name, value.len())?;
        let mut value = value;
        value.set_sensitive(sensitive);
        self.md.append(AsciiMetadataKey::from_static(name), value);
        Ok(())
    }

    /// Adds `name: value` if both are valid ASCII metadata; a `-bin` name takes the value as
    /// base64 and sends the bytes. Values that change with every request (or are secrets) are
    /// marked sensitive: HPACK sends them as never-indexed literals instead of churning the
    /// connection's header table, where they would evict the headers that repeat on every call.
    fn add(&mut self, name: &str, value: &[u8], sensitive: bool) -> Result<(), GatewayError> {
        if name.ends_with("-bin") {
            let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
            let trimmed = value
                .strip_suffix(b"==")
                .or(value.strip_suffix(b"="))
                .unwrap_or(value);
            if let (Ok(k), Ok(bytes)) = (
                BinaryMetadataKey::from_bytes(name.as_bytes()),
                engine.decode(trimmed),
            ) {
                self.count(name, value.len())?;
                self.md
                    .append_bin(k, BinaryMetadataValue::from_bytes(&bytes));
            }
            return Ok(());
        }
        if let (Ok(k), Ok(mut v)) = (
            AsciiMetadataKey::from_bytes(name.as_bytes()),
            AsciiMetadataValue::try_from(value),
        ) {
            self.count(name, value.len())?;
            v.set_sensitive(sensitive);
            self.md.append(k, v);
        }
        Ok(())
    }
}

/// The metadata a request sends to the backend (see the module's comment).
pub(crate) fn outgoing(
    headers: &HeaderMap,
    request_id: &HeaderValue,
    origin: Origin<'_>,
    trace: &TraceParent,
    patterns: &[HeaderPattern],
) -> Result<MetadataMap, GatewayError> {
    let mut out = Outgoing {
        md: MetadataMap::new(),
        bytes: 0,
    };
    for name in ["authorization", "idempotency-key", "x-client-request-id"] {
        if let Some(v) = headers.get(name) {
            out.add(name, v.as_bytes(), true)?;
        }
    }
    if let Ok(v) = AsciiMetadataValue::try_from(request_id.as_bytes()) {
        out.add_fixed("x-request-id", v, true)?;
    }
    for (name, value) in headers {
        let name = name.as_str();
        if let Some(rest) = name.strip_prefix("grpc-metadata-") {
            if !never_forwarded(rest) {
                out.add(rest, value.as_bytes(), false)?;
            }
        } else if patterns.iter().any(|p| p.matches(name))
            && !never_forwarded(name)
            && !matches!(
                name,
                "authorization"
                    | "idempotency-key"
                    | "x-client-request-id"
                    | "x-request-id"
                    | "x-forwarded-for"
                    | "x-forwarded-host"
                    | "x-forwarded-proto"
                    | "traceparent"
                    | "tracestate"
                    | "baggage"
            )
        {
            out.add(name, value.as_bytes(), false)?;
        }
    }
    // The X-Forwarded-* values repeat from request to request of a client, so they are left
    // indexable by HPACK (not sensitive).
    let forwarded_for = match (headers.get("x-forwarded-for"), origin.peer) {
        (Some(earlier), Some(peer)) => AsciiMetadataValue::try_from(format!(
            "{}, {}",
            earlier.to_str().unwrap_or_default(),
            peer.ip()
        ))
        .ok(),
        (Some(earlier), None) => AsciiMetadataValue::try_from(earlier.as_bytes()).ok(),
        (None, Some(peer)) => AsciiMetadataValue::try_from(peer.ip().to_string()).ok(),
        (None, None) => None,
    };
    if let Some(v) = forwarded_for {
        out.add_fixed("x-forwarded-for", v, false)?;
    }
    let host = headers
        .get("x-forwarded-host")
        .map(HeaderValue::as_bytes)
        .or(origin.host.map(str::as_bytes));
    if let Some(v) = host.and_then(|h| AsciiMetadataValue::try_from(h).ok()) {
        out.add_fixed("x-forwarded-host", v, false)?;
    }
    let proto = match headers.get("x-forwarded-proto") {
        Some(v) => AsciiMetadataValue::try_from(v.as_bytes()).ok(),
        None if origin.tls => Some(AsciiMetadataValue::from_static("https")),
        None => Some(AsciiMetadataValue::from_static("http")),
    };
    if let Some(v) = proto {
        out.add_fixed("x-forwarded-proto", v, false)?;
    }
    if let Ok(v) = AsciiMetadataValue::try_from(trace.header_value()) {
        out.add_fixed("traceparent", v, true)?;
    }
    for name in ["tracestate", "baggage"] {
        if let Some(v) = headers.get(name) {
            out.add(name, v.as_bytes(), false)?;
        }
    }
    if let Some(agent) = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|a| AsciiMetadataValue::try_from(a.as_bytes()).ok())
    {
        out.add_fixed("grpcgateway-user-agent", agent, false)?;
    }
    Ok(out.md)
}

/// How reply metadata are named as headers: the prefix of header metadata and of trailers.
pub(crate) type Prefixes = (&'static str, &'static str);

/// grpc-gateway's names, for REST replies.
pub(crate) const REST: Prefixes = ("grpc-metadata-", "grpc-trailer-");

/// Connect's names: header metadata as they are, trailers as `trailer-<name>`.
pub(crate) const CONNECT: Prefixes = ("", "trailer-");

/// The headers a reply carries for the backend's metadata, and the status an `x-http-code`
/// header metadata asks for.
pub(crate) fn incoming(
    headers: &MetadataMap,
    trailers: Option<&MetadataMap>,
    prefixes: Prefixes,
    response: &mut HeaderMap,
) -> Option<StatusCode> {
    let mut status = None;
    for (trailer, md) in [(false, Some(headers)), (true, trailers)] {
        let prefix = if trailer { prefixes.1 } else { prefixes.0 };
        let Some(md) = md else { continue };
        for entry in md.iter() {
            let (key, value) = match entry {
                KeyAndValueRef::Ascii(k, v) => (k.as_str(), v.as_encoded_bytes()),
                KeyAndValueRef::Binary(k, v) => (k.as_str(), v.as_encoded_bytes()),
            };
            if never_forwarded(key) || key == "x-request-id" {
                continue;
            }
            if key == "x-http-code" && !trailer {
                status = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u16>().ok())
                    .filter(|code| (200..=599).contains(code))
                    .and_then(|code| StatusCode::from_u16(code).ok());
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(format!("{prefix}{key}").as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                response.append(name, value);
            }
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_with_wildcards() {
        let table: &[(&str, &str, bool)] = &[
            ("x-tenant", "x-tenant", true),
            ("x-tenant", "x-tenant-id", false),
            ("X-Tenant-*", "x-tenant-id", true),
            ("x-tenant-*", "x-tenant-", true),
            ("x-tenant-*", "x-tenan", false),
            ("*", "anything", true),
            ("*-id", "x-tenant-id", true),
            ("*-id", "x-tenant-idx", false),
            ("x-*-id", "x-tenant-id", true),
            ("x-*-id", "y-tenant-id", false),
            ("x-*-*-id", "x-a-b-id", true),
            ("x-*-*-id", "x-ab-id", false),
        ];
        for (pattern, name, want) in table {
            let p = HeaderPattern::parse(pattern).expect("a pattern");
            assert_eq!(p.matches(name), *want, "{pattern} ~ {name}");
        }
        for bad in ["", "x tenant", "x:y", "ä"] {
            assert!(HeaderPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn names(md: &MetadataMap) -> Vec<String> {
        let mut names: Vec<String> = md
            .keys()
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str().to_string(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str().to_string(),
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn only_the_policy_reaches_the_backend() {
        let h = headers(&[
            ("authorization", "Bearer t"),
            ("grpc-metadata-tenant", "acme"),
            ("grpc-metadata-trace-bin", "AAEC"),
            ("grpc-metadata-grpc-status", "0"),
            ("x-tenant-id", "42"),
            ("x-other", "no"),
            ("connection", "keep-alive"),
            ("te", "trailers"),
            ("content-type", "application/json"),
            ("user-agent", "curl/8"),
        ]);
        let patterns = [
            HeaderPattern::parse("x-tenant-*").expect("pattern"),
            HeaderPattern::parse("*").expect("pattern"),
        ];
        let md = outgoing(
            &h,
            &HeaderValue::from_static("rid"),
            Origin {
                peer: Some("10.1.2.3:5555".parse().expect("addr")),
                tls: true,
                host: Some("api.example"),
            },
            &TraceParent::start(),
            &patterns,
        )
        .expect("within the budget");
        assert_eq!(
            names(&md),
            [
                "authorization",
                "grpcgateway-user-agent",
                "tenant",
                "trace-bin",
                "traceparent",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-other",
                "x-request-id",
                "x-tenant-id",
            ]
        );
        assert_eq!(
            md.get_bin("trace-bin")
                .map(|v| v.to_bytes().expect("bytes")),
            Some(bytes::Bytes::from_static(&[0, 1, 2]))
        );
        assert_eq!(
            md.get("x-forwarded-for").map(|v| v.to_str().ok()),
            Some(Some("10.1.2.3"))
        );
        assert_eq!(
            md.get("x-forwarded-proto").map(|v| v.to_str().ok()),
            Some(Some("https"))
        );
        assert_eq!(
            md.get("grpcgateway-user-agent").map(|v| v.to_str().ok()),
            Some(Some("curl/8"))
        );
    }

    #[test]
    fn forwarded_headers_are_kept_and_appended_to() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-host", "public.example"),
            ("x-forwarded-proto", "https"),
        ]);
        let md = outgoing(
            &h,
            &HeaderValue::from_static("rid"),
            Origin {
                peer: Some("10.0.0.1:1".parse().expect("addr")),
                tls: false,
                host: Some("internal:8080"),
            },
            &TraceParent::start(),
            &[],
        )
        .expect("within the budget");
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(
            get("x-forwarded-for").as_deref(),
            Some("203.0.113.7, 10.0.0.1")
        );
        assert_eq!(get("x-forwarded-host").as_deref(), Some("public.example"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("https"));
    }

    #[test]
    fn metadata_over_the_budget_is_refused() {
        let h = headers(&[(
            "grpc-metadata-big",
            &"x".repeat(MAX_FORWARDED_METADATA_BYTES),
        )]);
        let refused = outgoing(
            &h,
            &HeaderValue::from_static("rid"),
            Origin::default(),
            &TraceParent::start(),
            &[],
        );
        assert!(matches!(
            refused,
            Err(GatewayError::MetadataTooLarge { .. })
        ));
    }

    #[test]
    fn reply_metadata_becomes_prefixed_headers_and_x_http_code_a_status() {
        let mut head = MetadataMap::new();
        head.insert("x-served-by", "replica-2".parse().expect("ascii"));
        head.insert("x-http-code", "201".parse().expect("ascii"));
        head.insert("content-type", "application/grpc".parse().expect("ascii"));
        head.insert("grpc-encoding", "gzip".parse().expect("ascii"));
        let mut trailers = MetadataMap::new();
        trailers.insert("x-cost", "7".parse().expect("ascii"));
        trailers.insert("grpc-status", "0".parse().expect("ascii"));
        let mut out = HeaderMap::new();
        let status = incoming(&head, Some(&trailers), REST, &mut out);
        assert_eq!(status, Some(StatusCode::CREATED));
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["grpc-metadata-x-served-by", "grpc-trailer-x-cost"]);
        // A status outside 200..=599 is ignored.
        let mut head = MetadataMap::new();
        head.insert("x-http-code", "101".parse().expect("ascii"));
        assert_eq!(incoming(&head, None, REST, &mut HeaderMap::new()), None);
    }
}
