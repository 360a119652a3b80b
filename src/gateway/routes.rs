//! The route table: every `google.api.http` binding that build.rs read from `proto/`, parsed and
//! checked once at startup (templates, body fields, path variables against the request
//! message), then read-only. A binding that does not check out fails the start.

use axum::http::Method;

use super::template::Template;
use crate::json::schema::{self, Cardinality, Kind};

/// One RPC, as build.rs found it.
#[derive(Debug)]
pub struct RpcSpec {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// Full name of the request message.
    pub input: &'static str,
    /// Full name of the response message.
    pub output: &'static str,
    /// `yandex.cloud.api.operation` metadata type (full name), or empty.
    pub operation_metadata: &'static str,
    /// `yandex.cloud.api.operation` response type (full name), or empty.
    pub operation_response: &'static str,
}

/// One HTTP binding, as build.rs found it.
#[derive(Debug)]
pub struct HttpBinding {
    /// Index into [`RPCS`].
    pub rpc: usize,
    /// HTTP method.
    pub method: &'static str,
    /// Path template.
    pub pattern: &'static str,
    /// `*`, a top-level field name, or empty.
    pub body: &'static str,
    /// A top-level response field, or empty.
    pub response_body: &'static str,
}

pub use super::dispatch::{HTTP_BINDINGS, RPCS};

/// Bindings the gateway adds to the annotations, like a service config's `http.rules`:
/// `OperationService.Cancel` is `get:` in the proto but POST in the API design guide, so both
/// are served.
pub static EXTRA_BINDINGS: &[HttpBinding] = &[HttpBinding {
    rpc: usize::MAX, // resolved by path below
    method: "POST",
    pattern: "/operations/{operation_id}:cancel",
    body: "",
    response_body: "",
}];
const EXTRA_RPC_PATHS: &[&str] = &["/yandex.cloud.operation.OperationService/Cancel"];

/// Where the HTTP body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTarget {
    /// No body.
    None,
    /// `*`: every field not bound by the path.
    All,
    /// One top-level field (proto name).
    Field(String),
}

/// A checked route.
#[derive(Debug)]
pub struct Route {
    /// Index into [`RPCS`].
    pub rpc: usize,
    /// HTTP method.
    pub method: Method,
    /// The template as written in the proto.
    pub pattern: &'static str,
    /// The parsed template.
    pub template: Template,
    /// Where the body goes.
    pub body: BodyTarget,
    /// The response field sent as the body, or `None` for the whole response.
    pub response_body: Option<String>,
}

impl Route {
    /// The RPC this route calls.
    pub fn rpc(&self) -> &'static RpcSpec {
        &RPCS[self.rpc]
    }
}

/// Every route, in declaration order.
#[derive(Debug)]
pub struct RouteTable {
    /// The routes.
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table from the generated bindings plus [`EXTRA_BINDINGS`].
    pub fn new() -> Result<Self, String> {
        let extra = EXTRA_BINDINGS.iter().zip(EXTRA_RPC_PATHS).map(|(b, path)| {
            let rpc = RPCS
                .iter()
                .position(|r| r.path == *path)
                .ok_or(format!("extra binding for unknown rpc {path}"))?;
            Ok::<_, String>((rpc, b))
        });
        let generated = HTTP_BINDINGS.iter().map(|b| Ok((b.rpc, b)));
        let mut routes = Vec::new();
        for item in generated.chain(extra) {
            let (rpc, b) = item?;
            routes.push(check(rpc, b)?);
        }
        Ok(Self { routes })
    }
}

fn check(rpc: usize, b: &HttpBinding) -> Result<Route, String> {
    let spec = RPCS
        .get(rpc)
        .ok_or(format!("binding {} names rpc {rpc}", b.pattern))?;
    let ctx = |m: String| format!("{} {} ({}): {m}", b.method, b.pattern, spec.path);
    let method = Method::from_bytes(b.method.as_bytes()).map_err(|e| ctx(e.to_string()))?;
    let template = Template::parse(b.pattern).map_err(|e| ctx(e.to_string()))?;
    let input = schema::message(spec.input)
        .ok_or_else(|| ctx(format!("unknown message {}", spec.input)))?;
    for var in &template.variables {
        let mut msg = input;
        for (i, name) in var.field_path.iter().enumerate() {
            let field = msg.fields.iter().find(|f| f.name == *name).ok_or_else(|| {
                ctx(format!(
                    "path variable {} names no field of {}",
                    var.field_path.join("."),
                    msg.full_name
                ))
            })?;
            if field.cardinality != Cardinality::Single {
                return Err(ctx(format!("path variable {name} is repeated or a map")));
            }
            match (field.kind, i + 1 == var.field_path.len()) {
                (Kind::Message(m), false) => {
                    msg = schema::message(m).ok_or_else(|| ctx(format!("unknown message {m}")))?;
                }
                (Kind::Message(_), true) => {
                    return Err(ctx(format!("path variable {name} is a message")));
                }
                (_, false) => {
                    return Err(ctx(format!(
                        "path variable segment {name} is not a message"
                    )));
                }
                (_, true) => {}
            }
        }
    }
    let body = match b.body {
        "" => BodyTarget::None,
        "*" => BodyTarget::All,
        field => {
            input
                .fields
                .iter()
                .find(|f| f.name == field)
                .ok_or_else(|| {
                    ctx(format!(
                        "body field {field} is not a field of {}",
                        spec.input
                    ))
                })?;
            BodyTarget::Field(field.to_string())
        }
    };
    let response_body = (!b.response_body.is_empty()).then(|| b.response_body.to_string());
    Ok(Route {
        rpc,
        method,
        pattern: b.pattern,
        template,
        body,
        response_body,
    })
}
