//! Server configuration: command-line flags, each with an environment-variable fallback and
//! a default, so the server runs with no configuration at all (127.0.0.1:8080, SQLite in
//! `./data/`).
//!
//! | flag | environment | default |
//! | --- | --- | --- |
//! | `--bind` | `AGENTPMT_BIND` | `127.0.0.1:8080` |
//! | `--database-url` | `AGENTPMT_DATABASE_URL` | `sqlite://./data/agentpmt.db` |
//! | `--public-url` | `AGENTPMT_PUBLIC_URL` | `http://<bound address>` |
//! | `--session-ttl-secs` | `AGENTPMT_SESSION_TTL_SECS` | `900` |
//! | `--admin-token` | `AGENTPMT_ADMIN_TOKEN` | none (operator API disabled) |
//! | `--admin-token-sha256` | `AGENTPMT_ADMIN_TOKEN_SHA256` | none |
//! | `--max-body-bytes` | `AGENTPMT_MAX_BODY_BYTES` | `65536` |
//! | `--request-timeout-secs` | `AGENTPMT_REQUEST_TIMEOUT_SECS` | `30` |
//! | `--production` | `AGENTPMT_PRODUCTION` (or `AGENTPMT_ENV=production`) | off |
//! | `--header-read-timeout-secs` | `AGENTPMT_HEADER_READ_TIMEOUT_SECS` | `10` (1–300) |
//! | `--max-connections` | `AGENTPMT_MAX_CONNECTIONS` | `4096` |
//! | `--db-max-connections` | `AGENTPMT_DB_MAX_CONNECTIONS` | `16` |
//! | `--log-format` | `AGENTPMT_LOG_FORMAT` | `text` |
//! | `--payments-config` | `AGENTPMT_PAYMENTS_CONFIG` | none (the dev network) |
//! | `--settlement-private-key` | `AGENTPMT_SETTLEMENT_PRIVATE_KEY` | none |
//! | `--reconcile-interval-secs` | `AGENTPMT_RECONCILE_INTERVAL_SECS` | `30` |
//! | `--heartbeat-interval-secs` | `AGENTPMT_HEARTBEAT_INTERVAL_SECS` | `2` (1–60) |
//! | `--instance-timeout-secs` | `AGENTPMT_INSTANCE_TIMEOUT_SECS` | `10` (3–600, at least twice the heartbeat interval) |
//! | `--rate-limit-backend` | `AGENTPMT_RATE_LIMIT_BACKEND` | `memory` (per instance; `postgres` or `redis`: shared) |
//! | `--redis-url` | `AGENTPMT_REDIS_URL` | none (needed by `--rate-limit-backend redis`) |
//! | `--redis-key-prefix` | `AGENTPMT_REDIS_KEY_PREFIX` | `agentpmt:limits` |
//! | `--trusted-proxies` | `AGENTPMT_TRUSTED_PROXIES` | none (comma-separated IPs or CIDRs) |
//! | `--agentaddress-limit` | `AGENTPMT_AGENTADDRESS_LIMIT` | `1` |
//! | `--agentaddress-window-secs` | `AGENTPMT_AGENTADDRESS_WINDOW_SECS` | `60` |
//! | `--ip-rate-per-sec` | `AGENTPMT_IP_RATE_PER_SEC` | `100` (0: off) |
//! | `--ip-rate-burst` | `AGENTPMT_IP_RATE_BURST` | `1000` |
//! | `--wallet-rate-per-sec` | `AGENTPMT_WALLET_RATE_PER_SEC` | `1000` (0: off) |
//! | `--wallet-rate-burst` | `AGENTPMT_WALLET_RATE_BURST` | `2000` |
//! | `--catalog` | `AGENTPMT_CATALOG` | `demo` (built-in tools; a TOML/JSON file path, or `none`) |
//! | `--secrets-key` | `AGENTPMT_SECRETS_KEY` | none (64 hex digits; needed to store vendor secrets) |
//! | `--workflow-session-idle-secs` | `AGENTPMT_WORKFLOW_SESSION_IDLE_SECS` | `3600` |
//! | `--job-reservation-secs` | `AGENTPMT_JOB_RESERVATION_SECS` | `1800` |
//! | `--job-post-hosts` | `AGENTPMT_JOB_POST_HOSTS` | `platform=host` pairs of x, linkedin, reddit, facebook, threads, bluesky, mastodon, instagram, youtube, tiktok |
//! | `--job-verify-interval-ms` | `AGENTPMT_JOB_VERIFY_INTERVAL_MS` | `5000` |
//! | `--job-verify-timeout-ms` | `AGENTPMT_JOB_VERIFY_TIMEOUT_MS` | `10000` |
//! | `--job-verify-backoff-ms` | `AGENTPMT_JOB_VERIFY_BACKOFF_MS` | `30000` |
//! | `--job-verify-max-attempts` | `AGENTPMT_JOB_VERIFY_MAX_ATTEMPTS` | `5` |

use crate::payments::networks::{NetworkConfigError, Networks, PaymentsFile};
use crate::payments::Fault;
use clap::{Args, ValueEnum};
use secrecy::SecretString;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// The catalog loaded when none is configured.
pub const DEFAULT_CATALOG: &str = "demo";
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/agentpmt.db";
pub const DEFAULT_SESSION_TTL_SECS: u64 = 900;
/// Where the operator console is served by default.
pub const DEFAULT_CONSOLE_PATH: &str = "/console";
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Default time a client has to send a request's headers (also: how long an idle
/// keep-alive connection is kept).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Default cap on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Length of the kernel's queue of connections not yet accepted (`listen(2)` backlog).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 16;
pub const DEFAULT_RECONCILE_INTERVAL_SECS: u64 = 30;
pub const DEFAULT_RECEIPT_POLL_MS: u64 = 500;
/// Default prefix of the Redis keys of shared limits.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "agentpmt:limits";
/// Default time between two heartbeats of an instance.
pub const DEFAULT_HEARTBEAT_INTERVAL_SECS: u64 = 2;
/// Default silence after which an instance counts as dead and its work is taken over.
pub const DEFAULT_INSTANCE_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_AGENTADDRESS_LIMIT: u64 = 1;
pub const DEFAULT_AGENTADDRESS_WINDOW_SECS: u64 = 60;
pub const DEFAULT_IP_RATE_PER_SEC: u32 = 100;
pub const DEFAULT_IP_RATE_BURST: u32 = 1000;
pub const DEFAULT_SIGNED_IP_RATE_PER_SEC: u32 = 2000;
pub const DEFAULT_SIGNED_IP_RATE_BURST: u32 = 4000;
pub const DEFAULT_WALLET_RATE_PER_SEC: u32 = 1000;
pub const DEFAULT_WALLET_RATE_BURST: u32 = 2000;
/// Tokens of the signed per-IP bucket a request pays when its signature is refused.
pub const DEFAULT_SIGNED_IP_FAILURE_COST: u32 = 20;
/// Milliseconds a refused request (429, or an oversized body past its drain budget) is held
/// before its answer.
pub const DEFAULT_TARPIT_MS: u64 = 1000;
/// CPU milliseconds per second of heavy built-in tools one payer may use.
pub const DEFAULT_HEAVY_CPU_MS_PER_SEC: u32 = 100;
/// Burst of the heavy built-in CPU budget, in CPU milliseconds.
pub const DEFAULT_HEAVY_CPU_MS_BURST: u32 = 1000;

/// Where rate limits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum RateLimitBackend {
    /// In this instance's memory: N instances allow N times the limit.
    #[default]
    Memory,
    /// In the PostgreSQL database the instances share.
    Postgres,
    /// In Redis (`--redis-url`).
    Redis,
}

impl RateLimitBackend {
    /// The name used in flags and 429 details.
    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitBackend::Memory => "memory",
            RateLimitBackend::Postgres => "postgres",
            RateLimitBackend::Redis => "redis",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the server can be configured with.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address and port to listen on (port 0 picks a free port).
    #[arg(long, env = "AGENTPMT_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// `sqlite://<path>` (created on first start) or `postgres://user@host/db`.
    #[arg(long, env = "AGENTPMT_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Absolute base URL clients reach this server at (used in help links).
    #[arg(long, env = "AGENTPMT_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Lifetime of a session nonce, in seconds.
    #[arg(long, env = "AGENTPMT_SESSION_TTL_SECS", default_value_t = DEFAULT_SESSION_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub session_ttl_secs: u64,

    /// Bearer token of the operator API under /api/admin/ (kept only as its SHA-256).
    #[arg(long, env = "AGENTPMT_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub admin_token: Option<SecretString>,

    /// Bearer token that `/metrics` and the details of `/readyz` require (kept only as its
    /// SHA-256; the admin token is accepted too). Unset: both are public, as documented.
    #[arg(long, env = "AGENTPMT_OPS_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub ops_token: Option<SecretString>,

    /// Hex SHA-256 of the operator token, instead of the token itself.
    #[arg(
        long,
        env = "AGENTPMT_ADMIN_TOKEN_SHA256",
        conflicts_with = "admin_token"
    )]
    pub admin_token_sha256: Option<String>,

    /// Where the operator console is served (a path starting with `/`; it is off when no
    /// admin token is configured).
    #[arg(long, env = "AGENTPMT_CONSOLE_PATH", default_value = DEFAULT_CONSOLE_PATH,
          value_parser = parse_console_path)]
    pub console_path: String,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "AGENTPMT_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Time limit of one request, in seconds.
    #[arg(long, env = "AGENTPMT_REQUEST_TIMEOUT_SECS", default_value_t = DEFAULT_REQUEST_TIMEOUT_SECS)]
    pub request_timeout_secs: u64,

    /// Seconds a client has to send a request's headers, and that an idle keep-alive
    /// connection is kept open (slow or half-open connections are closed after it).
    #[arg(long, env = "AGENTPMT_HEADER_READ_TIMEOUT_SECS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout_secs: u64,

    /// Most client connections open at once; further connections wait in the listen
    /// queue until one closes.
    #[arg(long, env = "AGENTPMT_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,

    /// Connections the kernel queues before they are accepted (the `listen(2)` backlog,
    /// capped by `net.core.somaxconn`). A short queue overflows under a connection flood and
    /// well-behaved clients then wait for their SYN to be retried (1 s and more).
    #[arg(long, env = "AGENTPMT_LISTEN_BACKLOG", default_value_t = DEFAULT_LISTEN_BACKLOG,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub listen_backlog: u32,

    /// PostgreSQL pool size (SQLite: read connections, at most 8).
    #[arg(long, env = "AGENTPMT_DB_MAX_CONNECTIONS", default_value_t = DEFAULT_DB_MAX_CONNECTIONS)]
    pub db_max_connections: u32,

    /// Log format.
    #[arg(long, env = "AGENTPMT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// TOML file of accepted payment networks (see the README); none: the dev network.
    #[arg(long, env = "AGENTPMT_PAYMENTS_CONFIG")]
    pub payments_config: Option<String>,

    /// Gas-paying private key (hex) of `evm` settlement.
    #[arg(long, env = "AGENTPMT_SETTLEMENT_PRIVATE_KEY", hide_env_values = true,
          value_parser = parse_key)]
    pub settlement_private_key: Option<SecretString>,

    /// How often open settlements are reconciled from chain state, in seconds.
    #[arg(long, env = "AGENTPMT_RECONCILE_INTERVAL_SECS", default_value_t = DEFAULT_RECONCILE_INTERVAL_SECS)]
    pub reconcile_interval_secs: u64,

    /// Seconds between two heartbeats of this instance in the database.
    #[arg(long, env = "AGENTPMT_HEARTBEAT_INTERVAL_SECS", default_value_t = DEFAULT_HEARTBEAT_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub heartbeat_interval_secs: u64,

    /// Seconds without a heartbeat after which an instance counts as dead: the others take
    /// over its holds, settlements and verifications (within this plus one heartbeat
    /// interval). At least twice `--heartbeat-interval-secs`.
    #[arg(long, env = "AGENTPMT_INSTANCE_TIMEOUT_SECS", default_value_t = DEFAULT_INSTANCE_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(3..=600))]
    pub instance_timeout_secs: u64,

    /// Where the per-IP and per-wallet limits are kept: `memory` (each instance counts on
    /// its own), or `postgres` / `redis` (one count shared by every instance).
    #[arg(long, env = "AGENTPMT_RATE_LIMIT_BACKEND", value_enum, default_value_t = RateLimitBackend::Memory)]
    pub rate_limit_backend: RateLimitBackend,

    /// Redis of `--rate-limit-backend redis` (`redis://host:port/db`).
    #[arg(long, env = "AGENTPMT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<SecretString>,

    /// Prefix of the Redis keys of shared limits (deployments sharing one Redis use their own).
    #[arg(long, env = "AGENTPMT_REDIS_KEY_PREFIX", default_value = DEFAULT_REDIS_KEY_PREFIX)]
    pub redis_key_prefix: String,

    /// Payment networks given directly (embedding and tests); wins over `payments_config`.
    #[arg(skip)]
    pub payments: Option<PaymentsFile>,

    /// Receipt polling interval of `evm` settlement, in milliseconds.
    #[arg(skip = DEFAULT_RECEIPT_POLL_MS)]
    pub receipt_poll_ms: u64,

    /// Injected fault (tests of recovery paths only).
    #[arg(skip)]
    pub fault: Option<Fault>,

    /// Production posture: refuse to start with development settings (the dev settlement
    /// network, no operator token, vendor secrets without a secrets key, confirmation depth 0,
    /// a wildcard trusted-proxy list). Also set by `AGENTPMT_ENV=production`.
    #[arg(long, env = "AGENTPMT_PRODUCTION")]
    pub production: bool,

    /// Reverse proxies whose `X-Forwarded-For` is trusted (comma-separated IPs or CIDRs).
    /// From any other peer the header is ignored and the peer address is the client.
    #[arg(long, env = "AGENTPMT_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpNet>,

    /// New AgentAddresses per source address per window, shared by every instance on the
    /// same database.
    #[arg(long, env = "AGENTPMT_AGENTADDRESS_LIMIT", default_value_t = DEFAULT_AGENTADDRESS_LIMIT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub agentaddress_limit: u64,

    /// Window of the AgentAddress limit, in seconds.
    #[arg(long, env = "AGENTPMT_AGENTADDRESS_WINDOW_SECS", default_value_t = DEFAULT_AGENTADDRESS_WINDOW_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub agentaddress_window_secs: u64,

    /// Sustained requests per second per client IP on unauthenticated endpoints (session
    /// creation, AgentAddress, agent-help); 0 turns the limit off. Per instance.
    #[arg(long, env = "AGENTPMT_IP_RATE_PER_SEC", default_value_t = DEFAULT_IP_RATE_PER_SEC)]
    pub ip_rate_per_sec: u32,

    /// Burst allowance of the per-IP limit.
    #[arg(long, env = "AGENTPMT_IP_RATE_BURST", default_value_t = DEFAULT_IP_RATE_BURST)]
    pub ip_rate_burst: u32,

    /// Sustained signed requests per second per client IP (an IPv6 client per /64) on signed
    /// endpoints, checked before the body is parsed; a signature that matches none of the
    /// accepted messages also costs one token per extra recovery. 0 turns the limit off
    /// (benchmarks from one address). Per instance.
    #[arg(long, env = "AGENTPMT_SIGNED_IP_RATE_PER_SEC", default_value_t = DEFAULT_SIGNED_IP_RATE_PER_SEC)]
    pub signed_ip_rate_per_sec: u32,

    /// Burst allowance of the signed per-IP limit.
    #[arg(long, env = "AGENTPMT_SIGNED_IP_RATE_BURST", default_value_t = DEFAULT_SIGNED_IP_RATE_BURST)]
    pub signed_ip_rate_burst: u32,

    /// Tokens of the signed per-IP bucket a request pays, in all, when its signature is
    /// refused (expired, malformed, or matching no accepted message): a signature flood
    /// is slowed down this many times sooner than honest traffic. 0: one token, as any
    /// request.
    #[arg(long, env = "AGENTPMT_SIGNED_IP_FAILURE_COST", default_value_t = DEFAULT_SIGNED_IP_FAILURE_COST)]
    pub signed_ip_failure_cost: u32,

    /// Milliseconds a rate-limited request (a 429, or an oversized body past its drain
    /// budget) is held before it is answered, so a client that ignores `Retry-After`
    /// cannot loop on cheap refusals. At most 1024 requests are held at once; past that
    /// they are answered at once. 0 turns it off.
    #[arg(long, env = "AGENTPMT_TARPIT_MS", default_value_t = DEFAULT_TARPIT_MS,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub tarpit_ms: u64,

    /// CPU milliseconds per second that heavy built-in tools (`json-tools/validate`, ...)
    /// may use for one payer (a wallet, or a budget's account); past the burst a call is
    /// refused with 429 before any hold is placed. 0 turns the budget off. Per instance.
    #[arg(long, env = "AGENTPMT_HEAVY_CPU_MS_PER_SEC", default_value_t = DEFAULT_HEAVY_CPU_MS_PER_SEC)]
    pub heavy_cpu_ms_per_sec: u32,

    /// Burst of the heavy built-in CPU budget, in CPU milliseconds.
    #[arg(long, env = "AGENTPMT_HEAVY_CPU_MS_BURST", default_value_t = DEFAULT_HEAVY_CPU_MS_BURST)]
    pub heavy_cpu_ms_burst: u32,

    /// Sustained signed requests per second per wallet, checked before signature recovery;
    /// 0 turns the limit off. Per instance.
    #[arg(long, env = "AGENTPMT_WALLET_RATE_PER_SEC", default_value_t = DEFAULT_WALLET_RATE_PER_SEC)]
    pub wallet_rate_per_sec: u32,

    /// Burst allowance of the per-wallet limit.
    #[arg(long, env = "AGENTPMT_WALLET_RATE_BURST", default_value_t = DEFAULT_WALLET_RATE_BURST)]
    pub wallet_rate_burst: u32,

    /// Tool catalog loaded (idempotently) at start-up: `demo`, `none`, or a TOML/JSON file.
    #[arg(long, env = "AGENTPMT_CATALOG", default_value = DEFAULT_CATALOG)]
    pub catalog: String,

    /// Key (64 hex digits) that encrypts vendor HMAC secrets at rest.
    #[arg(long, env = "AGENTPMT_SECRETS_KEY", hide_env_values = true)]
    pub secrets_key: Option<SecretString>,
    /// Seconds without activity (start, attributed tool call) after which a workflow
    /// session ends by itself.
    #[arg(long, env = "AGENTPMT_WORKFLOW_SESSION_IDLE_SECS",
          default_value_t = crate::workflows::DEFAULT_SESSION_IDLE_SECS,
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub workflow_session_idle_secs: u64,

    /// Length of a job reservation (and of a workflow-creation token), in seconds,
    /// measured on the database clock.
    #[arg(long, env = "AGENTPMT_JOB_RESERVATION_SECS",
          default_value_t = crate::jobs::DEFAULT_RESERVATION_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub job_reservation_secs: u64,

    /// Accepted social post URL hosts per platform, as `platform=host` (comma-separated;
    /// a host also matches its subdomains). Replaces the defaults when given.
    #[arg(long, env = "AGENTPMT_JOB_POST_HOSTS", value_delimiter = ',',
          default_values_t = crate::jobs::default_post_hosts())]
    pub job_post_hosts: Vec<String>,

    /// How often the job verifier looks for queued submissions, in milliseconds.
    #[arg(long, env = "AGENTPMT_JOB_VERIFY_INTERVAL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub job_verify_interval_ms: u64,

    /// Time limit of one post fetch by the verifier, in milliseconds.
    #[arg(long, env = "AGENTPMT_JOB_VERIFY_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub job_verify_timeout_ms: u64,

    /// First retry delay after a transient verification failure, in milliseconds
    /// (doubled on each further attempt).
    #[arg(long, env = "AGENTPMT_JOB_VERIFY_BACKOFF_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub job_verify_backoff_ms: u64,

    /// Automated check attempts before a submission goes to `needs_human`.
    #[arg(long, env = "AGENTPMT_JOB_VERIFY_MAX_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub job_verify_max_attempts: u32,
}

fn parse_key(s: &str) -> Result<SecretString, String> {
    let hex = s.trim().strip_prefix("0x").unwrap_or(s.trim());
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the settlement key must be 32 bytes of hex".into());
    }
    Ok(SecretString::from(s.trim().to_owned()))
}

/// An IP network (`10.0.0.0/8`, `::1`, `192.168.1.7`): a trusted-proxy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether this is every address (`0.0.0.0/0`, `::/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical_ip(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

fn parse_console_path(s: &str) -> Result<String, String> {
    let path = s.trim_end_matches('/');
    let ok = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 100
        && !path.starts_with("/api")
        && path[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(path.to_owned())
    } else {
        Err("the console path is like /console: segments of letters, digits, - and _, not under /api".into())
    }
}

fn parse_secret(s: &str) -> Result<SecretString, String> {
    if s.len() < 16 {
        return Err("the admin token must be at least 16 characters".into());
    }
    Ok(SecretString::from(s.to_owned()))
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: DEFAULT_BIND.parse().expect("valid default bind address"),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            public_url: None,
            session_ttl_secs: DEFAULT_SESSION_TTL_SECS,
            admin_token: None,
            admin_token_sha256: None,
            ops_token: None,
            console_path: DEFAULT_CONSOLE_PATH.to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            db_max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            log_format: LogFormat::Text,
            payments_config: None,
            settlement_private_key: None,
            reconcile_interval_secs: DEFAULT_RECONCILE_INTERVAL_SECS,
            heartbeat_interval_secs: DEFAULT_HEARTBEAT_INTERVAL_SECS,
            instance_timeout_secs: DEFAULT_INSTANCE_TIMEOUT_SECS,
            rate_limit_backend: RateLimitBackend::Memory,
            redis_url: None,
            redis_key_prefix: DEFAULT_REDIS_KEY_PREFIX.to_owned(),
            payments: None,
            receipt_poll_ms: DEFAULT_RECEIPT_POLL_MS,
            fault: None,
            production: false,
            trusted_proxies: Vec::new(),
            agentaddress_limit: DEFAULT_AGENTADDRESS_LIMIT,
            agentaddress_window_secs: DEFAULT_AGENTADDRESS_WINDOW_SECS,
            ip_rate_per_sec: DEFAULT_IP_RATE_PER_SEC,
            ip_rate_burst: DEFAULT_IP_RATE_BURST,
            signed_ip_rate_per_sec: DEFAULT_SIGNED_IP_RATE_PER_SEC,
            signed_ip_rate_burst: DEFAULT_SIGNED_IP_RATE_BURST,
            signed_ip_failure_cost: DEFAULT_SIGNED_IP_FAILURE_COST,
            tarpit_ms: DEFAULT_TARPIT_MS,
            heavy_cpu_ms_per_sec: DEFAULT_HEAVY_CPU_MS_PER_SEC,
            heavy_cpu_ms_burst: DEFAULT_HEAVY_CPU_MS_BURST,
            wallet_rate_per_sec: DEFAULT_WALLET_RATE_PER_SEC,
            wallet_rate_burst: DEFAULT_WALLET_RATE_BURST,
            catalog: DEFAULT_CATALOG.to_owned(),
            secrets_key: None,
            workflow_session_idle_secs: crate::workflows::DEFAULT_SESSION_IDLE_SECS,
            job_reservation_secs: crate::jobs::DEFAULT_RESERVATION_SECS,
            job_post_hosts: crate::jobs::default_post_hosts(),
            job_verify_interval_ms: 5000,
            job_verify_timeout_ms: 10_000,
            job_verify_backoff_ms: 30_000,
            job_verify_max_attempts: 5,
        }
    }
}

impl ServerConfig {
    /// Checks the liveness settings against each other.
    pub fn check_liveness(&self) -> Result<(), ConfigError> {
        if self.instance_timeout_secs < 2 * self.heartbeat_interval_secs {
            return Err(ConfigError::InstanceTimeout {
                timeout: self.instance_timeout_secs,
                interval: self.heartbeat_interval_secs,
            });
        }
        Ok(())
    }

    /// The secrets key of vendor secrets, if configured.
    pub fn secrets_key(&self) -> Result<Option<crate::tools::secrets::SecretsKey>, ConfigError> {
        Ok(match &self.secrets_key {
            Some(hex) => Some(crate::tools::secrets::SecretsKey::from_hex(hex)?),
            None => None,
        })
    }

    /// The catalog to load at start-up (`None` for `--catalog none`).
    pub fn catalog_file(&self) -> Result<Option<crate::tools::catalog::CatalogFile>, ConfigError> {
        use crate::tools::catalog::{CatalogFile, DEMO_CATALOG};
        let text = match self.catalog.as_str() {
            "none" | "" => return Ok(None),
            "demo" => DEMO_CATALOG.to_owned(),
            path => std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Catalog(format!("{path}: {e}")))?,
        };
        CatalogFile::parse(&text)
            .map(Some)
            .map_err(|e| ConfigError::Catalog(format!("{}: {e}", self.catalog)))
    }

    /// The accepted payment networks: `payments`, else the file, else the dev network.
    pub fn networks(&self) -> Result<Networks, ConfigError> {
        Ok(match (&self.payments, &self.payments_config) {
            (Some(file), _) => Networks::resolve(file)?,
            (None, Some(path)) => Networks::load(path)?,
            (None, None) => Networks::dev(),
        })
    }

    /// The SHA-256 of the configured admin token, if any.
    pub fn admin_token_digest(&self) -> Result<Option<[u8; 32]>, ConfigError> {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        if let Some(token) = &self.admin_token {
            return Ok(Some(
                Sha256::digest(token.expose_secret().as_bytes()).into(),
            ));
        }
        match &self.admin_token_sha256 {
            None => Ok(None),
            Some(hex_digest) => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(hex_digest.trim(), &mut digest)
                    .map_err(|_| ConfigError::AdminTokenDigest)?;
                Ok(Some(digest))
            }
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--admin-token-sha256 must be 64 hex digits")]
    AdminTokenDigest,
    #[error(transparent)]
    Payments(#[from] NetworkConfigError),
    #[error(transparent)]
    Settlement(#[from] crate::payments::settle::SettlerError),
    #[error("--secrets-key: {0}")]
    SecretsKey(#[from] crate::tools::secrets::SecretsError),
    #[error("--catalog: {0}")]
    Catalog(String),
    #[error("--job-post-hosts: {0}")]
    JobPostHosts(String),
    #[error("--production: refusing to start: {}", .0.join("; "))]
    Production(Vec<String>),
    #[error("--instance-timeout-secs ({timeout}) must be at least twice --heartbeat-interval-secs ({interval})")]
    InstanceTimeout { timeout: u64, interval: u64 },
    #[error("--rate-limit-backend: {0}")]
    RateLimitBackend(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy".parse::<IpNet>().is_err());
    }
}
