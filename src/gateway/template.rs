//! `google.api.http` path templates (google/api/http.proto, "Path template syntax"):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! `{var}` is `{var=*}`; `**` matches zero or more segments and must be the last segment.
//! Matching percent-decodes per the spec: a single-segment variable decodes every escape, a
//! multi-segment one keeps `%2F` (so a decoded `/` is never confused with a separator).

use std::fmt;

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this text (after percent-decoding).
    Literal(String),
    /// `*`: any one segment.
    Any,
    /// `**`: zero or more segments; only last.
    Rest,
}

/// A variable binding a run of segments to a request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// Field path, proto names: `["image_id"]` or `["parent", "name"]`.
    pub field_path: Vec<String>,
    /// First segment index it covers.
    pub start: usize,
    /// One past the last segment index; for a `**` variable, the end of the path.
    pub end: usize,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// The verb after `:`, if any.
    pub verb: Option<String>,
    /// The variables, in order.
    pub variables: Vec<Variable>,
}

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.~%!$&'()+,;=@".contains(c)
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Template {
    /// Parses a template; errors name the position and what was expected.
    pub fn parse(input: &str) -> Result<Self, TemplateError> {
        let err = |what: &str| Err(TemplateError(format!("template {input:?}: {what}")));
        let Some(rest) = input.strip_prefix('/') else {
            return err("must start with /");
        };
        // The verb is after the last ':' outside braces.
        let mut depth = 0i32;
        let mut verb_at = None;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(i),
                _ => {}
            }
        }
        let (body, verb) = match verb_at {
            Some(i) => {
                let verb = &rest[i + 1..];
                if verb.is_empty() || !verb.chars().all(is_literal_char) {
                    return err("the verb after ':' must be a non-empty literal");
                }
                (&rest[..i], Some(verb.to_string()))
            }
            None => (rest, None),
        };
        let mut t = Template {
            segments: Vec::new(),
            verb,
            variables: Vec::new(),
        };
        let mut chars = body;
        loop {
            if let Some(inner) = chars.strip_prefix('{') {
                let Some(close) = inner.find('}') else {
                    return err("unclosed '{'");
                };
                let var = &inner[..close];
                if var.contains('{') {
                    return err("variables cannot nest");
                }
                let (path, sub) = match var.split_once('=') {
                    Some((p, s)) => (p, s),
                    None => (var, "*"),
                };
                let field_path: Vec<String> = path.split('.').map(str::to_owned).collect();
                if !field_path.iter().all(|p| is_ident(p)) {
                    return err(&format!("{path:?} is not a field path"));
                }
                if t.variables.iter().any(|v| v.field_path == field_path) {
                    return err(&format!("variable {path:?} appears twice"));
                }
                let start = t.segments.len();
                if sub.is_empty() {
                    return err(&format!("variable {path:?} has an empty pattern"));
                }
                for s in sub.split('/') {
                    t.segments.push(
                        parse_plain_segment(s)
                            .map_err(|e| TemplateError(format!("template {input:?}: {e}")))?,
                    );
                }
                t.variables.push(Variable {
                    field_path,
                    start,
                    end: t.segments.len(),
                });
                chars = &inner[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let seg = &chars[..end];
                if seg.contains('{') || seg.contains('}') {
                    return err("a variable must be a whole segment");
                }
                t.segments.push(
                    parse_plain_segment(seg)
                        .map_err(|e| TemplateError(format!("template {input:?}: {e}")))?,
                );
                chars = &chars[end..];
            }
            if chars.is_empty() {
                break;
            }
            match chars.strip_prefix('/') {
                Some(next) => chars = next,
                None => return err("expected '/' between segments"),
            }
        }
        if let Some(i) = t.segments.iter().position(|s| *s == Segment::Rest)
            && i + 1 != t.segments.len()
        {
            return err("'**' must be the last segment");
        }
        Ok(t)
    }

    /// Matches a raw request path (still percent-encoded): [`Template::matches`] on the path
    /// split by [`RequestPath::new`].
    pub fn match_path(&self, raw_path: &str) -> Result<Option<Vec<String>>, String> {
        match RequestPath::new(raw_path) {
            Some(path) => self.matches(&path),
            None => Ok(None),
        }
    }

    /// Matches a request path split once for every template. Returns the variable values,
    /// decoded, in variable order; `Ok(None)` when the path does not match; `Err` for an
    /// invalid percent-escape in a path that otherwise matches.
    pub(crate) fn matches(&self, path: &RequestPath<'_>) -> Result<Option<Vec<String>>, String> {
        // The verb is the end of the last segment: without it, the last segment is shorter,
        // and a path that was only the verb has no segments at all.
        let mut parts: &[(usize, usize)] = &path.parts;
        let mut last_end = None;
        if let Some(verb) = &self.verb {
            let Some(&(start, end)) = parts.last() else {
                return Ok(None);
            };
            let Some(stem) = path.rest[start..end]
                .strip_suffix(verb.as_str())
                .and_then(|r| r.strip_suffix(':'))
            else {
                return Ok(None);
            };
            if parts.len() == 1 && stem.is_empty() {
                parts = &[];
            } else {
                last_end = Some(start + stem.len());
            }
        }
        let count = parts.len();
        let span = |i: usize| -> (usize, usize) {
            let (start, end) = parts[i];
            match last_end {
                Some(stem_end) if i + 1 == count => (start, stem_end),
                _ => (start, end),
            }
        };
        let has_rest = self.segments.last() == Some(&Segment::Rest);
        let fixed = if has_rest {
            self.segments.len() - 1
        } else {
            self.segments.len()
        };
        if count < fixed || (!has_rest && count != fixed) {
            return Ok(None);
        }
        for (i, seg) in self.segments.iter().enumerate().take(count) {
            let (start, end) = span(i);
            let part = &path.rest[start..end];
            match seg {
                Segment::Literal(lit) => {
                    let same = if part.contains('%') {
                        decode(part, true)? == *lit
                    } else {
                        part == lit
                    };
                    if !same {
                        return Ok(None);
                    }
                }
                Segment::Any => {
                    if part.is_empty() {
                        return Ok(None);
                    }
                }
                Segment::Rest => {}
            }
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let end = if has_rest && v.end == self.segments.len() {
                count
            } else {
                v.end
            };
            let single = end - v.start == 1 && self.segments[v.start] != Segment::Rest;
            // A run of segments is one slice of the path, separators included.
            let text = if end > v.start {
                &path.rest[span(v.start).0..span(end - 1).1]
            } else {
                ""
            };
            values.push(decode(text, single)?);
        }
        Ok(Some(values))
    }
}

/// A request path split into its segments once, for every template to match against: the
/// byte range of each segment in the path after its leading `/`.
pub(crate) struct RequestPath<'a> {
    rest: &'a str,
    parts: Vec<(usize, usize)>,
}

impl<'a> RequestPath<'a> {
    /// Splits a raw path (still percent-encoded); `None` unless it starts with `/`.
    pub(crate) fn new(raw_path: &'a str) -> Option<Self> {
        let rest = raw_path.strip_prefix('/')?;
        let mut parts = Vec::new();
        if !rest.is_empty() {
            let mut start = 0;
            for (i, b) in rest.bytes().enumerate() {
                if b == b'/' {
                    parts.push((start, i));
                    start = i + 1;
                }
            }
            parts.push((start, rest.len()));
        }
        Some(Self { rest, parts })
    }
}

fn parse_plain_segment(s: &str) -> Result<Segment, String> {
    match s {
        "*" => Ok(Segment::Any),
        "**" => Ok(Segment::Rest),
        "" => Err("empty segment".into()),
        lit if lit.chars().all(is_literal_char) => Ok(Segment::Literal(lit.to_string())),
        lit => Err(format!("{lit:?} is not a valid literal segment")),
    }
}

/// Strict percent-decoding (an invalid escape or non-UTF-8 result is an error); `all` decodes
/// `%2F` too (single-segment variables, literals, query strings).
pub fn decode(s: &str, all: bool) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
                return Err(format!("invalid percent-encoding in path segment {s:?}"));
            };
            if byte == b'/' && !all {
                out.extend_from_slice(&b[i..i + 3]);
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("path segment {s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Segment {
        Segment::Literal(s.into())
    }

    #[test]
    fn parses_the_grammar() {
        let t = Template::parse("/compute/v1/images/{image_id}").expect("valid");
        assert_eq!(
            t.segments,
            [lit("compute"), lit("v1"), lit("images"), Segment::Any]
        );
        assert_eq!(
            t.variables,
            [Variable {
                field_path: vec!["image_id".into()],
                start: 3,
                end: 4
            }]
        );
        assert_eq!(t.verb, None);

        let t = Template::parse("/compute/v1/images:latestByFamily").expect("valid");
        assert_eq!(t.segments, [lit("compute"), lit("v1"), lit("images")]);
        assert_eq!(t.verb.as_deref(), Some("latestByFamily"));

        let t = Template::parse("/v1/{name=projects/*/files/**}:get").expect("valid");
        assert_eq!(
            t.segments,
            [
                lit("v1"),
                lit("projects"),
                Segment::Any,
                lit("files"),
                Segment::Rest
            ]
        );
        assert_eq!(t.variables[0].field_path, ["name"]);
        assert_eq!((t.variables[0].start, t.variables[0].end), (1, 5));

        let t = Template::parse("/v1/{a.b.c}/x/*/**").expect("valid");
        assert_eq!(t.variables[0].field_path, ["a", "b", "c"]);
        assert_eq!(t.segments.len(), 5);
    }

    #[test]
    fn rejects_invalid_templates() {
        for bad in [
            "",
            "images",
            "/images/",
            "//x",
            "/images/{id",
            "/images/{}",
            "/images/{1id}",
            "/images/{a.}",
            "/images/{id=}",
            "/images/{id={x}}",
            "/images/x{id}",
            "/a/**/b",
            "/a:",
            "/a/{id}/{id}",
            "/a b",
            "/a/{id=a//b}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        // The error names the template and what is wrong with it.
        for (bad, says) in [
            ("/a/x}y", "a variable must be a whole segment"),
            ("/a/x{y", "a variable must be a whole segment"),
            ("images", "must start with /"),
            // A ':' inside braces is not the verb's: the bad segment is named instead.
            ("/a/{id=x:y}", "\"x:y\""),
        ] {
            let message = Template::parse(bad).expect_err(bad).to_string();
            assert!(
                message.starts_with(&format!("template {bad:?}: ")) && message.contains(says),
                "{bad:?}: {message}"
            );
        }
    }

    #[test]
    fn matches_and_decodes() {
        let t = Template::parse("/compute/v1/images/{image_id}").expect("valid");
        let m = |p: &str| t.match_path(p);
        assert_eq!(
            m("/compute/v1/images/fd8abc"),
            Ok(Some(vec!["fd8abc".into()]))
        );
        assert_eq!(
            m("/compute/v1/images/a%2Fb%20c"),
            Ok(Some(vec!["a/b c".into()]))
        );
        assert_eq!(m("/compute/v1/images"), Ok(None));
        assert_eq!(m("/compute/v1/images/"), Ok(None));
        assert_eq!(m("/compute/v1/images/a/b"), Ok(None));
        assert!(m("/compute/v1/images/%zz").is_err());
        assert!(m("/compute/v1/images/%ff").is_err());
        assert!(m("/compute/v1/images/%4").is_err());

        let verb =
            Template::parse("/compute/v1/images/{resource_id}:listAccessBindings").expect("valid");
        assert_eq!(
            verb.match_path("/compute/v1/images/fd8:listAccessBindings"),
            Ok(Some(vec!["fd8".into()]))
        );
        assert_eq!(verb.match_path("/compute/v1/images/fd8"), Ok(None));
        assert_eq!(
            verb.match_path("/compute/v1/images/fd8%3AlistAccessBindings"),
            Ok(None)
        );

        let multi = Template::parse("/v1/{name=files/**}").expect("valid");
        assert_eq!(
            multi.match_path("/v1/files/a/b%2Fc/d"),
            Ok(Some(vec!["files/a/b%2Fc/d".into()]))
        );
        assert_eq!(
            multi.match_path("/v1/files"),
            Ok(Some(vec!["files".into()]))
        );
        assert_eq!(multi.match_path("/v1/other/a"), Ok(None));

        // A single-segment variable decodes %2F wherever it sits.
        let short = Template::parse("/v1/{id}").expect("valid");
        assert_eq!(short.match_path("/v1/a%2Fb"), Ok(Some(vec!["a/b".into()])));
        // A literal matches its percent-encoded spelling.
        assert_eq!(
            t.match_path("/compute/v1/im%61ges/x"),
            Ok(Some(vec!["x".into()]))
        );
        // A variable before a trailing `**` takes its own segment only.
        let two = Template::parse("/v1/{a}/{b=**}").expect("valid");
        assert_eq!(
            two.match_path("/v1/x/y/z"),
            Ok(Some(vec!["x".into(), "y/z".into()]))
        );
        // A `**` variable may match no segment at all.
        let rest = Template::parse("/a/{r=**}").expect("valid");
        assert_eq!(rest.match_path("/a"), Ok(Some(vec![String::new()])));
        // With a verb: the last segment without it, and a last segment that was only the verb.
        let verb_only = Template::parse("/{x}:run").expect("valid");
        assert_eq!(
            verb_only.match_path("/abc:run"),
            Ok(Some(vec!["abc".into()]))
        );
        let rest_verb = Template::parse("/a/{r=**}:run").expect("valid");
        assert_eq!(
            rest_verb.match_path("/a/:run"),
            Ok(Some(vec![String::new()]))
        );
    }
}
