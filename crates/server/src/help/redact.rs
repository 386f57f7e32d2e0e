//! Secrets pasted into help tickets are redacted before the ticket is stored: agents paste
//! failing requests whole, with their `_credentials`, signatures, keys and bearer tokens.
//!
//! - In `context`, the value of every key whose name says it holds a secret
//!   ([`SECRET_KEY_NAMES`], case-insensitive, as a part of the name) is replaced;
//! - in every text (the message, and every string of `context`): runs of 64 hex digits
//!   without `0x` (how private keys are pasted; a `0x`-prefixed 64-digit run is left, as
//!   transaction hashes are what operators need), hex runs of 128 digits or more
//!   (signatures), this server's API and budget keys (`apmt_ak_…`, `apmt_bk_…`) and the
//!   word after `Bearer`.

use crate::accounts::{API_KEY_PREFIX, BUDGET_KEY_PREFIX};
use serde_json::Value;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Parts of key names whose values are secrets.
pub const SECRET_KEY_NAMES: [&str; 12] = [
    "credential",
    "private",
    "secret",
    "password",
    "passphrase",
    "mnemonic",
    "seed",
    "api_key",
    "apikey",
    "token",
    "authorization",
    "signature",
];

fn word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_secret_key(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_KEY_NAMES.iter().any(|part| name.contains(part))
}

/// `value` with secret-named keys' values and secret-shaped text redacted.
pub fn value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) {
                        Value::String(REDACTED.to_owned())
                    } else {
                        self::value(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(self::value).collect()),
        Value::String(s) => Value::String(text(s)),
        other => other.clone(),
    }
}

/// `s` with secret-shaped runs redacted.
pub fn text(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut after_bearer = false;
    while i < bytes.len() {
        let rest = &s[i..];
        // A token after "Bearer ".
        if after_bearer && !bytes[i].is_ascii_whitespace() {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(rest.len());
            out.push_str(REDACTED);
            i += end;
            after_bearer = false;
            continue;
        }
        // `get`: the 7th byte may fall inside a multi-byte character.
        if rest
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        {
            out.push_str(&rest[..7]);
            i += 7;
            after_bearer = true;
            continue;
        }
        if rest.starts_with(API_KEY_PREFIX) || rest.starts_with(BUDGET_KEY_PREFIX) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            out.push_str(REDACTED);
            i += end;
            continue;
        }
        // A hex run starting here (not inside a word).
        let starts_word = i == 0 || !word(bytes[i - 1]);
        if (starts_word && bytes[i].is_ascii_hexdigit()) || rest.starts_with("0x") {
            let prefixed = rest.starts_with("0x") || rest.starts_with("0X");
            let digits_from = if prefixed { 2 } else { 0 };
            let run = rest[digits_from..]
                .bytes()
                .take_while(u8::is_ascii_hexdigit)
                .count();
            let end = digits_from + run;
            let ends_word = rest[end..].bytes().next().is_none_or(|b| !word(b));
            if starts_word && ends_word && ((run == 64 && !prefixed) || run >= 128) {
                out.push_str(REDACTED);
                i += end;
                continue;
            }
            if end > 0 {
                out.push_str(&rest[..end]);
                i += end;
                continue;
            }
        }
        let c = rest.chars().next().expect("not at the end");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

    #[test]
    fn multi_byte_text_is_kept_whole() {
        // Found by schemathesis: the 7th byte inside a character made a 500.
        let s = "\u{9d}\u{19}q\u{2}\u{c6d0a}\u{c2f5e}";
        assert_eq!(text(s), s);
        assert_eq!(text("ééé Bearer tok"), "ééé Bearer [redacted]");
    }

    #[test]
    fn keys_signatures_and_tokens_are_redacted() {
        let sig = "ab".repeat(65);
        let s = text(&format!(
            "key {KEY}, sig 0x{sig}, Authorization: Bearer abc.def-ghi and apmt_ak_XyZ123_q done"
        ));
        assert_eq!(
            s,
            "key [redacted], sig [redacted], Authorization: Bearer [redacted] and [redacted] done"
        );
        // A transaction hash stays; hex inside a word stays.
        let tx = format!("0x{KEY}");
        assert_eq!(text(&format!("tx {tx}")), format!("tx {tx}"));
        assert_eq!(text(&format!("id_{KEY}")), format!("id_{KEY}"));
        assert_eq!(text("é 0xabc café"), "é 0xabc café");
    }

    #[test]
    fn secret_named_keys_are_redacted_everywhere_in_context() {
        let v = value(&json!({
            "parameters": {"q": "x", "_credentials": {"token": "t"}},
            "signature": "0x12",
            "steps": [{"privateKey": KEY, "note": format!("pk {KEY}")}],
            "transaction": format!("0x{KEY}"),
        }));
        assert_eq!(
            v,
            json!({
                "parameters": {"q": "x", "_credentials": REDACTED},
                "signature": REDACTED,
                "steps": [{"privateKey": REDACTED, "note": "pk [redacted]"}],
                "transaction": format!("0x{KEY}"),
            })
        );
    }
}
