//! The HTTP rules of a method: its `google.api.http` annotation, read from the descriptor pool
//! once at startup (the rule itself, its `additional_bindings`, standard and `custom`
//! patterns), plus the rules the gateway adds the way a service config's `http.rules` would.
//! The route table and the OpenAPI document are both made from this one reading.
//!
//! A gRPC API configuration (`--http-config FILE`, the YAML of Google's service config and of
//! grpc-gateway's `grpc_api_configuration`: `http: rules: [{selector, get|put|post|delete|patch|
//! custom, body, response_body, additional_bindings}]`) adds rules without touching the protos.
//! A rule there replaces the annotation of each method it selects; its selector is a method's
//! full name, `package.Service.*`, or `*`, and the most specific selector wins. Keys other than
//! `http` (`type`, `name`, `apis`, ...) are accepted and ignored.
//!
//! A method with no rule can be served as `POST /package.Service/Method` with the whole request
//! as the body (`--auto-map`, grpc-gateway's `generate_unbound_methods`, Envoy's
//! `auto_mapping`).

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
pub(crate) struct Rules<'a> {
    http: Option<ExtensionDescriptor>,
    config: &'a [HttpRule],
}

impl<'a> Rules<'a> {
    /// The rules as `pool` declares them (none if it does not define `google.api.http`), but
    /// where a rule of `config` selects the method.
    pub(crate) fn new(pool: &DescriptorPool, config: &'a [HttpRule]) -> Self {
        Self {
            http: pool.get_extension_by_name("google.api.http"),
            config,
        }
    }

    /// The configured rule of `method`: the one with the most specific selector.
    fn configured(&self, method: &MethodDescriptor) -> Option<&'a HttpRule> {
        self.config
            .iter()
            .filter_map(|rule| selects(&rule.selector, method.full_name()).map(|rank| (rank, rule)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, rule)| rule)
    }

    /// The bindings of `method`, in declaration order: the rule, its additional bindings, then
    /// those the gateway adds.
    pub(crate) fn of(&self, method: &MethodDescriptor) -> Result<Vec<Binding>, RuleError> {
        let mut out = Vec::new();
        if let Some(rule) = self.configured(method) {
            push(&mut out, rule);
            for extra in &rule.additional_bindings {
                push(&mut out, extra);
            }
        } else if let Some(http) = &self.http {
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

/// How specifically `selector` selects the method `full_name`: `None` when it does not; an
/// exact name ranks above any wildcard, a longer wildcard above a shorter one.
fn selects(selector: &str, full_name: &str) -> Option<usize> {
    let selector = selector.trim();
    if selector == full_name {
        return Some(usize::MAX);
    }
    if selector == "*" {
        return Some(0);
    }
    let prefix = selector.strip_suffix(".*")?;
    (full_name.len() > prefix.len()
        && full_name.starts_with(prefix)
        && full_name.as_bytes()[prefix.len()] == b'.')
        .then_some(prefix.len() + 1)
}

/// The binding of a method with no rule: `POST /package.Service/Method`, the whole request as
/// the body.
pub(crate) fn auto_mapped(method: &MethodDescriptor) -> Binding {
    Binding {
        verb: "POST".into(),
        pattern: format!("/{}/{}", method.parent_service().full_name(), method.name()),
        body: "*".into(),
        response_body: String::new(),
    }
}

/// Why an HTTP config cannot be used.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--http-config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The rules of an HTTP config file (YAML; JSON is YAML too).
pub(crate) fn read_config(path: &std::path::Path) -> Result<Vec<HttpRule>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    parse_config(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
}

/// The rules of an HTTP config's text.
pub(crate) fn parse_config(text: &str) -> Result<Vec<HttpRule>, ConfigError> {
    let doc: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| ConfigError(format!("not YAML: {e}")))?;
    let rules = match doc.get("http").and_then(|http| http.get("rules")) {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(rules)) => rules,
        Some(_) => return Err(ConfigError("http.rules is not a list".into())),
    };
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let rule: HttpRule = serde::Deserialize::deserialize(rule)
                .map_err(|e| ConfigError(format!("http.rules[{i}]: {e}")))?;
            if rule.selector.trim().is_empty() {
                return Err(ConfigError(format!("http.rules[{i}] has no selector")));
            }
            if rule.pattern.is_none() {
                return Err(ConfigError(format!(
                    "http.rules[{i}] ({}) has no get, put, post, delete, patch or custom pattern",
                    rule.selector
                )));
            }
            Ok(rule)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_selector_wins() {
        let name = "acme.shop.v1.Shop.GetItem";
        assert_eq!(selects(name, name), Some(usize::MAX));
        assert!(selects("acme.shop.v1.Shop.*", name) > selects("acme.*", name));
        assert!(selects("acme.*", name) > selects("*", name));
        assert_eq!(selects("acme.sh.*", name), None);
        assert_eq!(selects("acme.shop.v1.Shop.Get", name), None);
    }

    #[test]
    fn a_service_config_yaml_reads_into_rules() {
        let rules = parse_config(
            r#"
type: google.api.Service
config_version: 3
http:
  rules:
  - selector: acme.shop.v1.Shop.GetItem
    get: /v1/shops/{shop}/items/{item_id}
    additional_bindings:
    - get: /v1/items/{item_id}
  - selector: acme.shop.v1.Shop.CreateItem
    post: /v1/shops/{shop}/items
    body: item
    response_body: id
"#,
        )
        .expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].additional_bindings.len(), 1);
        assert_eq!(rules[1].body, "item");
        assert_eq!(rules[1].response_body, "id");
        for (yaml, says) in [
            ("http: {rules: [{get: /x}]}", "no selector"),
            ("http: {rules: [{selector: a.B.C}]}", "no get"),
            (
                "http: {rules: [{selector: a.B.C, get: /x, colour: red}]}",
                "colour",
            ),
            ("http: {rules: 7}", "not a list"),
            ("http: [", "not YAML"),
        ] {
            let e = parse_config(yaml).expect_err(yaml).to_string();
            assert!(e.contains(says), "{yaml}: {e}");
        }
        assert!(
            parse_config("type: google.api.Service")
                .expect("no rules")
                .is_empty()
        );
    }
}
