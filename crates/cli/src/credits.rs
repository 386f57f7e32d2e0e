//! `agentpmt credits buy N [--chain base] [--token USDC]`: buys credits with an x402 payment
//! signed by the wallet, showing progress on stderr while settlement is pending.

use crate::keys;
use crate::output::{self, Output};
use agentpmt_protocol::x402::find_chain;
use agentpmt_sdk::{Client, PurchaseProgress};
use clap::{Args, Subcommand};
use std::path::Path;
use std::time::Duration;

/// `agentpmt credits ...`
#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Buy credits (a multiple of 500; 100 credits = 1 USD) with USDC over x402.
    Buy(BuyArgs),
}

/// `agentpmt credits buy`
#[derive(Debug, Args)]
pub struct BuyArgs {
    /// Credits to buy (500, 1000, 1500, ...).
    pub credits: i64,
    /// Chain: a name (base, arbitrum, optimism, polygon, avalanche, base-sepolia) or a chain
    /// id [default: the server's default network].
    #[arg(long)]
    pub chain: Option<String>,
    /// Token symbol [default: USDC].
    #[arg(long)]
    pub token: Option<String>,
    /// How long to wait for a pending settlement, in seconds.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
}

/// Runs `credits` subcommands.
pub async fn run(
    command: CreditsCommand,
    server: &str,
    keystore: &Path,
    out: &Output,
) -> anyhow::Result<()> {
    let CreditsCommand::Buy(args) = command;
    let chain_id = match &args.chain {
        None => None,
        Some(text) => Some(match find_chain(text) {
            Some(chain) => chain.chain_id,
            None => text
                .trim()
                .trim_start_matches("eip155:")
                .parse()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "unknown chain {text:?}: use a name (base, arbitrum, ...) or a chain id"
                    )
                })?,
        }),
    };
    let loaded = keys::load_key(keystore)?;
    let client = Client::new(server, loaded.key)?;
    let quiet = out.is_json();
    let result = client
        .buy_credits(
            args.credits,
            chain_id,
            args.token.as_deref(),
            Duration::from_secs(args.wait_secs),
            |step| {
                if quiet {
                    return;
                }
                match step {
                    PurchaseProgress::Challenge(req) => eprintln!(
                        "paying {} base units of {} on {} to {}",
                        req.amount, req.asset, req.network, req.pay_to
                    ),
                    PurchaseProgress::Signed => eprintln!("authorization signed; settling..."),
                    PurchaseProgress::Pending(r) => eprintln!(
                        "settlement pending (transaction {}); waiting...",
                        if r.transaction_hash.is_empty() {
                            "not known yet"
                        } else {
                            &r.transaction_hash
                        }
                    ),
                    PurchaseProgress::Waiting => eprintln!("settlement in progress; waiting..."),
                }
            },
        )
        .await
        .map_err(|e| output::sdk_error(e, server))?;
    out.emit(
        &result,
        &[
            ("status", result.status.clone()),
            ("credits", result.credits_purchased.to_string()),
            (
                "balance",
                result
                    .balance_credits
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "pending".into()),
            ),
            ("transaction", result.transaction_hash.clone()),
            ("network", result.payment.network.clone()),
            (
                "paid",
                format!(
                    "{} {} ({} USD)",
                    result.payment.amount_base_units,
                    result.payment.token,
                    result.payment.amount_usd
                ),
            ),
            ("purchase", result.purchase_id.clone()),
        ],
    );
    Ok(())
}
