//! The route matcher: arbitrary method and raw path against the table built from proto/.
#![no_main]
use compute_gateway::gateway::{GatewayError, RouteTable};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| RouteTable::new().expect("routes"));
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
