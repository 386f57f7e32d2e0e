//! Schedule recurrence: a cron expression or a fixed interval, read in an IANA time zone.
//!
//! Cron occurrences are computed in the schedule's zone with `croner` over `chrono-tz`'s
//! bundled database, so a daily 09:00 stays at 09:00 local time across DST changes (an
//! hour that does not exist on the spring-forward day runs once, right after the gap; an
//! hour that repeats on the fall-back day runs once). Intervals are fixed durations in UTC.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

/// Shortest interval, in seconds.
pub const MIN_INTERVAL_SECS: i64 = 60;
/// Longest interval, in seconds (a year).
pub const MAX_INTERVAL_SECS: i64 = 31_536_000;

/// A checked recurrence.
#[derive(Debug, Clone)]
pub enum Rule {
    Cron { expr: String, cron: Box<Cron> },
    Interval { seconds: i64 },
}

/// A recurrence with its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub rule: Rule,
    pub zone: Tz,
}

/// Why a recurrence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    #[error("send exactly one of recurrence.cron and recurrence.interval_seconds")]
    NeitherOrBoth,
    #[error("invalid cron expression: {0}")]
    Cron(String),
    #[error("interval_seconds must be {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS}")]
    Interval,
    #[error("unknown IANA time zone {0:?}")]
    Zone(String),
    #[error("the cron expression has no occurrence in the next years")]
    NoOccurrence,
}

/// Parses an IANA zone name.
pub fn zone(name: &str) -> Result<Tz, RecurrenceError> {
    Tz::from_str(name.trim()).map_err(|_| RecurrenceError::Zone(name.to_owned()))
}

impl Schedule {
    /// Checks `cron` / `interval_seconds` (exactly one) and the zone.
    pub fn new(
        cron: Option<&str>,
        interval_seconds: Option<i64>,
        time_zone: &str,
    ) -> Result<Schedule, RecurrenceError> {
        let zone = zone(time_zone)?;
        let rule = match (
            cron.map(str::trim).filter(|c| !c.is_empty()),
            interval_seconds,
        ) {
            (Some(expr), None) => {
                if expr.len() > 200 {
                    return Err(RecurrenceError::Cron("too long".into()));
                }
                let fields = expr.split_whitespace().count();
                if !(5..=6).contains(&fields) {
                    return Err(RecurrenceError::Cron(
                        "expected 5 fields (minute hour day-of-month month day-of-week)".into(),
                    ));
                }
                let cron =
                    Cron::from_str(expr).map_err(|e| RecurrenceError::Cron(e.to_string()))?;
                Rule::Cron {
                    expr: expr.to_owned(),
                    cron: Box::new(cron),
                }
            }
            (None, Some(seconds)) => {
                if !(MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&seconds) {
                    return Err(RecurrenceError::Interval);
                }
                Rule::Interval { seconds }
            }
            _ => return Err(RecurrenceError::NeitherOrBoth),
        };
        let schedule = Schedule { rule, zone };
        // A cron that never fires (30 February) is refused up front.
        schedule.next_after(Utc::now().timestamp_millis())?;
        Ok(schedule)
    }

    /// The first occurrence strictly after `after_ms` (epoch ms).
    pub fn next_after(&self, after_ms: i64) -> Result<i64, RecurrenceError> {
        match &self.rule {
            Rule::Interval { seconds } => Ok(after_ms.saturating_add(seconds * 1000)),
            Rule::Cron { cron, .. } => {
                // Whole seconds: occurrences fall on whole seconds, and croner keeps the
                // sub-second part of its starting point.
                let after: DateTime<Utc> = Utc
                    .timestamp_millis_opt(after_ms - after_ms.rem_euclid(1000))
                    .single()
                    .ok_or(RecurrenceError::NoOccurrence)?;
                let local = after.with_timezone(&self.zone);
                cron.find_next_occurrence(&local, false)
                    .map(|t| {
                        let ms = t.with_timezone(&Utc).timestamp_millis();
                        ms - ms.rem_euclid(1000)
                    })
                    .map_err(|_| RecurrenceError::NoOccurrence)
            }
        }
    }

    /// The occurrence after a handled `due_ms`: the first one strictly after it that is
    /// also after `now_ms` (missed occurrences are coalesced into the next one, so a
    /// worker that was away does not get a backlog burst). Intervals keep their phase.
    pub fn next_due(&self, due_ms: i64, now_ms: i64) -> Result<i64, RecurrenceError> {
        match &self.rule {
            Rule::Interval { seconds } => {
                let step = seconds * 1000;
                let next = due_ms.saturating_add(step);
                if next > now_ms {
                    return Ok(next);
                }
                let behind = now_ms - next;
                Ok(next + (behind / step + 1) * step)
            }
            Rule::Cron { .. } => self.next_after(due_ms.max(now_ms)),
        }
    }

    /// The cron expression, if any.
    pub fn cron(&self) -> Option<&str> {
        match &self.rule {
            Rule::Cron { expr, .. } => Some(expr),
            Rule::Interval { .. } => None,
        }
    }

    /// The interval, if any.
    pub fn interval_seconds(&self) -> Option<i64> {
        match &self.rule {
            Rule::Interval { seconds } => Some(*seconds),
            Rule::Cron { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn iso(ms: i64) -> String {
        crate::time::rfc3339_ms(ms)
    }

    #[test]
    fn daily_local_time_survives_spring_forward() {
        // New York springs forward on 2027-03-14 (02:00 EST -> 03:00 EDT).
        let s = Schedule::new(Some("0 9 * * *"), None, "America/New_York").unwrap();
        let before = ms("2027-03-13T14:00:00Z"); // 09:00 EST on the 13th
        let next = s.next_after(before).unwrap();
        assert_eq!(iso(next), "2027-03-14T13:00:00.000Z"); // 09:00 EDT
        assert_eq!(
            next - before,
            23 * 3600 * 1000,
            "the DST day is 23 hours long"
        );
    }

    #[test]
    fn daily_local_time_survives_fall_back() {
        // Berlin falls back on 2026-10-25 (03:00 CEST -> 02:00 CET).
        let s = Schedule::new(Some("30 8 * * *"), None, "Europe/Berlin").unwrap();
        let next = s.next_after(ms("2026-10-24T06:30:00Z")).unwrap();
        assert_eq!(iso(next), "2026-10-25T07:30:00.000Z");
    }

    #[test]
    fn an_hour_skipped_by_dst_runs_once_right_after_the_gap() {
        // 02:30 does not exist in New York on 2027-03-14: it runs at 03:00 EDT that day,
        // once, and at 02:30 EDT the day after.
        let s = Schedule::new(Some("30 2 * * *"), None, "America/New_York").unwrap();
        let first = s.next_after(ms("2027-03-14T05:00:00Z")).unwrap();
        assert_eq!(iso(first), "2027-03-14T07:00:00.000Z");
        let second = s.next_after(first).unwrap();
        assert_eq!(iso(second), "2027-03-15T06:30:00.000Z");
    }

    #[test]
    fn occurrences_fall_on_whole_seconds() {
        let s = Schedule::new(Some("0 9 * * *"), None, "Europe/Berlin").unwrap();
        let next = s.next_after(ms("2026-06-01T06:59:59.999Z")).unwrap();
        assert_eq!(iso(next), "2026-06-01T07:00:00.000Z");
        let after_that = s.next_after(ms("2026-06-01T07:00:00.500Z")).unwrap();
        assert_eq!(iso(after_that), "2026-06-02T07:00:00.000Z");
    }

    #[test]
    fn intervals_keep_phase_and_coalesce() {
        let s = Schedule::new(None, Some(3600), "UTC").unwrap();
        let due = ms("2026-01-01T00:00:00Z");
        assert_eq!(s.next_due(due, due + 10).unwrap(), due + 3_600_000);
        assert_eq!(
            s.next_due(due, due + 5 * 3_600_000 + 1).unwrap(),
            due + 6 * 3_600_000
        );
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            Schedule::new(None, None, "UTC").unwrap_err(),
            RecurrenceError::NeitherOrBoth
        );
        assert!(matches!(
            Schedule::new(Some("61 * * * *"), None, "UTC"),
            Err(RecurrenceError::Cron(_))
        ));
        assert!(matches!(
            Schedule::new(Some("0 9 * * *"), None, "Mars/Olympus"),
            Err(RecurrenceError::Zone(_))
        ));
        assert_eq!(
            Schedule::new(None, Some(5), "UTC").unwrap_err(),
            RecurrenceError::Interval
        );
    }
}
