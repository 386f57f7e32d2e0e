//! Quiet idle polling: one line when the worker becomes idle, then a heartbeat at the
//! configured interval, instead of a line per poll.

use super::events::Events;
use serde_json::json;
use std::time::{Duration, Instant};

/// Tracks whether the worker is idle and when it last said so.
#[derive(Debug)]
pub struct Idle {
    heartbeat: Option<Duration>,
    since: Option<Instant>,
    last_line: Instant,
    polls: u64,
}

impl Idle {
    pub fn new(heartbeat: Option<Duration>) -> Self {
        Idle {
            heartbeat,
            since: None,
            last_line: Instant::now(),
            polls: 0,
        }
    }

    /// An empty poll: a line on the change to idle, then only heartbeats.
    pub fn poll(&mut self, events: &Events, what: &str, every_secs: u64) {
        self.polls += 1;
        let now = Instant::now();
        match self.since {
            None => {
                self.since = Some(now);
                self.last_line = now;
                events.emit(
                    "idle",
                    &format!("{what}; polling every {every_secs} s"),
                    json!({"poll_secs": every_secs}),
                );
            }
            Some(since) => {
                if self
                    .heartbeat
                    .is_some_and(|beat| now.duration_since(self.last_line) >= beat)
                {
                    self.last_line = now;
                    events.emit(
                        "heartbeat",
                        &format!(
                            "still idle for {} s ({} polls)",
                            now.duration_since(since).as_secs(),
                            self.polls
                        ),
                        json!({"idle_secs": now.duration_since(since).as_secs(), "polls": self.polls}),
                    );
                }
            }
        }
    }

    /// Work arrived.
    pub fn busy(&mut self) {
        self.since = None;
        self.polls = 0;
    }
}
