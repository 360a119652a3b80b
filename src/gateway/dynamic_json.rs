//! The JSON of a `prost_reflect::DynamicMessage` written straight to the serializer, in the
//! form the typed path (pbjson) gives a compiled-in message, so that a reply renders to the same
//! bytes whichever path made it:
//!
//! - fields in declaration order (prost-reflect's own serializer goes by number), lowerCamelCase;
//! - every field without presence, defaults included; a field with presence (a message, a oneof
//!   member, a proto3 `optional`) only when set; repeated fields and maps always;
//! - 64-bit integers as strings, enums by name (a number with no name as the number), bytes as
//!   standard base64, non-finite floats as `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! - an `Any` resolved through the message's pool: `{"@type": …, <fields>}`, a well-known type
//!   under `"value"`, and `google.protobuf.Empty` as `{"@type": …}` alone (the real API's form);
//! - the other well-known types in their own JSON forms (prost-reflect's).
//!
//! The output options (`--omit-default-fields`, `--json-names proto`, `--enums-as-ints`) are
//! applied afterwards by `response::render`, as on the typed path.

use base64::Engine as _;
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage as _, Value,
};
use serde::ser::{Error as _, SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// A dynamic message, serialized as the typed path serializes a generated one.
pub(crate) struct DynamicJson<'a>(pub(crate) &'a DynamicMessage);

impl Serialize for DynamicJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let message = self.0;
        let descriptor = message.descriptor();
        let name = descriptor.full_name();
        if name == "google.protobuf.Any" {
            return any(message, serializer);
        }
        if name.starts_with("google.protobuf.") {
            return well_known(message, serializer);
        }
        let mut map = serializer.serialize_map(None)?;
        fields(message, &descriptor, &mut map)?;
        map.end()
    }
}

/// A well-known type in its own JSON form.
fn well_known<S: Serializer>(message: &DynamicMessage, serializer: S) -> Result<S::Ok, S::Error> {
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    message.serialize_with_options(serializer, &options)
}

/// The fields of `message`, in declaration order, into `map`.
fn fields<M: SerializeMap>(
    message: &DynamicMessage,
    descriptor: &MessageDescriptor,
    map: &mut M,
) -> Result<(), M::Error> {
    let mut entry = |field: &FieldDescriptor| -> Result<(), M::Error> {
        if field.supports_presence() && !message.has_field(field) {
            return Ok(());
        }
        let value = message.get_field(field);
        map.serialize_entry(
            field.json_name(),
            &FieldJson {
                kind: field.kind(),
                value: &value,
            },
        )
    };
    let declared = &descriptor.descriptor_proto().field;
    if declared
        .windows(2)
        .all(|w| w[0].number.unwrap_or(0) < w[1].number.unwrap_or(0))
    {
        // Declared by number, as `fields()` goes: no lookups.
        for field in descriptor.fields() {
            entry(&field)?;
        }
    } else {
        for proto in declared {
            if let Some(field) = descriptor.get_field(proto.number.unwrap_or(0) as u32) {
                entry(&field)?;
            }
        }
    }
    Ok(())
}

/// A field's value (a list, a map or one value) with its kind.
struct FieldJson<'a> {
    kind: Kind,
    value: &'a Value,
}

impl Serialize for FieldJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.value {
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&One {
                        kind: &self.kind,
                        value: item,
                    })?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                // The map entry's value field (number 2) has the values' kind.
                let kind = match &self.kind {
                    Kind::Message(entry) => entry.map_entry_value_field().kind(),
                    other => other.clone(),
                };
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    let mut text = itoa::Buffer::new();
                    let key: &str = match key {
                        MapKey::String(s) => s,
                        MapKey::Bool(true) => "true",
                        MapKey::Bool(false) => "false",
                        MapKey::I32(n) => text.format(*n),
                        MapKey::I64(n) => text.format(*n),
                        MapKey::U32(n) => text.format(*n),
                        MapKey::U64(n) => text.format(*n),
                    };
                    map.serialize_entry(key, &One { kind: &kind, value })?;
                }
                map.end()
            }
            value => One {
                kind: &self.kind,
                value,
            }
            .serialize(serializer),
        }
    }
}

/// One value of a field.
struct One<'a> {
    kind: &'a Kind,
    value: &'a Value,
}

impl Serialize for One<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = itoa::Buffer::new();
        match self.value {
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::I32(n) => serializer.serialize_i32(*n),
            Value::U32(n) => serializer.serialize_u32(*n),
            Value::I64(n) => serializer.serialize_str(text.format(*n)),
            Value::U64(n) => serializer.serialize_str(text.format(*n)),
            Value::F32(f) => float(f64::from(*f), *f, serializer),
            Value::F64(f) => float(*f, *f, serializer),
            Value::String(s) => serializer.serialize_str(s),
            Value::Bytes(b) => {
                serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            Value::EnumNumber(n) => match self.kind.as_enum().and_then(|e| e.get_value(*n)) {
                Some(value) => serializer.serialize_str(value.name()),
                None => serializer.serialize_i32(*n),
            },
            Value::Message(m) => DynamicJson(m).serialize(serializer),
            Value::List(_) | Value::Map(_) => FieldJson {
                kind: self.kind.clone(),
                value: self.value,
            }
            .serialize(serializer),
        }
    }
}

/// A float as proto3 JSON writes it: a number, or a string when it is not finite.
fn float<S: Serializer, F: Serialize>(f: f64, raw: F, serializer: S) -> Result<S::Ok, S::Error> {
    if f.is_nan() {
        serializer.serialize_str("NaN")
    } else if f.is_infinite() {
        serializer.serialize_str(if f > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        raw.serialize(serializer)
    }
}

/// An `Any`, its message resolved through the pool.
fn any<S: Serializer>(message: &DynamicMessage, serializer: S) -> Result<S::Ok, S::Error> {
    let type_url = match message.get_field_by_name("type_url").as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let bytes = match message.get_field_by_name("value").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    if type_url.is_empty() && bytes.is_empty() {
        return serializer.serialize_map(Some(0))?.end();
    }
    let name = type_url
        .rsplit_once('/')
        .map_or(type_url.as_str(), |(_, n)| n);
    let inner = message
        .descriptor()
        .parent_pool()
        .get_message_by_name(name)
        .ok_or_else(|| S::Error::custom(format!("the type of Any {type_url:?} is not known")))?;
    let inner = DynamicMessage::decode(inner, bytes)
        .map_err(|e| S::Error::custom(format!("the Any of {type_url:?} does not decode: {e}")))?;
    let descriptor = inner.descriptor();
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("@type", &type_url)?;
    match descriptor.full_name() {
        "google.protobuf.Empty" => {}
        wkt if wkt.starts_with("google.protobuf.") => {
            map.serialize_entry("value", &DynamicJson(&inner))?;
        }
        _ => fields(&inner, &descriptor, &mut map)?,
    }
    map.end()
}
