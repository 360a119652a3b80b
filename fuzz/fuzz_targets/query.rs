//! The query parser, against every request message of the API.
#![no_main]
use compute_gateway::gateway::GatewayError;
use compute_gateway::json::schema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    let message = schema::ALL_MESSAGES[pick as usize % schema::ALL_MESSAGES.len()];
    let mut root = serde_json::Map::new();
    match compute_gateway::gateway::query::apply(message, &mut root, query) {
        Ok(()) | Err(GatewayError::BadRequest(_)) => {}
        Err(other) => panic!("{other:?}"),
    }
});
