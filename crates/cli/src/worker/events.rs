//! Worker output for runs of days: one line per event, as it happens, with an RFC 3339
//! timestamp. Text goes to stderr (`2026-01-01T00:00:00.000Z  claimed …`); with `--json`
//! each event is one JSON object on one line of stdout (`{"ts", "event", …}`). CMD output
//! never goes to stdout in JSON mode.

use serde_json::{Map, Value};
use std::io::Write as _;

/// The event sink of one worker.
#[derive(Debug, Clone, Copy)]
pub struct Events {
    json: bool,
}

/// RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Events {
    pub fn new(json: bool) -> Self {
        Events { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Emits `event` with `fields` (a JSON object) and the human `text`.
    pub fn emit(&self, event: &str, text: &str, fields: Value) {
        let ts = now_rfc3339();
        if self.json {
            let mut map = Map::new();
            map.insert("ts".into(), Value::String(ts));
            map.insert("event".into(), Value::String(event.into()));
            if let Value::Object(extra) = fields {
                map.extend(extra);
            }
            let line = Value::Object(map).to_string();
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        } else {
            eprintln!("{ts}  {text}");
        }
    }
}
