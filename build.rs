//! Compiles `proto/` with protox (no `protoc`) and generates, into `OUT_DIR`:
//! - `descriptor.bin`: the encoded descriptor set, custom options kept (reflection, OpenAPI);
//! - prost messages, tonic servers and clients, and pbjson serde for every package;
//! - `schema.rs`: a compact field table of every message (the gateway types query values and
//!   walks JSON bodies with it);
//! - `any_registry.rs`: `type_url` -> concrete message, so `Any` renders as `{"@type": ...}`;
//! - `openapi.json`: OpenAPI 3.1 of every binding, from the same rules (build/openapi.rs);
//! - `http_rules.rs`: every RPC, its `google.api.http` bindings and `yandex.cloud.api.operation`
//!   option, plus the one per-RPC list in the crate: the gateway's typed dispatch.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "build/openapi.rs"]
mod openapi;

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value,
};

type BuildResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Well-known types whose Rust type the crate chooses (longest `extern_path` wins).
const WKT_PATHS: &[(&str, &str)] = &[
    (".google.protobuf", "::pbjson_types"),
    (".google.protobuf.FieldMask", "crate::json::FieldMask"),
    (".google.protobuf.Timestamp", "crate::json::Timestamp"),
    (".google.protobuf.Any", "crate::json::Any"),
];

fn main() -> BuildResult<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let proto_root = Path::new("proto");
    println!("cargo:rerun-if-changed=proto");

    let files = proto_files(proto_root)?;
    let mut compiler = protox::Compiler::new([proto_root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&files)?;

    // The encoded form keeps extension options such as (google.api.http); the struct form drops them.
    let fds_bytes = compiler.encode_file_descriptor_set();
    std::fs::write(out_dir.join("descriptor.bin"), &fds_bytes)?;

    let mut config = prost_build::Config::new();
    config
        .enable_type_names()
        .type_name_domain(["."], "type.googleapis.com")
        .btree_map(["."]);
    let mut tonic = tonic_prost_build::configure().compile_well_known_types(true);
    for (proto, rust) in WKT_PATHS {
        tonic = tonic.extern_path(*proto, *rust);
    }
    tonic.compile_fds_with_config(compiler.file_descriptor_set(), config)?;

    let mut pbjson = pbjson_build::Builder::new();
    pbjson.register_descriptors(&fds_bytes)?;
    for (proto, rust) in WKT_PATHS {
        pbjson.extern_path(*proto, *rust);
    }
    pbjson
        .btree_map(["."])
        .emit_fields()
        .build(&[".yandex", ".google.rpc", ".google.api"])?;

    let pool = compiler.descriptor_pool();
    std::fs::write(out_dir.join("schema.rs"), gen_schema(&pool))?;
    std::fs::write(out_dir.join("any_registry.rs"), gen_any_registry(&pool))?;
    std::fs::write(out_dir.join("http_rules.rs"), gen_http_rules(&pool)?)?;
    let version = std::env::var("CARGO_PKG_VERSION")?;
    let document = openapi::generate(
        &pool,
        "google.api.http",
        "yandex.cloud.api.operation",
        &version,
    );
    std::fs::write(
        out_dir.join("openapi.json"),
        serde_json::to_string_pretty(&document)?,
    )?;
    Ok(())
}

/// Every `.proto` under the root, as names relative to it (what imports use).
fn proto_files(root: &Path) -> BuildResult<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                let rel = path
                    .strip_prefix(root)?
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The Rust path prost-build gives a message or enum (with the crate's WKT overrides).
fn rust_path(full_name: &str) -> String {
    let dotted = format!(".{full_name}");
    if let Some((proto, rust)) = WKT_PATHS
        .iter()
        .filter(|(p, _)| dotted == *p || dotted.starts_with(&format!("{p}.")))
        .max_by_key(|(p, _)| p.len())
    {
        let rest = &dotted[proto.len()..];
        return if rest.is_empty() {
            rust.to_string()
        } else {
            format!(
                "{rust}::{}",
                rest.trim_start_matches('.').to_upper_camel_case()
            )
        };
    }
    rust_path_in_crate(full_name)
}

fn rust_path_in_crate(full_name: &str) -> String {
    // Package segments are lowercase; the first capitalised segment starts the type path.
    let parts: Vec<&str> = full_name.split('.').collect();
    let first_type = parts
        .iter()
        .position(|p| p.starts_with(|c: char| c.is_ascii_uppercase()))
        .unwrap_or(parts.len() - 1);
    let mut path = String::from("crate::pb");
    for pkg in &parts[..first_type] {
        path.push_str("::");
        path.push_str(pkg);
    }
    let types = &parts[first_type..];
    for (i, t) in types.iter().enumerate() {
        path.push_str("::");
        if i + 1 == types.len() {
            path.push_str(&t.to_upper_camel_case());
        } else {
            path.push_str(&t.to_snake_case());
        }
    }
    path
}

fn kind_expr(kind: &Kind) -> String {
    match kind {
        Kind::Double => "Kind::Double".into(),
        Kind::Float => "Kind::Float".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "Kind::Int64".into(),
        Kind::Uint64 | Kind::Fixed64 => "Kind::Uint64".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "Kind::Int32".into(),
        Kind::Uint32 | Kind::Fixed32 => "Kind::Uint32".into(),
        Kind::Bool => "Kind::Bool".into(),
        Kind::String => "Kind::String".into(),
        Kind::Bytes => "Kind::Bytes".into(),
        Kind::Enum(e) => format!("Kind::Enum({:?})", e.full_name()),
        Kind::Message(m) => format!("Kind::Message({:?})", m.full_name()),
    }
}

fn is_map_entry(m: &MessageDescriptor) -> bool {
    m.is_map_entry()
}

fn gen_schema(pool: &DescriptorPool) -> String {
    let mut s = String::from("// @generated by build.rs from proto/: do not edit.\n\n");
    let mut messages: Vec<MessageDescriptor> =
        pool.all_messages().filter(|m| !is_map_entry(m)).collect();
    messages.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    let mut arms = String::new();
    for (i, m) in messages.iter().enumerate() {
        let _ = writeln!(s, "static M{i}: MessageSchema = MessageSchema {{");
        let _ = writeln!(s, "    full_name: {:?},", m.full_name());
        let _ = writeln!(s, "    fields: &[");
        for f in m.fields() {
            let _ = writeln!(s, "        {},", field_expr(&f));
        }
        let _ = writeln!(s, "    ],\n}};");
        let _ = writeln!(arms, "        {:?} => Some(&M{i}),", m.full_name());
    }
    let mut enums: Vec<_> = pool.all_enums().collect();
    enums.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    let mut enum_arms = String::new();
    for (i, e) in enums.iter().enumerate() {
        let values: Vec<String> = e
            .values()
            .map(|v| format!("({:?}, {})", v.name(), v.number()))
            .collect();
        let _ = writeln!(
            s,
            "static E{i}: EnumSchema = EnumSchema {{ full_name: {:?}, values: &[{}] }};",
            e.full_name(),
            values.join(", ")
        );
        let _ = writeln!(enum_arms, "        {:?} => Some(&E{i}),", e.full_name());
    }
    let _ = write!(
        s,
        "\n/// The schema of a message by its full name.\npub fn message(full_name: &str) -> Option<&'static MessageSchema> {{\n    match full_name {{\n{arms}        _ => None,\n    }}\n}}\n"
    );
    let _ = write!(
        s,
        "\n/// The schema of an enum by its full name.\npub fn enumeration(full_name: &str) -> Option<&'static EnumSchema> {{\n    match full_name {{\n{enum_arms}        _ => None,\n    }}\n}}\n"
    );
    let all: Vec<String> = messages
        .iter()
        .map(|m| format!("&M{}", messages.iter().position(|x| x == m).unwrap_or(0)))
        .collect();
    let _ = write!(
        s,
        "\n/// Every message schema, sorted by full name.\npub static ALL_MESSAGES: &[&MessageSchema] = &[{}];\n",
        all.join(", ")
    );
    s
}

fn field_expr(f: &FieldDescriptor) -> String {
    let (cardinality, kind, map_key) = if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            unreachable!("map fields have entry messages")
        };
        let key = entry.map_entry_key_field().kind();
        let value = entry.map_entry_value_field().kind();
        (
            "Cardinality::Map",
            kind_expr(&value),
            format!("Some({})", kind_expr(&key)),
        )
    } else if f.cardinality() == Cardinality::Repeated {
        (
            "Cardinality::Repeated",
            kind_expr(&f.kind()),
            "None".to_string(),
        )
    } else {
        (
            "Cardinality::Single",
            kind_expr(&f.kind()),
            "None".to_string(),
        )
    };
    let oneof = match f.containing_oneof() {
        Some(o) if !o.is_synthetic() => format!("Some({:?})", o.name()),
        _ => "None".to_string(),
    };
    format!(
        "FieldSchema {{ name: {:?}, json_name: {:?}, number: {}, cardinality: {cardinality}, kind: {kind}, map_key: {map_key}, oneof: {oneof} }}",
        f.name(),
        f.json_name(),
        f.number()
    )
}

/// Well-known types whose JSON form is not an object: inside `Any` they go under `"value"`.
const VALUE_FORM_WKTS: &[&str] = &[
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
];

fn gen_any_registry(pool: &DescriptorPool) -> String {
    let mut names: BTreeSet<String> = pool
        .all_messages()
        .filter(|m| !is_map_entry(m))
        .filter(|m| !m.full_name().starts_with("google.protobuf."))
        .map(|m| m.full_name().to_string())
        .collect();
    names.insert("google.protobuf.Empty".into());
    let mut to = String::new();
    let mut from = String::new();
    for name in names
        .iter()
        .map(String::as_str)
        .chain(VALUE_FORM_WKTS.iter().copied())
    {
        let path = rust_path(name);
        let form = if VALUE_FORM_WKTS.contains(&name) {
            "AnyForm::Value"
        } else {
            "AnyForm::Fields"
        };
        let _ = writeln!(
            to,
            "        {name:?} => Ok(encode_json::<{path}, S>(type_url, value, {form}, serializer)),"
        );
        let _ = writeln!(
            from,
            "        {name:?} => Some(decode_json::<{path}>(json, {form})),"
        );
    }
    format!(
        "// @generated by build.rs from proto/: do not edit.\n\n\
/// Serializes the packed bytes of a known type name as the proto3 JSON of an Any (`@type`\n\
/// first); hands the serializer back for an unknown type.\n\
pub(crate) fn to_json<S: serde::Serializer>(type_name: &str, type_url: &str, value: &[u8], serializer: S) -> Result<Result<S::Ok, S::Error>, S> {{\n    match type_name {{\n{to}        _ => Err(serializer),\n    }}\n}}\n\n\
/// Parses proto3 JSON of a known type name to its encoded bytes; `None` for unknown types.\n\
pub(crate) fn from_json(type_name: &str, json: serde_json::Map<String, serde_json::Value>) -> Option<Result<Vec<u8>, String>> {{\n    match type_name {{\n{from}        _ => None,\n    }}\n}}\n"
    )
}

fn gen_http_rules(pool: &DescriptorPool) -> BuildResult<String> {
    let http_ext = pool
        .get_extension_by_name("google.api.http")
        .ok_or("google.api.http is not defined")?;
    let op_ext = pool
        .get_extension_by_name("yandex.cloud.api.operation")
        .ok_or("yandex.cloud.api.operation is not defined")?;
    let mut rpcs = String::new();
    let mut bindings = String::new();
    let mut dispatch = String::new();
    let mut check = String::new();
    let mut services: Vec<_> = pool.services().collect();
    services.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    let mut index = 0usize;
    for service in services {
        for method in service.methods() {
            if method.is_client_streaming() || method.is_server_streaming() {
                continue;
            }
            let options = method.options();
            let (op_meta, op_resp) = if options.has_extension(&op_ext) {
                let op = options.get_extension(&op_ext);
                let op = op.as_message().ok_or("operation option is a message")?;
                // Names resolve like proto type references: innermost package scope first.
                let qualify = |f: &str| -> String {
                    let v = string_field(op, f);
                    let mut scope = service.package_name().to_string();
                    loop {
                        let candidate = if scope.is_empty() {
                            v.clone()
                        } else {
                            format!("{scope}.{v}")
                        };
                        if v.is_empty() || pool.get_message_by_name(&candidate).is_some() {
                            return candidate;
                        }
                        if scope.is_empty() {
                            return v;
                        }
                        scope = scope
                            .rsplit_once('.')
                            .map(|(s, _)| s.to_string())
                            .unwrap_or_default();
                    }
                };
                (qualify("metadata"), qualify("response"))
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                rpcs,
                "    RpcSpec {{ path: \"/{}/{}\", input: {:?}, output: {:?}, operation_metadata: {:?}, operation_response: {:?} }},",
                service.full_name(),
                method.name(),
                method.input().full_name(),
                method.output().full_name(),
                op_meta,
                op_resp
            );
            let _ = writeln!(
                check,
                "        {index} => parse::<{}>({index}, json).map(|_| ()),",
                rust_path(method.input().full_name())
            );
            let _ = writeln!(
                dispatch,
                "        {index} => call::<{}, {}>(backend, {index}, request).await,",
                rust_path(method.input().full_name()),
                rust_path(method.output().full_name())
            );
            if options.has_extension(&http_ext) {
                let rule = options.get_extension(&http_ext);
                let rule = rule.as_message().ok_or("http option is a message")?;
                push_binding(&mut bindings, index, rule, true)?;
            }
            index += 1;
        }
    }
    Ok(format!(
        "// @generated by build.rs from proto/: do not edit.\n\n\
/// Every unary RPC of every service in proto/, sorted by service then declaration order.\n\
pub static RPCS: &[RpcSpec] = &[\n{rpcs}];\n\n\
/// Every `google.api.http` binding (additional bindings flattened), in declaration order.\n\
pub static HTTP_BINDINGS: &[HttpBinding] = &[\n{bindings}];\n\n\
/// Runs RPC number `rpc` (an index into [`RPCS`]) with the typed request built from JSON.\n\
pub(crate) async fn dispatch(backend: &Backend, rpc: usize, request: Transcoded) -> Result<Rendered, GatewayError> {{\n    match rpc {{\n{dispatch}        _ => Err(GatewayError::NotFound),\n    }}\n}}\n\n\
/// Deserializes the canonical JSON of RPC `rpc`'s request into its typed message, and drops it:\n\
/// what dispatch does before calling, for tests and fuzzing without a backend.\n\
pub fn check(rpc: usize, json: serde_json::Value) -> Result<(), GatewayError> {{\n    match rpc {{\n{check}        _ => Err(GatewayError::NotFound),\n    }}\n}}\n"
    ))
}

fn string_field(msg: &DynamicMessage, name: &str) -> String {
    msg.get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn push_binding(out: &mut String, rpc: usize, rule: &DynamicMessage, top: bool) -> BuildResult<()> {
    let mut found = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        if rule.has_field_by_name(verb) {
            found = Some((verb.to_uppercase(), string_field(rule, verb)));
        }
    }
    if let Some(Value::Message(custom)) = rule
        .has_field_by_name("custom")
        .then(|| rule.get_field_by_name("custom").map(|v| v.into_owned()))
        .flatten()
    {
        found = Some((string_field(&custom, "kind"), string_field(&custom, "path")));
    }
    if let Some((verb, pattern)) = found {
        let _ = writeln!(
            out,
            "    HttpBinding {{ rpc: {rpc}, method: {verb:?}, pattern: {pattern:?}, body: {:?}, response_body: {:?} }},",
            string_field(rule, "body"),
            string_field(rule, "response_body")
        );
    }
    // additional_bindings nest one level only (google/api/http.proto); deeper ones are ignored.
    if let Some(Value::List(extra)) = top
        .then(|| {
            rule.get_field_by_name("additional_bindings")
                .map(|v| v.into_owned())
        })
        .flatten()
    {
        for item in extra {
            if let Value::Message(m) = item {
                push_binding(out, rpc, &m, false)?;
            }
        }
    }
    Ok(())
}
