//! Typed reply -> JSON body. Fields without presence are emitted with their defaults unless the
//! gateway runs with `--omit-default-fields`; `response_body` selects one top-level field.

use serde::Serialize;
use serde_json::Value;

use super::error::GatewayError;
use crate::json::schema::{self, Cardinality, Kind, MessageSchema};

/// How replies are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Drop fields that hold their default value and have no presence.
    pub omit_default_fields: bool,
}

/// Renders a reply of message type `full_name`.
pub fn render<M: Serialize>(
    msg: &M,
    full_name: &str,
    response_body: Option<&str>,
    options: RenderOptions,
) -> Result<Vec<u8>, GatewayError> {
    let fail = |e: serde_json::Error| GatewayError::Internal(format!("rendering {full_name}: {e}"));
    if response_body.is_none() && !options.omit_default_fields {
        return serde_json::to_vec(msg).map_err(fail);
    }
    let mut value = serde_json::to_value(msg).map_err(fail)?;
    let mut schema = schema::message(full_name);
    if let Some(field) = response_body {
        let s =
            schema.ok_or_else(|| GatewayError::Internal(format!("no schema for {full_name}")))?;
        let f = s
            .field(field)
            .ok_or_else(|| GatewayError::Internal(format!("response_body {field}")))?;
        value = value
            .get_mut(f.json_name)
            .map(Value::take)
            .unwrap_or(Value::Null);
        schema = match f.kind {
            Kind::Message(m) if f.cardinality == Cardinality::Single => schema::message(m),
            _ => None,
        };
    }
    if options.omit_default_fields
        && let Some(s) = schema
    {
        strip_defaults(s, &mut value);
    }
    serde_json::to_vec(&value).map_err(fail)
}

/// Removes default-valued fields without presence, at every depth (inside Any too).
fn strip_defaults(schema: &'static MessageSchema, value: &mut Value) {
    let Value::Object(map) = value else { return };
    map.retain(|key, v| {
        let Some(field) = schema.field(key) else {
            return true;
        };
        match (field.cardinality, field.kind) {
            (Cardinality::Single, Kind::Message(_)) => true,
            _ if field.oneof.is_some() => true,
            (Cardinality::Repeated, _) => v.as_array().is_some_and(|a| !a.is_empty()),
            (Cardinality::Map, _) => v.as_object().is_some_and(|o| !o.is_empty()),
            (Cardinality::Single, Kind::Enum(e)) => {
                let zero = schema::enumeration(e)
                    .and_then(|s| s.values.iter().find(|(_, n)| *n == 0))
                    .map(|(n, _)| *n);
                !(v.as_str() == zero || v.as_i64() == Some(0))
            }
            _ => {
                !matches!(v, Value::String(s) if s.is_empty() || s == "0")
                    && !matches!(v, Value::Bool(false))
                    && !v.as_f64().is_some_and(|f| f == 0.0)
            }
        }
    });
    for (key, v) in map.iter_mut() {
        let Some(field) = schema.field(key) else {
            continue;
        };
        let Kind::Message(m) = field.kind else {
            continue;
        };
        let inner = if m == "google.protobuf.Any" {
            v.get("@type")
                .and_then(Value::as_str)
                .and_then(|t| schema::message(t.rsplit('/').next().unwrap_or_default()))
        } else {
            schema::message(m)
        };
        let Some(inner) = inner else { continue };
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| strip_defaults(inner, i)),
            Value::Object(o) if field.cardinality == Cardinality::Map => {
                o.values_mut().for_each(|i| strip_defaults(inner, i))
            }
            _ => strip_defaults(inner, v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::Any;
    use crate::pb::yandex::cloud::compute::v1::{Image, UpdateImageMetadata};
    use crate::pb::yandex::cloud::operation::{Operation, operation};

    #[test]
    fn defaults_emitted_or_omitted() {
        let img = Image {
            id: "fd8".into(),
            ..Default::default()
        };
        let full: Value = serde_json::from_slice(
            &render(
                &img,
                "yandex.cloud.compute.v1.Image",
                None,
                RenderOptions::default(),
            )
            .expect("renders"),
        )
        .expect("json");
        assert_eq!(full["labels"], serde_json::json!({}));
        assert_eq!(full["minDiskSize"], "0");
        assert_eq!(full["pooled"], false);
        assert_eq!(full["status"], "STATUS_UNSPECIFIED");
        let op = Operation {
            id: "epd".into(),
            metadata: Some(Any::pack(&UpdateImageMetadata {
                image_id: String::new(),
            })),
            result: Some(operation::Result::Response(Any::pack(&img))),
            ..Default::default()
        };
        let opts = RenderOptions {
            omit_default_fields: true,
        };
        let lean: Value = serde_json::from_slice(
            &render(&op, "yandex.cloud.operation.Operation", None, opts).expect("renders"),
        )
        .expect("json");
        assert_eq!(
            lean,
            serde_json::json!({
                "id": "epd",
                "metadata": {"@type": "type.googleapis.com/yandex.cloud.compute.v1.UpdateImageMetadata"},
                "response": {"@type": "type.googleapis.com/yandex.cloud.compute.v1.Image", "id": "fd8"},
            })
        );
    }
}
