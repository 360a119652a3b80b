//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` header,
//! `00-<trace-id>-<parent-id>-<flags>` in lower-case hex, read from a request, and the one the
//! next hop is sent. The gateway is a hop of its own: it keeps the trace id, names itself the
//! parent with a new span id, and starts a trace (sampled) when the client sent none or a
//! malformed one. `tracestate` and `baggage` travel unchanged. Both sides log the trace id.

/// A parsed `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero: the span that sent the request.
    pub parent_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

/// Appends `bytes` in lower-case hex (`write!` per byte costs a formatter call each).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        // A v4 UUID has 122 random bits; its version and variant nibbles are skipped.
        for (i, b) in bytes.iter().enumerate() {
            if i == 6 || i == 8 || filled == N {
                continue;
            }
            out[filled] = *b;
            filled += 1;
        }
    }
    out
}

impl TraceParent {
    /// The `traceparent` of a header value, if it is a valid one. Version 00 is read exactly;
    /// a later version by its first four fields, as the specification asks.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let trace_id = hex::<16>(parts.next()?)?;
        let parent_id = hex::<8>(parts.next()?)?;
        let flags = hex::<1>(parts.next()?)?[0];
        let rest = parts.next();
        let version = hex::<1>(version)?[0];
        if version == 0xff || (version == 0 && rest.is_some()) {
            return None;
        }
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// A new trace, sampled, started here.
    pub fn start() -> Self {
        Self {
            trace_id: random(),
            parent_id: random(),
            flags: 1,
        }
    }

    /// The same trace with this hop's own span as the parent of the next.
    pub fn child(&self) -> Self {
        Self {
            parent_id: random(),
            ..*self
        }
    }

    /// The trace id in lower-case hex, as logs and tracing back ends show it.
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    /// The header value (version 00).
    pub fn header_value(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.parent_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_read_as_the_specification_says() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(good.as_bytes()).expect("valid");
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, 1);
        assert_eq!(t.header_value(), good);
        // A later version may add fields; version 00 may not.
        assert!(
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_hop_keeps_the_trace_and_names_its_own_span() {
        let t = TraceParent::start();
        assert_ne!(t.trace_id, [0; 16]);
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.parent_id, t.parent_id);
        assert_eq!(TraceParent::parse(c.header_value().as_bytes()), Some(c));
        assert_ne!(TraceParent::start().trace_id, t.trace_id);
    }
}
