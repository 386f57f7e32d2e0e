//! What the CLI prints: aligned `key: value` lines, or one JSON object on stdout with
//! `--json`; and errors, with the server's error envelope (status, `error_code`, message,
//! checklist) when the server refused a request.

use agentpmt_sdk::ApiFailure;
use serde::Serialize;
use serde_json::{json, Value};

/// The output mode chosen with `--json`.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    /// Text output, or JSON when `json`.
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    /// True with `--json`.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints `value` as one JSON object (`--json`), else `rows` as aligned lines.
    pub fn emit(&self, value: &impl Serialize, rows: &[(&str, String)]) {
        if self.json {
            self.print_json(value);
        } else {
            print!("{}", rows_text(rows));
        }
    }

    /// Prints `value` as one JSON object on stdout.
    pub fn print_json(&self, value: &impl Serialize) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: cannot encode the output as JSON: {e}"),
        }
    }

    /// Reports a failed command: on stderr as text, and with `--json` also as one JSON
    /// object on stdout (the server's error body when the server refused the request).
    pub fn error(&self, err: &anyhow::Error) {
        let failure = api_failure(err);
        if self.json && !crate::worker::is_reported(err) {
            let mut value = match failure {
                Some(failure) => api_failure_json(failure),
                None => json!({ "success": false, "error": describe(err) }),
            };
            if let Value::Object(map) = &mut value {
                map.insert("ts".into(), json!(crate::worker::events::now_rfc3339()));
            }
            // One line, so that a worker's stdout stays one JSON object per line.
            println!("{value}");
        }
        match failure {
            Some(failure) => eprint!("{}", api_failure_text(failure)),
            None => eprintln!("error: {}", describe(err)),
        }
    }
}

/// `rows` as `key: value` lines with the values aligned.
pub fn rows_text(rows: &[(&str, String)]) -> String {
    rows_text_padded(rows, rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0))
}

/// `rows` as `key: value` lines with the values aligned for keys up to `key_width` long.
pub fn rows_text_padded(rows: &[(&str, String)], key_width: usize) -> String {
    let width = key_width + 1;
    rows.iter()
        .map(|(key, value)| format!("{:<width$} {value}\n", format!("{key}:"), width = width))
        .collect()
}

/// Adds what the CLI knows to an SDK error: the server address when it cannot be reached.
pub fn sdk_error(err: agentpmt_sdk::Error, server: &str) -> anyhow::Error {
    let hint = match &err {
        agentpmt_sdk::Error::Http(e) if e.is_connect() => Some(format!(
            "cannot reach the server at {server} (is it running? choose another with --server or AGENTPMT_SERVER)"
        )),
        agentpmt_sdk::Error::Http(_) => Some(format!("the request to {server} failed")),
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::Error::new(err).context(hint),
        None => anyhow::Error::new(err),
    }
}

/// The server's refusal inside `err`, if that is what it is.
fn api_failure(err: &anyhow::Error) -> Option<&ApiFailure> {
    err.chain()
        .find_map(|cause| match cause.downcast_ref::<agentpmt_sdk::Error>() {
            Some(agentpmt_sdk::Error::Api(failure)) => Some(failure.as_ref()),
            _ => None,
        })
}

/// The error body as the server sent it, plus `http_status`.
fn api_failure_json(failure: &ApiFailure) -> Value {
    let mut value = serde_json::to_value(&failure.body).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut value {
        map.insert("http_status".into(), json!(failure.status));
    }
    value
}

fn api_failure_text(failure: &ApiFailure) -> String {
    let mut rows = vec![
        (
            "status",
            format!(
                "{} {}",
                failure.status,
                agentpmt_protocol::errors::status_label(failure.status)
            ),
        ),
        ("error_code", failure.error_code.clone()),
        ("message", failure.message.clone()),
    ];
    if !failure.body.request_id.is_empty() {
        rows.push(("request_id", failure.body.request_id.clone()));
    }
    let mut text = String::from("error: the server refused the request\n");
    for line in rows_text(&rows).lines() {
        text.push_str(&format!("  {line}\n"));
    }
    if !failure.checklist.is_empty() {
        text.push_str("  checklist:\n");
        for step in &failure.checklist {
            text.push_str(&format!("    - {step}\n"));
        }
    }
    text
}

/// The error and its causes on one line, skipping causes already quoted by the one before
/// (error types that print their source as part of their own message).
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_aligned() {
        let text = rows_text(&[("wallet", "0xabc".into()), ("usd", "1.00".into())]);
        assert_eq!(text, "wallet: 0xabc\nusd:    1.00\n");
    }

    #[test]
    fn describe_skips_repeated_causes() {
        let inner = std::io::Error::other("connection refused");
        let outer = anyhow::Error::new(inner)
            .context("transport: connection refused")
            .context("cannot reach");
        assert_eq!(
            describe(&outer),
            "cannot reach: transport: connection refused"
        );
    }
}
