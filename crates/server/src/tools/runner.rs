//! Running an action: a built-in tool, or the vendor's HTTP endpoint.
//!
//! Vendor calls are `POST <url>` with the JSON body `{product, action, parameters,
//! credentials, usage_id, wallet_address}` (`parameters` as signed: canonical JSON with the
//! number lexemes the client sent, see [`Params`]) and the headers
//! - `X-AgentPMT-Timestamp`: Unix seconds,
//! - `X-AgentPMT-Usage-Id`: the usage record's id (stable across the vendor's retries),
//! - `X-AgentPMT-Signature`: `sha256=<hex HMAC-SHA256(vendor secret, timestamp + "." + body)>`,
//!
//! so the vendor can check that the call came from the marketplace and is fresh. A 2xx
//! reply whose body is JSON is the tool's response (an object; anything else is wrapped as
//! `{result: ...}`); any other status, a non-JSON body, a body over 1 MiB or no answer
//! within the action's timeout is a tool failure.

use agentpmt_protocol::canonical::{self, Escaping, JsonValue, KeyOrder};
use agentpmt_protocol::tools::RunnerSpec;
use agentpmt_protocol::wire::{cents_text, CREDITS_PER_USD};
use alloy::primitives::{keccak256, Address};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Default vendor timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;
/// Longest accepted vendor timeout.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Largest vendor reply.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Header names of vendor calls.
pub const HEADER_TIMESTAMP: &str = "x-agentpmt-timestamp";
pub const HEADER_SIGNATURE: &str = "x-agentpmt-signature";
pub const HEADER_USAGE_ID: &str = "x-agentpmt-usage-id";

/// Why a tool produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    /// The tool refused or failed; the reason is safe to show.
    Failed(String),
    /// No answer in time.
    Timeout,
}

/// A call's parameters as they were verified: the parsed value (schema checks and most
/// built-ins) and the JSON text with every number lexeme as the client sent and signed it
/// (`123456789012345678901234567890` stays that, `0.30000000000000000001` is not rounded),
/// which is what vendors and `json.canonicalize` get.
#[derive(Debug, Clone)]
pub struct Params {
    pub value: Value,
    /// Canonical JSON (sorted keys, no whitespace) of the parameters as sent.
    pub text: String,
}

impl Params {
    /// `value` with its text taken from `sent`, the same parameters as parsed from the
    /// request (lexemes intact).
    pub fn verbatim(value: Value, sent: &JsonValue) -> Params {
        Params {
            value,
            text: canonical::to_canonical(sent, Escaping::Utf8, KeyOrder::CodePoint),
        }
    }

    /// Parameters that exist only as a parsed value (written by the server itself).
    pub fn from_value(value: Value) -> Params {
        let text = canonical::to_canonical(
            &JsonValue::from_serde(&value),
            Escaping::Utf8,
            KeyOrder::CodePoint,
        );
        Params { value, text }
    }
}

/// What a vendor call needs besides the parameters.
#[derive(Debug)]
pub struct Call<'a> {
    pub product_slug: &'a str,
    pub action_slug: &'a str,
    pub usage_id: &'a str,
    pub wallet_address: Option<&'a str>,
    pub parameters: &'a Params,
    /// `parameters._credentials`, passed through and never stored.
    pub credentials: Option<&'a Value>,
    pub vendor_secret: Option<&'a SecretString>,
    /// Counts the CPU time a heavy built-in spends on this call (see [`is_heavy`]).
    pub cpu: Option<&'a CpuMeter>,
}

/// The CPU time heavy built-ins spent for one call, added by the thread that ran them
/// (also when the caller stopped waiting meanwhile).
#[derive(Debug, Clone, Default)]
pub struct CpuMeter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl CpuMeter {
    /// CPU time counted so far.
    pub fn spent(&self) -> Duration {
        Duration::from_micros(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn add(&self, cpu: Duration) {
        let us = u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX);
        self.0.fetch_add(us, std::sync::atomic::Ordering::Relaxed);
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// Whether `runner` is a built-in whose CPU cost the caller controls: such calls are
/// budgeted in CPU time per payer (`--heavy-cpu-ms-per-sec`).
pub fn is_heavy(runner: &RunnerSpec) -> bool {
    matches!(runner, RunnerSpec::Builtin { name } if HEAVY_BUILTINS.contains(&name.as_str()))
}

/// Runs `runner` for `call`, for at most the action's timeout and at most `limit` (what
/// the request's deadline leaves for the tool).
pub async fn run(
    http: &reqwest::Client,
    runner: &RunnerSpec,
    call: Call<'_>,
    limit: Duration,
) -> Result<Value, ToolError> {
    match runner {
        RunnerSpec::Builtin { name } => {
            run_builtin(name, call.parameters, call.cpu.cloned(), limit).await
        }
        RunnerSpec::Http { url, timeout_ms } => {
            let timeout =
                Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS))
                    .min(limit);
            match tokio::time::timeout(timeout, vendor(http, url, &call)).await {
                Ok(result) => result,
                Err(_) => Err(ToolError::Timeout),
            }
        }
    }
}

/// Largest `json.validate` input (`schema` and `document`, as serialized JSON).
pub const MAX_VALIDATE_BYTES: usize = 64 * 1024;
/// Backtracking steps one `pattern` match may take in `json.validate` (a match that needs
/// more is an error, not a hang).
pub const PATTERN_BACKTRACK_LIMIT: usize = 100_000;
/// Size of one compiled `pattern` of `json.validate`.
pub const PATTERN_SIZE_LIMIT: usize = 1024 * 1024;

/// Built-ins whose cost the caller controls (a schema, a backtracking `pattern`): they run
/// in the [`heavy`] lane. The others do work linear in an input bounded by the body limit
/// and take a slot of the light lane, so a cheap call never waits behind heavy ones.
const HEAVY_BUILTINS: &[&str] = &["json.validate"];

/// The lane of cheap built-ins: as many at once as there are cores, on the blocking pool.
fn light_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(cores()))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs a built-in off the async runtime, waiting at most `limit` for a slot and its result
/// (a late result is a timeout: the caller is not charged; the work itself is bounded by
/// the built-ins' input and pattern budgets).
/// A heavy built-in adds the CPU time it spent to `meter`.
async fn run_builtin(
    name: &str,
    parameters: &Params,
    meter: Option<CpuMeter>,
    limit: Duration,
) -> Result<Value, ToolError> {
    let name = name.to_owned();
    let parameters = parameters.clone();
    let work = async move {
        if HEAVY_BUILTINS.contains(&name.as_str()) {
            return heavy::run(move || {
                let start = thread_cpu();
                let result = builtin_call(&name, &parameters);
                if let Some(meter) = meter {
                    meter.add(thread_cpu().saturating_sub(start));
                }
                result
            })
            .await;
        }
        let permit = light_slots()
            .acquire()
            .await
            .map_err(|_| ToolError::Failed("built-in tools are shutting down".into()))?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            builtin_call(&name, &parameters)
        });
        task.await
            .map_err(|_| ToolError::Failed("the built-in tool crashed".into()))?
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(ToolError::Timeout))
}

/// The heavy lane: cores − 1 threads of their own (at least one) that run at the lowest CPU
/// priority (nice 19 on Linux). The async runtime keeps a core, and whatever else wants the
/// CPU (every other request, the database on the same machine, `/healthz`) goes first: a
/// caller who pays for expensive work gets the CPU that is left, not the CPU of the others.
/// Jobs queue in arrival order; a job whose caller stopped waiting (its deadline passed) is
/// dropped unrun.
mod heavy {
    use super::{cores, ToolError};
    use serde_json::Value;
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};
    use tokio::sync::oneshot;

    type Job = Box<dyn FnOnce() + Send>;

    /// Lowest scheduling priority: `nice` 19.
    const NICE: i32 = 19;

    fn queue() -> &'static mpsc::Sender<Job> {
        static QUEUE: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
        QUEUE.get_or_init(|| {
            let (send, receive) = mpsc::channel::<Job>();
            let receive = std::sync::Arc::new(Mutex::new(receive));
            for n in 0..cores().saturating_sub(1).max(1) {
                let receive = receive.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("agentpmt-heavy-{n}"))
                    .spawn(move || {
                        lower_priority();
                        loop {
                            let job = match receive.lock() {
                                Ok(r) => r.recv(),
                                Err(_) => return,
                            };
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start a heavy built-in thread");
                }
            }
            send
        })
    }

    /// Gives the calling thread (only it: on Linux a thread has its own nice value) the
    /// lowest priority.
    fn lower_priority() {
        #[cfg(target_os = "linux")]
        {
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
                tracing::warn!(error = %e, "heavy built-ins run at normal priority");
            }
        }
    }

    /// Runs `work` in the lane and waits for its answer.
    pub async fn run(
        work: impl FnOnce() -> Result<Value, ToolError> + Send + 'static,
    ) -> Result<Value, ToolError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            if !answer.is_closed() {
                let _ = answer.send(work());
            }
        });
        if queue().send(job).is_err() {
            return Err(ToolError::Failed("built-in tools are shutting down".into()));
        }
        answered
            .await
            .map_err(|_| ToolError::Failed("the built-in tool crashed".into()))?
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub fn vendor_signature(secret: &SecretString, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn vendor(http: &reqwest::Client, url: &str, call: &Call<'_>) -> Result<Value, ToolError> {
    // Written by hand so that `parameters` is the verified text, number lexemes intact
    // (a serde_json value would round big and long numbers).
    let credentials = call.credentials.cloned().unwrap_or_else(|| json!({}));
    let body = format!(
        "{{\"action\":{},\"credentials\":{},\"parameters\":{},\"product\":{},\"usage_id\":{},\"wallet_address\":{}}}",
        encode(&call.action_slug)?,
        encode(&credentials)?,
        call.parameters.text,
        encode(&call.product_slug)?,
        encode(&call.usage_id)?,
        encode(&call.wallet_address)?,
    )
    .into_bytes();
    let timestamp = (crate::time::now_ms() / 1000).to_string();
    let mut request = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_TIMESTAMP, &timestamp)
        .header(HEADER_USAGE_ID, call.usage_id);
    if let Some(secret) = call.vendor_secret {
        request = request.header(
            HEADER_SIGNATURE,
            vendor_signature(secret, &timestamp, &body),
        );
    }
    let mut response = request.body(body).send().await.map_err(|e| {
        if e.is_timeout() {
            ToolError::Timeout
        } else {
            ToolError::Failed(format!(
                "the vendor could not be reached ({})",
                transport_kind(&e)
            ))
        }
    })?;
    let status = response.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        ToolError::Failed(format!(
            "the vendor's reply broke off ({})",
            transport_kind(&e)
        ))
    })? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ToolError::Failed(
                "the vendor's reply is larger than 1 MiB".into(),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(ToolError::Failed(format!(
            "the vendor answered HTTP {}",
            status.as_u16()
        )));
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| ToolError::Failed("the vendor's reply is not JSON".into()))?;
    Ok(match value {
        Value::Object(_) => value,
        other => json!({ "result": other }),
    })
}

/// A transport error's kind without its URL (which may carry vendor tokens).
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "bad body"
    } else {
        "transport error"
    }
}

/// The built-in tools, by name.
pub const BUILTINS: [(&str, &str); 10] = [
    ("json.canonicalize", "Canonical JSON (sorted keys, no whitespace) of `value` and its SHA-256: the payload hash of signed requests."),
    ("json.validate", "Validates `document` against the JSON Schema `schema`; lists every error."),
    ("json.pointer", "The value at the JSON Pointer `pointer` (RFC 6901) in `document`."),
    ("eth.checksum_address", "EIP-55 checksum form of `address`."),
    ("eth.keccak256", "Keccak-256 of `text` (UTF-8) or of `hex` bytes."),
    ("eth.credits_quote", "Price of `credits` in USD and in base units of a 6-decimals token (USDC)."),
    ("text.stats", "Characters, words, lines and sentences of `text`."),
    ("text.extract_urls", "Every http(s) URL in `text`, in order, without duplicates."),
    ("text.sha256", "SHA-256 (hex) of `text` (UTF-8)."),
    ("time.now", "The current time (UTC): RFC 3339, Unix seconds and milliseconds."),
];

/// Whether `name` is a built-in tool.
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.iter().any(|(n, _)| *n == name)
}

fn str_param<'a>(p: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    p.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolError::Failed(format!("{name} must be a string")))
}

/// One plain field of a vendor call as JSON.
fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, ToolError> {
    serde_json::to_string(value)
        .map_err(|e| ToolError::Failed(format!("cannot encode the call: {e}")))
}

/// A built-in run on verified parameters: `json.canonicalize` reads their text (it shows
/// the bytes the server hashes, number lexemes as sent), the others their value.
fn builtin_call(name: &str, p: &Params) -> Result<Value, ToolError> {
    if name == "json.canonicalize" {
        let sent = canonical::parse(p.text.as_bytes())
            .map_err(|e| ToolError::Failed(format!("parameters are not JSON: {e}")))?;
        return canonicalize(&sent);
    }
    builtin(name, &p.value)
}

/// `json.canonicalize` of `parameters.value`: the canonical text, raw UTF-8 and
/// ASCII-escaped (Python's `json.dumps(v, ensure_ascii=True, sort_keys=True,
/// separators=(",", ":"))` for what Python sent), and their SHA-256: the payload hashes the
/// signature check accepts.
fn canonicalize(parameters: &JsonValue) -> Result<Value, ToolError> {
    let value = parameters
        .get("value")
        .ok_or_else(|| ToolError::Failed("value is required".into()))?;
    let text = canonical::to_canonical(value, Escaping::Utf8, KeyOrder::CodePoint);
    let ascii = canonical::to_canonical(value, Escaping::Ascii, KeyOrder::CodePoint);
    Ok(json!({
        "canonical": text,
        "sha256": canonical::sha256_hex(&text),
        "ascii_escaped": ascii,
        "ascii_escaped_sha256": canonical::sha256_hex(&ascii),
    }))
}

fn builtin(name: &str, p: &Value) -> Result<Value, ToolError> {
    match name {
        "json.canonicalize" => canonicalize(&JsonValue::from_serde(p)),
        "json.validate" => {
            let schema = p
                .get("schema")
                .ok_or_else(|| ToolError::Failed("schema is required".into()))?;
            let document = p.get("document").unwrap_or(&Value::Null);
            let size = serde_json::to_vec(schema)
                .map_or(usize::MAX, |v| v.len())
                .saturating_add(serde_json::to_vec(document).map_or(usize::MAX, |v| v.len()));
            if size > MAX_VALIDATE_BYTES {
                return Err(ToolError::Failed(format!(
                    "schema and document together exceed {MAX_VALIDATE_BYTES} bytes"
                )));
            }
            let validator = jsonschema::options()
                .with_pattern_options(
                    jsonschema::PatternOptions::fancy_regex()
                        .backtrack_limit(PATTERN_BACKTRACK_LIMIT)
                        .size_limit(PATTERN_SIZE_LIMIT)
                        .dfa_size_limit(PATTERN_SIZE_LIMIT),
                )
                .build(schema)
                .map_err(|e| ToolError::Failed(format!("schema is not valid JSON Schema: {e}")))?;
            let errors: Vec<Value> = validator
                .iter_errors(document)
                .take(100)
                .map(|e| json!({"path": e.instance_path().to_string(), "message": e.to_string()}))
                .collect();
            Ok(json!({"valid": errors.is_empty(), "errors": errors}))
        }
        "json.pointer" => {
            let document = p.get("document").unwrap_or(&Value::Null);
            let pointer = str_param(p, "pointer")?;
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(ToolError::Failed(
                    "pointer must be empty or start with /".into(),
                ));
            }
            let found = document.pointer(pointer);
            Ok(json!({"found": found.is_some(), "value": found.cloned().unwrap_or(Value::Null)}))
        }
        "eth.checksum_address" => {
            let text = str_param(p, "address")?;
            let address: Address = text.trim().parse().map_err(|_| {
                ToolError::Failed("address must be 0x followed by 40 hex digits".into())
            })?;
            Ok(json!({
                "address": address.to_checksum(None),
                "lowercase": format!("{address:#x}"),
            }))
        }
        "eth.keccak256" => {
            let bytes = match (
                p.get("text").and_then(Value::as_str),
                p.get("hex").and_then(Value::as_str),
            ) {
                (Some(text), None) => text.as_bytes().to_vec(),
                (None, Some(h)) => hex::decode(h.trim_start_matches("0x")).map_err(|_| {
                    ToolError::Failed("hex must be hex digits (optionally 0x-prefixed)".into())
                })?,
                _ => return Err(ToolError::Failed("send exactly one of text and hex".into())),
            };
            Ok(
                json!({"keccak256": format!("{:#x}", keccak256(&bytes)), "input_bytes": bytes.len()}),
            )
        }
        "eth.credits_quote" => {
            let credits = p
                .get("credits")
                .and_then(Value::as_i64)
                .filter(|c| (1..=1_000_000_000).contains(c))
                .ok_or_else(|| {
                    ToolError::Failed("credits must be an integer from 1 to 1,000,000,000".into())
                })?;
            let pack = agentpmt_protocol::wire::suggested_pack(credits);
            Ok(json!({
                "credits": credits,
                "usd": cents_text(credits * 100 / CREDITS_PER_USD),
                "usdc_base_units": (i128::from(credits) * 10_000).to_string(),
                "purchasable_pack_credits": pack,
                "purchasable_pack_usd": cents_text(pack * 100 / CREDITS_PER_USD),
            }))
        }
        "text.stats" => {
            let text = str_param(p, "text")?;
            let sentences = text
                .split(['.', '!', '?'])
                .filter(|s| s.chars().any(char::is_alphanumeric))
                .count();
            Ok(json!({
                "characters": text.chars().count(),
                "bytes": text.len(),
                "words": text.split_whitespace().count(),
                "lines": if text.is_empty() { 0 } else { text.lines().count() },
                "sentences": sentences,
            }))
        }
        "text.extract_urls" => {
            let text = str_param(p, "text")?;
            let mut urls: Vec<String> = Vec::new();
            for word in text.split(|c: char| {
                c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | '(' | ')')
            }) {
                let Some(start) = word.find("http://").or_else(|| word.find("https://")) else {
                    continue;
                };
                let url = word[start..].trim_end_matches(['.', ',', ';', ':', '!', '?', ']']);
                if url.len() > "https://".len() && !urls.iter().any(|u| u == url) {
                    urls.push(url.to_owned());
                }
            }
            Ok(json!({"count": urls.len(), "urls": urls}))
        }
        "text.sha256" => {
            let text = str_param(p, "text")?;
            Ok(json!({"sha256": hex::encode(Sha256::digest(text.as_bytes()))}))
        }
        "time.now" => {
            let ms = crate::time::now_ms();
            Ok(json!({
                "utc": crate::time::rfc3339_ms(ms),
                "unix_seconds": ms / 1000,
                "unix_ms": ms,
            }))
        }
        other => Err(ToolError::Failed(format!(
            "unknown built-in tool {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(parameters: &Params) -> Call<'_> {
        Call {
            product_slug: "p",
            action_slug: "a",
            usage_id: "use_1",
            wallet_address: None,
            parameters,
            credentials: None,
            vendor_secret: None,
            cpu: None,
        }
    }

    /// A heavy built-in adds the CPU time of its thread to the call's meter; a cheap one
    /// is not metered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_meter_counts_a_heavy_builtins_cpu_time() {
        let http = reqwest::Client::new();
        let validate = RunnerSpec::Builtin {
            name: "json.validate".into(),
        };
        assert!(is_heavy(&validate));
        // Every item needs the whole backtracking budget of its pattern.
        let items: Vec<String> = (0..40).map(|_| format!("{}b", "a".repeat(18))).collect();
        let params = Params::from_value(json!({
            "schema": {"type": "array", "items": {"type": "string", "pattern": "^(a+)+\\1$"}},
            "document": items,
        }));
        let meter = CpuMeter::default();
        let out = run(
            &http,
            &validate,
            Call {
                cpu: Some(&meter),
                ..call(&params)
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(out["valid"], false, "{out}");
        assert!(meter.spent() > Duration::ZERO, "no CPU time was counted");

        let sha = RunnerSpec::Builtin {
            name: "text.sha256".into(),
        };
        assert!(!is_heavy(&sha));
        let light = CpuMeter::default();
        let text = Params::from_value(json!({"text": "x"}));
        run(
            &http,
            &sha,
            Call {
                cpu: Some(&light),
                ..call(&text)
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(light.spent(), Duration::ZERO);
    }

    /// A built-in never runs on the async runtime's thread: on a single-threaded runtime,
    /// another task gets to run while it works.
    #[test]
    fn builtins_run_off_the_async_runtime() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let other_ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = other_ran.clone();
            tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
            let spec = RunnerSpec::Builtin {
                name: "text.sha256".into(),
            };
            let params = Params::from_value(json!({"text": "x"}));
            let out = run(
                &reqwest::Client::new(),
                &spec,
                call(&params),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            assert_eq!(out["sha256"].as_str().unwrap().len(), 64);
            assert!(
                other_ran.load(std::sync::atomic::Ordering::SeqCst),
                "the built-in ran on the runtime thread"
            );
        });
    }

    /// A multi-threaded runtime with a single worker.
    fn one_worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A cheap built-in does not queue behind heavy ones: with every heavy thread busy,
    /// `text.sha256` still runs at once, while `json.validate` waits its turn.
    #[test]
    fn cheap_builtins_do_not_wait_for_heavy_ones() {
        one_worker().block_on(async {
            let (release, released) = std::sync::mpsc::channel::<()>();
            let released = std::sync::Arc::new(std::sync::Mutex::new(released));
            let mut busy = Vec::new();
            for _ in 0..cores().saturating_sub(1).max(1) {
                let released = released.clone();
                busy.push(tokio::spawn(heavy::run(move || {
                    let _ = released.lock().unwrap().recv();
                    Ok(json!({}))
                })));
            }
            let params = Params::from_value(json!({"text": "x"}));
            let out = run_builtin("text.sha256", &params, None, Duration::from_secs(2)).await;
            assert!(out.is_ok(), "{out:?}");
            let validate =
                Params::from_value(json!({"schema": {"type": "string"}, "document": "x"}));
            let waited =
                run_builtin("json.validate", &validate, None, Duration::from_millis(200)).await;
            assert!(matches!(waited, Err(ToolError::Timeout)), "{waited:?}");
            for _ in &busy {
                release.send(()).unwrap();
            }
            for job in busy {
                job.await.unwrap().unwrap();
            }
            // Its turn came: it runs now.
            let ran = run_builtin("json.validate", &validate, None, Duration::from_secs(2)).await;
            assert_eq!(ran.unwrap()["valid"], json!(true));
        });
    }

    /// Heavy built-ins run at the lowest CPU priority, and only their own threads do.
    #[cfg(target_os = "linux")]
    #[test]
    fn heavy_builtins_run_at_the_lowest_priority() {
        fn nice() -> i32 {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        }
        one_worker().block_on(async {
            let before = nice();
            let inside = heavy::run(move || Ok(json!(nice()))).await.unwrap();
            assert_eq!(inside, json!(19));
            let blocking = tokio::task::spawn_blocking(nice).await.unwrap();
            assert_eq!(blocking, before, "the blocking pool keeps its priority");
            assert_eq!(nice(), before);
        });
    }

    /// `json.canonicalize` shows the bytes the server hashes: number lexemes as sent, and
    /// the ASCII-escaped form equal to Python's `json.dumps(v, ensure_ascii=True,
    /// sort_keys=True, separators=(",", ":"))` of what Python sent.
    #[test]
    fn canonicalize_keeps_number_lexemes() {
        let params = sent_text(
            r#"{"value": {"s": "café", "tiny": 1e-07, "big": 123456789012345678901234567890, "x": 0.30000000000000000001, "f": 1.5}}"#,
        );
        let out = builtin_call("json.canonicalize", &params).unwrap();
        assert_eq!(
            out["canonical"],
            json!(
                r#"{"big":123456789012345678901234567890,"f":1.5,"s":"café","tiny":1e-07,"x":0.30000000000000000001}"#
            )
        );
        // Python: json.dumps({"s": "café", "tiny": 1e-07, "big": 123456789012345678901234567890,
        // "f": 1.5}, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
        let python = sent_text(
            r#"{"value": {"s": "caf\u00e9", "tiny": 1e-07, "big": 123456789012345678901234567890, "f": 1.5}}"#,
        );
        let out = builtin_call("json.canonicalize", &python).unwrap();
        assert_eq!(
            out["ascii_escaped"],
            json!(r#"{"big":123456789012345678901234567890,"f":1.5,"s":"caf\u00e9","tiny":1e-07}"#)
        );
        assert_eq!(
            out["ascii_escaped_sha256"],
            json!(canonical::sha256_hex(
                r#"{"big":123456789012345678901234567890,"f":1.5,"s":"caf\u00e9","tiny":1e-07}"#
            ))
        );
    }

    fn sent_text(text: &str) -> Params {
        let sent = canonical::parse(text.as_bytes()).unwrap();
        Params::verbatim(serde_json::from_str(text).unwrap(), &sent)
    }

    #[test]
    fn validate_inputs_and_patterns_are_bounded() {
        let big = "x".repeat(MAX_VALIDATE_BYTES);
        let refused = builtin(
            "json.validate",
            &json!({"schema": {"type": "string"}, "document": big}),
        );
        assert!(matches!(refused, Err(ToolError::Failed(m)) if m.contains("exceed")));
        // A back-referencing pattern on 18 characters needs more backtracking than the
        // budget (and less than the crate's default, which would spend ten times as much).
        let doc = format!("{}b", "a".repeat(18));
        let schema = json!({"type": "string", "pattern": "^(a+)+\\1$"});
        let out = builtin("json.validate", &json!({"schema": schema, "document": doc})).unwrap();
        assert_eq!(out["valid"], false);
        assert!(
            out["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("backtracking"),
            "{out}"
        );
    }

    #[test]
    fn builtins_work_offline() {
        let c = builtin("json.canonicalize", &json!({"value": {"b": 1, "a": "é"}})).unwrap();
        assert_eq!(c["canonical"], json!("{\"a\":\"é\",\"b\":1}"));
        let k = builtin("eth.keccak256", &json!({"text": ""})).unwrap();
        assert_eq!(
            k["keccak256"],
            json!("0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
        );
        let a = builtin(
            "eth.checksum_address",
            &json!({"address": "0x52908400098527886e0f7030069857d2e4169ee7"}),
        )
        .unwrap();
        assert_eq!(
            a["address"],
            json!("0x52908400098527886E0F7030069857D2E4169EE7")
        );
        let s = builtin("text.stats", &json!({"text": "One two. Three!\nfour"})).unwrap();
        assert_eq!(
            (
                s["words"].as_i64(),
                s["lines"].as_i64(),
                s["sentences"].as_i64()
            ),
            (Some(4), Some(2), Some(3))
        );
        let u = builtin("text.extract_urls", &json!({"text": "see https://a.example/x, and (http://b.example). https://a.example/x"})).unwrap();
        assert_eq!(
            u["urls"],
            json!(["https://a.example/x", "http://b.example"])
        );
        let q = builtin("eth.credits_quote", &json!({"credits": 750})).unwrap();
        assert_eq!(q["usdc_base_units"], json!("7500000"));
        assert_eq!(q["purchasable_pack_credits"], json!(1000));
        let v = builtin(
            "json.validate",
            &json!({"schema": {"type": "integer"}, "document": "x"}),
        )
        .unwrap();
        assert_eq!(v["valid"], json!(false));
        assert!(matches!(
            builtin("eth.keccak256", &json!({"hex": "zz"})),
            Err(ToolError::Failed(_))
        ));
    }

    #[test]
    fn signature_header_is_hmac_of_timestamp_and_body() {
        let secret = SecretString::from("s3cret".to_owned());
        let header = vendor_signature(&secret, "1700000000", b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(
            header,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
    }
}
