//! The query parser, against every request message of the API.
#![no_main]
use compute_gateway::gateway::GatewayError;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    static MESSAGES: OnceLock<Vec<prost_reflect::MessageDescriptor>> = OnceLock::new();
    let messages = MESSAGES.get_or_init(|| {
        compute_gateway::pb::descriptor_pool()
            .all_messages()
            .filter(|m| !m.is_map_entry())
            .collect()
    });
    let message = &messages[pick as usize % messages.len()];
    let mut root = serde_json::Map::new();
    match compute_gateway::gateway::query::apply(message, &mut root, query) {
        Ok(()) | Err(GatewayError::BadRequest(_)) => {}
        Err(other) => panic!("{other:?}"),
    }
});
