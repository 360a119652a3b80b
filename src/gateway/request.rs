//! Body + path bindings + query -> one JSON value in canonical form -> (in dispatch) the typed
//! request, deserialized once by pbjson. The canonicalisation walks the value with the message
//! schema and applies the proto3 JSON input rules pbjson does not: `null` means unset; integers
//! arrive as numbers or strings in any exact form (`"123"`, `1e2`, `123.0`; not `1.5`, not out
//! of range); enums by name or number; a field given under both its JSON and proto name, two
//! members of one oneof, or an unknown field is an error naming the field path.

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::error::GatewayError;
use super::matcher::Match;
use super::query;
use super::routes::BodySelector;
use super::value::{
    InputOptions, Shape, field, from_url_text, is_string_wkt, json_type, scalar, set_unique, shape,
};

/// Builds the canonical JSON of the request message for a matched route.
pub fn build(
    m: &Match<'_>,
    query_string: Option<&str>,
    body: &[u8],
    opts: InputOptions,
) -> Result<Value, GatewayError> {
    let route = m.route;
    let input = route.rpc().method().input();
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    let mut root = match (route.body(), has_body) {
        (BodySelector::None, true) => {
            return Err(GatewayError::bad_request(format!(
                "{} {} takes no request body",
                route.method(),
                route.pattern()
            )));
        }
        (_, false) => Map::new(),
        (BodySelector::Whole, true) => match parse_json(body)? {
            Value::Object(map) => map,
            other => {
                return Err(GatewayError::bad_request(format!(
                    "request body must be a JSON object, got {}",
                    json_type(&other)
                )));
            }
        },
        (BodySelector::Field(f), true) => {
            Map::from_iter([(f.json_name().to_string(), parse_json(body)?)])
        }
    };
    if let Some(q) = query_string.filter(|q| !q.is_empty()) {
        match route.body() {
            // Every field is in the body: no query parameter names one it may set.
            BodySelector::Whole if opts.ignore_unknown_query_params => {}
            BodySelector::Whole => {
                let key = q.split(['&', '=']).next().unwrap_or_default();
                return Err(GatewayError::bad_request(format!(
                    "query parameter {key:?} is not accepted: the request body carries every field of this method"
                )));
            }
            _ => query::apply(&input, &mut root, q, opts)?,
        }
    }
    let mut root = message(&input, Value::Object(root), "", opts)?;
    for (var, raw) in route.variables().iter().zip(&m.bindings) {
        bind_path(&mut root, var, raw, opts)?;
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

/// Weaves one path binding into the request: a body or query value for the same field must
/// agree with it.
fn bind_path(
    root: &mut Map<String, Value>,
    var: &super::routes::PathVariable,
    raw: &str,
    opts: InputOptions,
) -> Result<(), GatewayError> {
    let mut obj = root;
    let (leaf, parents) = var
        .fields()
        .split_last()
        .expect("a path variable names a field");
    for parent in parents {
        obj = obj
            .entry(parent.json_name())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| {
                GatewayError::bad_request(format!("field {} must be an object", parent.json_name()))
            })?;
    }
    let dotted = var.dotted();
    let kind = leaf.kind();
    let typed = from_url_text(&kind, raw, opts)
        .and_then(|v| scalar(&kind, v, dotted, opts))
        .map_err(|e| GatewayError::bad_request(format!("path parameter {dotted}: {e}")))?;
    if let Err(old) = set_unique(obj, leaf.json_name(), typed.clone())
        && old != typed
    {
        return Err(GatewayError::bad_request(format!(
            "field {dotted} is {old} in the request but {typed} in the URL path; they must agree"
        )));
    }
    Ok(())
}

/// Canonicalises a JSON object of message `message`; `path` is the field path so far.
pub(crate) fn message(
    message: &MessageDescriptor,
    v: Value,
    path: &str,
    opts: InputOptions,
) -> Result<Map<String, Value>, GatewayError> {
    let Value::Object(map) = v else {
        return Err(GatewayError::bad_request(format!(
            "{}: expected an object ({}), got {}",
            shown(path),
            message.full_name(),
            json_type(&v)
        )));
    };
    let mut out = Map::with_capacity(map.len());
    let mut oneofs: Vec<(prost_reflect::OneofDescriptor, String)> = Vec::new();
    for (key, value) in map {
        let Some(field) = field(message, &key) else {
            return Err(GatewayError::bad_request(format!(
                "unknown field {:?} in {}",
                join(path, &key),
                message.full_name()
            )));
        };
        let here = join(path, field.json_name());
        if out.contains_key(field.json_name()) {
            return Err(GatewayError::bad_request(format!(
                "field {here} is given twice"
            )));
        }
        if value.is_null() {
            continue; // proto3 JSON: null means the field is not set
        }
        if let Some(o) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
            if let Some((_, other)) = oneofs.iter().find(|(seen, _)| *seen == o) {
                return Err(GatewayError::bad_request(format!(
                    "fields {} and {here} are both set, but only one member of oneof {} may be",
                    join(path, other),
                    o.name()
                )));
            }
            oneofs.push((o, field.json_name().to_string()));
        }
        let canonical = field_value(&field, value, &here, opts)?;
        out.insert(field.json_name().to_string(), canonical);
    }
    Ok(out)
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

fn field_value(
    field: &prost_reflect::FieldDescriptor,
    v: Value,
    path: &str,
    opts: InputOptions,
) -> Result<Value, GatewayError> {
    let (shape, kind) = shape(field);
    match shape {
        Shape::Single => element(&kind, v, path, opts),
        Shape::List => {
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
                    element(&kind, item, &here, opts)
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        }
        Shape::Map(key_kind) => {
            let Value::Object(entries) = v else {
                return Err(GatewayError::bad_request(format!(
                    "{path}: expected an object (a map), got {}",
                    json_type(&v)
                )));
            };
            let mut out = Map::with_capacity(entries.len());
            for (k, item) in entries {
                let here = format!("{path}[{k:?}]");
                if key_kind != Kind::String {
                    from_url_text(&key_kind, &k, opts)
                        .map_err(|e| GatewayError::bad_request(format!("{here}: key {e}")))?;
                }
                if item.is_null() {
                    return Err(GatewayError::bad_request(format!(
                        "{here}: null is not allowed as a map value"
                    )));
                }
                out.insert(k, element(&kind, item, &here, opts)?);
            }
            Ok(Value::Object(out))
        }
    }
}

fn element(kind: &Kind, v: Value, path: &str, opts: InputOptions) -> Result<Value, GatewayError> {
    let Kind::Message(m) = kind else {
        return scalar(kind, v, path, opts).map_err(GatewayError::BadRequest);
    };
    let name = m.full_name();
    if !name.starts_with("google.protobuf.") {
        return message(m, v, path, opts).map(Value::Object);
    }
    match (name, &v) {
        (_, Value::String(_)) if is_string_wkt(m) => Ok(v),
        (_, _) if is_string_wkt(m) => Err(GatewayError::bad_request(format!(
            "{path}: expected a string ({name}), got {}",
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(msg: &str, v: Value) -> Result<Value, String> {
        let descriptor = crate::pb::descriptor_pool()
            .get_message_by_name(msg)
            .expect("known");
        message(&descriptor, v, "", InputOptions::default())
            .map(Value::Object)
            .map_err(|e| e.to_string())
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

    /// A pool with a message of the field types no compiled-in request has: Empty, Any and
    /// Duration fields, and a map with integer keys.
    fn holder() -> MessageDescriptor {
        use super::super::value::test_descriptors::{field, file, map, pool_with};
        use prost_reflect::prost_types::DescriptorProto;
        use prost_reflect::prost_types::field_descriptor_proto::Type;
        let mut empty = file(
            "google/protobuf/empty.proto",
            &[],
            vec![DescriptorProto {
                name: Some("Empty".into()),
                ..Default::default()
            }],
        );
        empty.package = Some("google.protobuf".into());
        let (counts, counts_entry) =
            map(".test.Holder", "counts", 4, Type::Int64, Type::String, "");
        let holder = file(
            "test/holder.proto",
            &[
                "google/protobuf/empty.proto",
                "google/protobuf/any.proto",
                "google/protobuf/duration.proto",
            ],
            vec![DescriptorProto {
                name: Some("Holder".into()),
                field: vec![
                    field("nothing", 1, Type::Message, ".google.protobuf.Empty"),
                    field("packed", 2, Type::Message, ".google.protobuf.Any"),
                    field("delay", 3, Type::Message, ".google.protobuf.Duration"),
                    counts,
                ],
                nested_type: vec![counts_entry],
                ..Default::default()
            }],
        );
        let has_empty = crate::pb::descriptor_pool()
            .get_file_by_name("google/protobuf/empty.proto")
            .is_some();
        let files = if has_empty {
            vec![holder]
        } else {
            vec![empty, holder]
        };
        pool_with(files)
            .get_message_by_name("test.Holder")
            .expect("the holder")
    }

    #[test]
    fn well_known_types_and_integer_map_keys_are_checked() {
        let holder = holder();
        let canon = |v: Value| {
            message(&holder, v, "", InputOptions::default())
                .map(Value::Object)
                .map_err(|e| e.to_string())
        };
        for ok in [
            json!({"nothing": {}}),
            json!({"packed": {"@type": "type.googleapis.com/google.protobuf.Empty"}}),
            json!({"delay": "1.5s"}),
            json!({"counts": {"5": "five", "-7": "minus seven"}}),
        ] {
            assert_eq!(canon(ok.clone()), Ok(ok.clone()), "{ok}");
        }
        for (bad, named) in [
            (json!({"nothing": {"x": 1}}), "nothing: expected {}"),
            (json!({"nothing": "x"}), "nothing: expected {}"),
            (
                json!({"packed": "x"}),
                "packed: expected an object with \"@type\"",
            ),
            (json!({"packed": [1]}), "packed: expected an object"),
            (
                json!({"delay": {}}),
                "delay: expected a string (google.protobuf.Duration)",
            ),
            (json!({"delay": 1}), "expected a string"),
            (
                json!({"counts": {"x": "not a number"}}),
                "counts[\"x\"]: key",
            ),
        ] {
            let err = canon(bad.clone()).expect_err("refused");
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn byte_offsets_of_bad_json() {
        assert_eq!(byte_offset(b"{\"a\":\n  x}", 2, 3), 8);
        let err = parse_json(b"{\"name\": }").expect_err("bad");
        assert!(err.to_string().contains("byte offset 9"), "{err}");
    }
}
