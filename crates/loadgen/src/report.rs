//! Results: per-run figures (throughput, latency percentiles, errors, the ratio to
//! single-core recovery), printed as a table or as one JSON object.

use crate::fire::{ErrorTally, Outcome, Pace};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of microseconds (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

/// Single-core signature recoveries per second, measured before and after the HTTP phase.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Recovery {
    pub before: f64,
    pub after: f64,
    pub mean: f64,
}

impl Recovery {
    pub fn new(before: f64, after: f64) -> Recovery {
        Recovery {
            before,
            after,
            mean: (before + after) / 2.0,
        }
    }
}

/// One HTTP phase at one concurrency level.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub concurrency: usize,
    pub wallets: usize,
    /// Offered rate (open loop), or `None` for closed loop.
    pub offered_rate: Option<f64>,
    /// Requests in the measured window.
    pub requests: usize,
    pub ok: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, ErrorTally>,
    pub elapsed_s: f64,
    /// Successful (200) requests per second.
    pub requests_per_sec: f64,
    /// Open loop: from the due time to the full response; closed loop: from the send.
    pub latency_ms: Percentiles,
    /// From the actual send to the full response.
    pub service_ms: Percentiles,
    pub recoveries_per_sec_single_core: f64,
    /// `requests_per_sec / recoveries_per_sec_single_core`.
    pub ratio: f64,
    /// The server process's CPU time (user + system) over the measured window
    /// (`--server-pid`).
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per request answered 200, in µs.
    pub server_cpu_us_per_request: Option<f64>,
    /// One in-process signature recovery, in µs (from the single-core yardstick).
    pub recovery_us: f64,
    /// `recovery_us / server_cpu_us_per_request`: the share of the server's CPU that the
    /// one recovery a signed request needs would take.
    pub efficiency: Option<f64>,
}

impl Run {
    /// Figures of one firing of `requests` requests.
    pub fn new(
        concurrency: usize,
        wallets: usize,
        pace: Pace,
        requests: usize,
        outcome: &Outcome,
    ) -> Run {
        let elapsed_s = outcome.elapsed.as_secs_f64();
        Run {
            concurrency,
            wallets,
            offered_rate: match pace {
                Pace::Closed => None,
                Pace::Rate(r) => Some(r),
            },
            requests,
            ok: outcome.ok,
            errors: outcome.error_count(),
            errors_by_kind: outcome.errors.clone(),
            elapsed_s,
            requests_per_sec: if elapsed_s > 0.0 {
                outcome.ok as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Percentiles::of(&outcome.latency),
            service_ms: Percentiles::of(&outcome.service),
            recoveries_per_sec_single_core: 0.0,
            ratio: 0.0,
            server_cpu_s: None,
            server_cpu_us_per_request: None,
            recovery_us: 0.0,
            efficiency: None,
        }
    }

    /// Records the server's CPU time over the measured window.
    pub fn with_server_cpu(mut self, seconds: f64) -> Run {
        self.server_cpu_s = Some(seconds);
        self.server_cpu_us_per_request = (self.ok > 0).then(|| seconds * 1e6 / self.ok as f64);
        self.efficiency = self.efficiency();
        self
    }

    fn efficiency(&self) -> Option<f64> {
        match self.server_cpu_us_per_request {
            Some(cpu) if cpu > 0.0 && self.recovery_us > 0.0 => Some(self.recovery_us / cpu),
            _ => None,
        }
    }

    /// Sets the recovery yardstick and the ratio.
    pub fn with_recovery(mut self, recoveries_per_sec: f64) -> Run {
        self.recoveries_per_sec_single_core = recoveries_per_sec;
        self.ratio = if recoveries_per_sec > 0.0 {
            self.requests_per_sec / recoveries_per_sec
        } else {
            0.0
        };
        self.recovery_us = recovery_us(recoveries_per_sec);
        self.efficiency = self.efficiency();
        self
    }
}

/// One recovery's time in µs at `recoveries_per_sec` (0 when there is no rate).
fn recovery_us(recoveries_per_sec: f64) -> f64 {
    if recoveries_per_sec > 0.0 {
        1e6 / recoveries_per_sec
    } else {
        0.0
    }
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub server: String,
    pub wallets: usize,
    pub loadgen_threads: usize,
    pub recoveries_per_sec_single_core: Recovery,
    pub runs: Vec<Run>,
}

impl Summary {
    /// Whether any run had a failed request.
    pub fn has_errors(&self) -> bool {
        self.runs.iter().any(|r| r.errors > 0)
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let open_loop = self.runs.iter().any(|r| r.offered_rate.is_some());
        let rec = &self.recoveries_per_sec_single_core;
        let mut out = format!(
            "server {}  wallets {}  load-generator threads {}\n\
             single-core recoveries/s: {:.0} (before {:.0}, after {:.0})\n\n",
            self.server, self.wallets, self.loadgen_threads, rec.mean, rec.before, rec.after
        );
        let mut header = format!(
            "{:>6} {:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "conc",
            "requests",
            "elapsed_s",
            "req/s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "errors",
            "ratio",
        );
        if open_loop {
            header = format!("{header} {:>9} {:>9} {:>9}", "rate", "svc_p50", "svc_p99");
        }
        let cpu = self.runs.iter().any(|r| r.server_cpu_s.is_some());
        if cpu {
            header = format!("{header} {:>11} {:>10}", "cpu_us/req", "efficiency");
        }
        out.push_str(&header);
        out.push('\n');
        for r in &self.runs {
            let l = &r.latency_ms;
            let mut line = format!(
                "{:>6} {:>9} {:>9.3} {:>8.0} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>8} {:>7.3}",
                r.concurrency,
                r.requests,
                r.elapsed_s,
                r.requests_per_sec,
                l.p50,
                l.p90,
                l.p99,
                l.max,
                r.errors,
                r.ratio,
            );
            if open_loop {
                let rate = r
                    .offered_rate
                    .map(|x| format!("{x:.0}"))
                    .unwrap_or_else(|| "-".into());
                line = format!(
                    "{line} {rate:>9} {:>9.3} {:>9.3}",
                    r.service_ms.p50, r.service_ms.p99
                );
            }
            if cpu {
                let fmt =
                    |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
                line = format!(
                    "{line} {:>11} {:>10}",
                    fmt(r.server_cpu_us_per_request, 1),
                    fmt(r.efficiency, 3)
                );
            }
            if r.errors > 0 {
                line.push_str("  FAILED REQUESTS");
            }
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("\nratio = req/s ÷ single-core recoveries/s (mean of before and after)\n");
        if cpu {
            out.push_str(&format!(
                "cpu_us/req = the server process's CPU time over the window ÷ requests answered 200; \
                 efficiency = one recovery ({:.1} µs) ÷ cpu_us/req\n",
                recovery_us(rec.mean)
            ));
        }
        if self.has_errors() {
            out.push_str("\n!!! THERE WERE FAILED REQUESTS: the figures above are not valid measurements !!!\n");
            for r in self.runs.iter().filter(|r| r.errors > 0) {
                let unsent = r.errors - r.errors_by_kind.values().map(|t| t.count).sum::<u64>();
                out.push_str(&format!(
                    "concurrency {}: {} failed\n",
                    r.concurrency, r.errors
                ));
                for (kind, tally) in &r.errors_by_kind {
                    let label = if kind == "transport" {
                        kind.clone()
                    } else {
                        format!("HTTP {kind}")
                    };
                    out.push_str(&format!("  {label} x{}: {}\n", tally.count, tally.sample));
                }
                if unsent > 0 {
                    out.push_str(&format!("  never sent: {unsent}\n"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fire::new_histogram;
    use std::time::Duration;

    fn outcome(latencies_us: impl IntoIterator<Item = u64>) -> Outcome {
        let mut latency = new_histogram();
        for us in latencies_us {
            latency.record(us).unwrap();
        }
        Outcome {
            service: latency.clone(),
            ok: latency.len(),
            latency,
            elapsed: Duration::from_secs(2),
            errors: BTreeMap::new(),
            unsent: 0,
        }
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let p = Percentiles::of(&outcome(1..=10_000).latency);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002;
        assert!(close(p.p50, 5.0), "{p:?}");
        assert!(close(p.p90, 9.0), "{p:?}");
        assert!(close(p.p99, 9.9), "{p:?}");
        assert!(close(p.max, 10.0), "{p:?}");
        assert!(close(p.mean, 5.0005), "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()).max, 0.0);
    }

    #[test]
    fn throughput_ratio_and_error_banner() {
        let mut o = outcome(std::iter::repeat_n(300, 1000));
        let run = Run::new(10, 5, Pace::Closed, 1000, &o).with_recovery(2000.0);
        assert_eq!(run.requests_per_sec, 500.0);
        assert_eq!(run.ratio, 0.25);
        let mut summary = Summary {
            server: "http://x".into(),
            wallets: 5,
            loadgen_threads: 1,
            recoveries_per_sec_single_core: Recovery::new(1900.0, 2100.0),
            runs: vec![run],
        };
        assert_eq!(summary.recoveries_per_sec_single_core.mean, 2000.0);
        assert!(!summary.table().contains("FAILED"));

        o.errors.insert(
            "409".into(),
            ErrorTally {
                count: 3,
                sample: "replay".into(),
            },
        );
        o.unsent = 2;
        summary.runs = vec![Run::new(10, 5, Pace::Rate(400.0), 1005, &o)];
        let table = summary.table();
        assert!(table.contains("FAILED"), "{table}");
        assert!(table.contains("HTTP 409 x3: replay"), "{table}");
        assert!(table.contains("never sent: 2"), "{table}");
        assert!(table.contains("svc_p99"), "{table}");
        assert!(!table.contains("efficiency"), "no --server-pid: {table}");
    }

    #[test]
    fn server_cpu_per_request_and_efficiency() {
        // 1,000 answers for 0.08 s of server CPU: 80 µs each; one recovery at 25,000/s
        // takes 40 µs, so half the server's CPU per request.
        let o = outcome(std::iter::repeat_n(300, 1000));
        let run = Run::new(64, 16, Pace::Closed, 1000, &o)
            .with_server_cpu(0.08)
            .with_recovery(25_000.0);
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(run.server_cpu_us_per_request, 80.0), "{run:?}");
        assert!((run.recovery_us - 40.0).abs() < 1e-9, "{run:?}");
        assert!(close(run.efficiency, 0.5), "{run:?}");
        let summary = Summary {
            server: "http://x".into(),
            wallets: 16,
            loadgen_threads: 1,
            recoveries_per_sec_single_core: Recovery::new(25_000.0, 25_000.0),
            runs: vec![run],
        };
        let table = summary.table();
        assert!(table.contains("cpu_us/req"), "{table}");
        assert!(table.contains("80.0"), "{table}");
        assert!(table.contains("0.500"), "{table}");
    }
}
