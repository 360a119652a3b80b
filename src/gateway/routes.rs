//! The route table: every HTTP binding of every method in a descriptor pool (see `rules.rs`),
//! compiled once at startup into a complete [`Route`] (its method, its parsed template with the
//! path variables resolved to fields, its body and `response_body` selectors, its call) and
//! read-only afterwards. A binding that does not fit its messages fails the start.

use std::sync::Arc;

use axum::http::Method;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};

use super::dispatch::Rpc;
use super::rules::{Binding, RuleError, Rules};
use super::template::{Template, TemplateError};

/// Where the HTTP body goes.
#[derive(Debug, Clone, PartialEq)]
pub enum BodySelector {
    /// No body.
    None,
    /// `*`: every field not bound by the path.
    Whole,
    /// One top-level field.
    Field(FieldDescriptor),
}

/// A path variable, resolved: the fields from the request message down to the one it sets.
#[derive(Debug)]
pub(crate) struct PathVariable {
    fields: Vec<FieldDescriptor>,
    /// The field path as the template writes it (`a.b`).
    dotted: String,
}

impl PathVariable {
    /// The fields it goes through, the last one set.
    pub(crate) fn fields(&self) -> &[FieldDescriptor] {
        &self.fields
    }

    /// The field path as the template writes it.
    pub(crate) fn dotted(&self) -> &str {
        &self.dotted
    }
}

/// A checked route.
#[derive(Debug)]
pub struct Route {
    method: Method,
    /// The template as written in the rule.
    pattern: String,
    /// The same, as a metric label value.
    label: metrics::SharedString,
    template: Template,
    rpc: Arc<Rpc>,
    body: BodySelector,
    response_body: Option<FieldDescriptor>,
    variables: Vec<PathVariable>,
}

impl Route {
    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path template as the rule writes it.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The method this route calls.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// Where the body goes.
    pub fn body(&self) -> &BodySelector {
        &self.body
    }

    pub(crate) fn template(&self) -> &Template {
        &self.template
    }

    pub(crate) fn label(&self) -> &metrics::SharedString {
        &self.label
    }

    /// The response field sent as the body, or `None` for the whole response.
    pub(crate) fn response_body(&self) -> Option<&FieldDescriptor> {
        self.response_body.as_ref()
    }

    /// The path variables, in the template's order.
    pub(crate) fn variables(&self) -> &[PathVariable] {
        &self.variables
    }
}

/// Why the route table cannot be built: a rule that does not fit its messages.
#[derive(Debug)]
pub enum RouteError {
    /// A method's `google.api.http` option does not decode.
    Rule(RuleError),
    /// A binding does not check out.
    Binding {
        /// `VERB /template (/package.Service/Method)`.
        route: String,
        /// Why.
        why: String,
    },
    /// A descriptor set cannot be read or does not fit the descriptors already known.
    Descriptors(String),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule(e) => write!(f, "route table: {e}"),
            Self::Binding { route, why } => write!(f, "route table: {route}: {why}"),
            Self::Descriptors(why) => write!(f, "--descriptor-set: {why}"),
        }
    }
}

impl std::error::Error for RouteError {}

/// A `FileDescriptorSet`, each file left encoded.
#[derive(Clone, PartialEq, ::prost::Message)]
struct RawSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// The name of an encoded `FileDescriptorProto` (its other fields are skipped).
#[derive(Clone, PartialEq, ::prost::Message)]
struct RawName {
    #[prost(string, tag = "1")]
    name: String,
}

/// Every route, in declaration order (services by full name, then methods and bindings as
/// declared, then the bindings the gateway adds), and the pool they were made from.
pub struct RouteTable {
    routes: Vec<Route>,
    pool: DescriptorPool,
}

impl RouteTable {
    /// The routes of the services compiled into this binary (the embedded descriptor set).
    pub fn compiled() -> Result<Self, RouteError> {
        Self::new(crate::pb::descriptor_pool())
    }

    /// The routes of the compiled-in services and of every service in the descriptor sets at
    /// `paths` (binary `FileDescriptorSet`s, as `protoc --include_imports -o` or `buf build -o`
    /// write them). A file already known (the compiled-in ones, or one from an earlier set) is
    /// kept as it was: the first source wins, and the log says which files were skipped.
    pub fn with_descriptor_sets(paths: &[std::path::PathBuf]) -> Result<Self, RouteError> {
        if paths.is_empty() {
            return Self::compiled();
        }
        let mut pool = crate::pb::descriptor_pool().clone();
        for path in paths {
            let bytes = std::fs::read(path).map_err(|e| {
                RouteError::Descriptors(format!("cannot read {}: {e}", path.display()))
            })?;
            let set = <RawSet as prost::Message>::decode(bytes.as_slice()).map_err(|e| {
                RouteError::Descriptors(format!(
                    "{} is not a FileDescriptorSet: {e}",
                    path.display()
                ))
            })?;
            let mut kept = Vec::new();
            for file in set.file {
                let name = <RawName as prost::Message>::decode(file.as_slice())
                    .map(|n| n.name)
                    .unwrap_or_default();
                if pool.get_file_by_name(&name).is_some() {
                    kept.push(name);
                    continue;
                }
                // Decoded from its bytes, so that its options (google.api.http among them)
                // stay.
                pool.decode_file_descriptor_proto(file.as_slice())
                    .map_err(|e| {
                        RouteError::Descriptors(format!("{}: {name}: {e}", path.display()))
                    })?;
            }
            if !kept.is_empty() {
                tracing::info!(
                    set = %path.display(),
                    files = ?kept,
                    "files already known from an earlier source were kept as they were"
                );
            }
        }
        Self::new(&pool)
    }

    /// The routes of every service in `pool` whose methods have HTTP rules.
    pub(crate) fn new(pool: &DescriptorPool) -> Result<Self, RouteError> {
        let rules = Rules::new(pool);
        let mut services: Vec<_> = pool.services().collect();
        services.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        let mut routes = Vec::new();
        for service in services {
            for method in service.methods() {
                let bindings = rules.of(&method).map_err(RouteError::Rule)?;
                if bindings.is_empty() {
                    continue;
                }
                let rpc = Rpc::new(&method).map_err(|why| RouteError::Binding {
                    route: format!("/{}/{}", service.full_name(), method.name()),
                    why,
                })?;
                let rpc = Arc::new(rpc);
                for binding in &bindings {
                    routes.push(compile(&rpc, binding)?);
                }
            }
        }
        Ok(Self {
            routes,
            pool: pool.clone(),
        })
    }

    /// The routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The descriptor pool the routes were made from.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }
}

fn compile(rpc: &Arc<Rpc>, b: &Binding) -> Result<Route, RouteError> {
    let fail = |why: String| RouteError::Binding {
        route: format!("{} {} ({})", b.verb, b.pattern, rpc.path()),
        why,
    };
    let method = Method::from_bytes(b.verb.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let template = Template::parse(&b.pattern).map_err(|e: TemplateError| fail(e.to_string()))?;
    let input = rpc.method().input();
    let variables = template
        .variables
        .iter()
        .map(|v| resolve(&input, &v.field_path).map_err(&fail))
        .collect::<Result<Vec<_>, _>>()?;
    let top_field = |name: &str, of: &MessageDescriptor, what: &str| {
        of.get_field_by_name(name).ok_or_else(|| {
            fail(format!(
                "{what} field {name} is not a field of {}",
                of.full_name()
            ))
        })
    };
    let body = match b.body.as_str() {
        "" => BodySelector::None,
        "*" => BodySelector::Whole,
        field => BodySelector::Field(top_field(field, &input, "body")?),
    };
    let response_body = match b.response_body.as_str() {
        "" => None,
        field => Some(top_field(field, &rpc.method().output(), "response_body")?),
    };
    Ok(Route {
        method,
        label: metrics::SharedString::from_owned(b.pattern.clone()),
        pattern: b.pattern.clone(),
        template,
        rpc: rpc.clone(),
        body,
        response_body,
        variables,
    })
}

/// The fields a path variable goes through: each but the last a singular message, the last a
/// singular scalar.
fn resolve(input: &MessageDescriptor, path: &[String]) -> Result<PathVariable, String> {
    let dotted = path.join(".");
    let mut message = input.clone();
    let mut fields = Vec::with_capacity(path.len());
    for (i, name) in path.iter().enumerate() {
        let field = message.get_field_by_name(name).ok_or_else(|| {
            format!(
                "path variable {dotted} names no field of {}",
                message.full_name()
            )
        })?;
        if field.is_list() || field.is_map() {
            return Err(format!("path variable {name} is repeated or a map"));
        }
        match (field.kind(), i + 1 == path.len()) {
            (Kind::Message(m), false) => message = m,
            (Kind::Message(_), true) => {
                return Err(format!("path variable {name} is a message"));
            }
            (_, false) => {
                return Err(format!("path variable segment {name} is not a message"));
            }
            (_, true) => {}
        }
        fields.push(field);
    }
    Ok(PathVariable { fields, dotted })
}
