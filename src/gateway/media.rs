//! Content negotiation: the formats a request body may come in (`Content-Type`) and the format
//! of the reply (`Accept`).
//!
//! Request bodies are JSON (`application/json`, any `+json` type, or no type at all), or binary
//! protobuf of the body's message (`application/x-protobuf`, `application/protobuf`).
//! `application/x-www-form-urlencoded` is read as JSON too: it is what `curl -d` sends, and
//! grpc-gateway users' scripts rely on it. Anything else is 415. Replies are JSON unless
//! `Accept` prefers protobuf.

use axum::http::{HeaderMap, header};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MessageDescriptor};

use super::error::GatewayError;
use super::routes::{BodySelector, Route};

/// A body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// proto3 JSON.
    Json,
    /// The protobuf binary encoding.
    Proto,
}

impl Format {
    /// The `Content-Type` of a reply in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Proto => "application/x-protobuf",
        }
    }
}

/// The media type of a header value: before any parameter, trimmed, lower-case.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn known(media: &str) -> Option<Format> {
    match media {
        "application/json" | "application/x-www-form-urlencoded" => Some(Format::Json),
        "application/x-protobuf" | "application/protobuf" => Some(Format::Proto),
        m if m.starts_with("application/") && m.ends_with("+json") => Some(Format::Json),
        _ => None,
    }
}

/// The format of a request's body, by its `Content-Type`.
pub(crate) fn request_format(headers: &HeaderMap) -> Result<Format, GatewayError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    known(&media_type(&text)).ok_or_else(|| GatewayError::UnsupportedMediaType(text.into_owned()))
}

/// The format the client prefers for the reply, by its `Accept`: the supported type with the
/// highest `q`, the first of equals; JSON when nothing supported is named.
pub(crate) fn reply_format(headers: &HeaderMap) -> Format {
    let mut best = (0.0f32, Format::Json);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else { continue };
        for entry in text.split(',') {
            let media = media_type(entry);
            let q = entry
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let format = match media.as_str() {
                "*/*" | "application/*" => Some(Format::Json),
                m => known(m),
            };
            if let Some(format) = format
                && q > best.0
            {
                best = (q, format);
            }
        }
    }
    best.1
}

/// The message a route's body carries, for a protobuf body.
fn body_message(route: &Route) -> Result<Option<MessageDescriptor>, GatewayError> {
    match route.body() {
        BodySelector::None => Ok(None),
        BodySelector::Whole => Ok(Some(route.rpc().method().input())),
        BodySelector::Field(f) => match f.kind() {
            Kind::Message(m) if !f.is_list() && !f.is_map() => Ok(Some(m)),
            _ => Err(GatewayError::UnsupportedMediaType(format!(
                "application/x-protobuf (the body of this method is the field {}, which is not a message; send JSON)",
                f.name()
            ))),
        },
    }
}

/// A protobuf body as the JSON the rest of the request is merged with. A route without a body
/// gets the bytes back (and refuses them, as any body).
pub(crate) fn proto_body_to_json(route: &Route, body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let Some(message) = body_message(route)? else {
        return Ok(body.to_vec());
    };
    proto_to_json(&message, body)
}

/// A protobuf encoding of `message` as its proto3 JSON.
pub(crate) fn proto_to_json(
    message: &MessageDescriptor,
    body: &[u8],
) -> Result<Vec<u8>, GatewayError> {
    let decoded = DynamicMessage::decode(message.clone(), body).map_err(|e| {
        GatewayError::bad_request(format!(
            "the request body is not a valid protobuf encoding of {}: {e}",
            message.full_name()
        ))
    })?;
    serde_json::to_vec(&decoded).map_err(|e| {
        GatewayError::bad_request(format!(
            "the request body's {} cannot be written as JSON: {e}",
            message.full_name()
        ))
    })
}

/// A reply message as protobuf: the whole message, or the one field a `response_body` names
/// (which must then be a message).
pub(crate) fn proto_reply<M: prost::Message>(
    msg: &M,
    output: &MessageDescriptor,
    response_body: Option<&prost_reflect::FieldDescriptor>,
) -> Result<Vec<u8>, GatewayError> {
    let Some(field) = response_body else {
        return Ok(msg.encode_to_vec());
    };
    let whole = DynamicMessage::decode(output.clone(), msg.encode_to_vec().as_slice())
        .map_err(|e| GatewayError::Internal(format!("re-reading a reply: {e}")))?;
    match whole.get_field(field).as_ref() {
        prost_reflect::Value::Message(m) => Ok(m.encode_to_vec()),
        _ => Err(GatewayError::NotAcceptable(format!(
            "this method's reply body is the field {}, which has no protobuf form of its own; accept application/json",
            field.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("value"));
        h
    }

    #[test]
    fn request_bodies_are_json_or_protobuf() {
        assert!(matches!(
            request_format(&HeaderMap::new()),
            Ok(Format::Json)
        ));
        for json in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
            "application/x-www-form-urlencoded",
        ] {
            assert!(
                matches!(
                    request_format(&with(header::CONTENT_TYPE, json)),
                    Ok(Format::Json)
                ),
                "{json}"
            );
        }
        for proto in ["application/x-protobuf", "application/protobuf"] {
            assert!(
                matches!(
                    request_format(&with(header::CONTENT_TYPE, proto)),
                    Ok(Format::Proto)
                ),
                "{proto}"
            );
        }
        for other in [
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
        ] {
            assert!(
                matches!(
                    request_format(&with(header::CONTENT_TYPE, other)),
                    Err(GatewayError::UnsupportedMediaType(t)) if t == other
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn replies_follow_the_preferred_accepted_type() {
        let table = [
            ("", Format::Json),
            ("application/json", Format::Json),
            ("application/x-protobuf", Format::Proto),
            (
                "application/protobuf, application/json;q=0.9",
                Format::Proto,
            ),
            (
                "application/json;q=0.5, application/x-protobuf",
                Format::Proto,
            ),
            ("application/x-protobuf;q=0.1, */*", Format::Json),
            ("text/html", Format::Json),
        ];
        for (accept, want) in table {
            let headers = if accept.is_empty() {
                HeaderMap::new()
            } else {
                with(header::ACCEPT, accept)
            };
            assert_eq!(reply_format(&headers), want, "{accept}");
        }
    }
}
