//! The proto3 JSON forms of Timestamp, FieldMask and Any: parse arbitrary text; what parses
//! renders and parses back the same.
#![no_main]
use compute_gateway::json::{Any, FieldMask, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ts) = Timestamp::from_rfc3339(text) {
        let back = ts.to_rfc3339().expect("a parsed timestamp renders");
        assert_eq!(Timestamp::from_rfc3339(&back), Ok(ts));
    }
    if let Ok(mask) = FieldMask::from_json_str(text) {
        assert_eq!(mask.to_json_string().as_deref(), Ok(text));
    }
    if let Ok(any) = serde_json::from_str::<Any>(text) {
        let json = serde_json::to_string(&any).expect("a parsed Any renders");
        assert_eq!(
            serde_json::from_str::<Any>(&json).expect("and parses back"),
            any
        );
    }
});
