//! One value of a field, typed by the field's kind: from the text of a URL (a path variable or
//! a query parameter) and from JSON, into the canonical form the typed request is deserialized
//! from. 64-bit integers become decimal strings, 32-bit ones numbers, enums their value names;
//! integers arrive as numbers or strings in any exact form (`"123"`, `1e2`, `123.0`; not `1.5`,
//! not out of range).

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Number, Value};

/// The kinds of a field's values, as the transcoder treats them.
pub(crate) enum Shape {
    /// One value.
    Single,
    /// A list.
    List,
    /// A map, with its key kind; values are of the field's value kind.
    Map(Kind),
}

/// How many values a field holds, and the kind of each value (for maps: of the values).
pub(crate) fn shape(field: &FieldDescriptor) -> (Shape, Kind) {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        return (
            Shape::Map(entry.map_entry_key_field().kind()),
            entry.map_entry_value_field().kind(),
        );
    }
    let shape = if field.is_list() {
        Shape::List
    } else {
        Shape::Single
    };
    (shape, field.kind())
}

/// The field of `message` with this JSON name or proto name.
pub(crate) fn field(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    message
        .get_field_by_json_name(name)
        .or_else(|| message.get_field_by_name(name))
}

/// Well-known types whose JSON form is a string.
pub(crate) fn is_string_wkt(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask"
    )
}

/// Sets `key` once; `Err` with the old value when it was already set.
pub(crate) fn set_unique(obj: &mut Map<String, Value>, key: &str, v: Value) -> Result<(), Value> {
    match obj.get(key) {
        Some(old) => Err(old.clone()),
        None => {
            obj.insert(key.to_string(), v);
            Ok(())
        }
    }
}

/// The name of a JSON value's type, for messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Types a string from a URL (query or path) by its field kind.
pub(crate) fn from_url_text(kind: &Kind, s: &str) -> Result<Value, String> {
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
            Err(_) => e
                .get_value_by_name(s)
                .map(|_| Value::String(s.into()))
                .ok_or_else(|| format!("{s:?} is not a value of {}", e.full_name())),
        },
        Kind::Message(m) if is_string_wkt(m) => Ok(Value::String(s.into())),
        Kind::Message(m) => Err(format!(
            "{} is a message; set its fields one by one (name.field=value)",
            m.full_name()
        )),
        Kind::String | Kind::Bytes => Ok(Value::String(s.into())),
        int => integer(int, &Value::String(s.into())),
    }
}

/// Canonicalises a scalar (anything but a message) from JSON; `path` names it in errors.
pub(crate) fn scalar(kind: &Kind, v: Value, path: &str) -> Result<Value, String> {
    let wrong = |what: &str, v: &Value| format!("{path}: expected {what}, got {}", json_type(v));
    match kind {
        Kind::Bool => v
            .is_boolean()
            .then_some(v.clone())
            .ok_or_else(|| wrong("true or false", &v)),
        Kind::String | Kind::Bytes => v
            .is_string()
            .then_some(v.clone())
            .ok_or_else(|| wrong("a string", &v)),
        Kind::Double | Kind::Float => match &v {
            Value::Number(_) => Ok(v),
            Value::String(s) => from_url_text(kind, s).map_err(|e| format!("{path}: {e}")),
            _ => Err(wrong("a number", &v)),
        },
        Kind::Enum(e) => match &v {
            Value::String(name) if e.get_value_by_name(name).is_some() => Ok(v),
            Value::String(name) => Err(format!(
                "{path}: {name:?} is not a value of {}; expected one of {}",
                e.full_name(),
                e.values()
                    .map(|v| v.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Value::Number(n) => {
                let number = n.as_i64().and_then(|n| i32::try_from(n).ok());
                match number.and_then(|n| e.get_value(n)) {
                    Some(value) => Ok(Value::String(value.name().into())),
                    None => Err(format!("{path}: {n} is not a value of {}", e.full_name())),
                }
            }
            _ => Err(wrong("an enum value name or number", &v)),
        },
        Kind::Message(_) => Err(wrong("an object", &v)),
        int => integer(int, &v).map_err(|e| format!("{path}: {e}")),
    }
}

/// An integer in any exact proto3 JSON form, range-checked for its kind.
fn integer(kind: &Kind, v: &Value) -> Result<Value, String> {
    let (min, max, name, wide): (i128, i128, &str, bool) = match kind {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            (i64::MIN.into(), i64::MAX.into(), "int64", true)
        }
        Kind::Uint64 | Kind::Fixed64 => (0, u64::MAX.into(), "uint64", true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            (i32::MIN.into(), i32::MAX.into(), "int32", false)
        }
        _ => (0, u32::MAX.into(), "uint32", false),
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
    Ok(if wide {
        Value::String(n.to_string())
    } else {
        Value::Number(Number::from(n as i64))
    })
}

/// An f64 that holds an integer exactly (and within 2^64).
fn exact(f: f64) -> Option<i128> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.9e19).then_some(f as i128)
}
