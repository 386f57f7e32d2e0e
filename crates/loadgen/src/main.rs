//! `agentpmt-loadgen`: load generator of the External Agent API.
//!
//! Per concurrency level: open one session per wallet, pre-sign warm-up + measured
//! balance requests (signing is outside the measured window), open the keep-alive
//! connections, fire the warm-up, then fire and measure. Before the first and after the
//! last level it times in-process signature recovery on one core, and reports each level's
//! throughput as a ratio of it.
//!
//! With `--abuse`, it runs the abuse scenario instead ([`abuse`]): a well-behaved agent's
//! latency with and without hostile clients, the server's memory and the database's growth.
//!
//! Modules: [`presign`] (wallets, sessions, signed bodies), [`fire`] (connections,
//! pacing, latency histograms), [`recovery`] (the single-core yardstick), [`report`]
//! (table and JSON).

mod abuse;
mod fire;
mod growth;
mod presign;
mod recovery;
mod report;
mod server_proc;

use agentpmt_protocol::PrivateKey;
use anyhow::{bail, Result};
use clap::Parser;
use fire::{Pace, Target};
use report::{Recovery, Run, Summary};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Load generator for the External Agent API: fires pre-signed `POST
/// /api/external/credits/balance` requests (or, with --invoke, signed tool invocations) over keep-alive HTTP/1.1 connections and reports
/// requests/s, latency percentiles and the ratio to single-core signature recovery.
#[derive(Debug, Parser)]
#[command(name = "agentpmt-loadgen", version, about, long_about = None)]
struct Cli {
    /// Base URL of the server (http:// only).
    #[arg(long, env = "AGENTPMT_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,

    /// Number of random wallets (one session each); requests go round-robin over them.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    wallets: u64,

    /// Measured requests per concurrency level.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,

    /// Concurrent keep-alive connections (ignored when --concurrency-levels is given).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,

    /// Runs the HTTP phase once per level, e.g. `1,10,100,1000` (fresh sessions and
    /// pre-signed requests each time: request ids are single-use).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    concurrency_levels: Vec<usize>,

    /// Open loop at this offered rate (requests/s) instead of closed loop. Latency is then
    /// measured from each request's scheduled send time (no coordinated omission); the
    /// service time from the actual send is reported as svc_p50/svc_p99.
    #[arg(long)]
    rate: Option<f64>,

    /// Unmeasured warm-up requests per level, sent over the same connections first.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,

    /// Tokio worker threads of the load generator. Default 1: on a 2-core machine the
    /// load generator should leave the other core to the server. Raise it only when the
    /// load generator runs on its own cores.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,

    /// Threads that pre-sign requests (before the measured window); default: every core.
    #[arg(long)]
    presign_threads: Option<usize>,

    /// Seconds of single-core recovery timing before and after the HTTP phase.
    #[arg(long, default_value_t = 1.0)]
    recovery_secs: f64,

    /// Print one JSON object (`runs`: one entry per level) instead of the table.
    #[arg(long)]
    json: bool,

    /// Fire signed credit invocations of PRODUCT/ACTION instead of balance requests (each
    /// holds the price, runs the tool and posts the charge). Wallets are funded first
    /// through the operator API (needs --admin-token).
    #[arg(long, value_name = "PRODUCT/ACTION")]
    invoke: Option<String>,

    /// The invocations' parameters (a JSON object).
    #[arg(long, value_name = "JSON", default_value = "{}")]
    params: String,

    /// The server's admin token (to fund the wallets of --invoke and --abuse).
    #[arg(long, env = "AGENTPMT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Runs the abuse scenario instead: a well-behaved agent (signed balance and invoke at
    /// --agent-rate) for --abuse-secs alone, then as long again while hostile clients run
    /// slowloris, half-open, random-wallet and forged-signature floods, oversized bodies,
    /// CPU-heavy tool calls and help-ticket spam from other loopback addresses. Loopback
    /// servers only; needs --admin-token.
    #[arg(long)]
    abuse: bool,

    /// Seconds of each abuse phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    abuse_secs: u64,

    /// The well-behaved agent's requests per second in the abuse scenario.
    #[arg(long, default_value_t = 50.0)]
    agent_rate: f64,

    /// Only these hostile kinds (comma-separated: slowloris, half_open, signature_flood,
    /// oversized, cpu_heavy, help_spam); default all.
    #[arg(long, value_delimiter = ',')]
    hostile: Vec<String>,

    /// The server's process id. Load runs: its CPU time over each measured window is read
    /// from /proc and reported per request, with the efficiency (one recovery's time ÷
    /// the server's CPU per request). Abuse runs: its resident memory after each phase.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Runs the cost-growth scenario instead, at these row counts (ascending, e.g.
    /// `100,100000`): first a reservation race (--growth-jobs open jobs, --growth-racers
    /// agents), then tools, published workflows and open jobs added through the operator
    /// API up to each count, and the first page of each list timed. Needs --admin-token and
    /// a server with the demo catalog, without the per-IP limit (`--ip-rate-per-sec 0
    /// --signed-ip-rate-per-sec 0`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    growth: Vec<usize>,

    /// Listing requests per list and row count in the growth scenario.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    growth_samples: u64,

    /// Open jobs of the growth scenario's reservation race.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    growth_jobs: u64,

    /// Agents racing for them.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    growth_racers: u64,

    /// The server's SQLite database file: its growth (with the WAL) is reported per phase.
    #[arg(long)]
    db_file: Option<std::path::PathBuf>,
}

/// Credits given to each wallet of an `--invoke` run.
const FUND_CREDITS: i64 = 100_000_000;

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    if cli.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        bail!("--rate must be a positive number of requests per second");
    }
    if !(cli.recovery_secs.is_finite() && cli.recovery_secs > 0.0) {
        bail!("--recovery-secs must be positive");
    }
    if cli.abuse {
        return run_abuse(&cli);
    }
    if !cli.growth.is_empty() {
        return run_growth(&cli);
    }
    let levels = if cli.concurrency_levels.is_empty() {
        vec![cli.concurrency as usize]
    } else {
        cli.concurrency_levels.clone()
    };
    if levels.contains(&0) {
        bail!("a concurrency level must be at least 1");
    }
    let scenario = match &cli.invoke {
        None => presign::Scenario::Balance,
        Some(spec) => {
            let Some((product, action)) = spec.split_once('/') else {
                bail!("--invoke takes PRODUCT/ACTION, e.g. clock/now");
            };
            let parameters: serde_json::Value = serde_json::from_str(&cli.params)?;
            if !parameters.is_object() {
                bail!("--params must be a JSON object");
            }
            if cli.admin_token.is_none() {
                bail!("--invoke needs --admin-token (or AGENTPMT_ADMIN_TOKEN) to fund the wallets");
            }
            presign::Scenario::Invoke {
                product: product.to_owned(),
                action: action.to_owned(),
                parameters,
            }
        }
    };
    let target = Arc::new(Target::parse(&cli.server)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads as usize)
        .enable_all()
        .build()?;

    let recovery_time = Duration::from_secs_f64(cli.recovery_secs);
    let before = recovery::recoveries_per_sec(recovery_time);
    eprintln!("single-core recoveries/s before: {before:.0}");

    let keys: Vec<PrivateKey> = (0..cli.wallets).map(|_| PrivateKey::random()).collect();
    if let (presign::Scenario::Invoke { .. }, Some(token)) = (&scenario, &cli.admin_token) {
        runtime.block_on(presign::fund(&target, &keys, token, FUND_CREDITS))?;
        eprintln!(
            "funded {} wallets with {FUND_CREDITS} credits each",
            keys.len()
        );
    }
    let mut runs = Vec::new();
    for (level_index, &concurrency) in levels.iter().enumerate() {
        let run = runtime.block_on(run_level(
            &cli,
            &scenario,
            &target,
            &keys,
            level_index,
            concurrency,
        ))?;
        runs.push(run);
    }
    drop(runtime);

    let after = recovery::recoveries_per_sec(recovery_time);
    eprintln!("single-core recoveries/s after: {after:.0}");
    let recovery = Recovery::new(before, after);
    let summary = Summary {
        server: target.url().to_owned(),
        wallets: keys.len(),
        loadgen_threads: cli.threads as usize,
        recoveries_per_sec_single_core: recovery,
        runs: runs
            .into_iter()
            .map(|r| r.with_recovery(recovery.mean))
            .collect(),
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.table());
    }
    if summary.has_errors() {
        eprintln!("error: some requests failed (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The abuse scenario: both phases, then the table (or JSON). Fails when the agent lost
/// a request.
fn run_abuse(cli: &Cli) -> Result<ExitCode> {
    let Some(admin_token) = cli.admin_token.clone() else {
        bail!("--abuse needs --admin-token (or AGENTPMT_ADMIN_TOKEN) to fund its wallets");
    };
    let target = Arc::new(Target::parse(&cli.server)?);
    // The hostile clients share the load generator's two worker threads; the agent runs on
    // a thread and runtime of its own, so its requests never wait behind theirs here.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(2) as usize)
        .enable_all()
        .build()?;
    let options = abuse::Options {
        phase: Duration::from_secs(cli.abuse_secs),
        agent_rate: cli.agent_rate,
        server_pid: cli.server_pid,
        db_file: cli.db_file.clone(),
        admin_token,
        kinds: cli.hostile.clone(),
    };
    let report = runtime.block_on(abuse::run(target, options))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.agent_failed() {
        eprintln!("error: the well-behaved agent lost requests (see above)");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The cost-growth scenario: the race, the listing levels, then the tables (or JSON).
/// Fails when a job was reserved twice or a request got an unexpected answer.
fn run_growth(cli: &Cli) -> Result<ExitCode> {
    let Some(admin_token) = cli.admin_token.clone() else {
        bail!("--growth needs --admin-token (or AGENTPMT_ADMIN_TOKEN) to add rows");
    };
    let mut levels = cli.growth.clone();
    if levels.contains(&0) || levels.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--growth takes ascending positive row counts, e.g. 100,100000");
    }
    levels.dedup();
    let target = Arc::new(Target::parse(&cli.server)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads as usize)
        .enable_all()
        .build()?;
    let options = growth::Options {
        admin_token,
        levels,
        samples: cli.growth_samples as usize,
        race_jobs: cli.growth_jobs as usize,
        racers: cli.growth_racers as usize,
        seed_connections: 8,
    };
    let report = runtime.block_on(growth::run(target, options))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if report.failed() {
        eprintln!("error: the reservation race lost or doubled a reservation, or saw errors");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Sessions, pre-signing, connections, warm-up and the measured firing at one level.
async fn run_level(
    cli: &Cli,
    scenario: &presign::Scenario,
    target: &Arc<Target>,
    keys: &[PrivateKey],
    level_index: usize,
    concurrency: usize,
) -> Result<Run> {
    let measured = cli.requests as usize;
    let total = cli.warmup + measured;
    let pace = cli.rate.map_or(Pace::Closed, Pace::Rate);

    let started = Instant::now();
    let sessions = presign::open_sessions(target, keys, concurrency.min(32)).await?;
    if let Pace::Rate(rate) = pace {
        let needed = Duration::from_secs_f64(total as f64 / rate);
        if needed + Duration::from_secs(60) > sessions.lifetime {
            bail!(
                "{total} requests at {rate}/s take {needed:?}, longer than the sessions last \
                 ({:?}) minus a minute: lower --requests or raise --rate",
                sessions.lifetime
            );
        }
    }
    eprintln!(
        "[c={concurrency}] {} sessions opened in {:.2?}; pre-signing {total} requests",
        sessions.wallets.len(),
        started.elapsed()
    );

    let signing = Instant::now();
    let tag = format!("lg{level_index}x{:x}", unix_nanos());
    let threads = cli
        .presign_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let wallets = sessions.wallets;
    let signing_scenario = scenario.clone();
    let bodies = Arc::new(
        tokio::task::spawn_blocking(move || {
            presign::presign(&signing_scenario, &wallets, total, &tag, threads)
        })
        .await??,
    );
    let path: Arc<str> = scenario.path().into();
    eprintln!(
        "[c={concurrency}] pre-signed in {:.2?}; opening {concurrency} connections",
        signing.elapsed()
    );

    let mut connections = target.connect_many(concurrency).await?;
    if cli.warmup > 0 {
        let (warm, alive) =
            fire::fire(target, &path, connections, &bodies, 0..cli.warmup, pace).await;
        eprintln!(
            "[c={concurrency}] warm-up: {} requests in {:.2?}, {} failed",
            cli.warmup,
            warm.elapsed,
            warm.error_count()
        );
        connections = alive;
        if connections.len() < concurrency {
            connections.extend(target.connect_many(concurrency - connections.len()).await?);
        }
    }
    let cpu_before = cli.server_pid.and_then(server_proc::cpu_seconds);
    let (outcome, _) =
        fire::fire(target, &path, connections, &bodies, cli.warmup..total, pace).await;
    let cpu_after = cli.server_pid.and_then(server_proc::cpu_seconds);
    let mut run = Run::new(concurrency, keys.len(), pace, measured, &outcome);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        run = run.with_server_cpu(after - before);
    }
    eprintln!(
        "[c={concurrency}] {measured} requests in {:.3} s: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} failed",
        run.elapsed_s, run.requests_per_sec, run.latency_ms.p50, run.latency_ms.p99, run.errors
    );
    if started.elapsed() + Duration::from_secs(5) > sessions.lifetime {
        eprintln!("[c={concurrency}] warning: the level outlasted its sessions; expect 401s");
    }
    Ok(run)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
