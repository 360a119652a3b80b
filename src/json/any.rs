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

pub(crate) fn encode_json<M>(bytes: &[u8], form: AnyForm) -> Result<Map<String, Value>, String>
where
    M: Message + Default + serde::Serialize,
{
    let msg = M::decode(bytes).map_err(|e| format!("undecodable Any payload: {e}"))?;
    let json = serde_json::to_value(&msg).map_err(|e| e.to_string())?;
    match (form, json) {
        (AnyForm::Fields, Value::Object(map)) => Ok(map),
        (AnyForm::Fields, other) => Err(format!("expected a JSON object, rendered {other}")),
        (AnyForm::Value, value) => Ok(Map::from_iter([("value".to_string(), value)])),
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
        let fields = match registry::to_json(self.type_name(), &self.value) {
            Some(Ok(fields)) => fields,
            Some(Err(e)) => {
                return Err(ser::Error::custom(format!("Any of {}: {e}", self.type_url)));
            }
            None => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&self.value);
                Map::from_iter([("value".to_string(), Value::String(b64))])
            }
        };
        let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
        map.serialize_entry("@type", &self.type_url)?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
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
        // Found by the wkt_json fuzz target: the empty Any must render as `{}` to parse back.
        assert_eq!(
            serde_json::to_string(&Any::default()).expect("renders"),
            "{}"
        );
    }
}
