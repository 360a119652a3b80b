//! The HTTP rules of a method: its `google.api.http` annotation, read from the descriptor pool
//! once at startup (the rule itself, its `additional_bindings`, standard and `custom`
//! patterns), plus the rules the gateway adds the way a service config's `http.rules` would.
//! The route table and the OpenAPI document are both made from this one reading.

use prost_reflect::{DescriptorPool, ExtensionDescriptor, MethodDescriptor};

use crate::pb::google::api::{HttpRule, http_rule};

/// One HTTP binding of a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The HTTP method as the rule names it (`GET`, or a `custom` kind).
    pub(crate) verb: String,
    /// The path template.
    pub(crate) pattern: String,
    /// `*`, a top-level field name, or empty.
    pub(crate) body: String,
    /// A top-level response field, or empty.
    pub(crate) response_body: String,
}

/// Bindings the gateway adds to the annotations, by method full name:
/// `OperationService.Cancel` is `get:` in the proto but POST in the API design guide, so both
/// are served.
const EXTRA: &[(&str, &str, &str)] = &[(
    "yandex.cloud.operation.OperationService.Cancel",
    "POST",
    "/operations/{operation_id}:cancel",
)];

/// Why a method's rule cannot be read.
#[derive(Debug)]
pub struct RuleError {
    method: String,
    source: prost::DecodeError,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: the google.api.http option does not decode: {}",
            self.method, self.source
        )
    }
}

impl std::error::Error for RuleError {}

/// Reads the rules of the methods of one descriptor pool.
pub(crate) struct Rules {
    http: Option<ExtensionDescriptor>,
}

impl Rules {
    /// The rules as `pool` declares them (none if it does not define `google.api.http`).
    pub(crate) fn new(pool: &DescriptorPool) -> Self {
        Self {
            http: pool.get_extension_by_name("google.api.http"),
        }
    }

    /// The bindings of `method`, in declaration order: the rule, its additional bindings, then
    /// those the gateway adds.
    pub(crate) fn of(&self, method: &MethodDescriptor) -> Result<Vec<Binding>, RuleError> {
        let mut out = Vec::new();
        if let Some(http) = &self.http {
            let options = method.options();
            if options.has_extension(http) {
                let rule = options
                    .get_extension(http)
                    .as_message()
                    .map(|m| m.transcode_to::<HttpRule>())
                    .transpose()
                    .map_err(|source| RuleError {
                        method: method.full_name().to_string(),
                        source,
                    })?
                    .unwrap_or_default();
                push(&mut out, &rule);
                // additional_bindings nest one level only (google/api/http.proto).
                for extra in &rule.additional_bindings {
                    push(&mut out, extra);
                }
            }
        }
        for (name, verb, pattern) in EXTRA {
            if *name == method.full_name() {
                out.push(Binding {
                    verb: verb.to_string(),
                    pattern: pattern.to_string(),
                    body: String::new(),
                    response_body: String::new(),
                });
            }
        }
        Ok(out)
    }
}

fn push(out: &mut Vec<Binding>, rule: &HttpRule) {
    use http_rule::Pattern;
    let (verb, pattern) = match &rule.pattern {
        Some(Pattern::Get(p)) => ("GET", p),
        Some(Pattern::Put(p)) => ("PUT", p),
        Some(Pattern::Post(p)) => ("POST", p),
        Some(Pattern::Delete(p)) => ("DELETE", p),
        Some(Pattern::Patch(p)) => ("PATCH", p),
        Some(Pattern::Custom(c)) => (c.kind.as_str(), &c.path),
        None => return,
    };
    out.push(Binding {
        verb: verb.to_string(),
        pattern: pattern.clone(),
        body: rule.body.clone(),
        response_body: rule.response_body.clone(),
    });
}
