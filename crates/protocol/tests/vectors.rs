//! Checks this crate against known-answer vectors made by an independent implementation
//! (Python's `json`, a separate JS canonicalizer and viem): see `tests/vectors/README.md`.

use agentpmt_protocol::canonical::{
    self, accepted_forms, sha256_hex, Escaping, JsonValue, KeyOrder,
};
use agentpmt_protocol::message::{build_message, SignedAction};
use agentpmt_protocol::{eip191_hash, PrivateKey, Signature, WalletAddress};
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("vectors/vectors.json");
    serde_json::from_str(text).expect("vectors.json is valid JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {v}"))
}

#[test]
fn canonical_forms_match_python() {
    let v = vectors();
    let cases = v["canonical"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let name = s(case, "name");
        let parsed =
            canonical::parse(s(case, "body").as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let utf8 = canonical::to_canonical(&parsed, Escaping::Utf8, KeyOrder::CodePoint);
        let ascii = canonical::to_canonical(&parsed, Escaping::Ascii, KeyOrder::CodePoint);
        assert_eq!(utf8, s(case, "utf8"), "{name}: raw UTF-8 form");
        assert_eq!(ascii, s(case, "ascii"), "{name}: ASCII-escaped form");
        assert_eq!(sha256_hex(&utf8), s(case, "utf8_sha256"), "{name}");
        assert_eq!(sha256_hex(&ascii), s(case, "ascii_sha256"), "{name}");
        assert_eq!(
            canonical::payload_hash(&parsed),
            s(case, "utf8_sha256"),
            "{name}: primary hash"
        );
        let hashes: Vec<String> = accepted_forms(&parsed)
            .into_iter()
            .map(|f| f.hash)
            .collect();
        assert!(
            hashes.contains(&s(case, "ascii_sha256").to_owned()),
            "{name}: escaped form accepted"
        );
    }
}

#[test]
fn canonical_forms_match_javascript() {
    let v = vectors();
    for case in v["canonical_js"].as_array().unwrap() {
        let name = s(case, "name");
        let parsed =
            canonical::parse(s(case, "body").as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            canonical::to_canonical(&parsed, Escaping::Utf8, KeyOrder::Utf16),
            s(case, "js"),
            "{name}"
        );
        let accepted: Vec<String> = accepted_forms(&parsed)
            .into_iter()
            .map(|f| f.hash)
            .collect();
        assert!(
            accepted.contains(&s(case, "js_sha256").to_owned()),
            "{name}: JS form accepted"
        );
    }
}

fn action_of(name: &str) -> SignedAction {
    if name == "tool_action_invoke" {
        SignedAction::ToolActionInvoke
    } else {
        SignedAction::from_name(name).unwrap_or_else(|| panic!("unknown action {name}"))
    }
}

#[test]
fn messages_for_every_action_match_viem() {
    let v = vectors();
    let cases = v["messages"].as_array().unwrap();
    let mut covered = std::collections::HashSet::new();
    for case in cases {
        let name = s(case, "name");
        let action = action_of(s(case, "action"));
        covered.insert(action);
        let spec = action.spec();
        let body = canonical::parse(s(case, "body").as_bytes()).unwrap();
        let params = case["path_params"].as_object().unwrap().clone();
        let scope = spec
            .scope(|p| params.get(p).and_then(|v| v.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("{name}: scope"));

        // The route the vector called is this action's route.
        let route = agentpmt_protocol::message::fill_template(spec.route, |p| {
            params.get(p).and_then(|v| v.as_str()).map(str::to_owned)
        })
        .unwrap();
        assert_eq!(route, s(case, "http_path"), "{name}: route");

        // The payload hash the client used is one the server accepts.
        let expected_hash = s(case, "payload_hash");
        let accepted: Vec<Option<String>> = spec
            .payload
            .candidates(&body)
            .into_iter()
            .flat_map(|c| match c {
                None => vec![None],
                Some(p) => accepted_forms(&p)
                    .into_iter()
                    .map(|f| Some(f.hash))
                    .collect(),
            })
            .collect();
        let expected = (!expected_hash.is_empty()).then(|| expected_hash.to_owned());
        assert!(
            accepted.contains(&expected),
            "{name}: hash {expected_hash} not accepted: {accepted:?}"
        );
        if name != "invoke_python_client_ascii_escaped" {
            let primary = spec
                .payload
                .primary(&body)
                .map(|p| canonical::payload_hash(&p));
            assert_eq!(primary, expected, "{name}: primary payload hash");
        }
        if let Some(c) = case["payload_canonical"].as_str() {
            assert_eq!(sha256_hex(c), expected_hash, "{name}: canonical/hash pair");
        }

        // The message text.
        let wallet: WalletAddress = s(
            &serde_json::from_str::<Value>(s(case, "body")).unwrap(),
            "wallet_address",
        )
        .parse()
        .unwrap();
        let session = match body.get("session_nonce") {
            Some(JsonValue::String(n)) => n.clone(),
            _ => panic!("{name}: session_nonce"),
        };
        let request = match body.get("request_id") {
            Some(JsonValue::String(r)) => r.clone(),
            _ => panic!("{name}: request_id"),
        };
        let message = build_message(&wallet, &session, &request, &scope, expected.as_deref());
        assert_eq!(message, s(case, "message"), "{name}: message");
        assert_eq!(
            format!("{}", eip191_hash(&message)),
            s(case, "eip191_hash"),
            "{name}: EIP-191 hash"
        );

        // Signing is deterministic (RFC 6979): ours equals viem's; viem's recovers to the signer.
        let key = PrivateKey::from_hex(s(case, "private_key")).unwrap();
        assert_eq!(
            key.address().to_string(),
            s(case, "address"),
            "{name}: address"
        );
        assert_eq!(
            key.sign_message(&message).to_hex(),
            s(case, "signature"),
            "{name}: signature"
        );
        let sig = Signature::parse(s(case, "signature")).unwrap();
        assert_eq!(
            sig.recover_message(&message).unwrap().to_string(),
            s(case, "recovered_address")
        );
    }
    for action in agentpmt_protocol::message::ACTIONS.iter().map(|a| a.action) {
        assert!(covered.contains(&action), "no vector for {action:?}");
    }
}

#[test]
fn personal_sign_matches_viem() {
    let v = vectors();
    let cases = v["personal_sign"].as_array().unwrap();
    assert!(
        cases.iter().any(|c| s(c, "text").starts_with("0x")),
        "a 0x-prefixed text is covered"
    );
    for case in cases {
        let text = s(case, "text");
        assert_eq!(
            format!("{}", eip191_hash(text)),
            s(case, "eip191_hash"),
            "{text:?}"
        );
        let key = PrivateKey::from_hex(s(case, "private_key")).unwrap();
        assert_eq!(
            key.sign_message(text).to_hex(),
            s(case, "signature"),
            "{text:?}"
        );
        let sig = Signature::parse(s(case, "signature")).unwrap();
        assert_eq!(
            sig.recover_message(text).unwrap().to_string(),
            s(case, "address"),
            "{text:?}"
        );
    }
}
