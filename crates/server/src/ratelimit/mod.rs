//! Abuse limits: who the client is, and the in-memory per-IP and per-wallet limits.
//!
//! - The client IP is the peer address, unless the peer is a configured trusted proxy
//!   (`--trusted-proxies`): then it is the right-most `X-Forwarded-For` entry that is not
//!   itself a trusted proxy. A client cannot pick its own key by sending the header.
//! - Per-IP limits (an IPv6 client per /64, see [`ip_bucket`]) guard the unauthenticated
//!   endpoints (session creation, AgentAddress,
//!   agent-help) through the [`IpLimited`] extractor, which runs before the body is read.
//! - Signed endpoints have a per-IP limit of their own ([`Limits::check_signed_ip`]),
//!   checked before the body is parsed or anything is looked up: a client cannot escape
//!   it by signing with fresh wallets. A request whose signature matches no accepted
//!   message also pays one token per extra recovery it cost ([`Limits::charge_signed_ip`]),
//!   so the recoveries one address can cause per second are bounded by its rate whatever
//!   the number of accepted message variants.
//! - Per-wallet limits guard signed endpoints; [`Limits::check_wallet`] runs once the
//!   session is found for that wallet, before any signature recovery: a wallet that has
//!   no session never gets a bucket, so random wallets cannot grow the limiter.
//! - A refused signature (malformed, unknown or expired session, mismatch) costs its
//!   address `--signed-ip-failure-cost` tokens in all ([`Limits::charge_signed_failure`]):
//!   a signature flood is slowed down that many times sooner than honest traffic.
//! - Heavy built-in tools are budgeted in CPU time per payer ([`Limits::check_heavy`],
//!   [`Limits::charge_heavy`]): one token is one CPU millisecond.
//! - The tarpit: a refusal (429) is held for `--tarpit-ms` before it is answered
//!   ([`Limits::hold`]), at most [`TARPIT_MAX_HELD`] at once, so a client that ignores
//!   `Retry-After` cannot loop on cheap refusals.
//! - Memory: a bucket is forgotten once it is full again. Besides the periodic
//!   [`Limits::prune`], a limiter that holds more than [`MAX_TRACKED_KEYS`] keys prunes at
//!   once (at most every [`PRUNE_ON_SIZE_INTERVAL`]).
//!
//! These limits are GCRA token buckets: per server instance by default (the `governor`
//! crate, in memory: N instances allow N times the limit), or shared by every instance
//! with `--rate-limit-backend postgres|redis` ([`shared`]). A 429 says which applies
//! (`details.limit_backend`, `details.per_instance`). When the shared store cannot be
//! reached, the in-memory bucket decides (the limit holds per instance meanwhile) and a
//! warning is logged at most once a minute. The AgentAddress limit, which must hold across
//! instances, lives in the database ([`crate::identity::limiter`]).

pub mod shared;

use crate::config::{canonical_ip, IpNet, RateLimitBackend, ServerConfig};
use crate::error::ApiError;
use crate::state::AppState;
use agentpmt_protocol::wire::RateLimitInfo;
use agentpmt_protocol::WalletAddress;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use shared::SharedStore;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Keys a limiter holds before it prunes on the spot instead of waiting for the sweeper.
pub const MAX_TRACKED_KEYS: usize = 100_000;
/// How often (in checks) a limiter looks at its size.
const SIZE_CHECK_EVERY: u64 = 256;
/// Shortest time between two on-the-spot prunes of one limiter.
pub const PRUNE_ON_SIZE_INTERVAL: Duration = Duration::from_secs(1);

/// Refusals held by the tarpit at once; past it they are answered at once.
pub const TARPIT_MAX_HELD: usize = 1024;

/// The process's monotonic epoch for the prune timestamps.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The client's address, as far as this server can trust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| canonical_ip(c.0.ip()))
            // Served without connection info (in-process routers): one shared key.
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(client_ip(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// The client address of a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // An entry that is not an address: nothing left of it can be trusted.
        let Some(ip) = parse_hop(hop) else { break };
        client = canonical_ip(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// One keyed token-bucket limit.
struct Keyed<K: Hash + Eq + Clone> {
    /// The bucket family's name in a shared store (`ip`, `signed_ip`, `wallet`).
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<K>,
    per_sec: u32,
    burst: u32,
    /// Milliseconds after [`EPOCH`] of the last on-the-spot prune.
    pruned_at_ms: AtomicU64,
    /// Checks so far (the size is looked at every [`SIZE_CHECK_EVERY`]).
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(name: &'static str, per_sec: u32, burst: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst.max(per_sec)).unwrap_or(rate);
        Some(Keyed {
            name,
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            per_sec,
            burst: burst.get(),
            pruned_at_ms: AtomicU64::new(0),
            checks: AtomicU64::new(0),
        })
    }

    /// One token, in microseconds of a shared GCRA cell.
    fn interval_us(&self) -> i64 {
        (1_000_000 / i64::from(self.per_sec.max(1))).max(1)
    }

    /// The burst, in microseconds of a shared GCRA cell.
    fn tolerance_us(&self) -> i64 {
        self.interval_us() * i64::from(self.burst)
    }

    /// The limit and a wait of `wait_us`, as a 429 tells them.
    fn refusal(&self, wait_us: i64) -> RateLimitInfo {
        RateLimitInfo {
            limit: u64::from(self.per_sec),
            window_seconds: 1,
            retry_after_seconds: u64::try_from(wait_us.max(1))
                .unwrap_or(1)
                .div_ceil(1_000_000),
        }
    }

    /// `Err` with the limit and the wait when `key` is over its limit.
    fn check(&self, key: &K) -> Result<(), RateLimitInfo> {
        self.bound_memory();
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RateLimitInfo {
                limit: u64::from(self.per_sec),
                window_seconds: 1,
                retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Takes up to `n` more tokens from `key`'s bucket (all of them, or as many as are
    /// left: the bucket is emptied rather than left untouched when it cannot pay).
    fn charge(&self, key: &K, n: u32) {
        let Some(n) = NonZeroU32::new(n) else { return };
        if matches!(self.limiter.check_key_n(key, n), Ok(Ok(()))) {
            return;
        }
        for _ in 0..n.get().min(self.burst) {
            if self.limiter.check_key(key).is_err() {
                break;
            }
        }
    }

    /// Prunes at once when the limiter holds more than [`MAX_TRACKED_KEYS`] keys. The size
    /// (a read of every shard) is looked at once per [`SIZE_CHECK_EVERY`] checks, not on
    /// each request.
    fn bound_memory(&self) {
        if !self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SIZE_CHECK_EVERY)
            || self.limiter.len() <= MAX_TRACKED_KEYS
        {
            return;
        }
        let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.pruned_at_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(PRUNE_ON_SIZE_INTERVAL.as_millis()).unwrap_or(1000);
        if now.saturating_sub(last) < interval
            || self
                .pruned_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The key of `ip`'s per-IP bucket: an IPv4 address itself (also when written as an
/// IPv4-mapped IPv6 address); for IPv6, its /64 (one subscriber's network: a client that
/// owns a /64 would otherwise get 2^64 buckets).
pub fn ip_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The per-IP and per-wallet limits (in memory, or in a shared store).
pub struct Limits {
    ip: Option<Keyed<IpAddr>>,
    signed_ip: Option<Keyed<IpAddr>>,
    wallet: Option<Keyed<WalletAddress>>,
    /// CPU milliseconds of heavy built-ins per payer (a wallet, or `account:{id}`).
    heavy: Option<Keyed<String>>,
    /// Tokens a refused signature costs, in all.
    signed_failure_cost: u32,
    /// How long a refusal is held, and the slots of the requests held at once.
    tarpit: Duration,
    tarpit_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// Where the buckets are shared, when they are.
    shared: Option<SharedStore>,
    backend: RateLimitBackend,
    /// Milliseconds after [`EPOCH`] of the last "shared store unavailable" warning.
    warned_at_ms: AtomicU64,
}

/// Shortest time between two warnings that the shared store is unavailable.
const WARN_INTERVAL_MS: u64 = 60_000;

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let describe = |per_sec: Option<(u32, u32)>| match per_sec {
            Some((rate, burst)) => format!("{rate}/s burst {burst}"),
            None => "off".to_owned(),
        };
        f.debug_struct("Limits")
            .field(
                "ip",
                &describe(self.ip.as_ref().map(|k| (k.per_sec, k.burst))),
            )
            .field(
                "signed_ip",
                &describe(self.signed_ip.as_ref().map(|k| (k.per_sec, k.burst))),
            )
            .field(
                "wallet",
                &describe(self.wallet.as_ref().map(|k| (k.per_sec, k.burst))),
            )
            .field(
                "heavy_cpu_ms",
                &describe(self.heavy.as_ref().map(|k| (k.per_sec, k.burst))),
            )
            .field("signed_failure_cost", &self.signed_failure_cost)
            .field("tarpit", &self.tarpit)
            .field("backend", &self.backend.as_str())
            .finish()
    }
}

impl Limits {
    /// The in-memory limits `config` asks for (a rate of 0 turns one off).
    pub fn new(config: &ServerConfig) -> Self {
        Limits {
            ip: Keyed::new("ip", config.ip_rate_per_sec, config.ip_rate_burst),
            signed_ip: Keyed::new(
                "signed_ip",
                config.signed_ip_rate_per_sec,
                config.signed_ip_rate_burst,
            ),
            wallet: Keyed::new(
                "wallet",
                config.wallet_rate_per_sec,
                config.wallet_rate_burst,
            ),
            heavy: Keyed::new(
                "heavy_cpu",
                config.heavy_cpu_ms_per_sec,
                config.heavy_cpu_ms_burst,
            ),
            signed_failure_cost: config.signed_ip_failure_cost,
            tarpit: Duration::from_millis(config.tarpit_ms),
            tarpit_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(TARPIT_MAX_HELD)),
            shared: None,
            backend: RateLimitBackend::Memory,
            warned_at_ms: AtomicU64::new(0),
        }
    }

    /// Holds a refused request for the tarpit's time before it is answered (at once when
    /// the tarpit is off or already holds [`TARPIT_MAX_HELD`] requests).
    pub async fn hold(&self) {
        if self.tarpit.is_zero() {
            return;
        }
        if let Ok(_slot) = self.tarpit_slots.try_acquire() {
            tokio::time::sleep(self.tarpit).await;
        }
    }

    /// `refusal`, once the tarpit has held it.
    async fn held<T>(&self, refusal: Result<T, ApiError>) -> Result<T, ApiError> {
        if refusal.is_err() {
            self.hold().await;
        }
        refusal
    }

    /// The same limits, counted in `store` (shared by every instance that uses it).
    pub fn shared_in(mut self, store: SharedStore, backend: RateLimitBackend) -> Self {
        self.shared = Some(store);
        self.backend = backend;
        self
    }

    /// Where these limits are counted.
    pub fn backend(&self) -> RateLimitBackend {
        self.backend
    }

    /// Takes `cost` tokens from `key`'s bucket of `keyed` (`drain`: as many as are left,
    /// never refused). The shared store decides when there is one and it answers.
    async fn take<K: Hash + Eq + Clone + std::fmt::Display>(
        &self,
        keyed: &Keyed<K>,
        key: &K,
        cost: u32,
        drain: bool,
    ) -> Result<(), RateLimitInfo> {
        if let Some(store) = &self.shared {
            let bucket = format!("{}:{key}", keyed.name);
            let cost_us = keyed.interval_us().saturating_mul(i64::from(cost));
            match store
                .take(&bucket, cost_us, keyed.tolerance_us(), drain)
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(wait_us)) => return Err(keyed.refusal(wait_us)),
                Err(shared::Unavailable(why)) => self.warn_unavailable(why),
            }
        }
        if drain {
            keyed.charge(key, cost);
            Ok(())
        } else {
            keyed.check(key)
        }
    }

    fn warn_unavailable(&self, why: &'static str) {
        let now = u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_at_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= WARN_INTERVAL_MS)
            && self
                .warned_at_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(backend = self.backend.as_str(), reason = why,
                "the shared rate-limit store is unavailable: limits are counted per instance until it answers");
        }
    }

    /// A 429 of scope `scope`, saying where the limit is counted.
    fn refused(&self, message: &str, limit: RateLimitInfo, scope: &str) -> ApiError {
        ApiError::rate_limited(message, limit)
            .with_detail("scope", scope)
            .with_detail("limit_backend", self.backend.as_str())
            .with_detail("per_instance", self.shared.is_none())
    }

    /// 429 when `ip` is over the per-IP limit of signed endpoints.
    pub async fn check_signed_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        let checked = match &self.signed_ip {
            Some(keyed) => self
                .take(keyed, &ip_bucket(ip), 1, false)
                .await
                .map_err(|limit| {
                    self.refused(
                        "Too many signed requests from this IP address; slow down",
                        limit,
                        "ip",
                    )
                }),
            None => Ok(()),
        };
        self.held(checked).await
    }

    /// Charges `ip` the failure cost of a refused signature (beyond the token the request
    /// already paid).
    pub async fn charge_signed_failure(&self, ip: IpAddr) {
        self.drain_signed_ip(ip, self.signed_failure_cost.saturating_sub(1))
            .await;
    }

    /// Takes up to `tokens` more from `ip`'s signed per-IP bucket (never refused).
    async fn drain_signed_ip(&self, ip: IpAddr, tokens: u32) {
        if let (Some(keyed), true) = (&self.signed_ip, tokens > 0) {
            let _ = self.take(keyed, &ip_bucket(ip), tokens, true).await;
        }
    }

    /// 429 (scope `heavy_cpu`) when `payer` has spent its CPU budget of heavy built-ins.
    pub async fn check_heavy(&self, payer: &str) -> Result<(), ApiError> {
        let checked = match &self.heavy {
            Some(keyed) => self
                .take(keyed, &payer.to_owned(), 1, false)
                .await
                .map_err(|limit| {
                    self.refused(
                        "This payer has used its CPU budget of heavy built-in tools; slow down",
                        limit,
                        "heavy_cpu",
                    )
                    .with_detail("limit_unit", "cpu_ms")
                }),
            None => Ok(()),
        };
        self.held(checked).await
    }

    /// Charges `payer` the CPU time a heavy built-in used (one token per millisecond,
    /// beyond the one its check took).
    pub async fn charge_heavy(&self, payer: &str, cpu: Duration) {
        let ms = u32::try_from(cpu.as_millis()).unwrap_or(u32::MAX);
        if let (Some(keyed), true) = (&self.heavy, ms > 1) {
            let _ = self.take(keyed, &payer.to_owned(), ms - 1, true).await;
        }
    }

    /// Takes one token from `ip`'s per-IP bucket (unauthenticated endpoints): `false` when
    /// it is empty. Draining an oversized body pays with it.
    pub async fn take_ip(&self, ip: IpAddr) -> bool {
        match &self.ip {
            Some(keyed) => self.take(keyed, &ip_bucket(ip), 1, false).await.is_ok(),
            None => true,
        }
    }

    /// Charges `ip` for `recoveries` signature recoveries beyond the first, spent on a
    /// signature that matched no accepted message.
    pub async fn charge_signed_ip(&self, ip: IpAddr, recoveries: u32) {
        self.drain_signed_ip(ip, recoveries.saturating_sub(1)).await;
    }

    /// Keys held by the per-IP, signed per-IP and per-wallet in-memory limiters.
    pub fn tracked_keys(&self) -> [(&'static str, usize); 4] {
        let len = |k: &Option<Keyed<_>>| k.as_ref().map_or(0, |k| k.limiter.len());
        [
            ("ip", len(&self.ip)),
            ("signed_ip", len(&self.signed_ip)),
            (
                "wallet",
                self.wallet.as_ref().map_or(0, |k| k.limiter.len()),
            ),
            (
                "heavy_cpu",
                self.heavy.as_ref().map_or(0, |k| k.limiter.len()),
            ),
        ]
    }

    /// 429 when `ip` is over the per-IP limit.
    pub async fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        let checked = match &self.ip {
            Some(keyed) => self
                .take(keyed, &ip_bucket(ip), 1, false)
                .await
                .map_err(|limit| {
                    self.refused(
                        "Too many requests from this IP address; slow down",
                        limit,
                        "ip",
                    )
                }),
            None => Ok(()),
        };
        self.held(checked).await
    }

    /// 429 when `wallet` is over the per-wallet limit.
    pub async fn check_wallet(&self, wallet: &WalletAddress) -> Result<(), ApiError> {
        let checked = match &self.wallet {
            Some(keyed) => self.take(keyed, wallet, 1, false).await.map_err(|limit| {
                self.refused(
                    "Too many signed requests for this wallet; slow down",
                    limit,
                    "wallet",
                )
            }),
            None => Ok(()),
        };
        self.held(checked).await
    }

    /// Forgets keys whose buckets are full again (bounded memory), in memory and in a
    /// shared PostgreSQL store; run periodically.
    pub async fn prune(&self) {
        for k in [&self.ip, &self.signed_ip].into_iter().flatten() {
            k.prune();
        }
        if let Some(k) = &self.wallet {
            k.prune();
        }
        if let Some(k) = &self.heavy {
            k.prune();
        }
        if let Some(store) = &self.shared {
            if let Err(shared::Unavailable(why)) = store.prune().await {
                tracing::warn!(reason = why, "pruning shared rate-limit buckets failed");
            }
        }
    }
}

/// Extractor that applies the per-IP limit (429 in the envelope) and yields the client IP.
#[derive(Debug, Clone, Copy)]
pub struct IpLimited(pub IpAddr);

impl FromRequestParts<AppState> for IpLimited {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        state.limits.check_ip(ip).await.inspect_err(|_| {
            state.metrics.rate_limited("ip");
        })?;
        Ok(IpLimited(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64_and_ipv4_is_per_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_bucket(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            ip_bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip_bucket(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            ip_bucket(ip("2001:db8:1:3::1")),
            ip_bucket(ip("2001:db8:1:2::1"))
        );
        assert_eq!(ip_bucket(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(ip_bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    /// Addresses of one /64 draw from one bucket: a client cannot get a fresh limit by
    /// changing the low bits of its address.
    #[tokio::test]
    async fn one_64_is_one_bucket() {
        let config = ServerConfig {
            ip_rate_per_sec: 1,
            ip_rate_burst: 2,
            ..ServerConfig::default()
        };
        let limits = Limits::new(&config);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(limits.check_ip(ip("2001:db8::1")).await.is_ok());
        assert!(limits.check_ip(ip("2001:db8::2")).await.is_ok());
        assert!(limits.check_ip(ip("2001:db8::3")).await.is_err());
        assert!(limits.check_ip(ip("2001:db8:0:1::1")).await.is_ok());
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_used_only_from_trusted_proxies() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let spoof = headers(&["1.2.3.4"]);
        assert_eq!(client_ip(peer, &spoof, &[]), peer);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(peer, &spoof, &trusted), peer);

        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        // The client prepends a fake entry; the proxy appends the real peer.
        let chain = headers(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(
            client_ip(proxy, &chain, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Two proxies, two headers.
        let two = headers(&["6.6.6.6", "198.51.100.7, 10.0.0.3"]);
        assert_eq!(
            client_ip(proxy, &two, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Garbage in the chain stops the walk.
        let garbage = headers(&["198.51.100.7, junk"]);
        assert_eq!(client_ip(proxy, &garbage, &trusted), proxy);
        // With ports and IPv6.
        let ported = headers(&["[2001:db8::1]:443"]);
        assert_eq!(
            client_ip(proxy, &ported, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    /// A refusal is held for the tarpit's time; once [`TARPIT_MAX_HELD`] are held, the
    /// next is answered at once (the tarpit cannot pile up connections without bound).
    #[tokio::test(start_paused = true)]
    async fn the_tarpit_holds_refusals_up_to_its_bound() {
        let config = ServerConfig {
            tarpit_ms: 1000,
            ..ServerConfig::default()
        };
        let limits = std::sync::Arc::new(Limits::new(&config));
        let start = tokio::time::Instant::now();
        limits.hold().await;
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "held");
        let mut held = Vec::new();
        for _ in 0..TARPIT_MAX_HELD {
            let limits = limits.clone();
            held.push(tokio::spawn(async move { limits.hold().await }));
        }
        while limits.tarpit_slots.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let start = tokio::time::Instant::now();
        limits.hold().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "past the bound: at once");
        for h in held {
            h.await.unwrap();
        }
        let off = Limits::new(&ServerConfig {
            tarpit_ms: 0,
            ..ServerConfig::default()
        });
        let start = tokio::time::Instant::now();
        off.hold().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "0 turns it off");
    }

    /// A refused signature pays the failure cost: with a burst of 40 and a cost of 20, two
    /// refusals empty the bucket.
    #[tokio::test]
    async fn a_refused_signature_pays_the_failure_cost() {
        let config = ServerConfig {
            signed_ip_rate_per_sec: 1,
            signed_ip_rate_burst: 40,
            signed_ip_failure_cost: 20,
            tarpit_ms: 0,
            ..ServerConfig::default()
        };
        let limits = Limits::new(&config);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            assert!(limits.check_signed_ip(ip).await.is_ok());
            limits.charge_signed_failure(ip).await;
        }
        assert!(limits.check_signed_ip(ip).await.is_err());
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..40 {
            assert!(
                limits.check_signed_ip(other).await.is_ok(),
                "honest requests pay one"
            );
        }
    }

    #[test]
    fn buckets_refuse_past_the_burst() {
        let keyed = Keyed::<u8>::new("t", 1, 3).unwrap();
        for _ in 0..3 {
            assert!(keyed.check(&1).is_ok());
        }
        let refused = keyed.check(&1).unwrap_err();
        assert_eq!(refused.limit, 1);
        assert!(refused.retry_after_seconds >= 1);
        assert!(keyed.check(&2).is_ok(), "other keys are independent");
        assert!(
            Keyed::<u8>::new("t", 0, 10).is_none(),
            "0 turns the limit off"
        );
    }
}
