//! The cost-growth scenario (`--growth`): how listing answers as the catalog, the workflow
//! library and the jobs board grow, and how fast racing agents reserve jobs.
//!
//! 1. Reservations: `--growth-jobs` open jobs are created through the operator API, then
//!    `--growth-racers` agents (a wallet, a session and a connection each) race for them:
//!    each walks its own shuffled list of every job id, sending pre-signed
//!    `POST /api/external/jobs/{id}/reserve` requests. Reported: requests/s, reservations
//!    won, conflicts (409 `JOB_NOT_AVAILABLE`), and whether any job was won by two agents
//!    (it must not be).
//! 2. Listing: for each level of `--growth` (row counts, ascending), tools, published
//!    workflows and open jobs are added through the operator API up to that count, then
//!    the first page of `GET /api/external/tools`, `GET /api/external/workflows` and
//!    signed `POST /api/external/jobs/list` is fetched `--growth-samples` times in a row on
//!    one connection. Reported: p50 and p99 per list and level, and the ratio of the
//!    largest level to the smallest.

use crate::fire::{exchange, new_histogram, Sender, Target};
use crate::presign::{open_sessions, sign, Wallet};
use agentpmt_protocol::{PrivateKey, SignedAction};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What the scenario does.
#[derive(Debug, Clone)]
pub struct Options {
    pub admin_token: String,
    /// Row counts to measure listing at, ascending.
    pub levels: Vec<usize>,
    /// Listing requests per list and level.
    pub samples: usize,
    /// Open jobs of the reservation race.
    pub race_jobs: usize,
    /// Agents in the reservation race.
    pub racers: usize,
    /// Connections that add rows through the operator API.
    pub seed_connections: usize,
}

/// Latency of one list at one level.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub list: &'static str,
    pub rows: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The reservation race.
#[derive(Debug, Clone, Serialize)]
pub struct Race {
    pub jobs: usize,
    pub agents: usize,
    pub requests: u64,
    pub elapsed_s: f64,
    pub requests_per_sec: f64,
    pub reservations: usize,
    pub reservations_per_sec: f64,
    pub conflicts: u64,
    /// Other answers (must be 0).
    pub errors: u64,
    /// Jobs won by more than one agent (must be 0).
    pub double_reserved: usize,
}

/// Everything the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub race: Race,
    pub listings: Vec<Listing>,
}

impl Report {
    /// True when the race broke an invariant or saw unexpected answers.
    pub fn failed(&self) -> bool {
        self.race.errors > 0
            || self.race.double_reserved > 0
            || self.race.reservations != self.race.jobs
    }

    /// The human-readable tables.
    pub fn table(&self) -> String {
        let r = &self.race;
        let mut out = format!(
            "reservation race: {} open jobs, {} agents\n  requests {}  elapsed_s {:.3}  req/s {:.0}  reservations {} ({:.0}/s)  conflicts {}  errors {}  double-reserved {}\n\n",
            r.jobs, r.agents, r.requests, r.elapsed_s, r.requests_per_sec, r.reservations,
            r.reservations_per_sec, r.conflicts, r.errors, r.double_reserved
        );
        out.push_str("  list          rows    p50_ms    p99_ms\n");
        for l in &self.listings {
            out.push_str(&format!(
                "  {:<10} {:>7} {:>9.3} {:>9.3}\n",
                l.list, l.rows, l.p50_ms, l.p99_ms
            ));
        }
        for list in ["tools", "workflows", "jobs"] {
            let of: Vec<&Listing> = self.listings.iter().filter(|l| l.list == list).collect();
            if let (Some(first), Some(last)) = (of.first(), of.last()) {
                if first.rows != last.rows && first.p50_ms > 0.0 {
                    out.push_str(&format!(
                        "  {list}: p50 at {} rows ÷ p50 at {} rows = {:.2}\n",
                        last.rows,
                        first.rows,
                        last.p50_ms / first.p50_ms
                    ));
                }
            }
        }
        out
    }
}

/// Runs the race, then the listing levels.
pub async fn run(target: Arc<Target>, options: Options) -> Result<Report> {
    let admin = Admin::new(&target, &options.admin_token)?;
    let race = race(&target, &admin, &options).await?;
    eprintln!("reservation race done: {} reservations", race.reservations);

    let keys = vec![PrivateKey::random()];
    let reader = open_sessions(&target, &keys, 1).await?.wallets.remove(0);
    let mut listings = Vec::new();
    let tool_id = admin.first_tool_id().await?;
    let kinds = [
        Kind::Tools,
        Kind::Workflows { tool_id },
        // The race's jobs are reserved (not listed); the board holds `rows` open jobs.
        Kind::Jobs { tag: "board" },
    ];
    let mut have = 0;
    for &rows in &options.levels {
        for kind in &kinds {
            add_rows(&admin, options.seed_connections, kind.clone(), have, rows).await?;
        }
        have = rows;
        eprintln!("seeded {rows} tools, workflows and open jobs");
        let mut sender = target.connect().await?;
        for (list, signed) in [("tools", false), ("workflows", false), ("jobs", true)] {
            let mut histogram = new_histogram();
            for i in 0..options.samples {
                let request = if signed {
                    let body = sign_list(&reader, &format!("list-{rows}-{i}"))?;
                    target.post("/api/external/jobs/list", body)
                } else {
                    target.request(Method::GET, &format!("/api/external/{list}"), Bytes::new())
                };
                let started = Instant::now();
                let (status, body) = exchange(&mut sender, request).await?;
                let micros = started.elapsed().as_micros() as u64;
                if status != StatusCode::OK {
                    bail!(
                        "listing {list} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                histogram.record(micros.max(1))?;
            }
            listings.push(Listing {
                list,
                rows,
                p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            });
        }
    }
    Ok(Report { race, listings })
}

fn sign_list(wallet: &Wallet, request_id: &str) -> Result<Bytes> {
    let mut fields = serde_json::Map::new();
    fields.insert("limit".into(), json!(50));
    fields.insert("skip".into(), json!(0));
    sign(wallet, SignedAction::JobList, |_| None, request_id, fields)
}

fn sign_reserve(wallet: &Wallet, job_id: &str, request_id: &str) -> Result<Bytes> {
    let param = |name: &str| (name == "jobId").then(|| job_id.to_owned());
    sign(
        wallet,
        SignedAction::JobReserve,
        param,
        request_id,
        serde_json::Map::new(),
    )
}

async fn race(target: &Arc<Target>, admin: &Admin, options: &Options) -> Result<Race> {
    let jobs = add_rows(
        admin,
        options.seed_connections,
        Kind::Jobs { tag: "race" },
        0,
        options.race_jobs,
    )
    .await?;
    let keys: Vec<PrivateKey> = (0..options.racers).map(|_| PrivateKey::random()).collect();
    let wallets = open_sessions(target, &keys, 8).await?.wallets;
    // Every agent walks every job id in its own order; signed before the race starts.
    let plans: Vec<Vec<(String, Bytes)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = wallets
            .iter()
            .enumerate()
            .map(|(a, wallet)| {
                let jobs = &jobs;
                scope.spawn(move || -> Result<Vec<(String, Bytes)>> {
                    let mut order = jobs.clone();
                    order.shuffle(&mut rand::thread_rng());
                    order
                        .into_iter()
                        .enumerate()
                        .map(|(i, job)| {
                            let body = sign_reserve(wallet, &job, &format!("race-{a}-{i}"))?;
                            Ok((job, body))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut senders = target.connect_many(options.racers).await?;
    let won = Arc::new(std::sync::Mutex::new(
        HashMap::<String, HashSet<usize>>::new(),
    ));
    let reserved = Arc::new(AtomicUsize::new(0));
    let total = jobs.len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (agent, plan) in plans.into_iter().enumerate() {
        let mut sender: Sender = senders.pop().context("a connection per agent")?;
        let (target, won, reserved) = (target.clone(), won.clone(), reserved.clone());
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut conflicts, mut errors) = (0u64, 0u64, 0u64);
            for (job, body) in plan {
                if reserved.load(Ordering::Relaxed) >= total {
                    break;
                }
                let request = target.post(&format!("/api/external/jobs/{job}/reserve"), body);
                let (status, answer) = exchange(&mut sender, request).await?;
                sent += 1;
                match status {
                    StatusCode::OK => {
                        let mut won = won.lock().expect("tally lock");
                        let winners = won.entry(job).or_default();
                        if winners.is_empty() {
                            reserved.fetch_add(1, Ordering::Relaxed);
                        }
                        winners.insert(agent);
                    }
                    StatusCode::CONFLICT
                        if String::from_utf8_lossy(&answer).contains("JOB_NOT_AVAILABLE") =>
                    {
                        conflicts += 1
                    }
                    _ => {
                        if errors == 0 {
                            eprintln!(
                                "reserve answered {status}: {}",
                                String::from_utf8_lossy(&answer)
                            );
                        }
                        errors += 1
                    }
                }
            }
            Ok::<_, anyhow::Error>((sent, conflicts, errors))
        }));
    }
    let (mut requests, mut conflicts, mut errors) = (0, 0, 0);
    for task in tasks {
        let (s, c, e) = task.await??;
        requests += s;
        conflicts += c;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let won = won.lock().expect("tally lock");
    let reservations = won.len();
    Ok(Race {
        jobs: total,
        agents: options.racers,
        requests,
        elapsed_s: elapsed,
        requests_per_sec: requests as f64 / elapsed,
        reservations,
        reservations_per_sec: reservations as f64 / elapsed,
        conflicts,
        errors,
        double_reserved: won.values().filter(|w| w.len() > 1).count(),
    })
}

/// What the operator API adds.
#[derive(Debug, Clone)]
enum Kind {
    /// A public tool with one built-in action.
    Tools,
    /// A published workflow of one step calling `tool_id`.
    Workflows { tool_id: String },
    /// An open social-share job, titled with `tag`.
    Jobs { tag: &'static str },
}

/// Adds rows `from..to` of `kind` over `connections` connections; returns their ids.
async fn add_rows(
    admin: &Admin,
    connections: usize,
    kind: Kind,
    from: usize,
    to: usize,
) -> Result<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (admin, next, kind) = (admin.clone(), next.clone(), kind.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = admin.target.connect().await?;
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to {
                    return Ok::<_, anyhow::Error>(ids);
                }
                ids.push(add_one(&admin, &mut sender, &kind, i).await?);
            }
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await??);
    }
    Ok(ids)
}

/// Adds row `i` of `kind`; returns its id.
async fn add_one(admin: &Admin, sender: &mut Sender, kind: &Kind, i: usize) -> Result<String> {
    let created_id = |created: &Value, object: &str, field: &str| {
        created[object][field]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("the created {object} has no {field}"))
    };
    match kind {
        Kind::Tools => {
            let slug = format!("growth-tool-{i}");
            let body = json!({
                "slug": slug, "name": format!("Growth tool {i}"),
                "description": format!("Tool number {i} of the growth scenario"),
                "categories": ["growth"],
                "actions": [{"name": "run", "price_credits": 1,
                             "runner": {"kind": "builtin", "name": "time.now"}}]
            });
            let path = format!("/api/admin/tools/{slug}");
            admin.call(sender, Method::PUT, &path, Some(body)).await?;
            Ok(slug)
        }
        Kind::Workflows { tool_id } => {
            let body = json!({
                "slug": format!("growth-workflow-{i}"),
                "name": format!("Growth workflow {i}"),
                "description": "One tool step",
                "categories": ["growth"],
                "industry_tags": ["benchmarks"],
                "publisher": "Load generator",
                "graph": {"nodes": [{"id": "run", "type": "tool", "label": "Run",
                    "tool": {"product_id": tool_id, "action": "now", "parameters": {}}}],
                    "edges": []}
            });
            let created = admin
                .call(sender, Method::POST, "/api/admin/workflows", Some(body))
                .await?;
            let id = created_id(&created, "workflow", "workflow_id")?;
            let path = format!("/api/admin/workflows/{id}/publish");
            admin.call(sender, Method::POST, &path, None).await?;
            Ok(id)
        }
        Kind::Jobs { tag } => {
            let body = json!({
                "job_type": "social_share",
                "title": format!("Share workflow {tag}-{i}"),
                "public_description": "Post one tracked link on the platform",
                "private_instructions": "say something nice",
                "reward_credits": 10,
                "target_url": "https://www.agentpmt.com/agent-workflow-skills/example",
                "platform": "x",
            });
            let created = admin
                .call(sender, Method::POST, "/api/admin/jobs", Some(body))
                .await?;
            created_id(&created, "job", "job_id")
        }
    }
}

/// The operator API.
#[derive(Debug, Clone)]
struct Admin {
    target: Arc<Target>,
    bearer: hyper::header::HeaderValue,
}

impl Admin {
    fn new(target: &Arc<Target>, token: &str) -> Result<Admin> {
        Ok(Admin {
            target: target.clone(),
            bearer: hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the admin token is not a valid header value")?,
        })
    }

    async fn call(
        &self,
        sender: &mut Sender,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let bytes = match &body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let mut request = self.target.request(method.clone(), path, bytes);
        request
            .headers_mut()
            .insert(hyper::header::AUTHORIZATION, self.bearer.clone());
        let (status, answer) = exchange(sender, request).await?;
        if !status.is_success() {
            bail!(
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        if answer.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&answer)?)
    }

    /// A product id of the catalog the server started with, for the workflows' tool step.
    async fn first_tool_id(&self) -> Result<String> {
        let mut sender = self.target.connect().await?;
        let tools = self
            .call(
                &mut sender,
                Method::GET,
                "/api/external/tools?query=clock",
                None,
            )
            .await?;
        tools["tools"][0]["product_id"]
            .as_str()
            .map(str::to_owned)
            .context("the server lists no clock tool (start it with the demo catalog)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn race(reservations: usize, double_reserved: usize, errors: u64) -> Race {
        Race {
            jobs: 1000,
            agents: 100,
            requests: 5000,
            elapsed_s: 2.0,
            requests_per_sec: 2500.0,
            reservations,
            reservations_per_sec: reservations as f64 / 2.0,
            conflicts: 4000,
            errors,
            double_reserved,
        }
    }

    fn listing(list: &'static str, rows: usize, p50_ms: f64) -> Listing {
        Listing {
            list,
            rows,
            p50_ms,
            p99_ms: p50_ms * 2.0,
        }
    }

    #[test]
    fn a_race_fails_on_a_double_a_lost_reservation_or_an_error() {
        let report = |race| Report {
            race,
            listings: vec![],
        };
        assert!(!report(race(1000, 0, 0)).failed());
        assert!(report(race(1000, 1, 0)).failed());
        assert!(report(race(999, 0, 0)).failed());
        assert!(report(race(1000, 0, 1)).failed());
    }

    #[test]
    fn the_table_gives_the_ratio_of_the_largest_level_to_the_smallest() {
        let report = Report {
            race: race(1000, 0, 0),
            listings: vec![
                listing("tools", 100, 2.0),
                listing("jobs", 100, 1.0),
                listing("tools", 100_000, 3.0),
                listing("jobs", 100_000, 1.5),
            ],
        };
        let table = report.table();
        assert!(
            table.contains("tools: p50 at 100000 rows ÷ p50 at 100 rows = 1.50"),
            "{table}"
        );
        assert!(
            table.contains("jobs: p50 at 100000 rows ÷ p50 at 100 rows = 1.50"),
            "{table}"
        );
        assert!(!table.contains("workflows:"), "{table}");
        assert!(table.contains("double-reserved 0"), "{table}");
    }
}
