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
    /// What a backend reported over reflection does not fit the descriptors already known.
    Reflected(String),
    /// The HTTP config cannot be used.
    Config(super::rules::ConfigError),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule(e) => write!(f, "route table: {e}"),
            Self::Binding { route, why } => write!(f, "route table: {route}: {why}"),
            Self::Descriptors(why) => write!(f, "--descriptor-set: {why}"),
            Self::Reflected(why) => write!(f, "--reflect: {why}"),
            Self::Config(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RouteError {}

/// Every route, in declaration order (services by full name, then methods and bindings as
/// declared, then the bindings the gateway adds), and the pool they were made from.
pub struct RouteTable {
    routes: Vec<Route>,
    pool: DescriptorPool,
}

/// What the route table is made from besides the pool's annotations.
pub(crate) struct TableOptions<'a> {
    /// Rules of `--http-config`: for a method they select, they replace its annotation.
    pub(crate) config: &'a [crate::pb::google::api::HttpRule],
    /// Whether a method of this service with no rule is served as `POST /package.Service/Method`
    /// with the whole request as the body (`--auto-map`).
    pub(crate) auto_map: &'a dyn Fn(&prost_reflect::ServiceDescriptor) -> bool,
    /// Whether this service (its full name) has a backend; the others are left out.
    pub(crate) served: &'a dyn Fn(&str) -> bool,
    /// Transcode the compiled-in methods dynamically too.
    pub(crate) dynamic: bool,
}

impl RouteTable {
    /// The routes of the services compiled into this binary (the embedded descriptor set).
    pub fn compiled() -> Result<Self, RouteError> {
        Self::new(crate::pb::descriptor_pool())
    }

    /// The routes of the services of `sources` but for what a backend would report: the
    /// compiled-in services, those of the descriptor sets, the rules of the HTTP config and
    /// the auto-mapped methods (as `describe` and `openapi` print them).
    pub fn from_sources(sources: &super::Sources) -> Result<Self, RouteError> {
        let loaded = super::sources::Loaded::read(sources, Vec::new())?;
        loaded.table(sources, &|_| true)
    }

    /// The routes of every service in `pool` whose methods have HTTP rules.
    pub(crate) fn new(pool: &DescriptorPool) -> Result<Self, RouteError> {
        Self::build(
            pool,
            &TableOptions {
                config: &[],
                auto_map: &|_| false,
                served: &|_| true,
                dynamic: false,
            },
        )
    }

    /// The routes of every service of `pool` that has a backend: its methods' rules (from the
    /// HTTP config, else their annotations), or, for a method with none, the auto-mapped
    /// route when its service is auto-mapped.
    pub(crate) fn build(pool: &DescriptorPool, options: &TableOptions) -> Result<Self, RouteError> {
        let rules = Rules::new(pool, options.config);
        let mut services: Vec<_> = pool
            .services()
            .filter(|s| (options.served)(s.full_name()))
            .collect();
        services.sort_by(|a, b| a.full_name().cmp(b.full_name()));
        let mut routes = Vec::new();
        for service in services {
            let auto_map = (options.auto_map)(&service);
            for method in service.methods() {
                let mut bindings = rules.of(&method).map_err(RouteError::Rule)?;
                if bindings.is_empty() && auto_map {
                    bindings.push(super::rules::auto_mapped(&method));
                }
                if bindings.is_empty() {
                    continue;
                }
                let rpc =
                    Rpc::new(&method, options.dynamic).map_err(|why| RouteError::Binding {
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
