//! Payments: accepted networks and tokens, x402 verification, settlement backends, the
//! purchase store, and reconciliation of settlements whose outcome is unknown.
//!
//! A purchase moves `pending` → (`broadcast`) → `settled` | `failed`. The payment is claimed
//! (authorization `(chain, asset, from, nonce)` or transfer `(chain, tx)`) in the same
//! transaction that records the purchase, before anything is submitted. Credits are granted
//! only for a payment the chain shows at the network's confirmation depth ([`settle`]: the
//! one rule for "paid"), in the transaction that marks the purchase settled and claims the
//! on-chain transfer log once ([`claims`]), with a ledger entry id derived from the payment.
//! While a request settles a purchase it holds a lease; an open purchase whose lease expired
//! (a crash, a timeout, too few confirmations, an unreachable node) is reconciled from chain
//! state by the next request for it or by the background reconciler, and is credited exactly
//! once. [`audit`] re-checks every counted payment against the chain.

pub mod audit;
pub mod claims;
pub mod networks;
pub mod settle;
pub mod store;
pub mod verify;

use crate::db::Db;
use crate::error::ApiError;
use crate::time::now_ms;
use agentpmt_protocol::x402::{decode_payment_value, DecodedPayment};
use networks::{Networks, Offer};
use settle::{Broadcast, Outcome, Paid, SettleOptions, Settler, SettlerError};
use std::collections::HashMap;
use std::time::Duration;
use store::Finalized;
use store::{status, PurchaseRow};
use verify::Refusal;

/// Faults that tests inject to exercise recovery paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Stop right after the settlement transaction was broadcast, as if the process died:
    /// no receipt wait, no credit, lease released.
    CrashAfterBroadcast,
}

/// Networks and their settlement backends.
#[derive(Debug)]
pub struct Payments {
    pub networks: Networks,
    settlers: HashMap<u64, Settler>,
    /// How long a request holds a purchase it is settling.
    pub lease: Duration,
    pub fault: Option<Fault>,
    /// The instance whose leases these are (written as `owner_instance`, see
    /// [`crate::instances`]); `None` outside a serving instance (the audit command).
    pub owner: Option<std::sync::Arc<str>>,
}

/// How a purchase attempt ended.
#[derive(Debug)]
pub enum Settlement {
    /// Credits granted; the balance right after.
    Settled { row: PurchaseRow, balance: i64 },
    /// Broadcast, outcome not known yet.
    Pending { row: PurchaseRow, message: String },
    /// Not settled; nothing charged.
    Failed { row: PurchaseRow, refusal: Refusal },
    /// Another request holds the purchase.
    InProgress { row: PurchaseRow },
}

impl Payments {
    /// Builds the backends of `networks`.
    pub fn new(
        networks: Networks,
        settlement_key: Option<&str>,
        poll_interval: Duration,
        fault: Option<Fault>,
    ) -> Result<Payments, SettlerError> {
        let options = SettleOptions {
            receipt_timeout: Duration::from_secs(networks.receipt_timeout_secs),
            poll_interval,
        };
        let mut settlers = HashMap::new();
        for network in &networks.networks {
            settlers.insert(
                network.chain_id,
                Settler::new(network, settlement_key, &options)?,
            );
        }
        // The receipt wait plus the time to send and record: an instance that died holding
        // a settlement is taken over once this has passed.
        let lease = options.receipt_timeout + Duration::from_secs(10);
        Ok(Payments {
            networks,
            settlers,
            lease,
            fault,
            owner: None,
        })
    }

    /// The backend of `chain_id`.
    pub fn settler(&self, chain_id: u64) -> Option<&Settler> {
        self.settlers.get(&chain_id)
    }

    /// Every backend, by chain id.
    pub fn settlers(&self) -> impl Iterator<Item = (&u64, &Settler)> {
        self.settlers.iter()
    }

    fn lease_until(&self) -> i64 {
        now_ms() + self.lease.as_millis() as i64
    }

    /// The offer and payment a stored x402 purchase was made with.
    pub fn stored_payment(&self, row: &PurchaseRow) -> Result<(Offer, DecodedPayment), String> {
        let chain_id = u64::try_from(row.chain_id).map_err(|_| "bad chain id")?;
        let mut offer = self
            .networks
            .offer(row.credits, Some(chain_id), Some(&row.token))?;
        if format!("{:#x}", offer.token.address) != row.asset {
            return Err(format!(
                "the token of chain {chain_id} changed since purchase {}",
                row.purchase_id
            ));
        }
        offer.pay_to = row
            .pay_to
            .parse()
            .map_err(|_| "stored payTo is invalid".to_owned())?;
        let json = row
            .authorization_json
            .as_deref()
            .ok_or("the purchase has no stored authorization")?;
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("stored authorization: {e}"))?;
        let payment = decode_payment_value(value).map_err(|e| e.to_string())?;
        Ok((offer, payment))
    }

    /// Settles a freshly claimed x402 purchase (this request holds its lease), waiting at most
    /// `budget` for the chain.
    pub async fn settle_claimed(
        &self,
        db: &Db,
        row: PurchaseRow,
        offer: &Offer,
        payment: &DecodedPayment,
        budget: Duration,
    ) -> Result<Settlement, ApiError> {
        let Some(settler) = self.settler(offer.network.chain_id) else {
            return Err(ApiError::internal(anyhow::anyhow!("no settler for chain")));
        };
        let search_from = row.search_from_block.and_then(|b| u64::try_from(b).ok());
        let outcome = match settler.broadcast(offer, payment).await {
            Broadcast::Settled(paid) => Outcome::Settled(paid),
            Broadcast::Failed(refusal) => Outcome::Failed(refusal),
            Broadcast::Unknown(message) => Outcome::Unknown(message),
            Broadcast::Sent(tx) => {
                tracing::info!(purchase_id = %row.purchase_id, transaction = %tx, "settlement broadcast");
                store::record_broadcast(&mut db.write().await?, &row.purchase_id, &tx).await?;
                if self.fault == Some(Fault::CrashAfterBroadcast) {
                    store::drop_lease(&mut db.write().await?, &row.purchase_id).await?;
                    return Err(ApiError::internal(anyhow::anyhow!(
                        "injected fault: crash after broadcast"
                    )));
                }
                settler
                    .confirm(offer, payment, &tx, search_from, budget)
                    .await
            }
        };
        self.apply(db, row, outcome).await
    }

    /// Records an outcome.
    async fn apply(
        &self,
        db: &Db,
        row: PurchaseRow,
        outcome: Outcome,
    ) -> Result<Settlement, ApiError> {
        match outcome {
            Outcome::Settled(paid) => self.grant(db, row, &paid).await,
            Outcome::Failed(refusal) => self.fail(db, row, refusal).await,
            Outcome::Unknown(message) => {
                tracing::warn!(purchase_id = %row.purchase_id, %message, "settlement outcome unknown; will reconcile");
                store::drop_lease(&mut db.write().await?, &row.purchase_id).await?;
                Ok(Settlement::Pending { row, message })
            }
            Outcome::Resubmit => Err(ApiError::internal(anyhow::anyhow!("unexpected resubmit"))),
        }
    }

    /// Marks a purchase failed (nothing granted; its authorization is given back).
    async fn fail(
        &self,
        db: &Db,
        row: PurchaseRow,
        refusal: Refusal,
    ) -> Result<Settlement, ApiError> {
        let mut t = db.begin().await?;
        store::mark_failed(&mut t, &row.purchase_id, &refusal.reason, &refusal.message).await?;
        t.commit().await?;
        tracing::info!(purchase_id = %row.purchase_id, reason = %refusal.reason, "purchase failed");
        let mut row = row;
        row.status = status::FAILED.into();
        Ok(Settlement::Failed { row, refusal })
    }

    /// Grants a purchase paid by `paid` (claimed once in the same transaction); a payment
    /// that already pays for something else fails the purchase instead.
    async fn grant(&self, db: &Db, row: PurchaseRow, paid: &Paid) -> Result<Settlement, ApiError> {
        let mut t = db.begin().await?;
        let finalized = store::finalize_settled(&mut t, &row, paid)
            .await
            .map_err(ApiError::internal)?;
        let balance = match finalized {
            Finalized::Granted(balance) | Finalized::AlreadyFinal(balance) => balance,
            Finalized::ClaimedElsewhere(other) => {
                drop(t);
                tracing::warn!(purchase_id = %row.purchase_id, transaction = %paid.transaction,
                    log_index = paid.log_index, claimed_by = %other.holder_id, kind = %other.kind,
                    "payment already claimed; nothing granted");
                let refusal = Refusal::new(
                    "payment_already_used",
                    format!(
                        "this on-chain payment already paid for {} {}",
                        other.kind.replace('_', " "),
                        other.holder_id
                    ),
                );
                return self.fail(db, row, refusal).await;
            }
        };
        t.commit().await?;
        tracing::info!(purchase_id = %row.purchase_id, transaction = %paid.transaction,
            log_index = paid.log_index, confirmations = paid.confirmations,
            credits = row.credits, settlement = %row.settlement, "purchase settled");
        let mut row = row;
        row.status = status::SETTLED.into();
        row.transaction_hash = Some(paid.transaction.clone());
        Ok(Settlement::Settled { row, balance })
    }

    /// The outcome of an existing purchase: stored when final, else reconciled from chain
    /// state (when no other request holds it), waiting at most `budget` for the chain.
    pub async fn resume(
        &self,
        db: &Db,
        row: PurchaseRow,
        budget: Duration,
    ) -> Result<Settlement, ApiError> {
        match row.status.as_str() {
            status::SETTLED => {
                let balance = store::granted_balance(&mut db.read().await?, &row)
                    .await?
                    .unwrap_or_default();
                return Ok(Settlement::Settled { row, balance });
            }
            status::FAILED => {
                let refusal = Refusal::new(
                    row.error_reason.clone().unwrap_or_default(),
                    row.error_message.clone().unwrap_or_default(),
                );
                return Ok(Settlement::Failed { row, refusal });
            }
            _ => {}
        }
        // A purchase on a chain this instance cannot settle is left to an instance that
        // can (taking its lease would only delay that one).
        if u64::try_from(row.chain_id)
            .ok()
            .and_then(|chain| self.settler(chain))
            .is_none()
        {
            return Ok(Settlement::Pending {
                row,
                message: "the chain of this purchase is not configured on this instance".into(),
            });
        }
        if !store::take_lease(
            &mut db.write().await?,
            &row.purchase_id,
            self.lease_until(),
            self.owner.as_deref(),
        )
        .await?
        {
            return Ok(Settlement::InProgress { row });
        }
        if row.method == "transfer" {
            return self.resume_transfer(db, row).await;
        }
        let (offer, payment) = match self.stored_payment(&row) {
            Ok(p) => p,
            Err(message) => {
                tracing::error!(purchase_id = %row.purchase_id, %message, "cannot reconcile purchase");
                return Ok(Settlement::Pending { row, message });
            }
        };
        let Some(settler) = self.settler(offer.network.chain_id) else {
            return Ok(Settlement::Pending {
                row,
                message: "the chain of this purchase is no longer configured".into(),
            });
        };
        let now_secs = (now_ms() / 1000) as u64;
        let tx = row.transaction_hash.clone();
        let search_from = row.search_from_block.and_then(|b| u64::try_from(b).ok());
        match settler
            .reconcile(&offer, &payment, tx.as_deref(), search_from, now_secs)
            .await
        {
            Outcome::Resubmit => {
                tracing::info!(purchase_id = %row.purchase_id, "authorization unused and still valid: settling it again");
                self.settle_claimed(db, row, &offer, &payment, budget).await
            }
            outcome => self.apply(db, row, outcome).await,
        }
    }

    /// Re-reads a pending transfer purchase (this caller holds its lease): granted once the
    /// transfer has the network's depth; failed if it is gone or no longer pays.
    async fn resume_transfer(&self, db: &Db, row: PurchaseRow) -> Result<Settlement, ApiError> {
        let Some(hash) = row.transaction_hash.clone() else {
            return Ok(Settlement::Pending {
                row,
                message: "the purchase names no transaction".into(),
            });
        };
        let Ok(chain_id) = u64::try_from(row.chain_id) else {
            return Ok(Settlement::Pending {
                row,
                message: "bad chain id".into(),
            });
        };
        let offer = match self
            .networks
            .offer(row.credits, Some(chain_id), Some(&row.token))
        {
            Ok(mut offer) => {
                if let Ok(pay_to) = row.pay_to.parse() {
                    offer.pay_to = pay_to;
                }
                offer
            }
            Err(message) => return Ok(Settlement::Pending { row, message }),
        };
        let Some(reader) = self.settler(chain_id).and_then(|s| s.reader()) else {
            return Ok(Settlement::Pending {
                row,
                message: "the chain of this purchase is no longer configured".into(),
            });
        };
        let Ok(tx_hash) = hash.parse() else {
            return Ok(Settlement::Pending {
                row,
                message: "bad transaction hash".into(),
            });
        };
        let found = match reader.find_transfer(&offer, tx_hash).await {
            Ok(found) => found,
            Err(refusal) if refusal.reason == "unexpected_settle_error" => {
                let message = refusal.message;
                store::drop_lease(&mut db.write().await?, &row.purchase_id).await?;
                return Ok(Settlement::Pending { row, message });
            }
            // Not mined any more (a reorg), reverted, or no longer the payment: keep waiting
            // while it may come back; the audit and the operator see it.
            Err(refusal) if refusal.reason == "transaction_not_found" => {
                store::drop_lease(&mut db.write().await?, &row.purchase_id).await?;
                return Ok(Settlement::Pending {
                    row,
                    message: refusal.message,
                });
            }
            Err(refusal) => return self.apply(db, row, Outcome::Failed(refusal)).await,
        };
        let outcome = self.transfer_outcome(db, &row, &found, &hash).await?;
        self.apply(db, row, outcome).await
    }

    /// The outcome of a transfer purchase given what its transaction holds: the first
    /// matching transfer from the payer that is not claimed yet, once deep enough.
    pub async fn transfer_outcome(
        &self,
        db: &Db,
        row: &PurchaseRow,
        found: &settle::TransferFound,
        hash: &str,
    ) -> Result<Outcome, ApiError> {
        let claimed = claims::of_transaction(&mut db.read().await?, row.chain_id, hash).await?;
        let free = found.transfers.iter().find(|(from, index)| {
            format!("{from:#x}") == row.payer_address
                && !claimed.iter().any(|c| {
                    // A claim from before log indexes were recorded (-1) claims every log.
                    (c.log_index < 0 || u64::try_from(c.log_index).ok() == Some(*index))
                        && !(c.kind == claims::kind::PURCHASE && c.holder_id == row.purchase_id)
                })
        });
        let Some((_, log_index)) = free else {
            return Ok(Outcome::Failed(Refusal::new(
                "payment_already_used",
                "every matching transfer of this transaction already paid for something",
            )));
        };
        if found.confirmations < found.required {
            return Ok(Outcome::Unknown(format!(
                "the transfer has {} of {} confirmations",
                found.confirmations, found.required
            )));
        }
        Ok(Outcome::Settled(Paid {
            transaction: hash.to_owned(),
            log_index: *log_index,
            block_number: found.block_number,
            confirmations: found.confirmations,
        }))
    }

    /// Records the outcome of a new transfer purchase (see [`Payments::transfer_outcome`]).
    pub async fn settle_transfer(
        &self,
        db: &Db,
        row: PurchaseRow,
        outcome: Outcome,
    ) -> Result<Settlement, ApiError> {
        self.apply(db, row, outcome).await
    }

    /// Reconciles every open purchase whose lease expired; returns how many became final.
    pub async fn reconcile_open(&self, db: &Db) -> Result<usize, ApiError> {
        let rows = store::open_purchases(&mut db.read().await?, now_ms(), 50).await?;
        let mut done = 0;
        let budget = Duration::from_secs(self.networks.receipt_timeout_secs);
        for row in rows {
            match self.resume(db, row, budget).await? {
                Settlement::Settled { .. } | Settlement::Failed { .. } => done += 1,
                _ => {}
            }
        }
        Ok(done)
    }
}
