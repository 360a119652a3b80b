//! The whole request transcoder: method, path, query and body to the canonical request JSON,
//! then to the typed request. It yields a request or a 4xx, never a panic or an internal error.
#![no_main]
use compute_gateway::gateway::{GatewayError, Matcher, RouteTable, request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TABLE: OnceLock<Matcher> = OnceLock::new();
    let table = TABLE.get_or_init(|| Matcher::new(RouteTable::compiled().expect("routes")));
    // "METHOD PATH?QUERY\nBODY"
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let (method, target) = head.split_once(' ').unwrap_or(("POST", head));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(m) = table.find(&method, path) else {
        return;
    };
    match request::build(&m, query, body)
        .and_then(|json| m.route.rpc().check(json))
    {
        Ok(()) | Err(GatewayError::BadRequest(_) | GatewayError::PayloadTooLarge { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
});
