//! Settlement backends, one per network: `evm` (this server submits
//! `transferWithAuthorization` with its gas key, through alloy), `facilitator` (a remote x402
//! facilitator's `/verify` and `/settle`) and `dev` (no chain; the settlement is recorded in
//! the database only).
//!
//! A settlement is two steps so the caller can record the transaction hash before waiting:
//! [`Settler::broadcast`] then [`Settler::confirm`]. An outcome that is not known (a timeout,
//! an RPC error after sending, a crash) is settled later by [`Settler::reconcile`] from chain
//! state: the receipt, `authorizationState(from, nonce)` and the `AuthorizationUsed` log.

use super::networks::{Network, Offer, SettlementKind};
use super::verify::Refusal;
use agentpmt_protocol::x402::{DecodedPayment, SettleResponse, X402_VERSION};
use alloy::network::EthereumWallet;
use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolEvent;
use std::time::Duration;

mod abi {
    #![allow(clippy::too_many_arguments)]
    alloy::sol! {
        #[sol(rpc)]
        interface IEip3009 {
            function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
            function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
            function balanceOf(address account) external view returns (uint256);
            event Transfer(address indexed from, address indexed to, uint256 value);
            event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
        }
    }
}
use abi::IEip3009;

/// Result of [`Settler::broadcast`].
#[derive(Debug)]
pub enum Broadcast {
    /// Settled already (dev, facilitator): the transaction hash.
    Confirmed(String),
    /// Sent; wait for its receipt with [`Settler::confirm`].
    Sent(String),
    /// Definitely not settled.
    Failed(Refusal),
    /// Maybe sent: reconcile later.
    Unknown(String),
}

/// Result of [`Settler::confirm`] and [`Settler::reconcile`].
#[derive(Debug)]
pub enum Outcome {
    /// The payment moved: the transaction hash.
    Settled(String),
    /// It did not and cannot any more.
    Failed(Refusal),
    /// Not known yet.
    Unknown(String),
    /// Not used on chain and still valid: submit it again.
    Resubmit,
}

/// Settlement backend of one network.
#[derive(Debug)]
pub enum Settler {
    Dev,
    Evm(EvmChain),
    Facilitator(Facilitator),
}

/// Why a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SettlerError {
    #[error("chain {0}: evm settlement needs AGENTPMT_SETTLEMENT_PRIVATE_KEY")]
    MissingKey(u64),
    #[error("the settlement private key is not a valid secp256k1 key")]
    BadKey,
    #[error("chain {chain}: bad URL {url}")]
    BadUrl { chain: u64, url: String },
}

/// Network-independent settlement options.
#[derive(Debug, Clone)]
pub struct SettleOptions {
    pub receipt_timeout: Duration,
    pub poll_interval: Duration,
}

impl Settler {
    /// The backend of `network`.
    pub fn new(
        network: &Network,
        key: Option<&str>,
        options: &SettleOptions,
    ) -> Result<Settler, SettlerError> {
        let url = |text: &Option<String>| -> Result<Option<reqwest::Url>, SettlerError> {
            text.as_deref()
                .map(|u| {
                    u.parse().map_err(|_| SettlerError::BadUrl {
                        chain: network.chain_id,
                        url: u.to_owned(),
                    })
                })
                .transpose()
        };
        Ok(match network.settlement {
            SettlementKind::Dev => Settler::Dev,
            SettlementKind::Evm => {
                let key = key.ok_or(SettlerError::MissingKey(network.chain_id))?;
                let rpc =
                    url(&network.rpc_url)?.ok_or(SettlerError::MissingKey(network.chain_id))?;
                Settler::Evm(EvmChain::new(rpc, Some(key), options.clone())?)
            }
            SettlementKind::Facilitator => {
                let base = url(&network.facilitator_url)?.ok_or_else(|| SettlerError::BadUrl {
                    chain: network.chain_id,
                    url: String::new(),
                })?;
                let reader = url(&network.rpc_url)?
                    .map(|rpc| EvmChain::new(rpc, None, options.clone()))
                    .transpose()?;
                Settler::Facilitator(Facilitator {
                    base,
                    http: reqwest::Client::builder()
                        .timeout(options.receipt_timeout + Duration::from_secs(10))
                        .build()
                        .unwrap_or_default(),
                    reader,
                })
            }
        })
    }

    /// Chain checks before claiming (simulation, or the facilitator's `/verify`).
    pub async fn preflight(&self, offer: &Offer, payment: &DecodedPayment) -> Result<(), Refusal> {
        match self {
            Settler::Dev => Ok(()),
            Settler::Evm(chain) => chain.simulate(offer, payment).await,
            Settler::Facilitator(f) => f.verify(offer, payment).await,
        }
    }

    /// Submits the payment.
    pub async fn broadcast(&self, offer: &Offer, payment: &DecodedPayment) -> Broadcast {
        match self {
            Settler::Dev => Broadcast::Confirmed(dev_transaction(offer, payment)),
            Settler::Evm(chain) => chain.broadcast(offer, payment).await,
            Settler::Facilitator(f) => f.settle(offer, payment).await,
        }
    }

    /// Waits for the receipt of a sent transaction.
    pub async fn confirm(&self, offer: &Offer, payment: &DecodedPayment, tx: &str) -> Outcome {
        match self {
            Settler::Dev | Settler::Facilitator(_) => Outcome::Settled(tx.to_owned()),
            Settler::Evm(chain) => chain.confirm(offer, payment, tx).await,
        }
    }

    /// Settles an unknown outcome from chain state.
    pub async fn reconcile(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        tx: Option<&str>,
        now_secs: u64,
    ) -> Outcome {
        match self {
            // Dev settlement has no chain: a claimed dev payment is settled by definition.
            Settler::Dev => Outcome::Settled(dev_transaction(offer, payment)),
            Settler::Evm(chain) => chain.reconcile(offer, payment, tx, now_secs).await,
            // The facilitator, not us, submits: Resubmit means asking it to settle again.
            Settler::Facilitator(f) => match &f.reader {
                Some(chain) => chain.reconcile(offer, payment, tx, now_secs).await,
                None => Outcome::Unknown(
                    "the facilitator's outcome is unknown and no rpc_url is configured to read the chain".into(),
                ),
            },
        }
    }

    /// The chain reader for `transfer` purchases, if this network has one.
    pub fn reader(&self) -> Option<&EvmChain> {
        match self {
            Settler::Dev => None,
            Settler::Evm(chain) => Some(chain),
            Settler::Facilitator(f) => f.reader.as_ref(),
        }
    }

    /// Whether the RPC node or facilitator answers (readiness).
    pub async fn reachable(&self) -> bool {
        match self {
            Settler::Dev => true,
            Settler::Evm(chain) => chain.provider.get_chain_id().await.is_ok(),
            Settler::Facilitator(f) => f
                .http
                .get(f.base.join("supported").unwrap_or_else(|_| f.base.clone()))
                .send()
                .await
                .is_ok(),
        }
    }
}

/// The recorded "transaction" of a dev settlement: a hash of the authorization's identity.
fn dev_transaction(offer: &Offer, payment: &DecodedPayment) -> String {
    let mut bytes = b"agentpmt-dev-settlement".to_vec();
    bytes.extend_from_slice(&offer.network.chain_id.to_be_bytes());
    bytes.extend_from_slice(offer.token.address.as_slice());
    bytes.extend_from_slice(payment.authorization.from.as_slice());
    bytes.extend_from_slice(payment.authorization.nonce.as_slice());
    format!("{:#x}", keccak256(bytes))
}

/// A chain reached through its JSON-RPC node, optionally with a gas-paying key.
#[derive(Debug)]
pub struct EvmChain {
    provider: DynProvider,
    signer: Option<Address>,
    /// Broadcasts from one key are serialized, each with the node's pending nonce, so
    /// concurrent settlements never collide and a failed send leaves no nonce gap.
    send_lock: tokio::sync::Mutex<()>,
    options: SettleOptions,
}

impl EvmChain {
    /// Connects (lazily) to `rpc`.
    pub fn new(
        rpc: reqwest::Url,
        key: Option<&str>,
        options: SettleOptions,
    ) -> Result<EvmChain, SettlerError> {
        let (provider, signer) = match key {
            Some(key) => {
                let signer: PrivateKeySigner =
                    key.trim().parse().map_err(|_| SettlerError::BadKey)?;
                let address = signer.address();
                let provider = ProviderBuilder::new()
                    .wallet(EthereumWallet::from(signer))
                    .connect_http(rpc)
                    .erased();
                (provider, Some(address))
            }
            None => (ProviderBuilder::new().connect_http(rpc).erased(), None),
        };
        Ok(EvmChain {
            provider,
            signer,
            send_lock: tokio::sync::Mutex::new(()),
            options,
        })
    }

    /// The gas-paying address.
    pub fn signer(&self) -> Option<Address> {
        self.signer
    }

    fn call_data(payment: &DecodedPayment) -> IEip3009::transferWithAuthorizationCall {
        let auth = &payment.authorization;
        let sig = payment.signature.to_bytes();
        IEip3009::transferWithAuthorizationCall {
            from: auth.from,
            to: auth.to,
            value: auth.value,
            validAfter: U256::from(auth.valid_after),
            validBefore: U256::from(auth.valid_before),
            nonce: auth.nonce,
            v: sig[64],
            r: B256::from_slice(&sig[..32]),
            s: B256::from_slice(&sig[32..64]),
        }
    }

    async fn simulate(&self, offer: &Offer, payment: &DecodedPayment) -> Result<(), Refusal> {
        let token = IEip3009::new(offer.token.address, &self.provider);
        let mut call = token.call_builder(&Self::call_data(payment));
        if let Some(from) = self.signer {
            call = call.from(from);
        }
        match call.call().await {
            Ok(_) => Ok(()),
            Err(err) => Err(self.diagnose(offer, payment, &err.to_string()).await),
        }
    }

    /// A precise reason for a failed simulation or a reverted transaction.
    async fn diagnose(&self, offer: &Offer, payment: &DecodedPayment, detail: &str) -> Refusal {
        let auth = &payment.authorization;
        let token = IEip3009::new(offer.token.address, &self.provider);
        if let Ok(true) = token.authorizationState(auth.from, auth.nonce).call().await {
            return Refusal::new(
                "invalid_exact_evm_nonce_already_used",
                "this authorization nonce was already used on chain",
            );
        }
        if let Ok(balance) = token.balanceOf(auth.from).call().await {
            if balance < auth.value {
                return Refusal::new(
                    "insufficient_funds",
                    format!(
                        "the payer holds {balance} base units of {}, the price is {}",
                        offer.token.symbol, auth.value
                    ),
                );
            }
        }
        let detail: String = detail.chars().take(300).collect();
        Refusal::new(
            "invalid_exact_evm_transaction_failed",
            format!("transferWithAuthorization would revert: {detail}"),
        )
    }

    async fn broadcast(&self, offer: &Offer, payment: &DecodedPayment) -> Broadcast {
        let Some(signer) = self.signer else {
            return Broadcast::Failed(Refusal::new("unexpected_settle_error", "no settlement key"));
        };
        let _guard = self.send_lock.lock().await;
        let nonce = match self.provider.get_transaction_count(signer).pending().await {
            Ok(n) => n,
            // Nothing was sent: a definite failure the payer can retry.
            Err(e) => {
                return Broadcast::Failed(Refusal::new(
                    "unexpected_settle_error",
                    format!("the chain node cannot be reached: {e}"),
                ))
            }
        };
        let token = IEip3009::new(offer.token.address, &self.provider);
        let call = token
            .call_builder(&Self::call_data(payment))
            .from(signer)
            .nonce(nonce);
        match call.send().await {
            Ok(pending) => Broadcast::Sent(format!("{:#x}", pending.tx_hash())),
            Err(alloy::contract::Error::TransportError(e)) if e.is_error_resp() => {
                // The node refused the transaction (e.g. gas estimation reverted).
                Broadcast::Failed(self.diagnose(offer, payment, &e.to_string()).await)
            }
            Err(e) => Broadcast::Unknown(format!("sending the settlement failed: {e}")),
        }
    }

    async fn receipt_status(&self, tx: B256) -> Result<Option<bool>, String> {
        match self.provider.get_transaction_receipt(tx).await {
            Ok(Some(receipt)) => Ok(Some(receipt.status())),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn confirm(&self, offer: &Offer, payment: &DecodedPayment, tx: &str) -> Outcome {
        let Ok(hash) = tx.parse::<B256>() else {
            return Outcome::Unknown(format!("bad transaction hash {tx}"));
        };
        let deadline = tokio::time::Instant::now() + self.options.receipt_timeout;
        loop {
            match self.receipt_status(hash).await {
                Ok(Some(true)) => return Outcome::Settled(tx.to_owned()),
                Ok(Some(false)) => {
                    // Reverted: unless someone else used the authorization meanwhile, the
                    // payment did not move.
                    return match self.reconcile(offer, payment, None, 0).await {
                        Outcome::Settled(other) => Outcome::Settled(other),
                        _ => Outcome::Failed(
                            self.diagnose(offer, payment, "the settlement transaction reverted")
                                .await,
                        ),
                    };
                }
                Ok(None) | Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Outcome::Unknown(format!(
                    "no receipt for {tx} within {} s",
                    self.options.receipt_timeout.as_secs()
                ));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    /// Reads chain state: used authorization → settled (with the transaction that used it);
    /// unused → failed if it can no longer be used, else resubmit (or wait while a sent
    /// transaction is still pending).
    async fn reconcile(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        tx: Option<&str>,
        now_secs: u64,
    ) -> Outcome {
        let auth = &payment.authorization;
        let token = IEip3009::new(offer.token.address, &self.provider);
        let used = match token.authorizationState(auth.from, auth.nonce).call().await {
            Ok(used) => used,
            Err(e) => {
                return Outcome::Unknown(format!("authorizationState could not be read: {e}"))
            }
        };
        if used {
            if let Some(tx) = tx {
                if let Ok(hash) = tx.parse::<B256>() {
                    if let Ok(Some(true)) = self.receipt_status(hash).await {
                        return Outcome::Settled(tx.to_owned());
                    }
                }
            }
            let filter = Filter::new()
                .address(offer.token.address)
                .event_signature(IEip3009::AuthorizationUsed::SIGNATURE_HASH)
                .topic1(auth.from.into_word())
                .topic2(auth.nonce)
                .from_block(0u64);
            return match self.provider.get_logs(&filter).await {
                Ok(logs) => match logs.first().and_then(|l| l.transaction_hash) {
                    Some(hash) => Outcome::Settled(format!("{hash:#x}")),
                    None => Outcome::Settled(tx.unwrap_or_default().to_owned()),
                },
                Err(_) => Outcome::Settled(tx.unwrap_or_default().to_owned()),
            };
        }
        if let Some(tx) = tx {
            if let Ok(hash) = tx.parse::<B256>() {
                match self.receipt_status(hash).await {
                    Ok(Some(_)) => {
                        return Outcome::Failed(
                            self.diagnose(offer, payment, "the settlement transaction reverted")
                                .await,
                        )
                    }
                    Ok(None) if now_secs < auth.valid_before => {
                        return Outcome::Unknown(format!("{tx} is not mined yet"))
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Unknown(format!("receipt of {tx}: {e}")),
                }
            }
        }
        if now_secs.saturating_add(agentpmt_protocol::x402::MIN_VALIDITY_MARGIN_SECS)
            < auth.valid_before
        {
            Outcome::Resubmit
        } else {
            Outcome::Failed(Refusal::new(
                "invalid_exact_evm_payload_authorization_valid_before",
                "the authorization expired before it could be settled; nothing was charged",
            ))
        }
    }

    /// Checks that `tx_hash` is a successful transaction with a `Transfer` of exactly
    /// `amount` of the offer's token to `payTo`; returns the sender.
    pub async fn find_transfer(
        &self,
        offer: &Offer,
        tx_hash: B256,
    ) -> Result<(Address, u64), Refusal> {
        let receipt = match self.provider.get_transaction_receipt(tx_hash).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(Refusal::new(
                    "transaction_not_found",
                    "the transaction is unknown or not mined yet; retry once it is mined",
                ))
            }
            Err(e) => {
                return Err(Refusal::new(
                    "unexpected_settle_error",
                    format!("the chain node cannot be reached: {e}"),
                ))
            }
        };
        if !receipt.status() {
            return Err(Refusal::new(
                "invalid_exact_evm_transaction_failed",
                "the transaction reverted",
            ));
        }
        for log in receipt.inner.logs() {
            if log.address() != offer.token.address {
                continue;
            }
            let Ok(event) = IEip3009::Transfer::decode_log_data(log.data()) else {
                continue;
            };
            if event.to == offer.pay_to && event.value == offer.amount {
                return Ok((event.from, log.log_index.unwrap_or_default()));
            }
        }
        Err(Refusal::new(
            "invalid_transfer",
            format!(
                "the transaction has no transfer of exactly {} base units of {} to {}",
                offer.amount,
                offer.token.symbol,
                offer.pay_to.to_checksum(None)
            ),
        ))
    }
}

/// A remote x402 facilitator.
#[derive(Debug)]
pub struct Facilitator {
    base: reqwest::Url,
    http: reqwest::Client,
    /// Chain reader for reconciliation and transfers, when `rpc_url` is configured.
    reader: Option<EvmChain>,
}

impl Facilitator {
    fn body(offer: &Offer, payment: &DecodedPayment) -> serde_json::Value {
        let payload = payment.to_payload(&offer.requirement);
        serde_json::json!({
            "x402Version": X402_VERSION,
            "paymentPayload": payload,
            "paymentRequirements": offer.requirement,
        })
    }

    fn url(&self, path: &str) -> reqwest::Url {
        let mut base = self.base.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        base.join(path).unwrap_or(base)
    }

    async fn verify(&self, offer: &Offer, payment: &DecodedPayment) -> Result<(), Refusal> {
        let response = self
            .http
            .post(self.url("verify"))
            .json(&Self::body(offer, payment))
            .send()
            .await
            .map_err(|e| {
                Refusal::new(
                    "unexpected_verify_error",
                    format!("the facilitator cannot be reached: {e}"),
                )
            })?;
        let value: serde_json::Value = response.json().await.map_err(|e| {
            Refusal::new(
                "unexpected_verify_error",
                format!("the facilitator answered no JSON: {e}"),
            )
        })?;
        if value.get("isValid").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(());
        }
        let reason = value
            .get("invalidReason")
            .and_then(|v| v.as_str())
            .unwrap_or("invalid_payload")
            .to_owned();
        let message = value
            .get("invalidMessage")
            .and_then(|v| v.as_str())
            .unwrap_or("the facilitator refused the payment")
            .to_owned();
        Err(Refusal::new(reason, message))
    }

    async fn settle(&self, offer: &Offer, payment: &DecodedPayment) -> Broadcast {
        let response = match self
            .http
            .post(self.url("settle"))
            .json(&Self::body(offer, payment))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Broadcast::Failed(Refusal::new(
                    "unexpected_settle_error",
                    format!("the facilitator cannot be reached: {e}"),
                ))
            }
            Err(e) => return Broadcast::Unknown(format!("the facilitator did not answer: {e}")),
        };
        match response.json::<SettleResponse>().await {
            Ok(s) if s.success && !s.transaction.is_empty() => Broadcast::Confirmed(s.transaction),
            Ok(s) => Broadcast::Failed(Refusal::new(
                s.error_reason
                    .unwrap_or_else(|| "unexpected_settle_error".into()),
                s.error_message
                    .unwrap_or_else(|| "the facilitator could not settle".into()),
            )),
            Err(e) => Broadcast::Unknown(format!("the facilitator's answer cannot be read: {e}")),
        }
    }
}
