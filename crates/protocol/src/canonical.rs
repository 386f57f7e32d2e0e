//! Canonical JSON and the payload hash of the signed message.
//!
//! The signing contract (seed `000_*`): recursively sort every object's keys, serialize with
//! `,`/`:` separators and no whitespace, UTF-8; the payload hash is the lowercase-hex SHA-256
//! of that text. Clients produce it with JavaScript's `JSON.stringify` (raw UTF-8) or with
//! Python's `json.dumps(..., ensure_ascii=True, sort_keys=True, separators=(",", ":"))`
//! (non-ASCII escaped as `\uXXXX`); the server accepts both.
//!
//! Decisions this module implements (documented in the README):
//! - **Numbers are hashed exactly as written in the request body.** The lexeme is kept
//!   verbatim (`1`, `1.0`, `1e3`, `-0`, `123456789012345678901234567890`), after checking it
//!   is a valid JSON number. A client hashes the same object it serializes into the body, so
//!   its serializer's number formatting appears on both sides; re-formatting numbers on the
//!   server would break Python (`1.0`), big integers and `1e+16`-style floats.
//! - **Duplicate object keys are rejected** (which of the two values was hashed is ambiguous).
//! - **Lone UTF-16 surrogates** (`"\ud800"`) are rejected: they are not Unicode text.
//! - **Key order**: keys are sorted by Unicode code point (Python's `sort_keys`, Rust's string
//!   order). JavaScript's default `Array.prototype.sort` orders UTF-16 code units instead,
//!   which differs only when keys mix astral characters (emoji) with characters in
//!   U+E000..U+FFFF; the server accepts that order too.
//! - Nesting deeper than [`MAX_DEPTH`] is rejected.
//!
//! The parser here is hand-written because no JSON crate keeps number lexemes, rejects
//! duplicate keys and produces both escaping forms in one pass; it runs on every signed
//! request.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Maximum nesting of arrays and objects accepted in a JSON document.
pub const MAX_DEPTH: usize = 128;

/// A parsed JSON value that keeps what the canonical form needs: number lexemes verbatim and
/// object members in source order (sorting happens when serializing).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonValue {
    Null,
    Bool(bool),
    /// The number exactly as written in the source text.
    Number(String),
    String(String),
    Array(Vec<JsonValue>),
    /// Members in source order; keys are unique.
    Object(Vec<(String, JsonValue)>),
}

impl JsonValue {
    /// An empty object, `{}`.
    pub fn empty_object() -> Self {
        JsonValue::Object(Vec::new())
    }

    /// The member `key` of an object, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&JsonValue> {
        match self {
            JsonValue::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The top-level keys of an object, in code-point order (empty for non-objects).
    pub fn top_level_keys(&self) -> Vec<String> {
        match self {
            JsonValue::Object(members) => {
                let mut keys: Vec<String> = members.iter().map(|(k, _)| k.clone()).collect();
                keys.sort();
                keys
            }
            _ => Vec::new(),
        }
    }

    /// Whether any string or key in the value contains a non-ASCII character (then the
    /// raw and the escaped canonical forms differ).
    fn has_non_ascii(&self) -> bool {
        match self {
            JsonValue::String(s) => !s.is_ascii(),
            JsonValue::Array(items) => items.iter().any(JsonValue::has_non_ascii),
            JsonValue::Object(members) => members
                .iter()
                .any(|(k, v)| !k.is_ascii() || v.has_non_ascii()),
            _ => false,
        }
    }

    /// Whether some object has keys whose code-point order differs from their UTF-16 order.
    fn key_orders_differ(&self) -> bool {
        match self {
            JsonValue::Array(items) => items.iter().any(JsonValue::key_orders_differ),
            JsonValue::Object(members) => {
                let astral = members
                    .iter()
                    .any(|(k, _)| k.chars().any(|c| c as u32 > 0xFFFF));
                let high_bmp = members
                    .iter()
                    .any(|(k, _)| k.chars().any(|c| (0xE000..=0xFFFF).contains(&(c as u32))));
                (astral && high_bmp) || members.iter().any(|(_, v)| v.key_orders_differ())
            }
            _ => false,
        }
    }

    /// Converts a `serde_json::Value` (numbers formatted by serde_json's `Display`, which is
    /// also how serde_json serializes them).
    pub fn from_serde(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => JsonValue::Null,
            serde_json::Value::Bool(b) => JsonValue::Bool(*b),
            serde_json::Value::Number(n) => JsonValue::Number(n.to_string()),
            serde_json::Value::String(s) => JsonValue::String(s.clone()),
            serde_json::Value::Array(items) => {
                JsonValue::Array(items.iter().map(JsonValue::from_serde).collect())
            }
            serde_json::Value::Object(map) => JsonValue::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), JsonValue::from_serde(v)))
                    .collect(),
            ),
        }
    }
}

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at byte {offset}: {reason}")]
    Syntax { offset: usize, reason: &'static str },
    #[error("duplicate object key {key:?} at byte {offset}")]
    DuplicateKey { offset: usize, key: String },
    #[error("JSON nesting deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep { offset: usize },
}

impl JsonError {
    /// Byte offset in the source text where the problem was found.
    pub fn offset(&self) -> usize {
        match self {
            JsonError::Syntax { offset, .. }
            | JsonError::DuplicateKey { offset, .. }
            | JsonError::TooDeep { offset } => *offset,
        }
    }
}

/// Parses one JSON document strictly (RFC 8259 grammar, UTF-8, no trailing data), keeping
/// number lexemes and rejecting duplicate keys, lone surrogates and excessive nesting.
pub fn parse(input: &[u8]) -> Result<JsonValue, JsonError> {
    let text = std::str::from_utf8(input).map_err(|e| JsonError::Syntax {
        offset: e.valid_up_to(),
        reason: "text is not valid UTF-8",
    })?;
    let mut parser = Parser {
        src: text.as_bytes(),
        text,
        pos: 0,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != parser.src.len() {
        return Err(parser.err("trailing characters after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.pos,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn literal(&mut self, word: &'static str, value: JsonValue) -> Result<JsonValue, JsonError> {
        if self.src[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<JsonValue, JsonError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(JsonValue::String),
            Some(b't') => self.literal("true", JsonValue::Bool(true)),
            Some(b'f') => self.literal("false", JsonValue::Bool(false)),
            Some(b'n') => self.literal("null", JsonValue::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a JSON value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<JsonValue, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { offset: self.pos });
        }
        self.pos += 1; // '{'
        let mut members: Vec<(String, JsonValue)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(JsonValue::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let key_offset = self.pos;
            let key = self.string()?;
            // Small objects: a linear scan; large ones are checked once, sorted, at the end.
            if members.len() < 16 && members.iter().any(|(k, _)| *k == key) {
                return Err(JsonError::DuplicateKey {
                    offset: key_offset,
                    key,
                });
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    if members.len() > 16 {
                        let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
                        keys.sort_unstable();
                        if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
                            return Err(JsonError::DuplicateKey {
                                offset: self.pos,
                                key: pair[0].to_owned(),
                            });
                        }
                    }
                    self.pos += 1;
                    return Ok(JsonValue::Object(members));
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<JsonValue, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { offset: self.pos });
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(JsonValue::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(JsonValue::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn number(&mut self) -> Result<JsonValue, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number: digits expected after '.'"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.err("invalid number: digits expected in the exponent"));
            }
            self.digits();
        }
        Ok(JsonValue::Number(self.text[start..self.pos].to_owned()))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let Some(chunk) = self.src.get(self.pos..self.pos + 4) else {
            return Err(self.err("truncated \\u escape"));
        };
        let mut value = 0u32;
        for &b in chunk {
            let digit = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid \\u escape"))?;
            value = value * 16 + digit;
        }
        self.pos += 4;
        Ok(value)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go.
            let run_start = self.pos;
            while let Some(&b) = self.src.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[run_start..self.pos]);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(esc) = self.peek() else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let unit = self.hex4()?;
                            let code = match unit {
                                0xD800..=0xDBFF => {
                                    if !self.src[self.pos..].starts_with(b"\\u") {
                                        return Err(self.err("lone UTF-16 surrogate in string"));
                                    }
                                    self.pos += 2;
                                    let low = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return Err(self.err("lone UTF-16 surrogate in string"));
                                    }
                                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                                }
                                0xDC00..=0xDFFF => {
                                    return Err(self.err("lone UTF-16 surrogate in string"))
                                }
                                other => other,
                            };
                            // Cannot fail: surrogates were handled above.
                            out.push(char::from_u32(code).ok_or_else(|| self.err("bad escape"))?);
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.err("invalid escape character"));
                        }
                    }
                }
                Some(_) => return Err(self.err("unescaped control character in string")),
            }
        }
    }
}

/// How non-ASCII characters are written in the canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escaping {
    /// Raw UTF-8 (JavaScript `JSON.stringify`, Python `ensure_ascii=False`).
    Utf8,
    /// Every character above U+007E escaped as `\uXXXX` with lowercase hex, astral characters
    /// as surrogate pairs (Python `json.dumps(..., ensure_ascii=True)`).
    Ascii,
}

/// How object keys are ordered in the canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// Unicode code point order (Python `sort_keys=True`); the primary order.
    CodePoint,
    /// UTF-16 code unit order (JavaScript's default `sort()`).
    Utf16,
}

/// Serializes `value` canonically: sorted keys, `,`/`:` separators, no whitespace.
pub fn to_canonical(value: &JsonValue, escaping: Escaping, order: KeyOrder) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, value, escaping, order);
    out
}

fn write_value(out: &mut String, value: &JsonValue, escaping: Escaping, order: KeyOrder) {
    match value {
        JsonValue::Null => out.push_str("null"),
        JsonValue::Bool(true) => out.push_str("true"),
        JsonValue::Bool(false) => out.push_str("false"),
        JsonValue::Number(lexeme) => out.push_str(lexeme),
        JsonValue::String(s) => write_string(out, s, escaping),
        JsonValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, escaping, order);
            }
            out.push(']');
        }
        JsonValue::Object(members) => {
            let mut sorted: Vec<&(String, JsonValue)> = members.iter().collect();
            match order {
                KeyOrder::CodePoint => sorted.sort_by(|a, b| a.0.cmp(&b.0)),
                KeyOrder::Utf16 => {
                    sorted.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()))
                }
            }
            out.push('{');
            for (i, (key, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key, escaping);
                out.push(':');
                write_value(out, item, escaping, order);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str, escaping: Escaping) {
    out.push('"');
    let mut plain_start = 0;
    for (i, c) in s.char_indices() {
        let plain = match c {
            '"' | '\\' => false,
            c if (c as u32) < 0x20 => false,
            c if escaping == Escaping::Ascii && (c as u32) > 0x7E => false,
            _ => true,
        };
        if plain {
            continue;
        }
        out.push_str(&s[plain_start..i]);
        plain_start = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push_str(&s[plain_start..]);
    out.push('"');
}

/// Lowercase-hex SHA-256 of `text`: the `payload:` line value.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// One canonical form of a payload and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalForm {
    /// Short name of the form: `utf8`, `ascii_escaped`, `utf8_utf16_key_order`,
    /// `ascii_escaped_utf16_key_order`.
    pub name: &'static str,
    pub canonical: String,
    pub hash: String,
}

/// Every canonical form the server accepts for `value`, primary (raw UTF-8, code-point key
/// order) first, without duplicates. For ASCII-only payloads this is a single form.
pub fn accepted_forms(value: &JsonValue) -> Vec<CanonicalForm> {
    let mut variants = vec![("utf8", Escaping::Utf8, KeyOrder::CodePoint)];
    let non_ascii = value.has_non_ascii();
    if non_ascii {
        variants.push(("ascii_escaped", Escaping::Ascii, KeyOrder::CodePoint));
    }
    if value.key_orders_differ() {
        variants.push(("utf8_utf16_key_order", Escaping::Utf8, KeyOrder::Utf16));
        if non_ascii {
            variants.push((
                "ascii_escaped_utf16_key_order",
                Escaping::Ascii,
                KeyOrder::Utf16,
            ));
        }
    }
    let mut forms: Vec<CanonicalForm> = Vec::with_capacity(variants.len());
    for (name, escaping, order) in variants {
        let canonical = to_canonical(value, escaping, order);
        if forms.iter().any(|f| f.canonical == canonical) {
            continue;
        }
        let hash = sha256_hex(&canonical);
        forms.push(CanonicalForm {
            name,
            canonical,
            hash,
        });
    }
    forms
}

/// The primary payload hash of `value` (raw UTF-8, code-point key order): what the SDK signs.
pub fn payload_hash(value: &JsonValue) -> String {
    sha256_hex(&to_canonical(value, Escaping::Utf8, KeyOrder::CodePoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        to_canonical(
            &parse(text.as_bytes()).unwrap(),
            Escaping::Utf8,
            KeyOrder::CodePoint,
        )
    }

    fn ascii(text: &str) -> String {
        to_canonical(
            &parse(text.as_bytes()).unwrap(),
            Escaping::Ascii,
            KeyOrder::CodePoint,
        )
    }

    #[test]
    fn sorts_keys_at_every_depth_and_drops_whitespace() {
        assert_eq!(
            canon(r#" { "b" : [ { "z":1, "a":2 } ], "a" : { "y": null, "x": true } } "#),
            r#"{"a":{"x":true,"y":null},"b":[{"a":2,"z":1}]}"#
        );
    }

    #[test]
    fn keeps_number_lexemes() {
        assert_eq!(
            canon(r#"[1, 1.0, -0, 1e3, 1E+16, 123456789012345678901234567890, 0.1]"#),
            "[1,1.0,-0,1e3,1E+16,123456789012345678901234567890,0.1]"
        );
    }

    #[test]
    fn escaping_forms() {
        let text = r#"{"k":"caf\u00e9 \ud83d\ude00 \u2028 \u007f \/ \" \\ \n \u0001"}"#;
        assert_eq!(
            canon(text),
            "{\"k\":\"café 😀 \u{2028} \u{7f} / \\\" \\\\ \\n \\u0001\"}"
        );
        assert_eq!(
            ascii(text),
            r#"{"k":"caf\u00e9 \ud83d\ude00 \u2028 \u007f / \" \\ \n \u0001"}"#
        );
    }

    #[test]
    fn rejects_bad_documents() {
        for bad in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            r#"["\ud800"]"#,
            r#"["\udc00\ud800"]"#,
            r#"["\x"]"#,
            "[\"a\u{1}\"]",
            "nul",
            "{} {}",
            "[NaN]",
            "'a'",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        assert!(parse(&[b'"', 0xff, b'"']).is_err());
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        assert!(matches!(
            parse(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateKey { key, .. }) if key == "a"
        ));
        assert!(parse(br#"{"x":{"a":1,"b":{"c":1,"c":1}}}"#).is_err());
        // The same key in sibling objects is fine.
        assert!(parse(br#"[{"a":1},{"a":2}]"#).is_ok());
        // Keys that differ only by escaping are the same key.
        assert!(parse(br#"{"a":1,"\u0061":2}"#).is_err());
    }

    #[test]
    fn depth_limit() {
        let deep_ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(deep_ok.as_bytes()).is_ok());
        let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            parse(too_deep.as_bytes()),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn utf16_key_order_variant_only_when_it_differs() {
        let ascii_only = parse(br#"{"b":1,"a":2}"#).unwrap();
        assert_eq!(accepted_forms(&ascii_only).len(), 1);
        let mixed = parse("{\"\u{1F600}\":1,\"\u{FF61}\":2}".as_bytes()).unwrap();
        let forms = accepted_forms(&mixed);
        assert_eq!(forms.len(), 4);
        assert_eq!(forms[0].canonical, "{\"\u{FF61}\":2,\"\u{1F600}\":1}");
        assert_eq!(forms[2].canonical, "{\"\u{1F600}\":1,\"\u{FF61}\":2}");
    }

    #[test]
    fn empty_object_hash() {
        assert_eq!(
            payload_hash(&JsonValue::empty_object()),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
