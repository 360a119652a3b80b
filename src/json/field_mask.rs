//! `google.protobuf.FieldMask` with its proto3 JSON form: one string of comma-separated paths,
//! each dotted segment in lowerCamelCase on the wire and snake_case inside
//! (protobuf.dev ProtoJSON, "FieldMask").

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};

/// A set of field paths, stored as proto field names (`min_disk_size`, `a.b_c`).
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct FieldMask {
    /// Paths in proto (snake_case) form.
    #[prost(string, repeated, tag = "1")]
    pub paths: Vec<String>,
}

impl ::prost::Name for FieldMask {
    const NAME: &'static str = "FieldMask";
    const PACKAGE: &'static str = "google.protobuf";
    fn type_url() -> String {
        "type.googleapis.com/google.protobuf.FieldMask".into()
    }
}

impl FieldMask {
    /// A mask of the given snake_case paths.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(paths: I) -> Self {
        Self {
            paths: paths.into_iter().map(Into::into).collect(),
        }
    }

    /// Parses the JSON string form (`"name,minDiskSize"`) into snake_case paths.
    pub fn from_json_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Ok(Self::default());
        }
        let paths = s
            .split(',')
            .map(|path| {
                path.split('.')
                    .map(|seg| camel_to_snake(seg).ok_or_else(|| bad_path(path)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|segs| segs.join("."))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { paths })
    }

    /// Renders the JSON string form; fails for a path that would not parse back the same.
    pub fn to_json_string(&self) -> Result<String, String> {
        let mut out = String::new();
        for (i, path) in self.paths.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            for (j, seg) in path.split('.').enumerate() {
                if j > 0 {
                    out.push('.');
                }
                let camel = snake_to_camel(seg).ok_or_else(|| {
                    format!("field mask path {path:?} has no lowerCamelCase JSON form")
                })?;
                out.push_str(&camel);
            }
        }
        Ok(out)
    }
}

fn bad_path(path: &str) -> String {
    format!(
        "invalid field mask path {path:?}: expected dot-separated lowerCamelCase field names, comma-separated"
    )
}

/// `minDiskSize` -> `min_disk_size`; `None` unless the segment is lowerCamelCase.
fn camel_to_snake(seg: &str) -> Option<String> {
    let mut chars = seg.chars();
    if !chars.next()?.is_ascii_lowercase() {
        return None;
    }
    let mut out = String::with_capacity(seg.len() + 4);
    for c in seg.chars() {
        match c {
            'A'..='Z' => {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            }
            'a'..='z' | '0'..='9' => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// `min_disk_size` -> `minDiskSize`; `None` when the round trip would not be exact.
fn snake_to_camel(seg: &str) -> Option<String> {
    let mut out = String::with_capacity(seg.len());
    let mut upper = false;
    for (i, c) in seg.chars().enumerate() {
        match c {
            '_' if i > 0 && !upper => upper = true,
            'a'..='z' if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            'a'..='z' | '0'..='9' if !(upper || i == 0 && c.is_ascii_digit()) => out.push(c),
            _ => return None,
        }
    }
    (!upper && !out.is_empty()).then_some(out)
}

impl serde::Serialize for FieldMask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_json_string().map_err(ser::Error::custom)?)
    }
}

impl<'de> serde::Deserialize<'de> for FieldMask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaskVisitor;
        impl Visitor<'_> for MaskVisitor {
            type Value = FieldMask;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field mask string such as \"name,minDiskSize\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldMask, E> {
                FieldMask::from_json_str(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(MaskVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders_the_string_form() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("name", &["name"]),
            ("name,minDiskSize", &["name", "min_disk_size"]),
            ("labels,description", &["labels", "description"]),
            (
                "os.type,hardwareGeneration.legacyFeatures",
                &["os.type", "hardware_generation.legacy_features"],
            ),
            ("a1b", &["a1b"]),
        ];
        for (json, paths) in cases {
            let mask = FieldMask::from_json_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(mask.paths, *paths, "{json}");
            assert_eq!(mask.to_json_string().as_deref(), Ok(*json), "{json}");
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "min_disk_size",
            "name,",
            ",name",
            "name,,labels",
            "Name",
            "name labels",
            " name",
            "a..b",
            "a.",
            "1abc",
            "na-me",
            "naïve",
        ] {
            assert!(
                FieldMask::from_json_str(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn refuses_to_render_paths_without_a_camel_form() {
        // A digit after `_` has no camel form (`a_1b` would render `a1B` and parse back as
        // `a1_b`), nor does a leading digit.
        for bad in ["Name", "a__b", "a_", "_a", "a_1", "a_1b", "1a", "a-b", ""] {
            let mask = FieldMask::new([bad]);
            assert!(mask.to_json_string().is_err(), "{bad:?} should not render");
        }
    }

    #[test]
    fn serde_uses_the_string_form_only() {
        let mask: FieldMask = serde_json::from_str("\"name,minDiskSize\"").expect("valid");
        assert_eq!(mask.paths, ["name", "min_disk_size"]);
        assert_eq!(
            serde_json::to_string(&mask).expect("renders"),
            "\"name,minDiskSize\""
        );
        assert!(serde_json::from_str::<FieldMask>(r#"{"paths":["name"]}"#).is_err());
        assert!(serde_json::from_str::<FieldMask>("[\"name\"]").is_err());
        let err = serde_json::from_str::<FieldMask>("7").expect_err("not a string");
        assert!(
            err.to_string()
                .contains("expected a field mask string such as \"name,minDiskSize\""),
            "{err}"
        );
    }
}
