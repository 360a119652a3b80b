//! The API's field rules (api-facts §4-5: required, lengths, patterns, ranges, sizes, exactly one
//! source), in one place, enforced for gRPC and REST alike: the rule kinds ([`Violations`]) and
//! each request's rules (`validate_*`). A failure is INVALID_ARGUMENT whose message names each
//! field and rule, with `google.rpc.BadRequest` field violations as details.

use std::sync::LazyLock;

use prost::Message;
use regex::Regex;
use tonic::{Code, Status};

use crate::json::Any;
use crate::pb::google::rpc::{self, BadRequest, bad_request::FieldViolation};
use crate::pb::yandex::cloud::access::{
    AccessBinding, AccessBindingAction, SetAccessBindingsRequest, UpdateAccessBindingsRequest,
};
use crate::pb::yandex::cloud::compute::v1::{
    CreateImageRequest, GetImageLatestByFamilyRequest, ListImageOperationsRequest,
    ListImagesRequest, UpdateImageRequest, create_image_request,
};
use crate::pb::yandex::cloud::iam::v1::CreateIamTokenRequest;

/// Image and family names and label keys/values, anchored versions of the proto patterns.
pub(crate) static NAME: LazyLock<Regex> =
    LazyLock::new(|| anchored("|[a-z]([-_a-z0-9]{0,61}[a-z0-9])?"));
pub(crate) static FAMILY: LazyLock<Regex> =
    LazyLock::new(|| anchored("|[a-z][-a-z0-9]{1,61}[a-z0-9]"));
static LABEL_KEY: LazyLock<Regex> = LazyLock::new(|| anchored(r"[a-z][-_./\@0-9a-z]*"));
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| anchored(r"[-_./\@0-9a-z]*"));

fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).expect("the API's patterns are valid regexes")
}

/// `min_disk_size` bounds: 4 MiB to 4 TiB.
pub(crate) const MIN_DISK_SIZE: std::ops::RangeInclusive<i64> = 4_194_304..=4_398_046_511_104;

/// At most this many characters of a client's value are quoted back in an error: a message
/// travels in the `grpc-message` header, which must stay small.
const QUOTE_CHARS: usize = 64;

pub(crate) fn clip(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => format!("{}…", &value[..i]),
        None => value.to_string(),
    }
}

/// At most this many violations are named in an error; the message counts the rest. A request
/// of 40,000 bad elements once made an error too large for a client to read.
pub(crate) const MAX_VIOLATIONS: usize = 20;

/// Collects the violations of one request: the first [`MAX_VIOLATIONS`], and how many more.
#[derive(Default)]
pub(crate) struct Violations {
    named: Vec<FieldViolation>,
    more: usize,
}

impl Violations {
    /// Records a violation of `field`.
    pub(crate) fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        if self.named.len() == MAX_VIOLATIONS {
            self.more += 1;
            return;
        }
        self.named.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// `value` must not be empty.
    pub(crate) fn required(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(field, "is required");
        }
    }

    /// `value` must be at most `max` characters.
    pub(crate) fn max_len(&mut self, field: &str, value: &str, max: usize) {
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
    pub(crate) fn id(&mut self, field: &str, value: &str, max: usize) {
        self.required(field, value);
        self.max_len(field, value, max);
        if value.chars().any(char::is_control) {
            self.add(field, "must not contain control characters");
        }
    }

    /// `value` must match the API's pattern.
    pub(crate) fn pattern(&mut self, field: &str, value: &str, re: &Regex, shown: &str) {
        if !re.is_match(value) {
            self.add(
                field,
                format!("must match the pattern {shown}, got {:?}", clip(value)),
            );
        }
    }

    /// A page size: 0 (the default) to 1000.
    pub(crate) fn page_size(&mut self, field: &str, value: i64) {
        if !(0..=1000).contains(&value) {
            self.add(field, format!("must be between 0 and 1000, got {value}"));
        }
    }

    /// `min_disk_size`: 0 (unset) or 4194304..4398046511104.
    pub(crate) fn min_disk_size(&mut self, field: &str, value: i64) {
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
    pub(crate) fn name(&mut self, field: &str, value: &str) {
        self.pattern(field, value, &NAME, "|[a-z]([-_a-z0-9]{0,61}[a-z0-9])?");
    }

    /// Image family rules.
    pub(crate) fn family(&mut self, field: &str, value: &str) {
        self.pattern(field, value, &FAMILY, "|[a-z][-a-z0-9]{1,61}[a-z0-9]");
    }

    /// Label map rules: at most 64 entries; keys 1-63 chars of `[a-z][-_./\@0-9a-z]*`;
    /// values at most 63 chars of `[-_./\@0-9a-z]*`.
    pub(crate) fn labels<'a>(
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
    pub(crate) fn check(self) -> Result<(), Status> {
        if self.named.is_empty() {
            return Ok(());
        }
        let mut message = self
            .named
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; ");
        if self.more > 0 {
            message += &format!("; and {} more", self.more);
        }
        Err(status_with_details(
            Code::InvalidArgument,
            format!("invalid request: {message}"),
            vec![Any::pack(&BadRequest {
                field_violations: self.named,
            })],
        ))
    }
}

/// A gRPC status whose `grpc-status-details-bin` carries a `google.rpc.Status` with `details`.
pub(crate) fn status_with_details(code: Code, message: String, details: Vec<Any>) -> Status {
    let body = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details,
    };
    Status::with_details(code, message, body.encode_to_vec().into())
}

/// INVALID_ARGUMENT for one field.
pub(crate) fn invalid(field: &str, description: impl Into<String>) -> Status {
    let mut v = Violations::default();
    v.add(field, description);
    v.check().expect_err("one violation was recorded")
}

/// CreateIamToken: exactly one identity, each an opaque string without control characters.
pub(super) fn validate_create_token(r: &CreateIamTokenRequest) -> Result<(), Status> {
    use crate::pb::yandex::cloud::iam::v1::create_iam_token_request::Identity;
    let mut v = Violations::default();
    match &r.identity {
        None => v.add(
            "identity",
            "is required (set jwt or yandex_passport_oauth_token)",
        ),
        Some(Identity::Jwt(jwt)) => v.id("jwt", jwt, 8192),
        Some(Identity::YandexPassportOauthToken(t)) => v.id("yandex_passport_oauth_token", t, 1024),
    }
    v.check()
}

/// An IAM token in a request (Revoke): required, without control characters.
pub(super) fn validate_iam_token(token: &str) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("iam_token", token, 1024);
    v.check()
}

/// A service account id (CreateForServiceAccount): required, at most 50 characters.
pub(super) fn validate_service_account_id(id: &str) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("service_account_id", id, 50);
    v.check()
}

/// The most `product_ids` an image has. The API names no limit; this one bounds a stored image
/// (with the limits on labels and strings, to about 15 KB), which a clone inherits and every
/// List page carries: an image of 300,000 license ids once made one List reply 8 MB.
pub(crate) const MAX_PRODUCT_IDS: usize = 100;

/// The fields Update may change, by proto name.
pub(super) const UPDATABLE: [&str; 4] = ["name", "description", "min_disk_size", "labels"];

pub(super) fn validate_create(r: &CreateImageRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("folder_id", &r.folder_id, 50);
    v.name("name", &r.name);
    v.max_len("description", &r.description, 256);
    v.labels("labels", r.labels.iter());
    v.family("family", &r.family);
    v.min_disk_size("min_disk_size", r.min_disk_size);
    if r.product_ids.len() > MAX_PRODUCT_IDS {
        v.add(
            "product_ids",
            format!(
                "must have at most {MAX_PRODUCT_IDS} elements, got {}",
                r.product_ids.len()
            ),
        );
    } else {
        for (i, p) in r.product_ids.iter().enumerate() {
            v.id(&format!("product_ids[{i}]"), p, 50);
        }
    }
    use create_image_request::Source;
    match &r.source {
        None => v.add(
            "source",
            "exactly one of image_id, disk_id, snapshot_id or uri must be set",
        ),
        Some(Source::ImageId(s)) => v.id("image_id", s, 50),
        Some(Source::DiskId(s)) => v.id("disk_id", s, 50),
        Some(Source::SnapshotId(s)) => v.id("snapshot_id", s, 50),
        Some(Source::Uri(s)) => v.required("uri", s),
    }
    v.check()
}

pub(super) fn validate_update(r: &UpdateImageRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("image_id", &r.image_id, 50);
    v.name("name", &r.name);
    v.max_len("description", &r.description, 256);
    v.min_disk_size("min_disk_size", r.min_disk_size);
    v.labels("labels", r.labels.iter());
    if let Some(mask) = &r.update_mask {
        for path in &mask.paths {
            if !UPDATABLE.contains(&path.as_str()) {
                v.add(
                    "update_mask",
                    format!(
                        "path {:?} cannot be updated; updatable fields are name, description, min_disk_size, labels",
                        clip(path)
                    ),
                );
            }
        }
    }
    v.check()
}

pub(super) fn validate_image_id(id: &str) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("image_id", id, 50);
    v.check()
}

pub(super) fn validate_operation_id(id: &str) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("operation_id", id, 50);
    v.check()
}

pub(super) fn validate_latest_by_family(r: &GetImageLatestByFamilyRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("folder_id", &r.folder_id, 50);
    v.required("family", &r.family);
    v.family("family", &r.family);
    v.check()
}

pub(super) fn validate_list(r: &ListImagesRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("folder_id", &r.folder_id, 50);
    v.page_size("page_size", r.page_size);
    v.max_len("page_token", &r.page_token, 100);
    v.max_len("filter", &r.filter, 1000);
    v.max_len("order_by", &r.order_by, 100);
    v.check()
}

pub(super) fn validate_list_operations(r: &ListImageOperationsRequest) -> Result<(), Status> {
    let mut v = Violations::default();
    v.id("image_id", &r.image_id, 50);
    v.page_size("page_size", r.page_size);
    v.max_len("page_token", &r.page_token, 100);
    v.check()
}

/// The rules of ListAccessBindings.
pub(super) fn validate_list_bindings(
    resource_id: &str,
    page_size: i64,
    page_token: &str,
) -> Result<(), Status> {
    let mut v = resource_id_rules(resource_id);
    v.page_size("page_size", page_size);
    v.max_len("page_token", page_token, 2000);
    v.check()
}

pub(super) fn validate_set_bindings(r: &SetAccessBindingsRequest) -> Result<(), Status> {
    let mut v = resource_id_rules(&r.resource_id);
    if r.access_bindings.len() > 1000 {
        v.add(
            "access_bindings",
            format!(
                "must have at most 1000 elements, got {}",
                r.access_bindings.len()
            ),
        );
    } else {
        for (i, b) in r.access_bindings.iter().enumerate() {
            binding_rules(&mut v, &format!("access_bindings[{i}]"), Some(b));
        }
    }
    v.check()
}

pub(super) fn validate_update_bindings(r: &UpdateAccessBindingsRequest) -> Result<(), Status> {
    let mut v = resource_id_rules(&r.resource_id);
    let n = r.access_binding_deltas.len();
    if !(1..=1000).contains(&n) {
        v.add(
            "access_binding_deltas",
            format!("must have 1 to 1000 elements, got {n}"),
        );
    } else {
        for (i, d) in r.access_binding_deltas.iter().enumerate() {
            let field = format!("access_binding_deltas[{i}]");
            if !matches!(
                AccessBindingAction::try_from(d.action),
                Ok(AccessBindingAction::Add | AccessBindingAction::Remove)
            ) {
                v.add(format!("{field}.action"), "is required: ADD or REMOVE");
            }
            binding_rules(
                &mut v,
                &format!("{field}.access_binding"),
                d.access_binding.as_ref(),
            );
        }
    }
    v.check()
}

fn resource_id_rules(id: &str) -> Violations {
    let mut v = Violations::default();
    v.id("resource_id", id, 64);
    v
}

fn binding_rules(v: &mut Violations, field: &str, b: Option<&AccessBinding>) {
    let Some(b) = b else {
        v.add(field, "is required");
        return;
    };
    v.id(&format!("{field}.role_id"), &b.role_id, 64);
    match &b.subject {
        None => v.add(format!("{field}.subject"), "is required"),
        Some(s) => {
            v.id(&format!("{field}.subject.id"), &s.id, 100);
            v.id(&format!("{field}.subject.type"), &s.r#type, 100);
        }
    }
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
        // The bounds themselves are allowed.
        assert!(check(&refs[..64]).is_ok(), "64 entries");
        let (k63, v63, v64) = ("k".repeat(63), "v".repeat(63), "v".repeat(64));
        assert!(check(&[(&k63, &v63)]).is_ok(), "63-character key and value");
        let err = check(&[("k", &v64)]).expect_err("64-character value");
        assert!(err.message().contains("at most 63"), "{}", err.message());
    }

    #[test]
    fn lengths_are_inclusive_bounds() {
        let check = |n: usize| {
            let mut v = Violations::default();
            v.max_len("description", &"é".repeat(n), 256);
            v.check()
        };
        assert!(check(256).is_ok(), "256 characters (512 bytes)");
        let err = check(257).expect_err("257 characters");
        assert!(
            err.message()
                .contains("at most 256 characters long, got 257"),
            "{}",
            err.message()
        );
    }

    fn binding(role: &str, subject: Option<&str>) -> AccessBinding {
        AccessBinding {
            role_id: role.into(),
            subject: subject.map(|id| crate::pb::yandex::cloud::access::Subject {
                id: id.into(),
                r#type: "userAccount".into(),
            }),
        }
    }

    fn fields(r: Result<(), Status>) -> Vec<String> {
        let err = r.expect_err("rejected");
        assert_eq!(err.code(), Code::InvalidArgument);
        let status = rpc::Status::decode(err.details()).expect("google.rpc.Status details");
        let bad: BadRequest = status.details[0]
            .unpack()
            .ok()
            .flatten()
            .expect("BadRequest");
        bad.field_violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn access_binding_rules() {
        let set = |id: &str, bindings: Vec<AccessBinding>| {
            validate_set_bindings(&SetAccessBindingsRequest {
                resource_id: id.into(),
                access_bindings: bindings,
            })
        };
        let ok = binding("viewer", Some("u1"));
        assert!(set("fd8x", vec![ok.clone(); 1000]).is_ok(), "1000 bindings");
        assert_eq!(
            fields(set("fd8x", vec![ok.clone(); 1001])),
            ["access_bindings"]
        );
        assert!(set("fd8x", vec![]).is_ok(), "no bindings: clears them");
        assert_eq!(fields(set("", vec![ok.clone()])), ["resource_id"]);
        assert_eq!(
            fields(set("fd8x", vec![ok, binding("", None)])),
            ["access_bindings[1].role_id", "access_bindings[1].subject"]
        );

        assert!(validate_list_bindings("fd8x", 0, "").is_ok());
        assert_eq!(fields(validate_list_bindings("", 0, "")), ["resource_id"]);
        assert_eq!(
            fields(validate_list_bindings("fd8x", 0, &"t".repeat(2001))),
            ["page_token"]
        );
        assert!(validate_list_bindings("fd8x", 0, &"t".repeat(2000)).is_ok());
    }
}
