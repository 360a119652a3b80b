//! `ListImagesRequest.filter` and `order_by` (api-facts §8): conditions `<field> <op> <value>`
//! joined by `AND`, ops `=`, `!=`, `IN`, `NOT IN`, strings in double or single quotes with
//! C-style escapes (`\"`, `\'`, `\\`); filterable fields `id`, `name`, `family`, `status`
//! (status values may be bare: `status = READY`). Order: `<field> [asc|desc]` over `id`, `name`,
//! `createdAt`; `id asc` by default.

use crate::pb::yandex::cloud::compute::v1::{Image, image};
use crate::store::{ImageCursor, ImageOrder};

/// A parsed filter: every condition must hold.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Filter(Vec<Condition>);

#[derive(Debug, PartialEq)]
struct Condition {
    field: Field,
    negated: bool,
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Id,
    Name,
    Family,
    Status,
}

impl Filter {
    /// Parses a filter expression; the error says where it failed.
    pub(super) fn parse(input: &str) -> Result<Self, String> {
        let mut p = Parser {
            s: input.as_bytes(),
            i: 0,
        };
        let mut conditions = Vec::new();
        p.ws();
        if p.done() {
            return Ok(Self(conditions));
        }
        loop {
            conditions.push(p.condition()?);
            p.ws();
            if p.done() {
                return Ok(Self(conditions));
            }
            if !p.keyword("AND") {
                return Err(p.error("expected AND or the end of the filter"));
            }
        }
    }

    /// Whether an image satisfies every condition.
    pub(super) fn matches(&self, img: &Image) -> bool {
        self.0.iter().all(|c| {
            let actual = match c.field {
                Field::Id => img.id.as_str(),
                Field::Name => img.name.as_str(),
                Field::Family => img.family.as_str(),
                Field::Status => image::Status::try_from(img.status)
                    .map(|s| s.as_str_name())
                    .unwrap_or_default(),
            };
            c.values.iter().any(|v| v == actual) != c.negated
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }
    fn error(&self, what: &str) -> String {
        format!("at position {}: {what}", self.i + 1)
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn word(&mut self) -> &str {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default()
    }
    fn keyword(&mut self, kw: &str) -> bool {
        let save = self.i;
        if self.word().eq_ignore_ascii_case(kw) {
            true
        } else {
            self.i = save;
            false
        }
    }
    fn condition(&mut self) -> Result<Condition, String> {
        self.ws();
        let at = self.i;
        let field = match self.word() {
            "id" => Field::Id,
            "name" => Field::Name,
            "family" => Field::Family,
            "status" => Field::Status,
            "" => return Err(self.error("expected a field name (id, name, family, status)")),
            other => {
                let other = other.to_string();
                self.i = at;
                return Err(self.error(&format!(
                    "field {other:?} cannot be filtered on; use id, name, family or status"
                )));
            }
        };
        self.ws();
        let (negated, list) = if self.s[self.i..].starts_with(b"!=") {
            self.i += 2;
            (true, false)
        } else if self.s[self.i..].starts_with(b"=") {
            self.i += 1;
            (false, false)
        } else if self.keyword("IN") {
            (false, true)
        } else if self.keyword("NOT") {
            if !self.keyword("IN") {
                return Err(self.error("expected IN after NOT"));
            }
            (true, true)
        } else {
            return Err(self.error("expected an operator: =, !=, IN or NOT IN"));
        };
        let values = if list {
            self.ws();
            if self.s.get(self.i) != Some(&b'(') {
                return Err(self.error("expected ( to start the value list"));
            }
            self.i += 1;
            let mut values = vec![self.value(field)?];
            loop {
                self.ws();
                match self.s.get(self.i) {
                    Some(b',') => {
                        self.i += 1;
                        values.push(self.value(field)?);
                    }
                    Some(b')') => {
                        self.i += 1;
                        break values;
                    }
                    _ => return Err(self.error("expected , or ) in the value list")),
                }
            }
        } else {
            vec![self.value(field)?]
        };
        Ok(Condition {
            field,
            negated,
            values,
        })
    }
    fn value(&mut self, field: Field) -> Result<String, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(&q @ (b'"' | b'\'')) => {
                self.i += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.i) {
                        None => return Err(self.error("unterminated string")),
                        Some(b'\\') => {
                            match self.s.get(self.i + 1) {
                                Some(&c @ (b'"' | b'\'' | b'\\')) => out.push(c),
                                _ => {
                                    return Err(self.error("unknown escape; use \\\", \\' or \\\\"));
                                }
                            }
                            self.i += 2;
                        }
                        Some(&c) if c == q => {
                            self.i += 1;
                            break;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.i += 1;
                        }
                    }
                }
                String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
            }
            _ if field == Field::Status => {
                let word = self.word().to_string();
                if image::Status::from_str_name(&word).is_some() {
                    Ok(word)
                } else {
                    Err(self.error("expected a status: CREATING, READY, ERROR or DELETING"))
                }
            }
            _ => Err(self.error("expected a quoted string")),
        }
    }
}

/// A sort order for List: a field with an index in the store, and a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Order {
    pub(super) field: ImageOrder,
    /// Descending.
    pub(super) desc: bool,
}

impl Order {
    /// Parses `order_by`; empty is `id asc`.
    pub(super) fn parse(input: &str) -> Result<Self, String> {
        let mut words = input.split_whitespace();
        let field = match words.next() {
            None => {
                return Ok(Self {
                    field: ImageOrder::Id,
                    desc: false,
                });
            }
            Some("id") => ImageOrder::Id,
            Some("name") => ImageOrder::Name,
            Some("createdAt" | "created_at") => ImageOrder::CreatedAt,
            Some(other) => {
                return Err(format!(
                    "cannot order by {other:?}; use id, name or createdAt"
                ));
            }
        };
        let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(format!("unknown direction {other:?}; use asc or desc")),
        };
        if let Some(extra) = words.next() {
            return Err(format!(
                "unexpected {extra:?}; order by one field: \"<field> [asc|desc]\""
            ));
        }
        Ok(Self { field, desc })
    }

    /// A one-letter tag naming this order, kept in page tokens so a token is used with its
    /// own order: the field's initial, upper case for descending.
    pub(super) fn tag(&self) -> &'static str {
        match (self.field, self.desc) {
            (ImageOrder::Id, false) => "i",
            (ImageOrder::Id, true) => "I",
            (ImageOrder::Name, false) => "n",
            (ImageOrder::Name, true) => "N",
            (ImageOrder::CreatedAt, false) => "c",
            (ImageOrder::CreatedAt, true) => "C",
        }
    }

    /// The place of an image in this order.
    pub(super) fn key(&self, img: &Image) -> ImageCursor {
        ImageCursor::of(self.field, img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str, family: &str, status: image::Status) -> Image {
        Image {
            id: format!("fd8{name}"),
            name: name.into(),
            family: family.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn filter_grammar() {
        let a = img("alpha", "fam", image::Status::Ready);
        let b = img("beta", "other", image::Status::Creating);
        let cases: &[(&str, bool, bool)] = &[
            ("", true, true),
            ("name=\"alpha\"", true, false),
            ("name = 'alpha'", true, false),
            ("name != \"alpha\"", false, true),
            ("name IN (\"alpha\", \"beta\")", true, true),
            ("name NOT IN ('alpha')", false, true),
            ("status = READY", true, false),
            ("status=\"CREATING\" AND family='other'", false, true),
            ("family = 'fam' and name = 'alpha'", true, false),
            ("name = \"al\\\"pha\"", false, false),
        ];
        for (f, want_a, want_b) in cases {
            let parsed = Filter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(
                (parsed.matches(&a), parsed.matches(&b)),
                (*want_a, *want_b),
                "{f}"
            );
        }
    }

    #[test]
    fn filter_errors_say_where() {
        let cases = [
            ("size = \"1\"", "position 1"),
            ("name", "position 5"),
            ("name = alpha", "quoted string"),
            ("name = \"alpha", "unterminated"),
            ("name = \"a\" OR name = \"b\"", "expected AND"),
            ("name IN \"a\"", "expected ("),
            ("name IN (\"a\" \"b\")", "expected , or )"),
            ("status = FINE", "expected a status"),
            ("name NOT = \"a\"", "expected IN after NOT"),
            ("name = \"a\\n\"", "unknown escape"),
        ];
        for (f, want) in cases {
            let err = Filter::parse(f).expect_err(f);
            assert!(err.contains(want), "{f}: {err}");
        }
    }

    #[test]
    fn order_by() {
        assert_eq!(Order::parse("").map(|o| o.desc), Ok(false));
        assert_eq!(Order::parse("createdAt desc").map(|o| o.desc), Ok(true));
        assert_eq!(Order::parse("name ASC").map(|o| o.desc), Ok(false));
        for bad in ["size", "id sideways", "id asc name"] {
            assert!(Order::parse(bad).is_err(), "{bad}");
        }
    }
}
