//! One value of a field, typed by the field's kind: from the text of a URL (a path variable or
//! a query parameter) and from JSON, into the canonical form the typed request is deserialized
//! from. 64-bit integers become decimal strings, 32-bit ones numbers, enums their value names;
//! integers arrive as numbers or strings in any exact form (`"123"`, `1e2`, `123.0`; not `1.5`,
//! not out of range).

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Number, Value};

/// How forgiving request parsing is; the default is strict, as the real API is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputOptions {
    /// Enum value names match whatever their ASCII case (`--case-insensitive-enums`, Envoy's
    /// `case_insensitive_enum_parsing`); the request carries the declared name.
    pub case_insensitive_enums: bool,
    /// Query parameters that name no field are skipped instead of refused
    /// (`--ignore-unknown-query-params`, Envoy's `ignore_unknown_query_parameters`); a known
    /// field's bad value is still an error.
    pub ignore_unknown_query_params: bool,
}

impl InputOptions {
    /// The value of `e` named `name`, exactly or, when allowed, ignoring ASCII case.
    pub(crate) fn enum_value(
        self,
        e: &prost_reflect::EnumDescriptor,
        name: &str,
    ) -> Option<prost_reflect::EnumValueDescriptor> {
        e.get_value_by_name(name).or_else(|| {
            self.case_insensitive_enums
                .then(|| e.values().find(|v| v.name().eq_ignore_ascii_case(name)))
                .flatten()
        })
    }
}

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
pub(crate) fn from_url_text(kind: &Kind, s: &str, opts: InputOptions) -> Result<Value, String> {
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
            Err(_) => opts
                .enum_value(e, s)
                .map(|v| Value::String(v.name().into()))
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
pub(crate) fn scalar(
    kind: &Kind,
    v: Value,
    path: &str,
    opts: InputOptions,
) -> Result<Value, String> {
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
            Value::String(s) => from_url_text(kind, s, opts).map_err(|e| format!("{path}: {e}")),
            _ => Err(wrong("a number", &v)),
        },
        Kind::Enum(e) => match &v {
            Value::String(name) if e.get_value_by_name(name).is_some() => Ok(v),
            Value::String(name) if let Some(value) = opts.enum_value(e, name) => {
                Ok(Value::String(value.name().into()))
            }
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
        // Neither parse takes blanks or an empty string: those are "not an integer".
        Value::String(s) => {
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

/// Descriptors of messages the compiled-in API does not have, for the tests of code that any
/// gRPC service's messages reach (maps with integer keys, WKT fields, maps of messages).
#[cfg(test)]
pub(crate) mod test_descriptors {
    use prost_reflect::prost_types::field_descriptor_proto::{Label, Type};
    use prost_reflect::prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MessageOptions,
    };

    /// A singular field; `type_name` (`.pkg.Message`) for messages, empty otherwise.
    pub(crate) fn field(
        name: &str,
        number: i32,
        ty: Type,
        type_name: &str,
    ) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            json_name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: (!type_name.is_empty()).then(|| type_name.into()),
            ..Default::default()
        }
    }

    /// A map field `name` of message `owner` (`.pkg.Owner`) with its entry message.
    pub(crate) fn map(
        owner: &str,
        name: &str,
        number: i32,
        key: Type,
        value: Type,
        value_type_name: &str,
    ) -> (FieldDescriptorProto, DescriptorProto) {
        let entry = format!("{}Entry", heck_upper(name));
        let mut f = field(name, number, Type::Message, &format!("{owner}.{entry}"));
        f.label = Some(Label::Repeated as i32);
        let entry = DescriptorProto {
            name: Some(entry),
            field: vec![
                field("key", 1, key, ""),
                field("value", 2, value, value_type_name),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        (f, entry)
    }

    fn heck_upper(name: &str) -> String {
        let mut chars = name.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    }

    /// A proto3 file of `messages` in package `test`.
    pub(crate) fn file(
        name: &str,
        dependency: &[&str],
        messages: Vec<DescriptorProto>,
    ) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some("test".into()),
            dependency: dependency.iter().map(|d| d.to_string()).collect(),
            message_type: messages,
            syntax: Some("proto3".into()),
            ..Default::default()
        }
    }

    /// The compiled-in pool with `files` added.
    pub(crate) fn pool_with(files: Vec<FileDescriptorProto>) -> prost_reflect::DescriptorPool {
        let mut pool = crate::pb::descriptor_pool().clone();
        for f in files {
            pool.add_file_descriptor_proto(f)
                .expect("a valid test file");
        }
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const STRICT: InputOptions = InputOptions {
        case_insensitive_enums: false,
        ignore_unknown_query_params: false,
    };

    /// Kinds no compiled-in request has (floats, unsigned and 32-bit integers), from the
    /// query string and from JSON.
    #[test]
    fn every_scalar_kind_from_text_and_json() {
        assert_eq!(from_url_text(&Kind::Bool, "true", STRICT), Ok(json!(true)));
        assert_eq!(
            from_url_text(&Kind::Bool, "false", STRICT),
            Ok(json!(false))
        );
        assert!(from_url_text(&Kind::Bool, "no", STRICT).is_err());

        assert_eq!(from_url_text(&Kind::Double, "1.5", STRICT), Ok(json!(1.5)));
        for special in ["NaN", "Infinity", "-Infinity"] {
            assert_eq!(
                from_url_text(&Kind::Float, special, STRICT),
                Ok(json!(special))
            );
        }
        for bad in ["abc", "1e400", "nan", "inf"] {
            assert!(from_url_text(&Kind::Double, bad, STRICT).is_err(), "{bad}");
        }
        assert_eq!(
            scalar(&Kind::Double, json!(2.5), "d", STRICT),
            Ok(json!(2.5))
        );
        assert_eq!(
            scalar(&Kind::Float, json!("2.5"), "d", STRICT),
            Ok(json!(2.5))
        );
        assert_eq!(
            scalar(&Kind::Double, json!(true), "d", STRICT),
            Err("d: expected a number, got a boolean".into())
        );

        assert_eq!(
            scalar(&Kind::Uint64, json!("18446744073709551615"), "u", STRICT),
            Ok(json!("18446744073709551615"))
        );
        assert_eq!(
            scalar(&Kind::Fixed64, json!(-1), "u", STRICT),
            Err("u: -1 is out of range for uint64".into())
        );
        assert_eq!(
            scalar(&Kind::Int32, json!("-5"), "i", STRICT),
            Ok(json!(-5))
        );
        assert_eq!(
            scalar(&Kind::Sint32, json!(2_147_483_648_i64), "i", STRICT),
            Err("i: 2147483648 is out of range for int32".into())
        );
        assert_eq!(
            scalar(&Kind::Uint32, json!(4_294_967_295_u32), "n", STRICT),
            Ok(json!(4_294_967_295_u32))
        );
        assert_eq!(
            scalar(&Kind::Fixed32, json!(-1), "n", STRICT),
            Err("n: -1 is out of range for uint32".into())
        );
        // Each end of a range is in it.
        assert_eq!(
            scalar(&Kind::Int32, json!("-2147483648"), "i", STRICT),
            Ok(json!(-2_147_483_648_i64))
        );
        assert_eq!(scalar(&Kind::Uint32, json!(0), "n", STRICT), Ok(json!(0)));
        assert_eq!(
            scalar(&Kind::Int64, json!("-9223372036854775808"), "i", STRICT),
            Ok(json!("-9223372036854775808"))
        );
        // A float past 2^64 is no integer of any kind, however whole.
        assert_eq!(
            scalar(&Kind::Uint64, json!(1.9e19), "u", STRICT),
            Err("u: 1.9e+19 is not an integer".into())
        );
        for blank in ["", " 1", "1 "] {
            assert_eq!(
                scalar(&Kind::Int64, json!(blank), "i", STRICT),
                Err(format!("i: {blank:?} is not an integer"))
            );
        }
        assert_eq!(
            scalar(&Kind::Int64, json!([1]), "i", STRICT),
            Err("i: expected an integer (int64) as a number or a string, got an array".into())
        );
    }

    #[test]
    fn json_types_are_named() {
        for (v, name) in [
            (json!(null), "null"),
            (json!(false), "a boolean"),
            (json!(1), "a number"),
            (json!("s"), "a string"),
            (json!([]), "an array"),
            (json!({}), "an object"),
        ] {
            assert_eq!(json_type(&v), name);
        }
    }
}
