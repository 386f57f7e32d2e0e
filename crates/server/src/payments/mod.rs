//! Payments: accepted networks and tokens, x402 verification, settlement backends, the
//! purchase store, and reconciliation of settlements whose outcome is unknown.
//!
//! A purchase moves `pending` → (`broadcast`) → `settled` | `failed`. The payment is claimed
//! (authorization `(chain, asset, from, nonce)` or transfer `(chain, tx)`) in the same
//! transaction that records the purchase, before anything is submitted; credits are granted
//! in the transaction that marks it settled, with a ledger entry id derived from the payment.
//! While a request settles a purchase it holds a lease; an open purchase whose lease expired
//! (a crash, a timeout) is reconciled from chain state by the next request for it or by the
//! background reconciler, and is credited exactly once.

pub mod networks;
pub mod settle;
pub mod store;
pub mod verify;

use crate::db::Db;
use crate::error::ApiError;
use crate::time::now_ms;
use agentpmt_protocol::x402::{decode_payment_value, DecodedPayment};
use networks::{Networks, Offer};
use settle::{Broadcast, Outcome, SettleOptions, Settler, SettlerError};
use std::collections::HashMap;
use std::time::Duration;
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
        let lease = options.receipt_timeout + Duration::from_secs(30);
        Ok(Payments {
            networks,
            settlers,
            lease,
            fault,
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

    /// Settles a freshly claimed x402 purchase (this request holds its lease).
    pub async fn settle_claimed(
        &self,
        db: &Db,
        row: PurchaseRow,
        offer: &Offer,
        payment: &DecodedPayment,
    ) -> Result<Settlement, ApiError> {
        let Some(settler) = self.settler(offer.network.chain_id) else {
            return Err(ApiError::internal(anyhow::anyhow!("no settler for chain")));
        };
        let outcome = match settler.broadcast(offer, payment).await {
            Broadcast::Confirmed(tx) => Outcome::Settled(tx),
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
                settler.confirm(offer, payment, &tx).await
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
            Outcome::Settled(tx) => {
                let mut t = db.begin().await?;
                let balance = store::finalize_settled(&mut t, &row, &tx)
                    .await
                    .map_err(ApiError::internal)?;
                t.commit().await?;
                tracing::info!(purchase_id = %row.purchase_id, transaction = %tx,
                    credits = row.credits, settlement = %row.settlement, "purchase settled");
                let mut row = row;
                row.status = status::SETTLED.into();
                row.transaction_hash = Some(tx);
                Ok(Settlement::Settled { row, balance })
            }
            Outcome::Failed(refusal) => {
                let mut t = db.begin().await?;
                store::mark_failed(&mut t, &row.purchase_id, &refusal.reason, &refusal.message)
                    .await?;
                t.commit().await?;
                tracing::info!(purchase_id = %row.purchase_id, reason = %refusal.reason, "purchase failed");
                let mut row = row;
                row.status = status::FAILED.into();
                Ok(Settlement::Failed { row, refusal })
            }
            Outcome::Unknown(message) => {
                tracing::warn!(purchase_id = %row.purchase_id, %message, "settlement outcome unknown; will reconcile");
                store::drop_lease(&mut db.write().await?, &row.purchase_id).await?;
                Ok(Settlement::Pending { row, message })
            }
            Outcome::Resubmit => Err(ApiError::internal(anyhow::anyhow!("unexpected resubmit"))),
        }
    }

    /// The outcome of an existing purchase: stored when final, else reconciled from chain
    /// state (when no other request holds it).
    pub async fn resume(&self, db: &Db, row: PurchaseRow) -> Result<Settlement, ApiError> {
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
        if !store::take_lease(&mut db.write().await?, &row.purchase_id, self.lease_until()).await? {
            return Ok(Settlement::InProgress { row });
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
        match settler
            .reconcile(&offer, &payment, tx.as_deref(), now_secs)
            .await
        {
            Outcome::Resubmit => {
                tracing::info!(purchase_id = %row.purchase_id, "authorization unused and still valid: settling it again");
                self.settle_claimed(db, row, &offer, &payment).await
            }
            outcome => self.apply(db, row, outcome).await,
        }
    }

    /// Reconciles every open purchase whose lease expired; returns how many became final.
    pub async fn reconcile_open(&self, db: &Db) -> Result<usize, ApiError> {
        let rows = store::open_purchases(&mut db.read().await?, now_ms(), 50).await?;
        let mut done = 0;
        for row in rows {
            match self.resume(db, row).await? {
                Settlement::Settled { .. } | Settlement::Failed { .. } => done += 1,
                _ => {}
            }
        }
        Ok(done)
    }
}
