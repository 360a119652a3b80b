//! The API's field rules (api-facts §4-5: required, lengths, patterns, ranges, sizes, exactly one
//! source), in one place, enforced for gRPC and REST alike. A failure is INVALID_ARGUMENT whose
//! message names each field and rule, with `google.rpc.BadRequest` field violations as details.

use std::sync::LazyLock;

use prost::Message;
use regex::Regex;
use tonic::{Code, Status};

use crate::json::Any;
use crate::pb::google::rpc::{self, BadRequest, bad_request::FieldViolation};

/// Image and family names and label keys/values, anchored versions of the proto patterns.
pub static NAME: LazyLock<Regex> = LazyLock::new(|| anchored("|[a-z]([-_a-z0-9]{0,61}[a-z0-9])?"));
pub static FAMILY: LazyLock<Regex> = LazyLock::new(|| anchored("|[a-z][-a-z0-9]{1,61}[a-z0-9]"));
static LABEL_KEY: LazyLock<Regex> = LazyLock::new(|| anchored(r"[a-z][-_./\@0-9a-z]*"));
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| anchored(r"[-_./\@0-9a-z]*"));

fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).expect("the API's patterns are valid regexes")
}

/// `min_disk_size` bounds: 4 MiB to 4 TiB.
pub const MIN_DISK_SIZE: std::ops::RangeInclusive<i64> = 4_194_304..=4_398_046_511_104;

/// At most this many characters of a client's value are quoted back in an error: a message
/// travels in the `grpc-message` header, which must stay small.
const QUOTE_CHARS: usize = 64;

pub(crate) fn clip(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_string(),
    }
}

/// Collects the violations of one request.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// `value` must not be empty.
    pub fn required(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        }
    }

    /// `value` must be at most `max` characters.
    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.add(
                field,
                format!("must be at most {max} characters long, got {n}"),
            );
        }
    }

    /// An ID: required, at most `max` characters, and no control characters (NUL and the
    /// like can never be part of an ID, so they are refused rather than looked up).
    pub fn id(&mut self, field: &str, value: &str, max: usize) {
        self.required(field, value);
        self.max_len(field, value, max);
        if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    /// `value` must match the API's pattern.
    pub fn pattern(&mut self, field: &str, value: &str, re: &Regex, shown: &str) {
        if !re.is_match(value) {
            self.add(
                field,
                format!("must match the pattern {shown}, got {:?}", clip(value)),
            );
        }
    }

    /// A page size: 0 (the default) to 1000.
    pub fn page_size(&mut self, field: &str, value: i64) {
        if !(0..=1000).contains(&value) {
            self.add(field, format!("must be between 0 and 1000, got {value}"));
        }
    }

    /// `min_disk_size`: 0 (unset) or 4194304..4398046511104.
    pub fn min_disk_size(&mut self, field: &str, value: i64) {
        if value != 0 && !MIN_DISK_SIZE.contains(&value) {
            self.add(
                field,
                format!(
                    "must be between 4194304 and 4398046511104 bytes (4 MiB to 4 TiB), got {value}"
                ),
            );
        }
    }

    /// Image name rules.
    pub fn name(&mut self, field: &str, value: &str) {
        self.pattern(field, value, &NAME, "|[a-z]([-_a-z0-9]{0,61}[a-z0-9])?");
    }

    /// Image family rules.
    pub fn family(&mut self, field: &str, value: &str) {
        self.pattern(field, value, &FAMILY, "|[a-z][-a-z0-9]{1,61}[a-z0-9]");
    }

    /// Label map rules: at most 64 entries; keys 1-63 chars of `[a-z][-_./\@0-9a-z]*`;
    /// values at most 63 chars of `[-_./\@0-9a-z]*`.
    pub fn labels<'a>(
        &mut self,
        field: &str,
        labels: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    ) {
        if labels.len() > 64 {
            self.add(
                field,
                format!("must have at most 64 entries, got {}", labels.len()),
            );
            return;
        }
        for (key, value) in labels {
            let n = key.chars().count();
            if !(1..=63).contains(&n) {
                self.add(
                    format!("{field}[{:?}]", clip(key)),
                    format!("key must be 1 to 63 characters long, got {n}"),
                );
            } else if !LABEL_KEY.is_match(key) {
                self.add(
                    format!("{field}[{:?}]", clip(key)),
                    r"key must match the pattern [a-z][-_./\@0-9a-z]*",
                );
            }
            let n = value.chars().count();
            if n > 63 {
                self.add(
                    format!("{field}[{:?}]", clip(key)),
                    format!("value must be at most 63 characters long, got {n}"),
                );
            } else if !LABEL_VALUE.is_match(value) {
                self.add(
                    format!("{field}[{:?}]", clip(key)),
                    r"value must match the pattern [-_./\@0-9a-z]*",
                );
            }
        }
    }

    /// `Ok` when nothing was recorded; otherwise INVALID_ARGUMENT with BadRequest details.
    pub fn check(self) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        Err(status_with_details(
            Code::InvalidArgument,
            format!("invalid request: {message}"),
            vec![Any::pack(&BadRequest {
                field_violations: self.0,
            })],
        ))
    }
}

/// A gRPC status whose `grpc-status-details-bin` carries a `google.rpc.Status` with `details`.
pub fn status_with_details(code: Code, message: String, details: Vec<Any>) -> Status {
    let body = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(code, message, body.encode_to_vec().into())
}

/// INVALID_ARGUMENT for one field.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    let mut v = Violations::default();
    v.add(field, description);
    v.check().expect_err("one violation was recorded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_families() {
        for ok in [
            "",
            "a",
            "my-image",
            "my_image",
            "a1",
            &format!("a{}", "b".repeat(62)),
        ] {
            assert!(NAME.is_match(ok), "{ok:?}");
        }
        for bad in [
            "A",
            "1a",
            "a-",
            "a_",
            "my image",
            &format!("a{}", "b".repeat(63)),
        ] {
            assert!(!NAME.is_match(bad), "{bad:?}");
        }
        for ok in ["", "abc", "ubuntu-2204-lts"] {
            assert!(FAMILY.is_match(ok), "{ok:?}");
        }
        for bad in ["ab", "a_bc", "abc-", "Abc"] {
            assert!(!FAMILY.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn label_rules() {
        let check = |pairs: &[(&str, &str)]| {
            let map: std::collections::BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let mut v = Violations::default();
            v.labels("labels", map.iter());
            v.check()
        };
        assert!(check(&[("env", "prod"), ("a.b/c@d", "x_y-z.1")]).is_ok());
        assert!(check(&[("env", "")]).is_ok());
        for bad in [
            ("", "x"),
            ("Env", "x"),
            ("1env", "x"),
            ("env", "Prod"),
            ("env", "a b"),
        ] {
            let err = check(&[bad]).expect_err("rejected");
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().contains("labels["), "{}", err.message());
        }
        let many: Vec<(String, String)> = (0..65)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(
            check(&refs)
                .expect_err("too many")
                .message()
                .contains("at most 64")
        );
    }
}
