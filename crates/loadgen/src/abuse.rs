//! The abuse scenario (`--abuse`): a well-behaved agent's latency with and without hostile
//! clients, in one run, on a server on this machine's loopback.
//!
//! Two phases of `--abuse-secs` each. In both, the agent sends signed balance requests and
//! signed credit invokes alternately, open loop at `--agent-rate` requests/s from
//! 127.0.0.1 (latency from each request's due time), on a thread and runtime of its own.
//! In the second phase, hostile clients run at the same time, each kind from a loopback
//! address of its own (127.0.0.2 …), so per-address limits treat them as the separate
//! clients they would be:
//!
//! | kind | what it does |
//! | --- | --- |
//! | `slowloris` | connections sending a header line per second, never finishing |
//! | `half_open` | connections that send nothing |
//! | `signature_flood` | signed requests from random wallets without sessions, and forged invokes over a real session (dozens of accepted message variants each) |
//! | `oversized` | 2 MiB bodies to a body-limited route |
//! | `cpu_heavy` | paid `json-tools/validate` calls with a back-referencing pattern |
//! | `help_spam` | the largest help tickets accepted (about 20 KiB) |
//!
//! Every hostile kind is bounded: a fixed number of connections, closed loop (or one line
//! per second), for the phase's duration. After each phase the server's resident memory
//! (`--server-pid`, from `/proc`) and the SQLite database's size (`--db-file`, with its
//! WAL) are read; growth is reported per minute.

use crate::fire::{exchange, new_histogram, Sender, Target, BALANCE_PATH};
use crate::presign::{self, Scenario, Wallet};
use crate::server_proc::{db_mib, rss_mib};
use agentpmt_protocol::wire::{MAX_HELP_CONTEXT_BYTES, MAX_HELP_MESSAGE_CHARS};
use agentpmt_protocol::PrivateKey;
use anyhow::{bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hostile connections of each connection-holding kind.
const SLOWLORIS_CONNECTIONS: usize = 200;
const HALF_OPEN_CONNECTIONS: usize = 300;
/// Closed-loop connections of each request-sending kind.
const FLOOD_CONNECTIONS: usize = 2;
const CPU_HEAVY_CONNECTIONS: usize = 2;
/// Pre-signed random-wallet bodies the signature flood cycles through.
const FLOOD_BODIES: usize = 2_000;
/// Body size of the oversized requests (the server's default limit is 64 KiB; it drains up
/// to 8 MiB before answering 413).
const OVERSIZED_BYTES: usize = 2 * 1024 * 1024;
/// The agent's invoke: a cheap built-in.
const AGENT_PRODUCT: &str = "text-tools";
const AGENT_ACTION: &str = "extract-urls";
/// Credits given to the agent's and the CPU-heavy client's wallets.
const FUND_CREDITS: i64 = 100_000_000;

/// What `--abuse` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub phase: Duration,
    pub agent_rate: f64,
    pub server_pid: Option<u32>,
    pub db_file: Option<PathBuf>,
    pub admin_token: String,
    /// The hostile kinds to run (empty: all of them).
    pub kinds: Vec<String>,
}

/// Every hostile kind, in the order they start.
pub const KINDS: &[&str] = &[
    "slowloris",
    "half_open",
    "signature_flood",
    "oversized",
    "cpu_heavy",
    "help_spam",
];

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
    pub agent_requests: u64,
    pub agent_errors: BTreeMap<String, u64>,
    pub agent_latency_ms: crate::report::Percentiles,
    pub server_rss_mib: Option<f64>,
    pub server_rss_growth_mib_per_min: Option<f64>,
    pub db_mib: Option<f64>,
    pub db_growth_mib_per_min: Option<f64>,
    /// Per hostile kind: what it sent and what it got (`"429"`, `"cut"`, ...).
    pub hostile: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub agent_rate: f64,
    pub phases: Vec<Phase>,
    /// p99 with the attack ÷ p99 without (aim: at most 2).
    pub p99_ratio: f64,
}

impl Report {
    /// The README table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "agent at {:.0} req/s (balance + invoke), {}\n\n",
            self.agent_rate, self.server
        ));
        out.push_str("| phase | agent requests | agent errors | p50 ms | p99 ms | max ms | server RSS MiB | RSS growth MiB/min | DB MiB | DB growth MiB/min |\n");
        out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        let opt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
        for p in &self.phases {
            out.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |\n",
                p.name,
                p.agent_requests,
                p.agent_errors.values().sum::<u64>(),
                p.agent_latency_ms.p50,
                p.agent_latency_ms.p99,
                p.agent_latency_ms.max,
                opt(p.server_rss_mib),
                opt(p.server_rss_growth_mib_per_min),
                opt(p.db_mib),
                opt(p.db_growth_mib_per_min),
            ));
        }
        out.push_str(&format!(
            "\np99 with attack / without: {:.2} (aim ≤ 2)\n",
            self.p99_ratio
        ));
        for p in self.phases.iter().filter(|p| !p.hostile.is_empty()) {
            out.push_str(&format!("\nhostile clients during `{}`:\n", p.name));
            for (kind, tally) in &p.hostile {
                let parts: Vec<String> = tally.iter().map(|(k, v)| format!("{k} {v}")).collect();
                out.push_str(&format!("- {kind}: {}\n", parts.join(", ")));
            }
            for (kind, count) in &p.agent_errors {
                out.push_str(&format!("- agent error {kind}: {count}\n"));
            }
        }
        out
    }

    /// Whether the agent lost a request in any phase.
    pub fn agent_failed(&self) -> bool {
        self.phases.iter().any(|p| !p.agent_errors.is_empty())
    }
}

/// Counters of one hostile kind.
#[derive(Debug, Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, what: impl Into<String>) {
        *self
            .0
            .lock()
            .expect("tally lock")
            .entry(what.into())
            .or_default() += 1;
    }

    fn status(&self, status: StatusCode) {
        self.add(status.as_u16().to_string());
    }

    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.0.lock().expect("tally lock"))
    }
}

/// The loopback address of hostile kind `n` (127.0.0.2 for the first).
fn hostile_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n))
}

/// Runs both phases and reports.
pub async fn run(target: Arc<Target>, options: Options) -> Result<Report> {
    if !target.addr().ip().is_loopback() {
        bail!("--abuse runs only against a server on this machine's loopback (127.0.0.1)");
    }
    if !(options.agent_rate.is_finite() && options.agent_rate > 0.0) {
        bail!("--agent-rate must be positive");
    }
    if let Some(unknown) = options.kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        bail!(
            "unknown hostile kind {unknown}: one of {}",
            KINDS.join(", ")
        );
    }
    // The agent's wallet and the CPU-heavy and forging clients' wallets, funded and with
    // sessions (opened from 127.0.0.1, before anything hostile runs).
    let keys: Vec<PrivateKey> = (0..3).map(|_| PrivateKey::random()).collect();
    presign::fund(&target, &keys, &options.admin_token, FUND_CREDITS).await?;
    let sessions = presign::open_sessions(&target, &keys, 1).await?;
    if sessions.lifetime < options.phase * 2 + Duration::from_secs(30) {
        bail!(
            "sessions last {:?}: shorten --abuse-secs so both phases fit",
            sessions.lifetime
        );
    }
    let [agent, heavy, forger]: [Wallet; 3] = sessions
        .wallets
        .try_into()
        .map_err(|_| anyhow::anyhow!("expected three sessions"))?;

    let baseline = phase(&target, &options, "without attack", &agent, None).await?;
    let hostile = Hostile {
        heavy,
        forger,
        flood: Arc::new(random_wallet_bodies(FLOOD_BODIES)?),
    };
    let attacked = phase(&target, &options, "with attack", &agent, Some(hostile)).await?;
    let p99_ratio = if baseline.agent_latency_ms.p99 > 0.0 {
        attacked.agent_latency_ms.p99 / baseline.agent_latency_ms.p99
    } else {
        0.0
    };
    Ok(Report {
        server: target.url().to_owned(),
        agent_rate: options.agent_rate,
        phases: vec![baseline, attacked],
        p99_ratio,
    })
}

/// What the hostile clients need.
struct Hostile {
    heavy: Wallet,
    forger: Wallet,
    flood: Arc<Vec<Bytes>>,
}

/// Signed balance bodies of random wallets with made-up session nonces.
fn random_wallet_bodies(count: usize) -> Result<Vec<Bytes>> {
    (0..count)
        .map(|i| {
            let wallet = Wallet {
                key: PrivateKey::random(),
                session_nonce: format!("made-up-session-{i}"),
            };
            presign::sign_balance(&wallet, &format!("flood-{i}"))
        })
        .collect()
}

async fn phase(
    target: &Arc<Target>,
    options: &Options,
    name: &'static str,
    agent: &Wallet,
    hostile: Option<Hostile>,
) -> Result<Phase> {
    let rss_before = options.server_pid.and_then(rss_mib);
    let db_before = options.db_file.as_deref().and_then(db_mib);
    let started = Instant::now();
    let until = started + options.phase;
    let stop = Arc::new(AtomicBool::new(false));

    let mut tallies: Vec<(&'static str, Arc<Tally>)> = Vec::new();
    let mut tasks = Vec::new();
    if let Some(h) = &hostile {
        let mut spawn_kind = |kind: &'static str, n: u8, count: usize, job: HostileJob| {
            if !options.kinds.is_empty() && !options.kinds.iter().any(|k| k == kind) {
                return;
            }
            let tally = Arc::new(Tally::default());
            tallies.push((kind, tally.clone()));
            for i in 0..count {
                let ctx = Ctx {
                    target: target.clone(),
                    from: hostile_ip(n),
                    until,
                    stop: stop.clone(),
                    tally: tally.clone(),
                };
                tasks.push(tokio::spawn(job.clone().run(ctx, i)));
            }
        };
        spawn_kind("slowloris", 0, SLOWLORIS_CONNECTIONS, HostileJob::Slowloris);
        spawn_kind("half_open", 1, HALF_OPEN_CONNECTIONS, HostileJob::HalfOpen);
        spawn_kind(
            "signature_flood",
            2,
            FLOOD_CONNECTIONS,
            HostileJob::Flood {
                bodies: h.flood.clone(),
                forger: h.forger.clone(),
            },
        );
        spawn_kind("oversized", 3, 1, HostileJob::Oversized);
        spawn_kind(
            "cpu_heavy",
            4,
            CPU_HEAVY_CONNECTIONS,
            HostileJob::CpuHeavy {
                wallet: h.heavy.clone(),
            },
        );
        spawn_kind("help_spam", 5, 1, HostileJob::HelpSpam);
    }

    let (requests, errors, latency) =
        agent_on_own_thread(target.clone(), agent.clone(), options.agent_rate, until).await?;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss = options.server_pid.and_then(rss_mib);
    let db = options.db_file.as_deref().and_then(db_mib);
    let per_min = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) => Some((a - b) * 60.0 / seconds),
        _ => None,
    };
    Ok(Phase {
        name,
        seconds,
        agent_requests: requests,
        agent_errors: errors,
        agent_latency_ms: crate::report::Percentiles::of(&latency),
        server_rss_mib: rss,
        server_rss_growth_mib_per_min: per_min(rss_before, rss),
        db_mib: db,
        db_growth_mib_per_min: per_min(db_before, db),
        hostile: tallies.into_iter().map(|(k, t)| (k, t.take())).collect(),
    })
}

/// Runs [`run_agent`] on a thread and runtime of its own. The agent is a client of its
/// own, elsewhere than the attackers: sharing the hostile clients' runtime, its requests
/// would wait behind theirs in the load generator's run queue, and that wait would be
/// counted as the server's.
async fn agent_on_own_thread(
    target: Arc<Target>,
    agent: Wallet,
    rate: f64,
    until: Instant,
) -> Result<(u64, BTreeMap<String, u64>, Histogram<u64>)> {
    let thread = std::thread::Builder::new()
        .name("agentpmt-agent".to_owned())
        .spawn(move || -> Result<_> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(run_agent(&target, &agent, rate, until)))
        })?;
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the agent's thread panicked"))?
}

/// The well-behaved agent: balance and invoke alternately, open loop at `rate`, over one
/// keep-alive connection (a new one when it breaks). Latency is from each due time.
async fn run_agent(
    target: &Arc<Target>,
    wallet: &Wallet,
    rate: f64,
    until: Instant,
) -> (u64, BTreeMap<String, u64>, Histogram<u64>) {
    let invoke = Scenario::Invoke {
        product: AGENT_PRODUCT.to_owned(),
        action: AGENT_ACTION.to_owned(),
        parameters: serde_json::json!({"text": "see https://example.org/a"}),
    };
    let invoke_path = invoke.path();
    let mut latency = new_histogram();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut sender: Option<Sender> = None;
    let start = Instant::now();
    let tag = format!(
        "agent-{:x}",
        start.elapsed().as_nanos() ^ u128::from(std::process::id())
    );
    let mut sent = 0u64;
    loop {
        let due = start + Duration::from_secs_f64(sent as f64 / rate);
        if due >= until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let request_id = format!("{tag}-{}-{sent}", unix_nanos());
        let (path, body) = if sent.is_multiple_of(2) {
            (
                BALANCE_PATH.to_owned(),
                presign::sign_balance(wallet, &request_id),
            )
        } else {
            (invoke_path.clone(), invoke.sign(wallet, &request_id))
        };
        sent += 1;
        let Ok(body) = body else {
            *errors.entry("signing".to_owned()).or_default() += 1;
            continue;
        };
        if sender.is_none() {
            sender = target.connect().await.ok();
        }
        let Some(s) = sender.as_mut() else {
            *errors.entry("connect".to_owned()).or_default() += 1;
            continue;
        };
        match exchange(s, target.post(&path, body)).await {
            Ok((status, _)) if status == StatusCode::OK => {
                let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(us.max(1));
            }
            Ok((status, _)) => *errors.entry(status.as_u16().to_string()).or_default() += 1,
            Err(_) => {
                sender = None;
                *errors.entry("transport".to_owned()).or_default() += 1;
            }
        }
    }
    (sent, errors, latency)
}

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One hostile client's surroundings.
struct Ctx {
    target: Arc<Target>,
    from: IpAddr,
    until: Instant,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.until
    }

    async fn sender(&self) -> Option<Sender> {
        match self.target.connect_from(Some(self.from)).await {
            Ok(s) => Some(s),
            Err(_) => {
                self.tally.add("connect_failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                None
            }
        }
    }

    /// Sends `request` on a connection (opened when needed) and tallies the answer.
    async fn send(&self, sender: &mut Option<Sender>, path: &str, body: Bytes) {
        if sender.is_none() {
            *sender = self.sender().await;
        }
        let Some(s) = sender.as_mut() else { return };
        match exchange(s, self.target.post(path, body)).await {
            Ok((status, _)) => self.tally.status(status),
            Err(_) => {
                *sender = None;
                self.tally.add("transport");
            }
        }
    }
}

#[derive(Clone)]
enum HostileJob {
    Slowloris,
    HalfOpen,
    Flood {
        bodies: Arc<Vec<Bytes>>,
        forger: Wallet,
    },
    Oversized,
    CpuHeavy {
        wallet: Wallet,
    },
    HelpSpam,
}

impl HostileJob {
    async fn run(self, ctx: Ctx, index: usize) {
        match self {
            HostileJob::Slowloris => slowloris(&ctx).await,
            HostileJob::HalfOpen => half_open(&ctx).await,
            HostileJob::Flood { bodies, forger } => flood(&ctx, index, &bodies, &forger).await,
            HostileJob::Oversized => {
                let body = Bytes::from(vec![b' '; OVERSIZED_BYTES]);
                let mut sender = None;
                while ctx.running() {
                    ctx.send(&mut sender, "/api/external/agent-help", body.clone())
                        .await;
                }
            }
            HostileJob::CpuHeavy { wallet } => cpu_heavy(&ctx, index, &wallet).await,
            HostileJob::HelpSpam => {
                // The largest ticket the server takes: about 20 KiB.
                let body = serde_json::to_vec(&serde_json::json!({
                    "message": "x".repeat(MAX_HELP_MESSAGE_CHARS),
                    "context": {"note": "y".repeat(MAX_HELP_CONTEXT_BYTES - 64)},
                }))
                .map(Bytes::from)
                .unwrap_or_default();
                let mut sender = None;
                while ctx.running() {
                    ctx.send(&mut sender, "/api/external/agent-help", body.clone())
                        .await;
                }
            }
        }
    }
}

/// Sends a request line and a header line, then one more header line per second, never
/// ending the headers; reconnects when the server cuts it off.
async fn slowloris(ctx: &Ctx) {
    let mut buf = [0u8; 512];
    while ctx.running() {
        let Ok(mut stream) = ctx.target.tcp_from(Some(ctx.from)).await else {
            ctx.tally.add("connect_failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        ctx.tally.add("opened");
        let head = format!(
            "POST {BALANCE_PATH} HTTP/1.1\r\nHost: {}\r\n",
            ctx.target.host()
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            ctx.tally.add("cut");
            continue;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if !ctx.running() {
                        return;
                    }
                    if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        ctx.tally.add("cut");
                        break;
                    }
                }
                read = stream.read(&mut buf) => {
                    // The server answered (408) or closed: either way it gave up on us.
                    let _ = read;
                    ctx.tally.add("cut");
                    break;
                }
            }
        }
    }
}

/// Opens a connection and sends nothing; reconnects when the server closes it.
async fn half_open(ctx: &Ctx) {
    let mut buf = [0u8; 512];
    while ctx.running() {
        let Ok(mut stream) = ctx.target.tcp_from(Some(ctx.from)).await else {
            ctx.tally.add("connect_failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        ctx.tally.add("opened");
        let end = tokio::time::sleep_until(ctx.until.into());
        tokio::select! {
            () = end => return,
            _ = stream.read(&mut buf) => ctx.tally.add("cut"),
        }
    }
}

/// Random-wallet bodies (no session: refused before any recovery) on even connections;
/// forged invokes over a real session (every accepted message variant recovered) on odd.
async fn flood(ctx: &Ctx, index: usize, bodies: &[Bytes], forger: &Wallet) {
    let mut sender = None;
    let mut i = index;
    let stranger = PrivateKey::random();
    let forged_path = format!("/api/external/tools/{AGENT_PRODUCT}/actions/extract_urls/invoke");
    while ctx.running() {
        if index.is_multiple_of(2) {
            let body = bodies[i % bodies.len()].clone();
            ctx.send(&mut sender, BALANCE_PATH, body).await;
        } else {
            // Signed by a stranger over the forger's session, with a non-ASCII parameter
            // and a raw action spelling: the most message variants there are.
            let fake = Wallet {
                key: stranger.clone(),
                session_nonce: forger.session_nonce.clone(),
            };
            let scenario = Scenario::Invoke {
                product: AGENT_PRODUCT.to_owned(),
                action: "extract_urls".to_owned(),
                parameters: serde_json::json!({"text": "é https://example.org"}),
            };
            let Ok(body) = scenario.sign(&fake, &format!("forged-{i}")) else {
                return;
            };
            let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) else {
                return;
            };
            json["wallet_address"] = serde_json::json!(forger.key.address().to_string());
            let body = serde_json::to_vec(&json)
                .map(Bytes::from)
                .unwrap_or_default();
            ctx.send(&mut sender, &forged_path, body).await;
        }
        i += FLOOD_CONNECTIONS;
    }
}

/// Paid calls of `json-tools/validate` with a pattern that backtracks to its budget.
async fn cpu_heavy(ctx: &Ctx, index: usize, wallet: &Wallet) {
    let scenario = Scenario::Invoke {
        product: "json-tools".to_owned(),
        action: "validate".to_owned(),
        parameters: serde_json::json!({
            "schema": {"type": "string", "pattern": "^(a+)+\\1$"},
            "document": format!("{}b", "a".repeat(24)),
        }),
    };
    let path = scenario.path();
    let mut sender = None;
    let mut n = 0u64;
    while ctx.running() {
        let request_id = format!("heavy-{index}-{}-{n}", unix_nanos());
        n += 1;
        let Ok(body) = scenario.sign(wallet, &request_id) else {
            return;
        };
        ctx.send(&mut sender, &path, body).await;
    }
}
