//! Typed reply -> JSON body. Fields without presence are emitted with their defaults unless the
//! gateway runs with `--omit-default-fields`; `response_body` selects one top-level field; the
//! output options (`--json-names proto`, `--enums-as-ints`, `--pretty`) shape the rest.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::Serialize;
use serde_json::Value;

use super::error::GatewayError;
use super::value::{Shape, shape};

/// How replies are rendered. The default is the proto3 JSON mapping with every field:
/// lowerCamelCase names, enums by name, compact.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Drop fields that hold their default value and have no presence.
    pub omit_default_fields: bool,
    /// Field names as in the .proto (`folder_id`), as grpc-gateway v1 and Envoy's
    /// `preserve_proto_field_names` render them, instead of lowerCamelCase.
    pub proto_names: bool,
    /// Enum values as numbers instead of names.
    pub enums_as_ints: bool,
    /// Indented, one field per line.
    pub pretty: bool,
}

impl RenderOptions {
    /// Whether the rendered value must be walked with its schema.
    fn reshapes(&self) -> bool {
        self.omit_default_fields || self.proto_names || self.enums_as_ints
    }
}

/// Renders a reply of message type `message`; `response_body` is the one field to send, if the
/// rule names one.
pub(crate) fn render<M: Serialize>(
    msg: &M,
    message: &MessageDescriptor,
    response_body: Option<&FieldDescriptor>,
    options: RenderOptions,
) -> Result<Vec<u8>, GatewayError> {
    let fail = |e: serde_json::Error| {
        GatewayError::Internal(format!("rendering {}: {e}", message.full_name()))
    };
    let write = |value: &dyn erased::Json| {
        if options.pretty {
            value.pretty()
        } else {
            value.compact()
        }
    };
    if response_body.is_none() && !options.reshapes() {
        return write(&msg).map_err(fail);
    }
    let mut value = serde_json::to_value(msg).map_err(fail)?;
    match response_body {
        None => {
            if options.reshapes() {
                reshape(message, &mut value, options);
            }
        }
        Some(field) => {
            value = value
                .get_mut(field.json_name())
                .map(Value::take)
                .unwrap_or(Value::Null);
            if options.reshapes() {
                reshape_field(message, field, &mut value, options);
            }
        }
    }
    write(&value).map_err(fail)
}

/// Serialization to compact or pretty JSON bytes, for a typed message and a `Value` alike.
mod erased {
    pub(super) trait Json {
        fn compact(&self) -> serde_json::Result<Vec<u8>>;
        fn pretty(&self) -> serde_json::Result<Vec<u8>>;
    }

    impl<T: serde::Serialize> Json for T {
        fn compact(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
        fn pretty(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec_pretty(self)
        }
    }
}

/// Applies the options to the JSON of a message of type `message`, at every depth (inside Any
/// too): drops default-valued fields without presence, renames fields to their proto names,
/// writes enums as numbers. The well-known types keep their own JSON forms.
fn reshape(message: &MessageDescriptor, value: &mut Value, options: RenderOptions) {
    let Value::Object(map) = value else { return };
    if options.omit_default_fields {
        map.retain(|key, v| {
            super::value::field(message, key).is_none_or(|field| !is_default(&field, v))
        });
    }
    if !options.proto_names {
        for (key, v) in map.iter_mut() {
            if let Some(field) = super::value::field(message, key) {
                reshape_field(message, &field, v, options);
            }
        }
        return;
    }
    for (key, mut v) in std::mem::take(map) {
        match super::value::field(message, &key) {
            Some(field) => {
                reshape_field(message, &field, &mut v, options);
                map.insert(field.name().to_string(), v);
            }
            // `@type` of an Any, and the `value` of an Any holding a well-known type.
            None => {
                map.insert(key, v);
            }
        }
    }
}

/// Applies the options inside the value of `field` (a field of `message`).
fn reshape_field(
    message: &MessageDescriptor,
    field: &FieldDescriptor,
    value: &mut Value,
    options: RenderOptions,
) {
    let (shape, kind) = shape(field);
    let each = |value: &mut Value, f: &mut dyn FnMut(&mut Value)| match (&shape, value) {
        (Shape::List, Value::Array(items)) => items.iter_mut().for_each(f),
        (Shape::Map(_), Value::Object(entries)) => entries.values_mut().for_each(f),
        (Shape::Single, v) => f(v),
        _ => {}
    };
    match kind {
        Kind::Enum(e) if options.enums_as_ints => each(value, &mut |v| {
            if let Some(number) = v
                .as_str()
                .and_then(|name| e.get_value_by_name(name))
                .map(|ev| ev.number())
            {
                *v = Value::from(number);
            }
        }),
        Kind::Message(m) => each(value, &mut |v| {
            let inner = if m.full_name() == "google.protobuf.Any" {
                v.get("@type").and_then(Value::as_str).and_then(|t| {
                    message
                        .parent_pool()
                        .get_message_by_name(t.rsplit('/').next().unwrap_or_default())
                })
            } else {
                Some(m.clone())
            };
            // The well-known types have JSON forms of their own (a Struct's keys are not
            // fields).
            if let Some(inner) = inner.filter(|i| !i.full_name().starts_with("google.protobuf.")) {
                reshape(&inner, v, options);
            }
        }),
        _ => {}
    }
}

/// Whether `v`, the JSON of `field`, is a default that `--omit-default-fields` leaves out.
fn is_default(field: &FieldDescriptor, v: &Value) -> bool {
    let (shape, kind) = shape(field);
    match (shape, kind) {
        // A message, a oneof member or a proto3 `optional` field is rendered only when set,
        // and then it is kept, even at its default.
        _ if field.supports_presence() => false,
        (Shape::List, _) => v.as_array().is_some_and(Vec::is_empty),
        (Shape::Map(_), _) => v.as_object().is_some_and(serde_json::Map::is_empty),
        // Enums render by name (an unknown number as a number, never 0: every enum has a
        // zero value).
        (Shape::Single, Kind::Enum(e)) => {
            e.get_value(0).is_some_and(|z| v.as_str() == Some(z.name()))
        }
        _ => {
            matches!(v, Value::String(s) if s.is_empty() || s == "0")
                || matches!(v, Value::Bool(false))
                || v.as_f64().is_some_and(|f| f == 0.0)
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
        let pool = crate::pb::descriptor_pool();
        let descriptor = |name: &str| pool.get_message_by_name(name).expect("known");
        let full: Value = serde_json::from_slice(
            &render(
                &img,
                &descriptor("yandex.cloud.compute.v1.Image"),
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
            ..Default::default()
        };
        let lean: Value = serde_json::from_slice(
            &render(
                &op,
                &descriptor("yandex.cloud.operation.Operation"),
                None,
                opts,
            )
            .expect("renders"),
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

    /// What `--omit-default-fields` keeps: fields with presence (a set message, even an empty
    /// FieldMask; a oneof member, even at its default), and inside a `response_body` field
    /// the rules of that field's own message, never of a map's entries.
    #[test]
    fn omitted_defaults_respect_presence_and_the_response_body() {
        use crate::json::FieldMask;
        use crate::pb::yandex::cloud::compute::v1::{
            CreateImageRequest, Os, UpdateImageRequest, create_image_request,
        };
        let pool = crate::pb::descriptor_pool();
        let descriptor = |name: &str| pool.get_message_by_name(name).expect("known");
        let lean = RenderOptions {
            omit_default_fields: true,
            ..Default::default()
        };
        let json = |bytes: Result<Vec<u8>, GatewayError>| -> Value {
            serde_json::from_slice(&bytes.expect("renders")).expect("json")
        };
        let update = UpdateImageRequest {
            update_mask: Some(FieldMask::new(Vec::<String>::new())),
            ..Default::default()
        };
        assert_eq!(
            json(render(
                &update,
                &descriptor("yandex.cloud.compute.v1.UpdateImageRequest"),
                None,
                lean
            )),
            serde_json::json!({"updateMask": ""})
        );
        let create = CreateImageRequest {
            source: Some(create_image_request::Source::DiskId(String::new())),
            ..Default::default()
        };
        assert_eq!(
            json(render(
                &create,
                &descriptor("yandex.cloud.compute.v1.CreateImageRequest"),
                None,
                lean
            )),
            serde_json::json!({"diskId": ""})
        );
        let image_descriptor = descriptor("yandex.cloud.compute.v1.Image");
        let field = |name: &str| image_descriptor.get_field_by_name(name).expect("a field");
        let ready = Image {
            status: crate::pb::yandex::cloud::compute::v1::image::Status::Ready as i32,
            ..Default::default()
        };
        assert_eq!(
            json(render(
                &ready,
                &descriptor("yandex.cloud.compute.v1.Image"),
                None,
                lean
            )),
            serde_json::json!({"status": "READY"}),
            "an enum off its default is kept"
        );
        let img = Image {
            os: Some(Os::default()),
            labels: [("value".to_string(), String::new())].into(),
            ..Default::default()
        };
        assert_eq!(
            json(render(&img, &image_descriptor, Some(&field("os")), lean)),
            serde_json::json!({}),
            "the body field's own defaults are omitted"
        );
        assert_eq!(
            json(render(
                &img,
                &image_descriptor,
                Some(&field("labels")),
                lean
            )),
            serde_json::json!({"value": ""}),
            "a map's keys are not fields"
        );
    }

    /// Defaults are omitted at every depth: numbers at zero, the items of a repeated message,
    /// the values of a map of messages.
    #[test]
    fn omitted_defaults_reach_lists_and_maps_of_messages() {
        use super::super::value::test_descriptors::{file, map, pool_with};
        use prost_reflect::prost_types::DescriptorProto;
        use prost_reflect::prost_types::field_descriptor_proto::Type;
        let lean = RenderOptions {
            omit_default_fields: true,
            ..Default::default()
        };
        let pool = crate::pb::descriptor_pool();
        let status = pool
            .get_message_by_name("google.rpc.Status")
            .expect("known");
        let render_json = |v: Value, d: &MessageDescriptor| -> Value {
            serde_json::from_slice(&render(&v, d, None, lean).expect("renders")).expect("json")
        };
        assert_eq!(
            render_json(
                serde_json::json!({"code": 0, "message": "", "details": []}),
                &status
            ),
            serde_json::json!({}),
            "a zero number is a default"
        );
        assert_eq!(
            render_json(serde_json::json!({"code": 5, "message": ""}), &status),
            serde_json::json!({"code": 5}),
            "a number off zero is not"
        );
        let list = pool
            .get_message_by_name("yandex.cloud.compute.v1.ListImagesResponse")
            .expect("known");
        assert_eq!(
            render_json(
                serde_json::json!({"images": [{"id": "fd8", "name": "", "labels": {}}], "nextPageToken": ""}),
                &list
            ),
            serde_json::json!({"images": [{"id": "fd8"}]})
        );
        // A map of messages: no compiled-in message has one, so a test descriptor does.
        let (statuses, entry) = map(
            ".test.Statuses",
            "statuses",
            1,
            Type::String,
            Type::Message,
            ".google.rpc.Status",
        );
        let pool = pool_with(vec![file(
            "test/statuses.proto",
            &["google/rpc/status.proto"],
            vec![DescriptorProto {
                name: Some("Statuses".into()),
                field: vec![statuses],
                nested_type: vec![entry],
                ..Default::default()
            }],
        )]);
        let holder = pool.get_message_by_name("test.Statuses").expect("added");
        assert_eq!(
            render_json(
                serde_json::json!({"statuses": {"a": {"code": 0, "message": "m"}}}),
                &holder
            ),
            serde_json::json!({"statuses": {"a": {"message": "m"}}})
        );
    }
}
