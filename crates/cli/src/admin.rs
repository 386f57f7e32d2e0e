//! `agentpmt admin …`: the operator API, authenticated with the admin token from
//! `AGENTPMT_ADMIN_TOKEN` (never from an argument, which shell history would keep).
//!
//! - `admin wallet ADDRESS` — balance, ledger totals and recent entries.
//! - `admin credits grant ADDRESS AMOUNT --reason R [--idempotency-key K]`
//! - `admin credits remove ADDRESS AMOUNT --reason R [--idempotency-key K]`
//! - `admin help-tickets [--limit N]` — the newest agent-help tickets.
//! - `admin audit` — the payment audit; exits non-zero when it finds discrepancies.
//!
//! New operator commands go into [`AdminCommand`] as the operator API grows.

use crate::output::{self, Output};
use agentpmt_protocol::wire::CreditAdjustmentRequest;
use agentpmt_sdk::admin::AdminClient;
use agentpmt_sdk::WalletAddress;
use anyhow::{anyhow, Context as _, Result};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// The admin token's environment variable.
pub const ADMIN_TOKEN_ENV: &str = "AGENTPMT_ADMIN_TOKEN";

/// The `admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show a wallet: balance, ledger totals and its most recent ledger entries.
    Wallet {
        /// Wallet address (0x + 40 hex digits).
        address: String,
    },
    /// Grant or remove a wallet's credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// The newest questions and failing requests agents posted to agent-help.
    HelpTickets {
        /// How many, newest first (1-100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Re-check every payment-derived credit and counted on-chain payment against the chain
    /// (the payment audit); exits with status 1 when anything does not hold.
    Audit,
}

/// `admin credits` subcommands.
#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Add credits to a wallet (one ledger entry with a reason).
    Grant(Adjustment),
    /// Remove credits from a wallet (refused when the balance is smaller).
    Remove(Adjustment),
}

/// One credit adjustment.
#[derive(Debug, Args)]
pub struct Adjustment {
    /// Wallet address (0x + 40 hex digits).
    address: String,
    /// Number of credits (100 credits = 1 USD).
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    amount: i64,
    /// Why (kept on the ledger entry).
    #[arg(long)]
    reason: String,
    /// Repeating the command with the same key does not post twice.
    #[arg(long)]
    idempotency_key: Option<String>,
}

fn token() -> Result<Zeroizing<String>> {
    let value = std::env::var_os(ADMIN_TOKEN_ENV)
        .ok_or_else(|| anyhow!("set {ADMIN_TOKEN_ENV} to the server's admin token"))?;
    let value = Zeroizing::new(
        value
            .into_string()
            .map_err(|_| anyhow!("{ADMIN_TOKEN_ENV} is not valid UTF-8"))?,
    );
    if value.trim().is_empty() {
        return Err(anyhow!("{ADMIN_TOKEN_ENV} is empty"));
    }
    Ok(value)
}

fn wallet(text: &str) -> Result<WalletAddress> {
    text.parse()
        .with_context(|| format!("{text:?} is not a wallet address"))
}

/// Runs one admin subcommand against `server`.
pub async fn run(command: AdminCommand, server: &str, out: &Output) -> Result<()> {
    let client = AdminClient::new(server, token()?)?;
    match command {
        AdminCommand::Wallet { address } => {
            let view = client
                .wallet(&wallet(&address)?)
                .await
                .map_err(|e| output::sdk_error(e, server))?;
            let mut rows = vec![
                ("wallet", view.wallet_address.clone()),
                ("credits", view.balance_credits.to_string()),
                ("usd", format!("{:.2}", view.balance_usd)),
                ("ledger sum", view.ledger_sum_credits.to_string()),
                ("entries", view.ledger_entry_count.to_string()),
            ];
            for entry in view.recent_entries.iter().take(10) {
                rows.push((
                    "entry",
                    format!(
                        "{} {:+} {} ({})",
                        entry.created_at,
                        entry.amount_credits,
                        entry.kind,
                        entry.reason.as_deref().unwrap_or("-")
                    ),
                ));
            }
            out.emit(&view, &rows);
        }
        AdminCommand::HelpTickets { limit } => {
            let list = client
                .help_tickets(limit)
                .await
                .map_err(|e| output::sdk_error(e, server))?;
            let rows: Vec<(&str, String)> = list
                .tickets
                .iter()
                .map(|t| {
                    (
                        "ticket",
                        format!(
                            "{} {} [{}] {}",
                            t.created_at,
                            t.ticket_id,
                            t.error_code.as_deref().unwrap_or("-"),
                            t.message.chars().take(120).collect::<String>()
                        ),
                    )
                })
                .collect();
            out.emit(&list, &rows);
        }
        AdminCommand::Audit => {
            let report = client
                .audit_payments()
                .await
                .map_err(|e| output::sdk_error(e, server))?;
            let mut rows = vec![
                ("clean", report.clean.to_string()),
                ("ledger entries", report.ledger_entries.to_string()),
                ("claims", report.claims.to_string()),
                ("checked on chain", report.checked_on_chain.to_string()),
                ("open settlements", report.open_settlements.to_string()),
                ("credits purchased", report.credits_purchased.to_string()),
            ];
            for d in &report.discrepancies {
                rows.push((
                    "discrepancy",
                    format!("{} {}: {}", d.kind, d.reference, d.detail),
                ));
            }
            out.emit(&report, &rows);
            if !report.clean {
                return Err(anyhow!(
                    "the payment audit found {} discrepancies",
                    report.discrepancies.len()
                ));
            }
        }
        AdminCommand::Credits(command) => {
            let (adjustment, sign) = match command {
                CreditsCommand::Grant(a) => (a, 1),
                CreditsCommand::Remove(a) => (a, -1),
            };
            let request = CreditAdjustmentRequest {
                amount_credits: sign * adjustment.amount,
                reason: adjustment.reason,
                idempotency_key: adjustment.idempotency_key,
            };
            let posted = client
                .adjust_credits(&wallet(&adjustment.address)?, &request)
                .await
                .map_err(|e| output::sdk_error(e, server))?;
            out.emit(
                &posted,
                &[
                    ("wallet", posted.entry.wallet_address.clone()),
                    ("amount", format!("{:+}", posted.entry.amount_credits)),
                    ("balance", posted.balance_credits.to_string()),
                    ("entry", posted.entry.entry_id.clone()),
                    ("repeat", posted.idempotent_replay.to_string()),
                ],
            );
        }
    }
    Ok(())
}
