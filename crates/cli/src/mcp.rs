//! `agentpmt mcp`: a stdio ↔ HTTP relay to a server's MCP endpoint, so any stdio-only MCP
//! client can use a (self-hosted) server.
//!
//! Reads newline-delimited JSON-RPC messages on stdin, POSTs each to `<server>/mcp` with the
//! bearer from the environment (`AGENTPMT_BEARER_TOKEN`, or `AGENTPMT_API_KEY` and
//! `AGENTPMT_BUDGET_KEY`; none: only x402-paid calls work), and writes each response as one
//! line on stdout. Requests run concurrently; responses are written whole, one per line.
//! `application/json` and `text/event-stream` replies are both understood; a reply that is
//! not JSON-RPC (a proxy's error page, a refused connection) becomes a JSON-RPC error for
//! the request's id. Nothing but JSON-RPC is written to stdout; diagnostics go to stderr.

use crate::schedules::{env_secret, API_KEY_ENV, BEARER_ENV, BUDGET_KEY_ENV};
use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The MCP endpoint [default: <server>/mcp].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

/// How requests are authenticated.
enum Auth {
    Bearer(Zeroizing<String>),
    Keys(Zeroizing<String>, Zeroizing<String>),
    None,
}

fn auth_from_env() -> Result<Auth> {
    if let Some(bearer) = env_secret(BEARER_ENV)? {
        return Ok(Auth::Bearer(bearer));
    }
    match (env_secret(API_KEY_ENV)?, env_secret(BUDGET_KEY_ENV)?) {
        (Some(api), Some(budget)) => Ok(Auth::Keys(api, budget)),
        (None, None) => {
            eprintln!("agentpmt mcp: no {BEARER_ENV} (or {API_KEY_ENV} + {BUDGET_KEY_ENV}): only x402-paid tool calls will work");
            Ok(Auth::None)
        }
        _ => Err(anyhow!(
            "set both {API_KEY_ENV} and {BUDGET_KEY_ENV}, or {BEARER_ENV}"
        )),
    }
}

struct Relay {
    http: reqwest::Client,
    url: String,
    auth: Auth,
    /// The protocol version `initialize` negotiated, sent on later requests.
    version: Mutex<Option<String>>,
}

pub async fn run(args: McpArgs, server: &str) -> Result<()> {
    let url = args
        .url
        .unwrap_or_else(|| format!("{}/mcp", server.trim_end_matches('/')));
    let relay = Arc::new(Relay {
        http: reqwest::Client::builder().build()?,
        url,
        auth: auth_from_env()?,
        version: Mutex::new(None),
    });
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let relay = relay.clone();
        let out = out_tx.clone();
        let is_initialize = line.contains("\"initialize\"");
        let task = async move {
            if let Some(reply) = relay.forward(&line).await {
                let _ = out.send(reply);
            }
        };
        if is_initialize {
            // The negotiated version is needed by what follows.
            task.await;
        } else {
            tasks.spawn(task);
        }
    }
    while tasks.join_next().await.is_some() {}
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

impl Relay {
    /// POSTs one message; the line to write back (None for notifications).
    async fn forward(&self, line: &str) -> Option<String> {
        let parsed: Option<Value> = serde_json::from_str(line).ok();
        let id = parsed
            .as_ref()
            .and_then(|v| v.get("id"))
            .cloned()
            .unwrap_or(Value::Null);
        let expects_reply = match &parsed {
            Some(Value::Array(_)) => true,
            Some(v) => v.get("id").is_some() && v.get("method").is_some(),
            None => true,
        };
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(line.to_owned());
        if let Some(version) = self.version.lock().ok().and_then(|v| v.clone()) {
            request = request.header("mcp-protocol-version", version);
        }
        request = match &self.auth {
            Auth::Bearer(token) => request.bearer_auth(token.as_str()),
            Auth::Keys(api, budget) => request
                .header("x-api-key", api.as_str())
                .header("x-budget-key", budget.as_str()),
            Auth::None => request,
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("agentpmt mcp: {e}");
                return expects_reply
                    .then(|| rpc_error(&id, &format!("The MCP server cannot be reached: {e}")));
            }
        };
        let status = response.status();
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let body = response.text().await.unwrap_or_default();
        let text = if sse { sse_data(&body) } else { body };
        match serde_json::from_str::<Value>(&text) {
            Ok(reply) if is_jsonrpc(&reply) => {
                self.remember_version(&reply);
                expects_reply.then(|| reply.to_string())
            }
            _ if !expects_reply => None,
            _ => Some(rpc_error(
                &id,
                &format!("The MCP server answered HTTP {status} without a JSON-RPC body"),
            )),
        }
    }

    fn remember_version(&self, reply: &Value) {
        if let Some(version) = reply
            .get("result")
            .and_then(|r| r.get("protocolVersion"))
            .and_then(Value::as_str)
        {
            if let Ok(mut v) = self.version.lock() {
                *v = Some(version.to_owned());
            }
        }
    }
}

/// The joined `data:` lines of an SSE reply.
fn sse_data(body: &str) -> String {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_jsonrpc(v: &Value) -> bool {
    match v {
        Value::Array(items) => items.iter().all(is_jsonrpc),
        Value::Object(o) => o.get("jsonrpc") == Some(&json!("2.0")),
        _ => false,
    }
}

fn rpc_error(id: &Value, message: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": message}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_replies_are_joined() {
        let body = "event: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1,\"result\":{}}\n\n";
        let v: Value = serde_json::from_str(&sse_data(body)).unwrap();
        assert_eq!(v["id"], 1);
        assert!(is_jsonrpc(&v));
        assert!(!is_jsonrpc(&json!({"error": "x"})));
    }
}
