//! `google.protobuf.Any` with its proto3 JSON form `{"@type": url, ...fields}` (or
//! `{"@type": url, "value": ...}` for well-known types whose JSON is not an object), through a
//! registry that build.rs generates for every message type in `proto/`.
//!
//! Choice: an `Any` whose type this binary does not know renders as
//! `{"@type": url, "value": "<base64 of the bytes>"}` instead of failing the whole response, so
//! a newer backend's error details never turn a reply into a 500. Such a value cannot be parsed
//! back; known types always render canonically.

use base64::Engine as _;
use prost::Message;
use serde::de::{self, Deserializer};
use serde::ser::{self, SerializeMap, Serializer};
use serde_json::{Map, Value};

mod registry {
    use super::{AnyForm, decode_json, encode_json};
    include!(concat!(env!("OUT_DIR"), "/any_registry.rs"));
}

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// A message of any type, packed with its type URL.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Any {
    /// `type.googleapis.com/<full message name>`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The message, protobuf-encoded.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl ::prost::Name for Any {
    const NAME: &'static str = "Any";
    const PACKAGE: &'static str = "google.protobuf";
    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.Any".into()
    }
}

impl Any {
    /// Packs a message with its `type.googleapis.com` URL.
    pub fn pack<M: Message + prost::Name>(msg: &M) -> Self {
        Self {
            type_url: M::type_url(),
            value: msg.encode_to_vec(),
        }
    }

    /// Unpacks into `M`; `Ok(None)` when the Any holds another type.
    pub fn unpack<M: Message + prost::Name + Default>(
        &self,
    ) -> Result<Option<M>, prost::DecodeError> {
        if self.type_url != M::type_url() {
            return Ok(None);
        }
        M::decode(self.value.as_slice()).map(Some)
    }

    /// The full message name from the URL: the part after the last `/`.
    pub fn type_name(&self) -> &str {
        self.type_url.rsplit('/').next().unwrap_or_default()
    }
}

/// How a type sits inside an Any's JSON object.
#[derive(Clone, Copy)]
pub(crate) enum AnyForm {
    /// Its fields sit beside `@type`.
    Fields,
    /// Its JSON (a string, for Timestamp and friends) sits under `"value"`.
    Value,
}

/// Serializes a packed message of type `M` as an Any's JSON, straight into `serializer` (no
/// intermediate `serde_json::Value`): its fields beside `@type`, or its JSON under `"value"`.
pub(crate) fn encode_json<M, S>(
    type_url: &str,
    bytes: &[u8],
    form: AnyForm,
    serializer: S,
) -> Result<S::Ok, S::Error>
where
    M: Message + Default + serde::Serialize,
    S: Serializer,
{
    let msg = M::decode(bytes)
        .map_err(|e| ser::Error::custom(format!("Any of {type_url}: undecodable payload: {e}")))?;
    match form {
        AnyForm::Fields => msg.serialize(TypeFirst {
            type_url,
            inner: serializer,
        }),
        AnyForm::Value => {
            let mut map = serializer.serialize_map(Some(2))?;
            map.serialize_entry("@type", type_url)?;
            map.serialize_entry("value", &msg)?;
            map.end()
        }
    }
}

/// A serializer for a message inside an Any: the message's struct (or map) becomes a JSON
/// object that starts with `"@type"`; anything that is not an object is an error.
struct TypeFirst<'a, S> {
    type_url: &'a str,
    inner: S,
}

/// The fields of a [`TypeFirst`] object, after its `@type`.
struct TypeFirstFields<M>(M);

impl<S: Serializer> TypeFirst<'_, S> {
    fn open(self, len: Option<usize>) -> Result<TypeFirstFields<S::SerializeMap>, S::Error> {
        let mut map = self.inner.serialize_map(len.map(|n| n + 1))?;
        map.serialize_entry("@type", self.type_url)?;
        Ok(TypeFirstFields(map))
    }

    fn not_an_object<T>(self, what: &str) -> Result<T, S::Error> {
        Err(ser::Error::custom(format!(
            "Any of {}: expected a JSON object, rendered {what}",
            self.type_url
        )))
    }
}

/// `Serializer` methods that a message type never reaches: each renders an error.
macro_rules! not_an_object {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<Self::Ok, Self::Error> {
            self.not_an_object(stringify!($method))
        })*
    };
}

impl<S: Serializer> Serializer for TypeFirst<'_, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = ser::Impossible<S::Ok, S::Error>;
    type SerializeTuple = ser::Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = ser::Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = ser::Impossible<S::Ok, S::Error>;
    type SerializeMap = TypeFirstFields<S::SerializeMap>;
    type SerializeStruct = TypeFirstFields<S::SerializeMap>;
    type SerializeStructVariant = ser::Impossible<S::Ok, S::Error>;

    not_an_object!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    /// An empty message (`google.protobuf.Empty`) is `{"@type": ...}`.
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.open(Some(0))?.0.end()
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<S::Ok, S::Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: ?Sized + serde::Serialize>(self, value: &T) -> Result<S::Ok, S::Error> {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + serde::Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<S::Ok, S::Error> {
        self.not_an_object("a variant")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        self.not_an_object("an array")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, S::Error> {
        self.not_an_object("a tuple")
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        self.not_an_object("a tuple")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        self.not_an_object("a variant")
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        self.open(len)
    }
    fn serialize_struct(
        self,
        _: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        self.open(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        self.not_an_object("a variant")
    }
}

impl<M: SerializeMap> ser::SerializeStruct for TypeFirstFields<M> {
    type Ok = M::Ok;
    type Error = M::Error;
    fn serialize_field<T: ?Sized + serde::Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), M::Error> {
        self.0.serialize_entry(key, value)
    }
    fn end(self) -> Result<M::Ok, M::Error> {
        self.0.end()
    }
}

impl<M: SerializeMap> SerializeMap for TypeFirstFields<M> {
    type Ok = M::Ok;
    type Error = M::Error;
    fn serialize_key<T: ?Sized + serde::Serialize>(&mut self, key: &T) -> Result<(), M::Error> {
        self.0.serialize_key(key)
    }
    fn serialize_value<T: ?Sized + serde::Serialize>(&mut self, value: &T) -> Result<(), M::Error> {
        self.0.serialize_value(value)
    }
    fn end(self) -> Result<M::Ok, M::Error> {
        self.0.end()
    }
}

pub(crate) fn decode_json<M>(mut json: Map<String, Value>, form: AnyForm) -> Result<Vec<u8>, String>
where
    M: Message + Default + serde::de::DeserializeOwned,
{
    let value = match form {
        AnyForm::Fields => Value::Object(json),
        AnyForm::Value => {
            let value = json.remove("value").ok_or("missing \"value\"")?;
            if let Some(extra) = json.keys().next() {
                return Err(format!("unknown field {extra:?}"));
            }
            value
        }
    };
    let msg: M = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(msg.encode_to_vec())
}

impl serde::Serialize for Any {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // An empty Any (what `{}` parses to) renders back as `{}`.
        if self.type_url.is_empty() && self.value.is_empty() {
            return serializer.serialize_map(Some(0))?.end();
        }
        match registry::to_json(self.type_name(), &self.type_url, &self.value, serializer) {
            Ok(rendered) => rendered,
            Err(serializer) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.value);
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("@type", &self.type_url)?;
                map.serialize_entry("value", &b64)?;
                map.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut json = Map::<String, Value>::deserialize(deserializer)?;
        let type_url = match json.remove("@type") {
            Some(Value::String(url)) => url,
            Some(_) => return Err(de::Error::custom("\"@type\" must be a string")),
            None if json.is_empty() => return Ok(Self::default()),
            None => return Err(de::Error::custom("an Any needs \"@type\"")),
        };
        let name = type_url.rsplit('/').next().unwrap_or_default();
        if !type_url.contains('/') {
            return Err(de::Error::custom(format!(
                "\"@type\" {type_url:?} must be a URL such as \"{TYPE_URL_PREFIX}{type_url}\""
            )));
        }
        match registry::from_json(name, json) {
            Some(Ok(value)) => Ok(Self { type_url, value }),
            Some(Err(e)) => Err(de::Error::custom(format!("{type_url}: {e}"))),
            None => Err(de::Error::custom(format!("unknown \"@type\" {type_url:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::{FieldMask, Timestamp};
    use crate::pb::google::rpc::{BadRequest, bad_request::FieldViolation};
    use crate::pb::yandex::cloud::compute::v1::{Image, UpdateImageMetadata, image};

    #[test]
    fn renders_type_first_then_fields() {
        let any = Any::pack(&UpdateImageMetadata {
            image_id: "fd8abc".into(),
        });
        let json = serde_json::to_string(&any).expect("renders");
        assert_eq!(
            json,
            r#"{"@type":"type.googleapis.com/yandex.cloud.compute.v1.UpdateImageMetadata","imageId":"fd8abc"}"#
        );
        let back: Any = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, any);
    }

    #[test]
    fn nested_messages_and_error_details_render_with_type() {
        let img = Image {
            id: "fd8img".into(),
            min_disk_size: 4_194_304,
            status: image::Status::Ready as i32,
            created_at: Some(Timestamp {
                seconds: 0,
                nanos: 5,
            }),
            ..Default::default()
        };
        let json = serde_json::to_value(Any::pack(&img)).expect("renders");
        assert_eq!(
            json["@type"],
            "type.googleapis.com/yandex.cloud.compute.v1.Image"
        );
        assert_eq!(json["minDiskSize"], "4194304");
        assert_eq!(json["status"], "READY");
        assert_eq!(json["createdAt"], "1970-01-01T00:00:00.000000005Z");

        let details = BadRequest {
            field_violations: vec![FieldViolation {
                field: "name".into(),
                description: "bad".into(),
            }],
        };
        let json = serde_json::to_value(Any::pack(&details)).expect("renders");
        assert_eq!(json["@type"], "type.googleapis.com/google.rpc.BadRequest");
        assert_eq!(json["fieldViolations"][0]["field"], "name");
    }

    #[test]
    fn well_known_types_use_the_value_form() {
        let ts = Any::pack(&Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(
            serde_json::to_string(&ts).expect("renders"),
            r#"{"@type":"type.googleapis.com/google.protobuf.Timestamp","value":"1970-01-01T00:00:01Z"}"#
        );
        let mask = Any::pack(&FieldMask::new(["min_disk_size"]));
        let json = serde_json::to_string(&mask).expect("renders");
        assert_eq!(
            json,
            r#"{"@type":"type.googleapis.com/google.protobuf.FieldMask","value":"minDiskSize"}"#
        );
        assert_eq!(serde_json::from_str::<Any>(&json).expect("parses"), mask);
        let empty = Any::pack(&());
        assert_eq!(
            serde_json::to_string(&empty).expect("renders"),
            r#"{"@type":"type.googleapis.com/google.protobuf.Empty"}"#
        );
    }

    #[test]
    fn an_any_packs_into_an_any_under_its_own_type_url() {
        let inner = Any::pack(&UpdateImageMetadata {
            image_id: "fd8abc".into(),
        });
        let outer = Any::pack(&inner);
        assert_eq!(outer.type_url, "type.googleapis.com/google.protobuf.Any");
        assert_eq!(outer.unpack::<Any>().expect("decodes"), Some(inner.clone()));
        assert_eq!(inner.unpack::<Any>().expect("another type"), None);
    }

    /// A message whose JSON is built as a map, one key and one value at a time (the way
    /// `serialize_entry`'s default does it), still renders with `@type` first.
    #[test]
    fn a_map_shaped_message_renders_type_first() {
        use serde::Serialize as _;
        struct Pairs;
        impl serde::Serialize for Pairs {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_key("a")?;
                map.serialize_value(&1)?;
                map.serialize_key("b")?;
                map.serialize_value("two")?;
                map.end()
            }
        }
        let mut out = Vec::new();
        Pairs
            .serialize(TypeFirst {
                type_url: "type.googleapis.com/x.Pairs",
                inner: &mut serde_json::Serializer::new(&mut out),
            })
            .expect("renders");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            r#"{"@type":"type.googleapis.com/x.Pairs","a":1,"b":"two"}"#
        );
    }

    #[test]
    fn unknown_types_fall_back_and_bad_input_is_rejected() {
        let any = Any {
            type_url: "type.googleapis.com/x.Unknown".into(),
            value: vec![1, 2, 3, 4],
        };
        assert_eq!(
            serde_json::to_string(&any).expect("renders"),
            r#"{"@type":"type.googleapis.com/x.Unknown","value":"AQIDBA=="}"#
        );
        for bad in [
            r#"{"imageId":"x"}"#,
            r#"{"@type":"type.googleapis.com/x.Unknown"}"#,
            r#"{"@type":"yandex.cloud.compute.v1.UpdateImageMetadata"}"#,
            r#"{"@type":"type.googleapis.com/yandex.cloud.compute.v1.UpdateImageMetadata","nope":1}"#,
            r#"{"@type":7}"#,
        ] {
            assert!(serde_json::from_str::<Any>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<Any>("{}").expect("empty"),
            Any::default()
        );
        // A known type whose bytes do not decode fails the rendering, naming the type.
        let garbage = Any {
            type_url: "type.googleapis.com/yandex.cloud.compute.v1.Image".into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let err = serde_json::to_string(&garbage).expect_err("undecodable");
        assert!(
            err.to_string()
                .contains("Any of type.googleapis.com/yandex.cloud.compute.v1.Image"),
            "{err}"
        );
        // Found by the wkt_json fuzz target: the empty Any must render as `{}` to parse back.
        assert_eq!(
            serde_json::to_string(&Any::default()).expect("renders"),
            "{}"
        );
    }
}
