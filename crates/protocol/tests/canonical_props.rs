//! Property tests of canonical JSON: agreement with serde_json, idempotence, no panics.

use agentpmt_protocol::canonical::{self, Escaping, KeyOrder};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// serde_json accepts `bytes`, or refuses them only for a number outside f64's range (which
/// RFC 8259 allows and the canonical form keeps as written).
fn serde_accepts(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(_) => true,
        Err(e) => e.to_string().starts_with("number out of range"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// serde_json writes sorted keys (BTreeMap), compact separators and the same escapes
    /// as the raw UTF-8 canonical form, so for its output the two must agree exactly.
    #[test]
    fn agrees_with_serde_json(value in json_value()) {
        let text = serde_json::to_string(&value).unwrap();
        let parsed = canonical::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(canonical::to_canonical(&parsed, Escaping::Utf8, KeyOrder::CodePoint), text);
    }

    /// Canonicalizing is idempotent in both escaping forms, and both forms denote the same value.
    #[test]
    fn idempotent(value in json_value()) {
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let parsed = canonical::parse(pretty.as_bytes()).unwrap();
        for escaping in [Escaping::Utf8, Escaping::Ascii] {
            let once = canonical::to_canonical(&parsed, escaping, KeyOrder::CodePoint);
            let reparsed = canonical::parse(once.as_bytes()).unwrap();
            prop_assert_eq!(&reparsed, &parsed);
            prop_assert_eq!(canonical::to_canonical(&reparsed, escaping, KeyOrder::CodePoint), once.clone());
            if escaping == Escaping::Ascii {
                prop_assert!(once.is_ascii());
            }
        }
    }

    /// Arbitrary bytes never panic the parser, and whatever it accepts serde_json accepts too
    /// (except numbers beyond f64 range, which are valid JSON and kept verbatim here).
    #[test]
    fn arbitrary_input_is_safe(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if canonical::parse(&bytes).is_ok() {
            prop_assert!(serde_accepts(&bytes), "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    /// JSON-looking noise: same property on inputs built from JSON tokens.
    #[test]
    fn token_soup_is_safe(tokens in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "[", "]", ",", ":", "\"a\"", "\"b\"", "1", "-0", "1.5e3", "true", "null", " ", "\"\\u00e9\"", "\"\\ud83d\\ude00\"",
    ]), 0..24)) {
        let text: String = tokens.concat();
        if canonical::parse(text.as_bytes()).is_ok() {
            prop_assert!(serde_accepts(text.as_bytes()), "{}", text);
        }
    }
}

#[test]
fn large_object_duplicates_are_found() {
    let mut members: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
    members.push("\"k7\":0".into());
    let text = format!("{{{}}}", members.join(","));
    assert!(matches!(
        canonical::parse(text.as_bytes()),
        Err(canonical::JsonError::DuplicateKey { key, .. }) if key == "k7"
    ));
}

#[test]
fn numbers_beyond_f64_range_are_kept_verbatim() {
    let parsed = canonical::parse(b"[1.5e311, -2E+400]").unwrap();
    assert_eq!(
        canonical::to_canonical(
            &parsed,
            canonical::Escaping::Utf8,
            canonical::KeyOrder::CodePoint
        ),
        "[1.5e311,-2E+400]"
    );
}
