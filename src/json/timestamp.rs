//! `google.protobuf.Timestamp` with its canonical proto3 JSON form: RFC 3339, `Z`-normalised,
//! 0, 3, 6 or 9 fraction digits, within 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z.
//! Input is strict RFC 3339 (uppercase `T`/`Z`, offsets accepted, at most 9 fraction digits,
//! no leap second), as the ProtoJSON spec and Python's `json_format` require.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike};
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};

/// Seconds of 0001-01-01T00:00:00Z.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fraction of a second, 0..=999_999_999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl ::prost::Name for Timestamp {
    const NAME: &'static str = "Timestamp";
    const PACKAGE: &'static str = "google.protobuf";
    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Timestamp".into()
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            },
            Err(e) => {
                let d = e.duration();
                let (mut seconds, mut nanos) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i32));
                if nanos < 0 {
                    seconds -= 1;
                    nanos += 1_000_000_000;
                }
                Self { seconds, nanos }
            }
        }
    }
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        SystemTime::now().into()
    }

    /// Nanoseconds since the epoch, for ordering and arithmetic.
    pub fn as_nanos(&self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Renders the canonical JSON string; fails outside the representable range.
    pub fn to_rfc3339(&self) -> Result<String, String> {
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds) {
            return Err(format!(
                "timestamp seconds {} outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z",
                self.seconds
            ));
        }
        if !(0..1_000_000_000).contains(&self.nanos) {
            return Err(format!(
                "timestamp nanos {} outside 0..999999999",
                self.nanos
            ));
        }
        let dt = DateTime::from_timestamp(self.seconds, self.nanos as u32)
            .ok_or_else(|| "timestamp out of range".to_string())?;
        // Digits are written directly: this runs for every timestamp of every reply, and
        // `format!` was a large share of the gateway's instructions (bench/RESULTS.md).
        let mut out = String::with_capacity(30);
        push_digits(&mut out, dt.year() as u32, 4);
        out.push('-');
        push_digits(&mut out, dt.month(), 2);
        out.push('-');
        push_digits(&mut out, dt.day(), 2);
        out.push('T');
        push_digits(&mut out, dt.hour(), 2);
        out.push(':');
        push_digits(&mut out, dt.minute(), 2);
        out.push(':');
        push_digits(&mut out, dt.second(), 2);
        let n = self.nanos as u32;
        if n != 0 {
            out.push('.');
            if n.is_multiple_of(1_000_000) {
                push_digits(&mut out, n / 1_000_000, 3);
            } else if n.is_multiple_of(1_000) {
                push_digits(&mut out, n / 1_000, 6);
            } else {
                push_digits(&mut out, n, 9);
            }
        }
        out.push('Z');
        Ok(out)
    }

    /// Parses strict RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`).
    pub fn from_rfc3339(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "invalid timestamp {s:?}: expected RFC 3339 such as \"2025-01-14T10:00:00.123Z\""
            )
        };
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(err());
        }
        let num = |range: std::ops::Range<usize>| -> Result<u32, String> {
            let part = &b[range];
            if part.iter().all(u8::is_ascii_digit) {
                Ok(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
            } else {
                Err(err())
            }
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut i = 19;
        let mut nanos = 0u32;
        if b[i] == b'.' {
            let start = i + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            let digits = end - start;
            if digits == 0 || digits > 9 {
                return Err(format!(
                    "invalid timestamp {s:?}: 1 to 9 fraction digits allowed"
                ));
            }
            nanos = num(start..end)? * 10u32.pow(9 - digits as u32);
            i = end;
        }
        let offset_seconds: i64 = match &b[i..] {
            [b'Z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(err());
                }
                let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
                let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
                if h > 23 || m > 59 {
                    return Err(err());
                }
                let off = h * 3600 + m * 60;
                if *sign == b'-' { -off } else { off }
            }
            _ => return Err(err()),
        };
        let date = NaiveDate::from_ymd_opt(year as i32, month, day).ok_or_else(err)?;
        if year == 0 {
            return Err(err());
        }
        // `from_hms_opt` refuses second 60: leap seconds are not representable.
        let time = NaiveTime::from_hms_opt(hour, minute, second).ok_or_else(err)?;
        let seconds = date.and_time(time).and_utc().timestamp() - offset_seconds;
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
            return Err(format!(
                "timestamp {s:?} outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z"
            ));
        }
        Ok(Self {
            seconds,
            nanos: nanos as i32,
        })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339().map_err(ser::Error::custom)?)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::from_rfc3339(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(TsVisitor)
    }
}

/// Appends `value` as exactly `width` decimal digits, zero-padded (`value` < 10^`width`).
fn push_digits(out: &mut String, value: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(char::from(b'0' + (value / div % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_736_848_800; // 2025-01-14T10:00:00Z

    #[test]
    fn renders_z_and_0_3_6_9_digits() {
        let cases = [
            (T0, 0, "2025-01-14T10:00:00Z"),
            (T0, 100_000_000, "2025-01-14T10:00:00.100Z"),
            (T0, 123_000_000, "2025-01-14T10:00:00.123Z"),
            (T0, 1_000, "2025-01-14T10:00:00.000001Z"),
            (T0, 123_456_000, "2025-01-14T10:00:00.123456Z"),
            (T0, 123_456_789, "2025-01-14T10:00:00.123456789Z"),
            (T0, 1, "2025-01-14T10:00:00.000000001Z"),
            (0, 0, "1970-01-01T00:00:00Z"),
            (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
            (MIN_SECONDS, 0, "0001-01-01T00:00:00Z"),
            (MAX_SECONDS, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
        ];
        for (seconds, nanos, want) in cases {
            let ts = Timestamp { seconds, nanos };
            assert_eq!(ts.to_rfc3339().as_deref(), Ok(want));
            assert_eq!(Timestamp::from_rfc3339(want), Ok(ts), "{want} parses back");
        }
    }

    #[test]
    fn refuses_to_render_out_of_range_values() {
        for (seconds, nanos) in [
            (MAX_SECONDS + 1, 0),
            (MIN_SECONDS - 1, 0),
            (0, -1),
            (0, 1_000_000_000),
        ] {
            assert!(
                Timestamp { seconds, nanos }.to_rfc3339().is_err(),
                "{seconds} {nanos}"
            );
        }
    }

    #[test]
    fn parses_offsets_and_fractions() {
        let cases = [
            ("2025-01-14T10:00:00.1Z", T0, 100_000_000),
            ("2025-01-14T13:00:00+03:00", T0, 0),
            ("2025-01-14T10:00:00.1+03:00", T0 - 3 * 3600, 100_000_000),
            ("2025-01-14T05:30:00.5-04:30", T0, 500_000_000),
            ("2025-01-14T10:00:00.12345Z", T0, 123_450_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800, 0),
            // The largest offsets there are.
            ("2025-01-15T09:00:00+23:00", T0, 0),
            ("2025-01-14T10:59:00+00:59", T0, 0),
        ];
        for (input, seconds, nanos) in cases {
            assert_eq!(
                Timestamp::from_rfc3339(input),
                Ok(Timestamp { seconds, nanos }),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_what_rfc3339_rejects() {
        for bad in [
            "",
            "2025-01-14",
            "2025-01-14T10:00:00",
            "2025-01-14t10:00:00Z",
            "2025-01-14T10:00:00z",
            "2025-01-14 10:00:00Z",
            "2016-12-31T23:59:60Z",
            "2025-01-14T10:00:00.1234567891Z",
            "2025-01-14T10:00:00.Z",
            "2025-02-30T00:00:00Z",
            "2025-01-14T25:00:00Z",
            "2025-01-14T10:60:00Z",
            "10000-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "2025-01-14T10:00:00+0300",
            "2025-01-14T10:00:00+24:00",
            "2025-01-14T10:00:00+00:60",
            "+2025-01-14T10:00:00Z",
            "2025-1-14T10:00:00Z",
            "2025-01-14T10:00:00ZZ",
            // Each separator in its place.
            "2025x01-14T10:00:00Z",
            "2025-01x14T10:00:00Z",
            "2025-01-14x10:00:00Z",
            "2025-01-14T10x00:00Z",
            "2025-01-14T10:00x00Z",
        ] {
            assert!(
                Timestamp::from_rfc3339(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let ts = Timestamp {
            seconds: T0,
            nanos: 123_456_789,
        };
        let json = serde_json::to_string(&ts).expect("renders");
        assert_eq!(json, "\"2025-01-14T10:00:00.123456789Z\"");
        assert_eq!(
            serde_json::from_str::<Timestamp>(&json).expect("parses"),
            ts
        );
        assert!(serde_json::from_str::<Timestamp>(r#"{"seconds":1}"#).is_err());
        let err = serde_json::from_str::<Timestamp>("7").expect_err("a number");
        assert!(
            err.to_string()
                .contains("expected an RFC 3339 timestamp string"),
            "{err}"
        );
    }

    #[test]
    fn system_times_and_nanos_either_side_of_the_epoch() {
        use std::time::Duration;
        let after = UNIX_EPOCH + Duration::new(1, 500_000_000);
        assert_eq!(
            Timestamp::from(after),
            Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        // Before the epoch, nanos still count forwards from the second before.
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        let t = Timestamp::from(before);
        assert_eq!(
            t,
            Timestamp {
                seconds: -2,
                nanos: 750_000_000
            }
        );
        assert_eq!(t.as_nanos(), -1_250_000_000);
        let whole = Timestamp::from(UNIX_EPOCH - Duration::from_secs(3));
        assert_eq!(
            whole,
            Timestamp {
                seconds: -3,
                nanos: 0
            }
        );
        assert_eq!(Timestamp::from(after).as_nanos(), 1_500_000_000);
        let now = Timestamp::now().as_nanos();
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_nanos() as i128;
        assert!(
            (system - now).abs() < 60_000_000_000,
            "now() is the system's time"
        );
    }
}
