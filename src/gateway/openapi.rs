//! OpenAPI 3.1 of the route table, from the same descriptors and rules: every route becomes a
//! path and method with its path and query parameters typed as proto3 JSON, its request body,
//! its response (an Operation's `metadata` and `response` typed from the
//! `yandex.cloud.api.operation` option) and the google.rpc.Status error; descriptions come from
//! the protos' comments. Object keys are sorted, so the document is the same from run to run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::routes::{BodySelector, RouteTable};
use crate::pb::yandex::cloud::api::Operation as OperationOption;

/// Comments by source path, per file.
struct Comments(HashMap<String, HashMap<Vec<i32>, String>>);

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut files = HashMap::new();
        for file in pool.files() {
            let mut by_path = HashMap::new();
            if let Some(info) = &file.file_descriptor_proto().source_code_info {
                for loc in &info.location {
                    let text = loc.leading_comments().trim();
                    if !text.is_empty() {
                        let text = text.lines().map(str::trim).collect::<Vec<_>>().join(" ");
                        by_path.insert(loc.path.clone(), text);
                    }
                }
            }
            files.insert(file.name().to_string(), by_path);
        }
        Self(files)
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0.get(file)?.get(path).map(String::as_str)
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The proto3 JSON schema of a value of `kind` (not counting repetition).
fn kind_schema(kind: &Kind, used: &mut BTreeSet<String>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "uint32", "minimum": 0})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(e) => {
            json!({"type": "string", "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>()})
        }
        Kind::Message(m) => match m.full_name() {
            "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
            "google.protobuf.Duration" => {
                json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"})
            }
            "google.protobuf.FieldMask" => {
                json!({"type": "string", "description": "Comma-separated lowerCamelCase field paths."})
            }
            "google.protobuf.Empty" => json!({"type": "object"}),
            name => {
                used.insert(name.to_string());
                reference(name)
            }
        },
    }
}

fn field_schema(f: &FieldDescriptor, comments: &Comments, used: &mut BTreeSet<String>) -> Value {
    let mut schema = if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            unreachable!("maps have entries")
        };
        json!({"type": "object", "additionalProperties": kind_schema(&entry.map_entry_value_field().kind(), used)})
    } else if f.is_list() {
        json!({"type": "array", "items": kind_schema(&f.kind(), used)})
    } else {
        kind_schema(&f.kind(), used)
    };
    if let Some(text) = comments.get(f.parent_file().name(), f.path()) {
        schema = if schema.get("$ref").is_some() {
            json!({"allOf": [schema], "description": text})
        } else {
            let mut s = schema;
            s["description"] = json!(text);
            s
        };
    }
    schema
}

fn message_schema(
    m: &MessageDescriptor,
    comments: &Comments,
    used: &mut BTreeSet<String>,
) -> Value {
    if m.full_name() == "google.protobuf.Any" {
        return json!({
            "type": "object",
            "description": "A message of any type: `@type` names it, its fields sit beside (well-known types with a non-object JSON form sit under `value`).",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"],
        });
    }
    let mut props = Map::new();
    for f in m.fields() {
        props.insert(f.json_name().to_string(), field_schema(&f, comments, used));
    }
    let mut schema = json!({"type": "object", "properties": props});
    if let Some(text) = comments.get(m.parent_file().name(), m.path()) {
        schema["description"] = json!(text);
    }
    schema
}

/// A field path (proto names) to its JSON form.
fn json_path(input: &MessageDescriptor, path: &str) -> (String, Vec<String>) {
    let mut msg = Some(input.clone());
    let mut json = Vec::new();
    for seg in path.split('.') {
        let f = msg.as_ref().and_then(|m| m.get_field_by_name(seg));
        json.push(
            f.as_ref()
                .map(|f| f.json_name().to_string())
                .unwrap_or_else(|| seg.to_string()),
        );
        msg = f.and_then(|f| {
            if let Kind::Message(m) = f.kind() {
                Some(m)
            } else {
                None
            }
        });
    }
    (json.join("."), path.split('.').map(str::to_owned).collect())
}

/// `/compute/v1/images/{image_id}` -> (`/compute/v1/images/{imageId}`, [(imageId, image_id)]).
fn openapi_path(input: &MessageDescriptor, pattern: &str) -> (String, Vec<(String, String)>) {
    let mut out = String::new();
    let mut vars = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .unwrap_or(rest.len() - 1);
        let var = &rest[open + 1..close];
        let field = var.split('=').next().unwrap_or(var);
        let (json, _) = json_path(input, field);
        out.push_str(&format!("{{{json}}}"));
        vars.push((json, field.to_string()));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    (out, vars)
}

/// Query parameters: every field not bound by the path, nested messages flattened as `a.b`
/// (JSON names; the query parser accepts proto names too).
struct Query<'a> {
    bound: &'a BTreeSet<String>,
    comments: &'a Comments,
}

impl Query<'_> {
    fn params(
        &self,
        m: &MessageDescriptor,
        proto_prefix: &str,
        json_prefix: &str,
        depth: usize,
        used: &mut BTreeSet<String>,
        out: &mut Vec<Value>,
    ) {
        for f in m.fields() {
            let join = |prefix: &str, name: &str| {
                if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                }
            };
            let proto_path = join(proto_prefix, f.name());
            let json_name = join(json_prefix, f.json_name());
            if self.bound.contains(&proto_path) {
                continue;
            }
            match f.kind() {
                Kind::Message(inner) if !inner.full_name().starts_with("google.protobuf.") => {
                    // Nested messages are set field by field; lists of messages cannot be.
                    if !f.is_list() && !f.is_map() && depth < 3 {
                        self.params(&inner, &proto_path, &json_name, depth + 1, used, out);
                    }
                }
                _ => {
                    let mut p = json!({"name": json_name, "in": "query", "required": false, "schema": field_schema(&f, self.comments, used)});
                    if f.is_list() {
                        p["explode"] = json!(true);
                    }
                    if f.is_map() {
                        p["style"] = json!("deepObject");
                        p["explode"] = json!(true);
                    }
                    if let Some(text) = self.comments.get(f.parent_file().name(), f.path()) {
                        p["description"] = json!(text);
                    }
                    out.push(p);
                }
            }
        }
    }
}

/// The OpenAPI operation keys (the HTTP methods OpenAPI can describe).
const OPERATION_KEYS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The `yandex.cloud.api.operation` option of a method, if it has one.
fn operation_option(
    pool: &DescriptorPool,
    method: &prost_reflect::MethodDescriptor,
) -> Option<OperationOption> {
    let ext = pool.get_extension_by_name("yandex.cloud.api.operation")?;
    let options = method.options();
    if !options.has_extension(&ext) {
        return None;
    }
    options
        .get_extension(&ext)
        .as_message()
        .and_then(|m| m.transcode_to::<OperationOption>().ok())
}

/// A message name as an option writes it, resolved like a proto type reference: innermost
/// package scope first.
fn resolve(pool: &DescriptorPool, package: &str, name: &str) -> String {
    let mut scope = package.to_string();
    loop {
        let candidate = if scope.is_empty() {
            name.to_string()
        } else {
            format!("{scope}.{name}")
        };
        if pool.get_message_by_name(&candidate).is_some() || scope.is_empty() {
            return candidate;
        }
        scope = scope
            .rsplit_once('.')
            .map(|(s, _)| s.to_string())
            .unwrap_or_default();
    }
}

/// The schema of a method's reply: its output message, or for an Operation, the Operation with
/// `metadata` and `response` typed as the option says.
fn response_schema(
    pool: &DescriptorPool,
    method: &prost_reflect::MethodDescriptor,
    used: &mut BTreeSet<String>,
) -> Value {
    let Some(option) = operation_option(pool, method) else {
        return kind_schema(&Kind::Message(method.output()), used);
    };
    let package = method.parent_service().package_name().to_string();
    let mut typed = |name: &str| -> Value {
        if name.is_empty() {
            return reference("google.protobuf.Any");
        }
        let full = resolve(pool, &package, name);
        let type_const = json!({"type": "object", "properties": {"@type": {"const": format!("type.googleapis.com/{full}")}}});
        if full == "google.protobuf.Empty" {
            json!({"allOf": [reference("google.protobuf.Any"), type_const]})
        } else {
            used.insert(full.clone());
            json!({"allOf": [reference("google.protobuf.Any"), type_const, reference(&full)]})
        }
    };
    let metadata = typed(&option.metadata);
    let response = typed(&option.response);
    used.insert("yandex.cloud.operation.Operation".into());
    json!({"allOf": [
        reference("yandex.cloud.operation.Operation"),
        {"type": "object", "properties": {"metadata": metadata, "response": response}},
    ]})
}

/// The OpenAPI 3.1 document of every route of `table`, as JSON text.
pub fn document(table: &RouteTable) -> String {
    let (pool, routes) = (table.pool(), table.routes());
    let comments = Comments::new(pool);
    let mut used: BTreeSet<String> = BTreeSet::from([
        "google.rpc.Status".to_string(),
        "google.protobuf.Any".to_string(),
    ]);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut tags: Vec<Value> = Vec::new();
    let mut tagged: BTreeSet<String> = BTreeSet::new();
    for (i, route) in routes.iter().enumerate() {
        let verb = route.method().as_str().to_ascii_lowercase();
        if !OPERATION_KEYS.contains(&verb.as_str()) {
            continue; // a custom HTTP method: OpenAPI has no way to describe it
        }
        let method = route.rpc().method();
        let service = method.parent_service();
        // The n-th binding of its method gets the n-th operation id.
        let nth = routes[..i]
            .iter()
            .filter(|r| r.rpc().method() == method)
            .count();
        let input = method.input();
        let description = comments
            .get(service.parent_file().name(), method.path())
            .unwrap_or_default()
            .to_string();
        let response_schema = response_schema(pool, method, &mut used);
        let (path, vars) = openapi_path(&input, route.pattern());
        let bound: BTreeSet<String> = vars.iter().map(|(_, proto)| proto.clone()).collect();
        let mut parameters: Vec<Value> = vars
            .iter()
            .map(|(json, _)| json!({"name": json, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "operationId": if nth == 0 { format!("{}_{}", service.name(), method.name()) } else { format!("{}_{}_{}", service.name(), method.name(), nth) },
            "tags": [service.name()],
            "summary": description.split(". ").next().unwrap_or_default(),
            "description": description,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}},
                "default": {"description": "An error: google.rpc.Status with the HTTP status of its code.", "content": {"application/json": {"schema": reference("google.rpc.Status")}}},
            },
        });
        let raw = method.output().full_name() == "google.api.HttpBody";
        if raw {
            operation["responses"]["200"] = json!({"description": "The raw body, with its own content type (google.api.HttpBody).", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}});
        } else if method.is_server_streaming() {
            let line = json!({"type": "object", "properties": {"result": response_schema, "error": reference("google.rpc.Status")}});
            operation["responses"]["200"] = json!({
                "description": "A stream: one JSON line per message, {\"result\": message}; a failure after the first message as a last line {\"error\": Status}. With Accept: text/event-stream, Server-Sent Events instead.",
                "content": {
                    "application/json": {"schema": line},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            });
        }
        match route.body() {
            BodySelector::None => Query {
                bound: &bound,
                comments: &comments,
            }
            .params(&input, "", "", 0, &mut used, &mut parameters),
            BodySelector::Whole => {
                let mut props = Map::new();
                for f in input.fields().filter(|f| !bound.contains(f.name())) {
                    props.insert(
                        f.json_name().to_string(),
                        field_schema(&f, &comments, &mut used),
                    );
                }
                operation["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "properties": props}}}});
            }
            BodySelector::Field(f) => {
                operation["requestBody"] = json!({"required": false, "content": {"application/json": {"schema": field_schema(f, &comments, &mut used)}}});
                let mut b = bound.clone();
                b.insert(f.name().to_string());
                Query {
                    bound: &b,
                    comments: &comments,
                }
                .params(&input, "", "", 0, &mut used, &mut parameters);
            }
        }
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        paths.entry(path).or_default().insert(verb, operation);
        if tagged.insert(service.full_name().to_string()) {
            let text = comments
                .get(service.parent_file().name(), service.path())
                .unwrap_or_default();
            tags.push(json!({"name": service.name(), "description": text}));
        }
    }
    // Every message a schema mentions, and the messages they mention in turn.
    let mut schemas = Map::new();
    let mut pending: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = pending.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        let Some(m) = pool.get_message_by_name(&name) else {
            continue;
        };
        let mut more = BTreeSet::new();
        schemas.insert(name, message_schema(&m, &comments, &mut more));
        pending.extend(more.into_iter().filter(|n| !schemas.contains_key(n)));
    }
    let mut document = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Yandex Cloud Compute Image API (compute-gateway)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST/JSON transcoding of the ImageService and OperationService gRPC APIs, generated from the google.api.http rules of proto/. int64 values are strings; timestamps are RFC 3339; every error is a google.rpc.Status.",
        },
        "tags": tags,
        "paths": paths,
        "components": {"schemas": schemas},
    });
    document.sort_all_objects();
    serde_json::to_string_pretty(&document).expect("a JSON value always renders")
}
