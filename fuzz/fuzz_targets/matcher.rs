//! The route matcher: arbitrary method and raw path against the table built from proto/.
#![no_main]
use compute_gateway::gateway::{GatewayError, Matcher, RouteTable};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TABLE: OnceLock<Matcher> = OnceLock::new();
    let table = TABLE.get_or_init(|| Matcher::new(RouteTable::compiled().expect("routes")));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (method, path) = text.split_once(' ').unwrap_or(("GET", text));
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    match table.find(&method, path) {
        Ok(_)
        | Err(
            GatewayError::NotFound
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::BadRequest(_),
        ) => {}
        Err(other) => panic!("{other:?}"),
    }
});
