//! The payment audit: re-checks every payment-derived credit and every counted on-chain
//! payment against the database and the chain, and lists what does not hold.
//!
//! What holds in a sound ledger (the money invariant):
//! - every `credit_purchase` ledger entry belongs to a settled purchase of the same credits
//!   whose on-chain payment is claimed (`payment_claims`) — nothing credited without one;
//! - every succeeded direct x402 tool payment has its claim;
//! - every claim belongs to a settled purchase or succeeded tool payment (its holder), is for
//!   exactly the price of what it pays for, and on chain its transaction is successful and
//!   its log is a `Transfer` of exactly that amount of the token from the payer to `payTo`,
//!   with at least the network's confirmations;
//! - no transfer log is claimed twice (the claims table's key) and no purchase is granted
//!   twice (ledger entry ids derive from the payment).
//!
//! Run by operators after an incident (`agentpmt-server audit`, `GET /api/admin/audit/payments`,
//! `agentpmt admin audit`) and by the project's adversarial tests after every attack.

use super::claims::{self, kind, ClaimRow};
use super::networks::SettlementKind;
use super::store::{self, status};
use super::Payments;
use crate::db::macros::sql_fetch_all;
use crate::db::Db;
use crate::error::ApiResult;
use crate::ledger;
use agentpmt_protocol::wire::{PaymentAuditReport, PaymentDiscrepancy};
use alloy::primitives::{Address, U256};

/// Claims read per page.
const PAGE: i64 = 500;

/// Adds a discrepancy to `report`.
fn flag(
    report: &mut PaymentAuditReport,
    kind: &str,
    reference: impl Into<String>,
    detail: impl Into<String>,
) {
    report.clean = false;
    report.discrepancies.push(PaymentDiscrepancy {
        kind: kind.to_owned(),
        reference: reference.into(),
        detail: detail.into(),
    });
}

#[derive(Debug, sqlx::FromRow)]
struct ToolPaymentRow {
    usage_id: String,
    price_credits: i64,
    network: Option<String>,
    token: Option<String>,
    payer_address: Option<String>,
    status: String,
}

/// Runs the audit over the whole database (and every configured chain).
pub async fn run(db: &Db, payments: &Payments) -> ApiResult<PaymentAuditReport> {
    let mut report = PaymentAuditReport {
        clean: true,
        ..PaymentAuditReport::default()
    };
    check_ledger(db, &mut report).await?;
    let tool_payments: Vec<ToolPaymentRow> = sql_fetch_all!(
        db.read().await?.conn(),
        ToolPaymentRow,
        "SELECT usage_id, price_credits, network, token, payer_address, status FROM tool_usage \
         WHERE mode = 'x402' AND status IN ('succeeded', 'settling', 'settlement_pending')"
    )?;
    for t in tool_payments.iter().filter(|t| t.status == "succeeded") {
        if claims::of_holder(&mut db.read().await?, kind::TOOL_PAYMENT, &t.usage_id)
            .await?
            .is_none()
        {
            flag(
                &mut report,
                "unclaimed_tool_payment",
                &t.usage_id,
                "a succeeded x402 tool payment has no claimed on-chain payment",
            );
        }
    }
    let open_tools = tool_payments
        .iter()
        .filter(|t| t.status != "succeeded")
        .count();
    let open_purchases = crate::db::macros::sql_scalar_optional!(
        db.read().await?.conn(),
        i64,
        "SELECT COUNT(*) FROM credit_purchases WHERE status IN ('pending', 'broadcast')"
    )?
    .unwrap_or(0);
    report.open_settlements = u64::try_from(open_purchases).unwrap_or(0) + open_tools as u64;

    let mut offset = 0;
    loop {
        let page = claims::page(&mut db.read().await?, offset, PAGE).await?;
        if page.is_empty() {
            break;
        }
        offset += page.len() as i64;
        for claim in &page {
            report.claims += 1;
            check_claim(db, payments, claim, &tool_payments, &mut report).await?;
        }
    }
    Ok(report)
}

/// Every purchase credit has a settled purchase with a claimed payment of its amount.
async fn check_ledger(db: &Db, report: &mut PaymentAuditReport) -> ApiResult<()> {
    let entries: Vec<ledger::Entry> = sql_fetch_all!(
        db.read().await?.conn(),
        ledger::Entry,
        "SELECT entry_id, wallet_address, amount_credits, kind, reference, reason, fingerprint, \
         balance_after, created_at_ms FROM ledger_entries WHERE kind = $1 ORDER BY created_at_ms",
        ledger::kind::CREDIT_PURCHASE
    )?;
    for entry in entries {
        report.ledger_entries += 1;
        report.credits_purchased += entry.amount_credits;
        let Some(purchase_id) = entry.reference.as_deref() else {
            flag(
                &mut *report,
                "credited_without_payment",
                &entry.entry_id,
                "a purchase credit names no purchase",
            );
            continue;
        };
        let Some(purchase) = store::find(&mut db.read().await?, purchase_id).await? else {
            flag(
                &mut *report,
                "credited_without_payment",
                &entry.entry_id,
                format!("purchase {purchase_id} does not exist"),
            );
            continue;
        };
        if purchase.status != status::SETTLED {
            flag(
                &mut *report,
                "credited_without_payment",
                &entry.entry_id,
                format!("purchase {purchase_id} is {}", purchase.status),
            );
        }
        if purchase.credits != entry.amount_credits
            || purchase.wallet_address != entry.wallet_address
        {
            flag(
                &mut *report,
                "amount_mismatch",
                &entry.entry_id,
                format!(
                    "{} credits to {} for purchase {purchase_id} of {} credits to {}",
                    entry.amount_credits,
                    entry.wallet_address,
                    purchase.credits,
                    purchase.wallet_address
                ),
            );
        }
        if claims::of_holder(&mut db.read().await?, kind::PURCHASE, purchase_id)
            .await?
            .is_none()
        {
            flag(
                &mut *report,
                "credited_without_payment",
                &entry.entry_id,
                format!("purchase {purchase_id} has no claimed on-chain payment"),
            );
        }
    }
    Ok(())
}

/// A claim has a final holder of its price, and the chain shows its transfer at depth.
async fn check_claim(
    db: &Db,
    payments: &Payments,
    claim: &ClaimRow,
    tool_payments: &[ToolPaymentRow],
    report: &mut PaymentAuditReport,
) -> ApiResult<()> {
    let reference = format!(
        "eip155:{}:{}:{}",
        claim.chain_id, claim.transaction_hash, claim.log_index
    );
    // The holder, and the price (credits, token) it was paid for.
    let expected: Option<(i64, String)> = match claim.kind.as_str() {
        kind::PURCHASE => match store::find(&mut db.read().await?, &claim.holder_id).await? {
            Some(p) if p.status == status::SETTLED => Some((p.credits, p.token)),
            Some(p) => {
                flag(
                    &mut *report,
                    "claim_without_holder",
                    &reference,
                    format!("purchase {} is {}", p.purchase_id, p.status),
                );
                None
            }
            None => {
                flag(
                    &mut *report,
                    "claim_without_holder",
                    &reference,
                    format!("purchase {} does not exist", claim.holder_id),
                );
                None
            }
        },
        kind::TOOL_PAYMENT => match tool_payments.iter().find(|t| t.usage_id == claim.holder_id) {
            Some(t) if t.status == "succeeded" => {
                if t.payer_address.as_deref().map(str::to_ascii_lowercase)
                    != Some(claim.payer_address.clone())
                {
                    flag(
                        &mut *report,
                        "amount_mismatch",
                        &reference,
                        format!("tool payment {} was made by another payer", t.usage_id),
                    );
                }
                let chain = t
                    .network
                    .as_deref()
                    .and_then(agentpmt_protocol::x402::parse_caip2);
                if chain != u64::try_from(claim.chain_id).ok() {
                    flag(
                        &mut *report,
                        "amount_mismatch",
                        &reference,
                        format!("tool payment {} was made on another network", t.usage_id),
                    );
                }
                Some((t.price_credits, t.token.clone().unwrap_or_default()))
            }
            _ => {
                flag(
                    &mut *report,
                    "claim_without_holder",
                    &reference,
                    format!("tool payment {} did not succeed", claim.holder_id),
                );
                None
            }
        },
        other => {
            flag(
                &mut *report,
                "claim_without_holder",
                &reference,
                format!("unknown claim kind {other}"),
            );
            None
        }
    };
    let Ok(chain_id) = u64::try_from(claim.chain_id) else {
        flag(
            &mut *report,
            "claim_without_holder",
            &reference,
            "bad chain id",
        );
        return Ok(());
    };
    if let Some((credits, token)) = &expected {
        match payments
            .networks
            .offer(*credits, Some(chain_id), Some(token))
        {
            Ok(offer) => {
                if offer.amount.to_string() != claim.amount_base_units
                    || format!("{:#x}", offer.token.address) != claim.asset
                {
                    flag(&mut *report,
                        "amount_mismatch",
                        &reference,
                        format!(
                            "claimed {} base units of {} for {credits} credits, the price is {} of {:#x}",
                            claim.amount_base_units, claim.asset, offer.amount, offer.token.address
                        ),
                    );
                }
            }
            Err(message) => flag(&mut *report, "amount_mismatch", &reference, message),
        }
    }
    let Some(network) = payments
        .networks
        .networks
        .iter()
        .find(|n| n.chain_id == chain_id)
    else {
        flag(
            &mut *report,
            "chain_unreachable",
            &reference,
            format!("chain {chain_id} is not configured: the payment cannot be re-checked"),
        );
        return Ok(());
    };
    if network.settlement == SettlementKind::Dev {
        return Ok(());
    }
    let Some(reader) = payments.settler(chain_id).and_then(|s| s.reader()) else {
        flag(
            &mut *report,
            "chain_unreachable",
            &reference,
            format!("chain {chain_id} has no chain reader"),
        );
        return Ok(());
    };
    let parse = |text: &str| text.parse::<Address>().ok();
    let (Some(asset), Some(pay_to), Some(from), Ok(amount)) = (
        parse(&claim.asset),
        parse(&claim.pay_to),
        parse(&claim.payer_address),
        claim.amount_base_units.parse::<U256>(),
    ) else {
        flag(
            &mut *report,
            "amount_mismatch",
            &reference,
            "the claim's addresses or amount are unreadable",
        );
        return Ok(());
    };
    report.checked_on_chain += 1;
    // -1: a payment counted before log indexes were recorded (any matching log).
    let log_index = u64::try_from(claim.log_index).ok();
    match reader
        .check_claim(
            &claim.transaction_hash,
            log_index,
            asset,
            pay_to,
            amount,
            Some(from),
        )
        .await
    {
        Ok(confirmations) if confirmations < reader.required_confirmations() => flag(
            &mut *report,
            "below_depth",
            &reference,
            format!(
                "{confirmations} confirmations now, {} required (was it reorged?)",
                reader.required_confirmations()
            ),
        ),
        Ok(_) => {}
        Err(detail) if detail.contains("cannot be reached") || detail.contains("in time") => {
            flag(&mut *report, "chain_unreachable", &reference, detail)
        }
        Err(detail) => flag(&mut *report, "not_on_chain", &reference, detail),
    }
    Ok(())
}
