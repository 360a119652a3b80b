//! Query string -> field assignments (google/api/http.proto: every field not bound by the path
//! or the body is a query parameter). Keys are field paths in JSON or proto names (`folderId`,
//! `folder_id`, nested `a.b`); a repeated field repeats its key; a map field is `m[k]=v`. Each
//! value is typed by its field: integers (64-bit ones kept as strings), bools, enums by name or
//! number, and the string forms of Timestamp, Duration and FieldMask.

use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value};

use super::error::GatewayError;
use super::template::decode;
use super::value::{InputOptions, Shape, field, from_url_text, set_unique, shape};

/// Applies every query parameter to `root`, a JSON object of message `message`.
pub fn apply(
    message: &MessageDescriptor,
    root: &mut Map<String, Value>,
    query: &str,
    opts: InputOptions,
) -> Result<(), GatewayError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(&raw_key.replace('+', " "), true)
            .map_err(|e| GatewayError::bad_request(format!("query string: {e}")))?;
        let value = decode(&raw_value.replace('+', " "), true)
            .map_err(|e| GatewayError::bad_request(format!("query parameter {key:?}: {e}")))?;
        assign(message, root, &key, &value, opts)
            .map_err(|e| GatewayError::bad_request(format!("query parameter {key:?}: {e}")))?;
    }
    Ok(())
}

fn assign(
    message: &MessageDescriptor,
    root: &mut Map<String, Value>,
    key: &str,
    value: &str,
    opts: InputOptions,
) -> Result<(), String> {
    let (path, map_key) = match key.strip_suffix(']').and_then(|k| k.split_once('[')) {
        Some((p, k)) => (p, Some(k)),
        None => (key, None),
    };
    let names: Vec<&str> = path.split('.').collect();
    if opts.ignore_unknown_query_params && !names_a_field(message, &names) {
        return Ok(());
    }
    let mut msg = message.clone();
    let mut obj = root;
    for (i, name) in names.iter().enumerate() {
        let field = field(&msg, name)
            .ok_or_else(|| format!("unknown field {name:?} of {}", msg.full_name()))?;
        let (shape, kind) = shape(&field);
        if i + 1 < names.len() {
            let Kind::Message(m) = kind else {
                return Err(format!(
                    "{name} is not a message, so it has no field {:?}",
                    names[i + 1]
                ));
            };
            if !matches!(shape, Shape::Single) || m.full_name().starts_with("google.protobuf.") {
                return Err(format!(
                    "{name} cannot be set field by field from the query string"
                ));
            }
            msg = m;
            let entry = obj
                .entry(field.json_name())
                .or_insert_with(|| Value::Object(Map::new()));
            obj = entry
                .as_object_mut()
                .ok_or_else(|| format!("{name} is set both as a value and field by field"))?;
            continue;
        }
        return match (shape, map_key) {
            (Shape::Map(_), Some(k)) => {
                let v = from_url_text(&kind, value, opts)?;
                let map = obj
                    .entry(field.json_name())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .ok_or("map set twice")?;
                if map.insert(k.to_string(), v).is_some() {
                    return Err(format!("map key {k:?} given more than once"));
                }
                Ok(())
            }
            (Shape::Map(_), None) => {
                Err(format!("{name} is a map; set entries as {name}[key]=value"))
            }
            (_, Some(_)) => Err(format!("{name} is not a map")),
            (Shape::List, None) => {
                let v = from_url_text(&kind, value, opts)?;
                let list = obj
                    .entry(field.json_name())
                    .or_insert_with(|| Value::Array(Vec::new()))
                    .as_array_mut()
                    .ok_or("list set twice")?;
                list.push(v);
                Ok(())
            }
            (Shape::Single, None) => {
                let v = from_url_text(&kind, value, opts)?;
                set_unique(obj, field.json_name(), v)
                    .map_err(|_| "given more than once".to_string())
            }
        };
    }
    Ok(())
}

/// Whether the dotted `names` lead through `message`'s fields (of any kind) to a field.
fn names_a_field(message: &MessageDescriptor, names: &[&str]) -> bool {
    let mut msg = message.clone();
    for (i, name) in names.iter().enumerate() {
        let Some(f) = field(&msg, name) else {
            return false;
        };
        match f.kind() {
            Kind::Message(m) if i + 1 < names.len() => msg = m,
            _ => return i + 1 == names.len(),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(msg: &str, q: &str) -> Result<Value, String> {
        let message = crate::pb::descriptor_pool()
            .get_message_by_name(msg)
            .expect("known message");
        let mut root = Map::new();
        apply(&message, &mut root, q, InputOptions::default()).map_err(|e| e.to_string())?;
        Ok(Value::Object(root))
    }

    #[test]
    fn types_values_by_field() {
        let list = "yandex.cloud.compute.v1.ListImagesRequest";
        assert_eq!(
            run(
                list,
                "folderId=b1g&pageSize=10&pageToken=abc&filter=name%3D%22x%22&orderBy=createdAt+desc"
            ),
            Ok(
                json!({"folderId": "b1g", "pageSize": "10", "pageToken": "abc", "filter": "name=\"x\"", "orderBy": "createdAt desc"})
            )
        );
        assert_eq!(
            run(list, "folder_id=b1g&page_size=1e2"),
            Ok(json!({"folderId": "b1g", "pageSize": "100"}))
        );
        let create = "yandex.cloud.compute.v1.CreateImageRequest";
        assert_eq!(
            run(
                create,
                "labels[env]=prod&labels[team]=x&productIds=a&productIds=b&os.type=WINDOWS&pooled=true&hardwareGeneration.legacyFeatures.pciTopology=2"
            ),
            Ok(json!({
                "labels": {"env": "prod", "team": "x"},
                "productIds": ["a", "b"],
                "os": {"type": "WINDOWS"},
                "pooled": true,
                "hardwareGeneration": {"legacyFeatures": {"pciTopology": 2}},
            }))
        );
        let update = "yandex.cloud.compute.v1.UpdateImageRequest";
        assert_eq!(
            run(update, "updateMask=name,minDiskSize"),
            Ok(json!({"updateMask": "name,minDiskSize"}))
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let list = "yandex.cloud.compute.v1.ListImagesRequest";
        for (q, want) in [
            ("nope=1", "\"nope\""),
            ("pageSize=abc", "pageSize"),
            ("pageSize=1.5", "pageSize"),
            ("pageSize=99999999999999999999", "pageSize"),
            ("folderId=a&folderId=b", "more than once"),
            ("folderId=%zz", "percent"),
            ("folderId.x=1", "not a message"),
        ] {
            let err = run(list, q).expect_err(q);
            assert!(err.contains(want), "{q}: {err}");
        }
        let create = "yandex.cloud.compute.v1.CreateImageRequest";
        for (q, want) in [
            ("os.type=MACOS", "MACOS"),
            ("pooled=yes", "pooled"),
            ("labels=x", "map"),
            ("os=LINUX", "message"),
        ] {
            let err = run(create, q).expect_err(q);
            assert!(err.contains(want), "{q}: {err}");
        }
        // Neither a well-known type nor a list of messages is set field by field.
        for (msg, q) in [
            (
                "yandex.cloud.compute.v1.UpdateImageRequest",
                "updateMask.paths=name",
            ),
            (
                "yandex.cloud.access.SetAccessBindingsRequest",
                "accessBindings.roleId=viewer",
            ),
        ] {
            let err = run(msg, q).expect_err(q);
            assert!(err.contains("cannot be set field by field"), "{q}: {err}");
        }
    }
}
