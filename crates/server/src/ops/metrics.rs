//! Prometheus metrics of one server instance, served at `GET /metrics` (text exposition
//! format). Each server has its own registry, so many servers can run in one process.
//!
//! | metric | labels |
//! | --- | --- |
//! | `agentpmt_http_requests_total` | `method`, `route` (matched template), `status` |
//! | `agentpmt_http_request_duration_seconds` (histogram) | `method`, `route` |
//! | `agentpmt_signature_failures_total` | `error_code` |
//! | `agentpmt_rate_limited_total` | `scope` (`ip`, `signed_ip`, `wallet`, `agentaddress`, ...) |
//! | `agentpmt_rate_limit_keys` (gauge, read at scrape time) | `limiter` (`ip`, `signed_ip`, `wallet`) |
//! | `agentpmt_ledger_postings_total` | `kind`, `direction` (`grant`, `debit`) |
//! | `agentpmt_ledger_credits_total` | `kind`, `direction` (credits moved) |
//! | `agentpmt_reservations_total` | `outcome` |
//! | `agentpmt_settlements_total` | `outcome` |
//! | `agentpmt_agent_addresses_issued_total` | — |
//!
//! Reservations and settlements are recorded by the areas that own them through
//! [`Metrics::reservation`] and [`Metrics::settlement`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    error_code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LedgerLabels {
    kind: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~8 s
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    signature_failures: Family<CodeLabels, Counter>,
    rate_limited: Family<ScopeLabels, Counter>,
    ledger_postings: Family<LedgerLabels, Counter>,
    ledger_credits: Family<LedgerLabels, Counter>,
    reservations: Family<OutcomeLabels, Counter>,
    settlements: Family<OutcomeLabels, Counter>,
    agent_addresses: Counter,
    limiter_keys: Family<LimiterLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    limiter: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("agentpmt");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by matched route and status",
            requests.clone(),
        );
        let latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by matched route",
            latency.clone(),
        );
        let signature_failures = Family::<CodeLabels, Counter>::default();
        registry.register(
            "signature_failures",
            "Signed requests refused during verification, by error code",
            signature_failures.clone(),
        );
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429, by limit",
            rate_limited.clone(),
        );
        let ledger_postings = Family::<LedgerLabels, Counter>::default();
        registry.register(
            "ledger_postings",
            "Ledger entries posted, by kind and direction",
            ledger_postings.clone(),
        );
        let ledger_credits = Family::<LedgerLabels, Counter>::default();
        registry.register(
            "ledger_credits",
            "Credits moved by ledger entries, by kind and direction",
            ledger_credits.clone(),
        );
        let reservations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reservations",
            "Credit holds and job reservations, by outcome",
            reservations.clone(),
        );
        let limiter_keys = Family::<LimiterLabels, Gauge>::default();
        registry.register(
            "rate_limit_keys",
            "Keys (addresses, wallets) held by each in-memory rate limiter",
            limiter_keys.clone(),
        );
        let settlements = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "settlements",
            "Payment settlements, by outcome",
            settlements.clone(),
        );
        let agent_addresses = Counter::default();
        registry.register(
            "agent_addresses_issued",
            "AgentAddresses created",
            agent_addresses.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            signature_failures,
            rate_limited,
            ledger_postings,
            ledger_credits,
            reservations,
            settlements,
            agent_addresses,
            limiter_keys,
        }
    }

    /// One finished HTTP request. Unusual methods count as `OTHER` (clients choose the
    /// method; the label set must stay bounded).
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A signed request refused while verifying its signature or session.
    pub fn signature_failure(&self, error_code: &str) {
        self.signature_failures
            .get_or_create(&CodeLabels {
                error_code: error_code.to_owned(),
            })
            .inc();
    }

    /// A request refused with 429 by the `scope` limit.
    /// Sets the key counts of the in-memory limiters (read when metrics are scraped).
    pub fn limiter_keys(&self, counts: &[(&'static str, usize)]) {
        for (limiter, keys) in counts {
            self.limiter_keys
                .get_or_create(&LimiterLabels {
                    limiter: (*limiter).to_owned(),
                })
                .set(i64::try_from(*keys).unwrap_or(i64::MAX));
        }
    }

    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited
            .get_or_create(&ScopeLabels {
                scope: scope.to_owned(),
            })
            .inc();
    }

    /// A committed ledger entry of `kind` moving `amount_credits` (positive: grant).
    pub fn ledger_posting(&self, kind: &str, amount_credits: i64) {
        let labels = LedgerLabels {
            kind: kind.to_owned(),
            direction: if amount_credits >= 0 {
                "grant"
            } else {
                "debit"
            }
            .to_owned(),
        };
        self.ledger_postings.get_or_create(&labels).inc();
        self.ledger_credits
            .get_or_create(&labels)
            .inc_by(amount_credits.unsigned_abs());
    }

    /// A reservation (credit hold, job lease) ended with `outcome` (`held`, `posted`,
    /// `released`, `expired`, `refused`, ...).
    pub fn reservation(&self, outcome: &str) {
        self.reservations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A payment settlement ended with `outcome` (`settled`, `failed`, `duplicate`, ...).
    pub fn settlement(&self, outcome: &str) {
        self.settlements
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// An AgentAddress was issued.
    pub fn agent_address_issued(&self) {
        self.agent_addresses.inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.request(
            "POST",
            "/api/external/credits/balance",
            200,
            Duration::from_millis(3),
        );
        m.signature_failure("EXTERNAL_SIGNATURE_WALLET_MISMATCH");
        m.ledger_posting("admin_adjustment", -25);
        m.settlement("settled");
        m.request("BREW", "unmatched", 405, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("method=\"OTHER\",route=\"unmatched\",status=\"405\"} 1"));
        assert!(!text.contains("BREW"));
        assert!(text.contains(
            "agentpmt_http_requests_total{method=\"POST\",route=\"/api/external/credits/balance\",status=\"200\"} 1"
        ), "{text}");
        assert!(text.contains("agentpmt_http_request_duration_seconds_bucket"));
        assert!(text.contains(
            "agentpmt_signature_failures_total{error_code=\"EXTERNAL_SIGNATURE_WALLET_MISMATCH\"} 1"
        ));
        assert!(text.contains(
            "agentpmt_ledger_credits_total{kind=\"admin_adjustment\",direction=\"debit\"} 25"
        ));
        assert!(text.contains("agentpmt_settlements_total{outcome=\"settled\"} 1"));
    }
}
