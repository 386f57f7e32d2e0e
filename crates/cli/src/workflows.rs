//! `agentpmt workflows …`: published workflows and this wallet's workflow sessions.
//!
//! - `workflows list [--query Q] [--categories A,B] [--industry-tags T] [--publisher P]
//!   [--since DATE] [--limit N] [--skip N]` — public workflows (unsigned).
//! - `workflows show ID` — the graph and this wallet's sessions with their results (signed).
//! - `workflows start ID [--instance I]` — start or resume a session; prints its id.
//! - `workflows active [--instance I]` — this wallet's live sessions.
//! - `workflows end ID [--session S]` — end a session (default: the only live one).

use crate::keys;
use crate::output::{self, Output};
use agentpmt_sdk::workflows::WorkflowFilter;
use agentpmt_sdk::Client;
use clap::{Args, Subcommand};
use std::path::Path;

/// `agentpmt workflows …`
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List published public workflows (no wallet needed).
    List(ListArgs),
    /// Show a workflow's graph and this wallet's sessions of it, with their results.
    Show {
        /// Workflow id or slug.
        id: String,
    },
    /// Start (or resume) this wallet's session of a workflow.
    Start {
        /// Workflow id or slug.
        id: String,
        /// Agent instance id: one live session per instance.
        #[arg(long)]
        instance: Option<String>,
    },
    /// List this wallet's live sessions.
    Active {
        /// Only the sessions of this instance id.
        #[arg(long)]
        instance: Option<String>,
    },
    /// End a session of a workflow.
    End {
        /// Workflow id or slug.
        id: String,
        /// The workflow_session_id [default: the only live session of this workflow].
        #[arg(long)]
        session: Option<String>,
    },
}

/// `agentpmt workflows list` filters.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Words in the name, slug or description.
    #[arg(long)]
    query: Option<String>,
    /// Comma-separated categories (any of them).
    #[arg(long)]
    categories: Option<String>,
    /// Comma-separated industry tags (any of them).
    #[arg(long)]
    industry_tags: Option<String>,
    /// Exact publisher.
    #[arg(long)]
    publisher: Option<String>,
    /// Updated at or after (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    since: Option<String>,
    /// Page size (1-100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: Option<u32>,
    /// Workflows to skip.
    #[arg(long)]
    skip: Option<u32>,
}

/// Runs `workflows` subcommands.
pub async fn run(
    command: WorkflowsCommand,
    server: &str,
    keystore: &Path,
    out: &Output,
) -> anyhow::Result<()> {
    let fail = |e| output::sdk_error(e, server);
    // The wallet is loaded only by the commands that sign.
    let wallet_client = || -> anyhow::Result<Client> {
        let loaded = keys::load_key(keystore)?;
        Ok(Client::new(server, loaded.key)?)
    };
    match command {
        WorkflowsCommand::List(args) => {
            // The list is unsigned: a throwaway key satisfies the client and signs nothing.
            let client = Client::new(server, agentpmt_sdk::PrivateKey::random())?;
            let filter = WorkflowFilter {
                query: args.query,
                categories: args.categories,
                industry_tags: args.industry_tags,
                publisher: args.publisher,
                since: args.since,
                limit: args.limit,
                skip: args.skip,
            };
            let list = client.list_workflows(&filter).await.map_err(fail)?;
            if out.is_json() {
                out.print_json(&list);
            } else if list.workflows.is_empty() {
                println!("no workflows");
            } else {
                for w in &list.workflows {
                    println!(
                        "{}  {:<32} v{}  {} ({} nodes)",
                        w.workflow_id, w.slug, w.version, w.name, w.node_count
                    );
                }
            }
        }
        WorkflowsCommand::Show { id } => {
            let fetched = wallet_client()?.fetch_workflow(&id).await.map_err(fail)?;
            let w = &fetched.workflow;
            let mut rows = vec![
                ("workflow_id", w.summary.workflow_id.clone()),
                ("slug", w.summary.slug.clone()),
                ("name", w.summary.name.clone()),
                ("publisher", w.summary.publisher.clone()),
                ("version", w.summary.version.to_string()),
                ("nodes", w.graph.nodes.len().to_string()),
                ("edges", w.graph.edges.len().to_string()),
                ("sessions", fetched.sessions.len().to_string()),
            ];
            if !fetched.active_session_ids.is_empty() {
                rows.push(("active", fetched.active_session_ids.join(", ")));
            }
            out.emit(&fetched, &rows);
        }
        WorkflowsCommand::Start { id, instance } => {
            let started = wallet_client()?
                .start_workflow(&id, instance.as_deref())
                .await
                .map_err(fail)?;
            out.emit(
                &started,
                &[
                    ("workflow_session_id", started.workflow_session_id.clone()),
                    ("resumed", started.resumed.to_string()),
                    (
                        "idle_timeout",
                        format!("{} s", started.idle_timeout_seconds),
                    ),
                ],
            );
        }
        WorkflowsCommand::Active { instance } => {
            let active = wallet_client()?
                .active_workflows(instance.as_deref())
                .await
                .map_err(fail)?;
            if out.is_json() {
                out.print_json(&active);
            } else if active.sessions.is_empty() {
                println!("no active sessions");
            } else {
                for s in &active.sessions {
                    println!(
                        "{}  workflow {}  instance {}  last activity {}",
                        s.workflow_session_id,
                        s.workflow_id,
                        s.instance_id.as_deref().unwrap_or("-"),
                        s.last_activity_at
                    );
                }
            }
        }
        WorkflowsCommand::End { id, session } => {
            let ended = wallet_client()?
                .end_workflow(&id, session.as_deref())
                .await
                .map_err(fail)?;
            out.emit(
                &ended,
                &[
                    ("workflow_session_id", ended.workflow_session_id.clone()),
                    ("status", ended.session.status.clone()),
                    ("already_ended", ended.already_ended.to_string()),
                ],
            );
        }
    }
    Ok(())
}
