//! `agentpmt tools list [--query Q] [--category C]... [--page N] [--page-size N]`,
//! `agentpmt tools show SLUG`, and
//! `agentpmt tools invoke SLUG ACTION (--param k=v)... | --params JSON [--x402]`.
//!
//! `list` prints a table (one line per action) and the page position; `invoke` pays with
//! credits (a signed request) or, with `--x402`, per call with a USDC authorization signed by
//! the wallet.

use crate::keys;
use crate::output::{self, Output};
use agentpmt_sdk::tools::{find_tool, list_tools, ToolQuery};
use agentpmt_sdk::Client;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};
use std::path::Path;

/// `agentpmt tools ...`
#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// List the marketplace's tools (one page; --page for the next).
    List(ListArgs),
    /// Show one tool: its actions, prices and parameters.
    Show {
        /// Product slug (or id).
        slug: String,
    },
    /// Invoke an action with credits (signed) or with --x402 (paid per call).
    Invoke(InvokeArgs),
}

/// `agentpmt tools list`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Text searched in names and descriptions.
    #[arg(long)]
    pub query: Option<String>,
    /// Category filter (repeatable; a tool matches when it has any).
    #[arg(long = "category")]
    pub categories: Vec<String>,
    /// Page (1-based).
    #[arg(long, default_value_t = 1)]
    pub page: i64,
    /// Tools per page (1-1000).
    #[arg(long, default_value_t = 100)]
    pub page_size: i64,
}

/// `agentpmt tools invoke`
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Product slug.
    pub slug: String,
    /// Action slug (or raw action name).
    pub action: String,
    /// A parameter as key=value (repeatable); the value is parsed as JSON when it can be
    /// (numbers, true/false, objects), else taken as a string.
    #[arg(long = "param", value_name = "KEY=VALUE", conflicts_with = "params")]
    pub param: Vec<String>,
    /// All parameters as one JSON object.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// Pay this call with x402 (USDC signed by the wallet) instead of credits.
    #[arg(long)]
    pub x402: bool,
}

/// Runs `tools` subcommands.
pub async fn run(
    command: ToolsCommand,
    server: &str,
    keystore: &Path,
    out: &Output,
) -> anyhow::Result<()> {
    match command {
        ToolsCommand::List(args) => {
            let query = ToolQuery {
                query: args.query,
                categories: args.categories,
                page: Some(args.page),
                page_size: Some(args.page_size),
            };
            let listing = list_tools(server, &query)
                .await
                .map_err(|e| output::sdk_error(e, server))?;
            if out.is_json() {
                out.print_json(&listing);
                return Ok(());
            }
            let mut rows: Vec<[String; 4]> = vec![[
                "TOOL".into(),
                "ACTION".into(),
                "CREDITS".into(),
                "X402".into(),
            ]];
            for tool in &listing.tools {
                for action in &tool.actions {
                    rows.push([
                        tool.product_slug.clone(),
                        action.action_slug.clone(),
                        action.price_credits.to_string(),
                        if action.x402_enabled { "yes" } else { "-" }.into(),
                    ]);
                }
            }
            print!("{}", table(&rows));
            let p = &listing.pagination;
            println!(
                "page {} of {} ({} tools){}",
                p.page,
                p.total_pages.max(1),
                p.total_count,
                match p.next_page {
                    Some(n) => format!("; next: --page {n}"),
                    None => String::new(),
                }
            );
            Ok(())
        }
        ToolsCommand::Show { slug } => {
            let tool = find_tool(server, &slug)
                .await
                .map_err(|e| output::sdk_error(e, server))?
                .ok_or_else(|| {
                    anyhow::anyhow!("no listed tool {slug:?} (see `agentpmt tools list`)")
                })?;
            if out.is_json() {
                out.print_json(&tool);
                return Ok(());
            }
            let mut rows = vec![
                ("tool", tool.product_slug.clone()),
                ("id", tool.product_id.clone()),
                ("name", tool.name.clone()),
                ("vendor", tool.vendor.clone()),
                ("categories", tool.categories.join(", ")),
                ("description", tool.description.clone()),
            ];
            rows.push(("actions", tool.actions.len().to_string()));
            print!("{}", output::rows_text(&rows));
            for action in &tool.actions {
                println!();
                println!(
                    "  {} ({} credits{}): {}",
                    action.action_slug,
                    action.price_credits,
                    if action.x402_enabled { ", x402" } else { "" },
                    action.description
                );
                if let Some(params) = action.parameters.as_object() {
                    for (name, spec) in params {
                        println!(
                            "    --param {name}=<{}>{}  {}",
                            spec["type"].as_str().unwrap_or("json"),
                            if spec["required"] == Value::Bool(true) {
                                " (required)"
                            } else {
                                ""
                            },
                            spec["description"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
        ToolsCommand::Invoke(args) => {
            let parameters = parameters(&args)?;
            let loaded = keys::load_key(keystore)?;
            let client = Client::new(server, loaded.key)?;
            let result = if args.x402 {
                client
                    .invoke_x402(&args.slug, &args.action, parameters)
                    .await
            } else {
                client.invoke(&args.slug, &args.action, parameters).await
            }
            .map_err(|e| output::sdk_error(e, server))?;
            if out.is_json() {
                out.print_json(&result);
                return Ok(());
            }
            let mut rows = vec![
                (
                    "tool",
                    format!("{}/{}", result.product_slug, result.action_slug),
                ),
                ("usage", result.usage_id.clone()),
            ];
            match &result.x402 {
                Some(x) => {
                    rows.push((
                        "paid",
                        format!(
                            "{} base units of {} ({} USD)",
                            x.payment.amount_base_units, x.payment.token, x.payment.amount_usd
                        ),
                    ));
                    rows.push(("transaction", x.transaction.clone()));
                    rows.push(("network", x.network.clone()));
                }
                None => {
                    rows.push(("charged", format!("{} credits", result.charged_credits)));
                    rows.push((
                        "balance",
                        format!("{} credits", result.balance_credits.unwrap_or_default()),
                    ));
                }
            }
            print!("{}", output::rows_text(&rows));
            println!(
                "{}",
                serde_json::to_string_pretty(&result.response).unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// The invocation's parameters from `--params` or the `--param` pairs.
fn parameters(args: &InvokeArgs) -> anyhow::Result<Value> {
    if let Some(text) = &args.params {
        let value: Value = serde_json::from_str(text).context("--params must be a JSON object")?;
        anyhow::ensure!(value.is_object(), "--params must be a JSON object");
        return Ok(value);
    }
    let mut map = Map::new();
    for pair in &args.param {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--param {pair:?}: expected KEY=VALUE"))?;
        anyhow::ensure!(!key.is_empty(), "--param {pair:?}: empty key");
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        map.insert(key.to_owned(), value);
    }
    Ok(Value::Object(map))
}

/// Rows as left-aligned columns.
fn table(rows: &[[String; 4]]) -> String {
    let mut widths = [0usize; 4];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_pairs_parse_json_values() {
        let args = InvokeArgs {
            slug: "s".into(),
            action: "a".into(),
            param: vec![
                "n=3".into(),
                "text=hello world".into(),
                "flag=true".into(),
                "obj={\"a\":1}".into(),
            ],
            params: None,
            x402: false,
        };
        let v = parameters(&args).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"n": 3, "text": "hello world", "flag": true, "obj": {"a": 1}})
        );
    }
}
