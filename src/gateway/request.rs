//! Body + path bindings + query -> one JSON value in canonical form -> (in dispatch) the typed
//! request, deserialized once by pbjson. The canonicalisation walks the value with the message
//! schema and applies the proto3 JSON input rules pbjson does not: `null` means unset; integers
//! arrive as numbers or strings in any exact form (`"123"`, `1e2`, `123.0`; not `1.5`, not out
//! of range); enums by name or number; a field given under both its JSON and proto name, two
//! members of one oneof, or an unknown field is an error naming the field path.

use serde_json::{Map, Number, Value};

use super::error::GatewayError;
use super::matcher::Match;
use super::query;
use super::routes::BodyTarget;
use crate::json::schema::{self, Cardinality, FieldSchema, Kind, MessageSchema};

/// Builds the canonical JSON of the request message for a matched route.
pub fn build(
    m: &Match<'_>,
    query_string: Option<&str>,
    body: &[u8],
) -> Result<Value, GatewayError> {
    let schema = schema::message(m.route.rpc().input)
        .ok_or_else(|| GatewayError::Internal(format!("no schema for {}", m.route.rpc().input)))?;
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    let mut root = match (&m.route.body, has_body) {
        (BodyTarget::None, true) => {
            return Err(GatewayError::bad_request(format!(
                "{} {} takes no request body",
                m.route.method, m.route.pattern
            )));
        }
        (_, false) => Map::new(),
        (BodyTarget::All, true) => match parse_json(body)? {
            Value::Object(map) => map,
            other => {
                return Err(GatewayError::bad_request(format!(
                    "request body must be a JSON object, got {}",
                    json_type(&other)
                )));
            }
        },
        (BodyTarget::Field(f), true) => {
            let field = schema
                .field(f)
                .ok_or_else(|| GatewayError::Internal(format!("body field {f}")))?;
            Map::from_iter([(field.json_name.to_string(), parse_json(body)?)])
        }
    };
    if let Some(q) = query_string.filter(|q| !q.is_empty()) {
        if m.route.body == BodyTarget::All {
            let key = q.split(['&', '=']).next().unwrap_or_default();
            return Err(GatewayError::bad_request(format!(
                "query parameter {key:?} is not accepted: the request body carries every field of this method"
            )));
        }
        query::apply(schema, &mut root, q)?;
    }
    let mut root = match message(schema, Value::Object(root), "")? {
        Value::Object(map) => map,
        _ => unreachable!("message() returns an object"),
    };
    for (var, raw) in m.route.template.variables.iter().zip(&m.bindings) {
        bind_path(schema, &mut root, &var.field_path, raw)?;
    }
    Ok(Value::Object(root))
}

/// Parses JSON; a syntax error names its byte offset.
fn parse_json(body: &[u8]) -> Result<Value, GatewayError> {
    serde_json::from_slice(body).map_err(|e| {
        let offset = byte_offset(body, e.line(), e.column());
        let what = e.to_string();
        let what = what.split(" at line").next().unwrap_or(&what);
        GatewayError::bad_request(format!(
            "request body is not valid JSON at byte offset {offset}: {what}"
        ))
    })
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in body.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1);
        }
        offset += l.len() + 1;
    }
    body.len()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sets `key` once; `Err` with the old value when it was already set.
pub fn set_unique(obj: &mut Map<String, Value>, key: &str, v: Value) -> Result<(), Value> {
    match obj.get(key) {
        Some(old) => Err(old.clone()),
        None => {
            obj.insert(key.to_string(), v);
            Ok(())
        }
    }
}

/// Weaves one path binding into the request: a body or query value for the same field must
/// agree with it.
fn bind_path(
    schema: &'static MessageSchema,
    root: &mut Map<String, Value>,
    path: &[String],
    raw: &str,
) -> Result<(), GatewayError> {
    let mut msg = schema;
    let mut obj = root;
    let dotted = path.join(".");
    for (i, name) in path.iter().enumerate() {
        let field = msg
            .field(name)
            .ok_or_else(|| GatewayError::Internal(format!("path field {dotted}")))?;
        if i + 1 < path.len() {
            let Kind::Message(m) = field.kind else {
                return Err(GatewayError::Internal(format!("path field {dotted}")));
            };
            msg =
                schema::message(m).ok_or_else(|| GatewayError::Internal(format!("schema {m}")))?;
            obj = obj
                .entry(field.json_name)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or_else(|| {
                    GatewayError::bad_request(format!(
                        "field {} must be an object",
                        field.json_name
                    ))
                })?;
            continue;
        }
        let typed = scalar_from_str(field.kind, raw)
            .and_then(|v| scalar(field.kind, v, &dotted))
            .map_err(|e| GatewayError::bad_request(format!("path parameter {dotted}: {e}")))?;
        if let Err(old) = set_unique(obj, field.json_name, typed.clone())
            && old != typed
        {
            return Err(GatewayError::bad_request(format!(
                "field {dotted} is {old} in the request but {typed} in the URL path; they must agree"
            )));
        }
    }
    Ok(())
}

/// Types a string from a URL (query or path) by its field kind.
pub fn scalar_from_str(kind: Kind, s: &str) -> Result<Value, String> {
    match kind {
        Kind::Bool => match s {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {s:?}")),
        },
        Kind::Double | Kind::Float => match s.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            _ if matches!(s, "NaN" | "Infinity" | "-Infinity") => Ok(Value::String(s.into())),
            _ => Err(format!("expected a number, got {s:?}")),
        },
        Kind::Enum(e) => match s.parse::<i64>() {
            Ok(n) => Ok(Value::Number(n.into())),
            Err(_) => {
                let schema = schema::enumeration(e).ok_or_else(|| format!("unknown enum {e}"))?;
                schema
                    .number(s)
                    .map(|_| Value::String(s.into()))
                    .ok_or_else(|| format!("{s:?} is not a value of {e}"))
            }
        },
        Kind::Message(m) if is_string_wkt(m) => Ok(Value::String(s.into())),
        Kind::Message(m) => Err(format!(
            "{m} is a message; set its fields one by one (name.field=value)"
        )),
        Kind::Int64 | Kind::Uint64 | Kind::Int32 | Kind::Uint32 => {
            integer(kind, &Value::String(s.into()))
        }
        Kind::String | Kind::Bytes => Ok(Value::String(s.into())),
    }
}

fn is_string_wkt(m: &str) -> bool {
    matches!(
        m,
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
    )
}

/// Canonicalises a JSON object of message `schema`; `path` is the field path so far.
pub fn message(
    schema: &'static MessageSchema,
    v: Value,
    path: &str,
) -> Result<Value, GatewayError> {
    let Value::Object(map) = v else {
        return Err(GatewayError::bad_request(format!(
            "{}: expected an object ({}), got {}",
            shown(path),
            schema.full_name,
            json_type(&v)
        )));
    };
    let mut out = Map::with_capacity(map.len());
    let mut oneofs: Vec<(&str, &str)> = Vec::new();
    for (key, value) in map {
        let Some(field) = schema.field(&key) else {
            return Err(GatewayError::bad_request(format!(
                "unknown field {:?} in {}",
                join(path, &key),
                schema.full_name
            )));
        };
        let here = join(path, field.json_name);
        if out.contains_key(field.json_name) {
            return Err(GatewayError::bad_request(format!(
                "field {here} is given twice"
            )));
        }
        if value.is_null() {
            continue; // proto3 JSON: null means the field is not set
        }
        if let Some(o) = field.oneof {
            if let Some((_, other)) = oneofs.iter().find(|(name, _)| *name == o) {
                return Err(GatewayError::bad_request(format!(
                    "fields {} and {here} are both set, but only one member of oneof {o} may be",
                    join(path, other)
                )));
            }
            oneofs.push((o, field.json_name));
        }
        let canonical = field_value(field, value, &here)?;
        out.insert(field.json_name.to_string(), canonical);
    }
    Ok(Value::Object(out))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn shown(path: &str) -> &str {
    if path.is_empty() {
        "request body"
    } else {
        path
    }
}

fn field_value(field: &'static FieldSchema, v: Value, path: &str) -> Result<Value, GatewayError> {
    match field.cardinality {
        Cardinality::Single => element(field.kind, v, path),
        Cardinality::Repeated => {
            let Value::Array(items) = v else {
                return Err(GatewayError::bad_request(format!(
                    "{path}: expected an array, got {}",
                    json_type(&v)
                )));
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let here = format!("{path}[{i}]");
                    if item.is_null() {
                        return Err(GatewayError::bad_request(format!(
                            "{here}: null is not allowed in a list"
                        )));
                    }
                    element(field.kind, item, &here)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Cardinality::Map => {
            let Value::Object(entries) = v else {
                return Err(GatewayError::bad_request(format!(
                    "{path}: expected an object (a map), got {}",
                    json_type(&v)
                )));
            };
            let key_kind = field.map_key.unwrap_or(Kind::String);
            let mut out = Map::with_capacity(entries.len());
            for (k, item) in entries {
                let here = format!("{path}[{k:?}]");
                if key_kind != Kind::String {
                    scalar_from_str(key_kind, &k)
                        .map_err(|e| GatewayError::bad_request(format!("{here}: key {e}")))?;
                }
                if item.is_null() {
                    return Err(GatewayError::bad_request(format!(
                        "{here}: null is not allowed as a map value"
                    )));
                }
                out.insert(k, element(field.kind, item, &here)?);
            }
            Ok(Value::Object(out))
        }
    }
}

fn element(kind: Kind, v: Value, path: &str) -> Result<Value, GatewayError> {
    match kind {
        Kind::Message(m) if m.starts_with("google.protobuf.") => match (m, &v) {
            (_, Value::String(_)) if is_string_wkt(m) => Ok(v),
            (_, _) if is_string_wkt(m) => Err(GatewayError::bad_request(format!(
                "{path}: expected a string ({m}), got {}",
                json_type(&v)
            ))),
            ("google.protobuf.Empty", Value::Object(o)) if o.is_empty() => Ok(v),
            ("google.protobuf.Empty", _) => {
                Err(GatewayError::bad_request(format!("{path}: expected {{}}")))
            }
            ("google.protobuf.Any", Value::Object(_)) => Ok(v),
            ("google.protobuf.Any", _) => Err(GatewayError::bad_request(format!(
                "{path}: expected an object with \"@type\""
            ))),
            _ => Ok(v),
        },
        Kind::Message(m) => {
            let schema = schema::message(m)
                .ok_or_else(|| GatewayError::Internal(format!("no schema for {m}")))?;
            message(schema, v, path)
        }
        _ => scalar(kind, v, path).map_err(GatewayError::BadRequest),
    }
}

/// Canonicalises a scalar: 64-bit integers become decimal strings, 32-bit ones numbers, enums
/// their value names.
fn scalar(kind: Kind, v: Value, path: &str) -> Result<Value, String> {
    let wrong = |what: &str| format!("{path}: expected {what}, got {}", json_type(&v));
    match kind {
        Kind::Int64 | Kind::Uint64 | Kind::Int32 | Kind::Uint32 => {
            integer(kind, &v).map_err(|e| format!("{path}: {e}"))
        }
        Kind::Bool => v
            .is_boolean()
            .then_some(v.clone())
            .ok_or_else(|| wrong("true or false")),
        Kind::String | Kind::Bytes => v
            .is_string()
            .then_some(v.clone())
            .ok_or_else(|| wrong("a string")),
        Kind::Double | Kind::Float => match &v {
            Value::Number(_) => Ok(v.clone()),
            Value::String(s) => scalar_from_str(kind, s).map_err(|e| format!("{path}: {e}")),
            _ => Err(wrong("a number")),
        },
        Kind::Enum(e) => {
            let schema =
                schema::enumeration(e).ok_or_else(|| format!("{path}: unknown enum {e}"))?;
            match &v {
                Value::String(name) if schema.number(name).is_some() => Ok(v.clone()),
                Value::String(name) => Err(format!(
                    "{path}: {name:?} is not a value of {e}; expected one of {}",
                    schema
                        .values
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Value::Number(n) => {
                    let number = n.as_i64().filter(|n| i32::try_from(*n).is_ok());
                    match number
                        .and_then(|n| schema.values.iter().find(|(_, v)| i64::from(*v) == n))
                    {
                        Some((name, _)) => Ok(Value::String((*name).into())),
                        None => Err(format!("{path}: {n} is not a value of {e}")),
                    }
                }
                _ => Err(wrong("an enum value name or number")),
            }
        }
        Kind::Message(_) => Err(wrong("an object")),
    }
}

/// An integer in any exact proto3 JSON form, range-checked for its kind.
fn integer(kind: Kind, v: &Value) -> Result<Value, String> {
    let (min, max, name): (i128, i128, &str) = match kind {
        Kind::Int64 => (i64::MIN.into(), i64::MAX.into(), "int64"),
        Kind::Uint64 => (0, u64::MAX.into(), "uint64"),
        Kind::Int32 => (i32::MIN.into(), i32::MAX.into(), "int32"),
        _ => (0, u32::MAX.into(), "uint32"),
    };
    let n: Option<i128> = match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().and_then(exact)),
        Value::String(s) if s.trim() == s && !s.is_empty() => {
            s.parse::<i128>().ok().or_else(|| {
                // Exponent and fraction forms (`1e2`, `123.0`) must still be exact integers.
                s.parse::<f64>()
                    .ok()
                    .filter(|_| !s.contains(['n', 'N', 'i', 'I']))
                    .and_then(exact)
            })
        }
        _ => {
            return Err(format!(
                "expected an integer ({name}) as a number or a string, got {}",
                json_type(v)
            ));
        }
    };
    let shown = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    let n = n.ok_or_else(|| format!("{shown} is not an integer"))?;
    if n < min || n > max {
        return Err(format!("{shown} is out of range for {name}"));
    }
    Ok(match kind {
        Kind::Int64 | Kind::Uint64 => Value::String(n.to_string()),
        _ => Value::Number(Number::from(n as i64)),
    })
}

/// An f64 that holds an integer exactly (and within 2^64).
fn exact(f: f64) -> Option<i128> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(msg: &str, v: Value) -> Result<Value, String> {
        message(schema::message(msg).expect("known"), v, "").map_err(|e| e.to_string())
    }

    const UPDATE: &str = "yandex.cloud.compute.v1.UpdateImageRequest";

    #[test]
    fn integers_in_every_exact_form() {
        for (input, want) in [
            (json!(123), "123"),
            (json!("123"), "123"),
            (json!(1.23e2), "123"),
            (json!("1.23e2"), "123"),
            (json!(123.0), "123"),
            (json!("-5"), "-5"),
            (json!("9223372036854775807"), "9223372036854775807"),
        ] {
            assert_eq!(
                canon(UPDATE, json!({"minDiskSize": input})),
                Ok(json!({"minDiskSize": want})),
                "{input}"
            );
        }
        for bad in [
            json!(1.5),
            json!("1.5"),
            json!("9223372036854775808"),
            json!(""),
            json!(" 1"),
            json!("0x10"),
            json!(true),
            json!([1]),
            json!("NaN"),
            json!("Infinity"),
        ] {
            assert!(canon(UPDATE, json!({"minDiskSize": bad})).is_err(), "{bad}");
        }
    }

    #[test]
    fn nulls_names_and_unknown_fields() {
        assert_eq!(
            canon(
                UPDATE,
                json!({"name": null, "labels": null, "update_mask": "name", "image_id": "x"})
            ),
            Ok(json!({"updateMask": "name", "imageId": "x"}))
        );
        let err = canon(UPDATE, json!({"nmae": "x"})).expect_err("unknown");
        assert!(err.contains("\"nmae\""), "{err}");
        let err = canon(UPDATE, json!({"name": "a", "name": "b"}));
        assert!(err.is_ok(), "serde_json keeps the last duplicate key");
        assert!(
            canon(UPDATE, json!({"imageId": "a", "image_id": "b"}))
                .expect_err("twice")
                .contains("twice")
        );
        assert!(canon(UPDATE, json!({"labels": {"a": null}})).is_err());
        assert!(canon(UPDATE, json!({"labels": ["a"]})).is_err());
        assert!(
            canon(UPDATE, json!({"name": 5}))
                .expect_err("type")
                .contains("name")
        );
        assert!(canon(UPDATE, json!({"updateMask": ["name"]})).is_err());
    }

    #[test]
    fn enums_oneofs_and_nesting() {
        let create = "yandex.cloud.compute.v1.CreateImageRequest";
        assert_eq!(
            canon(
                create,
                json!({"os": {"type": 2}, "hardwareGeneration": {"legacyFeatures": {"pciTopology": "PCI_TOPOLOGY_V1"}}})
            ),
            Ok(
                json!({"os": {"type": "WINDOWS"}, "hardwareGeneration": {"legacyFeatures": {"pciTopology": "PCI_TOPOLOGY_V1"}}})
            )
        );
        let err = canon(create, json!({"os": {"type": "MACOS"}})).expect_err("bad enum");
        assert!(err.contains("os.type") && err.contains("LINUX"), "{err}");
        assert!(canon(create, json!({"os": {"type": 7}})).is_err());
        let err = canon(create, json!({"diskId": "d", "uri": "u"})).expect_err("oneof");
        assert!(err.contains("oneof source"), "{err}");
        assert!(canon(create, json!({"diskId": "d", "uri": null})).is_ok());
        let err = canon(create, json!({"os": {"typo": 1}})).expect_err("nested unknown");
        assert!(err.contains("os.typo"), "{err}");
        let err = canon(create, json!({"productIds": ["a", null]})).expect_err("null in list");
        assert!(err.contains("productIds[1]"), "{err}");
    }

    #[test]
    fn byte_offsets_of_bad_json() {
        assert_eq!(byte_offset(b"{\"a\":\n  x}", 2, 3), 8);
        let err = parse_json(b"{\"name\": }").expect_err("bad");
        assert!(err.to_string().contains("byte offset 9"), "{err}");
    }
}
