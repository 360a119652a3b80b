//! Property tests: arbitrary input never panics the template parser, the matcher, the query
//! parser, the JSON well-known-type parsers or the whole request transcoder, and always ends in
//! a request or a 4xx google.rpc.Status.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use compute_gateway::gateway::template::Template;
use compute_gateway::gateway::{Gateway, GatewayConfig, GatewayError, Matcher, RouteTable, router};
use compute_gateway::json::{Any, FieldMask, Timestamp};
use http::{Method, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tower::ServiceExt;

/// Every message of proto/ but map entries, by full name.
fn all_messages() -> Vec<String> {
    compute_gateway::pb::descriptor_pool()
        .all_messages()
        .filter(|m| !m.is_map_entry())
        .map(|m| m.full_name().to_string())
        .collect()
}

fn table() -> &'static Matcher {
    static T: OnceLock<Matcher> = OnceLock::new();
    T.get_or_init(|| Matcher::new(RouteTable::compiled().expect("routes")))
}

const NAMES: &[&str] = &[
    "name",
    "labels",
    "updateMask",
    "update_mask",
    "minDiskSize",
    "description",
    "os",
    "type",
    "nvidia",
    "driver",
    "hardwareGeneration",
    "legacyFeatures",
    "generation2Features",
    "pciTopology",
    "vtpmEnabled",
    "folderId",
    "diskId",
    "imageId",
    "uri",
    "snapshotId",
    "productIds",
    "pooled",
    "family",
    "accessBindings",
    "accessBindingDeltas",
    "action",
    "accessBinding",
    "roleId",
    "subject",
    "id",
    "@type",
    "value",
    "pageSize",
    "resourceId",
    "x",
    "",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "[a-zA-Z0-9 ,._:/@-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("9223372036854775808"),
            Just("1e3"),
            Just("1.5"),
            Just("2025-01-14T10:00:00Z"),
            Just("name,minDiskSize"),
            Just("READY"),
            Just("type.googleapis.com/yandex.cloud.compute.v1.Image")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(NAMES), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn path_strategy() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        Just("compute".to_string()),
        Just("v1".to_string()),
        Just("images".to_string()),
        Just("operations".to_string()),
        Just("images:latestByFamily".to_string()),
        "[a-z0-9%:._~-]{0,10}",
        "[a-z0-9]{1,8}:(cancel|listAccessBindings|setAccessBindings|nope)",
    ];
    prop::collection::vec(seg, 0..6).prop_map(|segs| format!("/{}", segs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn template_parser_never_panics(s in ".{0,40}", structured in "(/([a-z*{}=.:%]{1,4}|\\*\\*)){1,6}(:[a-z]{1,5})?") {
        let _ = Template::parse(&s);
        if let Ok(t) = Template::parse(&structured) {
            let _ = t.match_path(&structured);
            let _ = t.match_path(&s);
        }
    }

    #[test]
    fn a_template_binds_exactly_the_segments_it_names(
        literals in prop::collection::vec("[a-z][a-z0-9]{0,5}", 1..4),
        values in prop::collection::vec("[a-zA-Z0-9._~-]{1,8}", 1..4),
        verb in prop::option::of("[a-z]{1,6}"),
    ) {
        // "/l0/{v0}/l1/{v1}...:verb" matches "/l0/x0/l1/x1...:verb" binding x0, x1, ...
        let n = literals.len().min(values.len());
        let suffix = verb.as_ref().map(|v| format!(":{v}")).unwrap_or_default();
        let template: String = (0..n).map(|i| format!("/{}/{{v{i}}}", literals[i])).collect();
        let path: String = (0..n).map(|i| format!("/{}/{}", literals[i], values[i])).collect();
        let t = Template::parse(&format!("{template}{suffix}")).expect("a valid template");
        let bound = t.match_path(&format!("{path}{suffix}")).expect("escapes are valid");
        prop_assert_eq!(bound, Some(values[..n].to_vec()));
        // One segment more is not a match; nor is another verb where the template has one
        // (without one, a last variable takes `x:verb` whole, as grpc-gateway matches it).
        prop_assert_eq!(t.match_path(&format!("{path}/extra{suffix}")), Ok(None));
        if verb.is_some() {
            prop_assert_eq!(t.match_path(&format!("{path}:otherverb")), Ok(None));
        }
    }

    #[test]
    fn matcher_answers_a_route_or_a_4xx(path in path_strategy(), raw in ".{0,30}", m in prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"])) {
        let method = Method::from_bytes(m.as_bytes()).expect("method");
        for p in [path.as_str(), raw.as_str()] {
            match table().find(&method, p) {
                Ok(_) | Err(GatewayError::NotFound | GatewayError::MethodNotAllowed { .. } | GatewayError::BadRequest(_)) => {}
                Err(other) => prop_assert!(false, "{m} {p}: {other:?}"),
            }
        }
    }

    #[test]
    fn query_parser_types_or_rejects(q in "([a-zA-Z_.\\[\\]%+]{0,12}=[a-zA-Z0-9%+.,:-]{0,12}&?){0,5}", msg in prop::sample::select(all_messages())) {
        let message = compute_gateway::pb::descriptor_pool().get_message_by_name(&msg).expect("message");
        let mut root = Map::new();
        match compute_gateway::gateway::query::apply(&message, &mut root, &q, Default::default()) {
            Ok(()) | Err(GatewayError::BadRequest(_)) => {}
            Err(other) => prop_assert!(false, "{q}: {other:?}"),
        }
    }

    #[test]
    fn field_masks_parse_or_fail_and_round_trip(s in "[a-zA-Z_.,0-9 ]{0,30}") {
        if let Ok(mask) = FieldMask::from_json_str(&s) {
            let rendered = mask.to_json_string();
            prop_assert_eq!(rendered.as_deref(), Ok(s.as_str()));
        }
    }

    #[test]
    fn timestamps_round_trip_and_garbage_is_rejected(seconds in -62_135_596_800i64..=253_402_300_799, nanos in 0i32..1_000_000_000, s in ".{0,35}") {
        let ts = Timestamp { seconds, nanos };
        let text = ts.to_rfc3339().expect("in range");
        prop_assert_eq!(Timestamp::from_rfc3339(&text), Ok(ts));
        // Anything accepted is RFC 3339 (`Z` or an offset, at most 9 fractional digits) and
        // stands for the instant it renders as; everything else is an error, not a guess.
        for input in [s.clone(), mangle(&text, seconds)] {
            if let Ok(parsed) = Timestamp::from_rfc3339(&input) {
                prop_assert!(rfc3339().is_match(&input), "accepted {:?}", input);
                let again = parsed.to_rfc3339().expect("an accepted timestamp renders");
                prop_assert_eq!(Timestamp::from_rfc3339(&again), Ok(parsed));
            }
        }
    }

    #[test]
    fn any_parses_or_fails(v in json_value()) {
        // What parses renders back to JSON that parses to the same Any.
        if let Ok(any) = serde_json::from_value::<Any>(v) {
            let rendered = serde_json::to_value(&any).expect("a parsed Any renders");
            prop_assert_eq!(serde_json::from_value::<Any>(rendered).ok(), Some(any));
        }
    }
}

fn rfc3339() -> &'static regex::Regex {
    static R: OnceLock<regex::Regex> = OnceLock::new();
    R.get_or_init(|| {
        regex::Regex::new(
            r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
        )
        .expect("regex")
    })
}

/// A near miss of a valid timestamp: one character changed, dropped or doubled, chosen by `n`.
fn mangle(valid: &str, n: i64) -> String {
    let mut chars: Vec<char> = valid.chars().collect();
    let at = n.unsigned_abs() as usize % chars.len();
    match n.rem_euclid(3) {
        0 => chars[at] = ['x', ' ', '9', ':', '.', '-'][at % 6],
        1 => {
            chars.remove(at);
        }
        _ => chars.insert(at, chars[at]),
    }
    chars.into_iter().collect()
}

fn gateway() -> Arc<Gateway> {
    static G: OnceLock<Arc<Gateway>> = OnceLock::new();
    G.get_or_init(|| {
        // Nothing listens on port 9 of the loopback: a request that transcodes ends in 503.
        Arc::new(
            Gateway::new(
                "http://127.0.0.1:9",
                GatewayConfig {
                    max_body_bytes: 4096,
                    ..Default::default()
                },
            )
            .expect("gateway"),
        )
    })
    .clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn the_transcoder_answers_a_request_or_a_4xx(
        m in prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE"]),
        path in path_strategy(),
        query in "([a-zA-Z.]{0,10}=[a-zA-Z0-9%+.-]{0,8}&?){0,3}",
        body in json_value(),
        raw in prop::collection::vec(any::<u8>(), 0..40),
        use_raw in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let uri = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let Ok(req) = Request::builder().method(m).uri(&uri).body(Body::from(if use_raw { raw } else { body.to_string().into_bytes() })) else {
            return Ok(()); // not even a valid HTTP request line: the server never sees it
        };
        let (status, json) = rt.block_on(async {
            let resp = router(gateway()).oneshot(req).await.expect("infallible");
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes))
        });
        // 503: it transcoded and reached dispatch (the backend is down); anything else is 4xx.
        prop_assert!(status == 503 || (400..500).contains(&status), "{m} {uri}: {status}");
        let json = json.expect("a JSON error body");
        prop_assert!(json["code"].is_i64() && json["message"].is_string() && json["details"].is_array());
    }
}
