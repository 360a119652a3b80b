//! Path templates: parse arbitrary text; a template that parses must match arbitrary paths
//! without panicking.
#![no_main]
use compute_gateway::gateway::template::Template;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, "/"));
    if let Ok(t) = Template::parse(template) {
        let _ = t.match_path(path);
    }
});
