//! Settlement backends, one per network: `evm` (this server submits
//! `transferWithAuthorization` with its gas key, through alloy), `facilitator` (a remote x402
//! facilitator's `/verify` and `/settle`; the chain is then read through `rpc_url`) and `dev`
//! (no chain; the settlement is recorded in the database only).
//!
//! **What "paid" means** (one rule, for every path that credits a payment): a payment counts
//! only when a successful receipt, at the network's confirmation depth, carries the exact logs
//! of the payment from the token contract: `AuthorizationUsed(from, nonce)` and
//! `Transfer(from, payTo, amount)`. [`Paid`] names that transfer log (chain, transaction, log
//! index), which the caller claims once ([`super::claims`]). An authorization that is used on
//! chain without such a log (EIP-3009 `cancelAuthorization` sets the same state) is cancelled:
//! failed, nothing granted. An RPC error, a timeout or a refusal of the node is **unknown**,
//! never settled: the settlement stays open and the reconciler decides later. Log queries use
//! bounded block ranges from the block the payment was first seen unused in, never block 0.
//!
//! A settlement is two steps so the caller can record the transaction hash before waiting:
//! [`Settler::broadcast`] then [`Settler::confirm`]. An outcome that is not known (a timeout,
//! an RPC error after sending, a crash, a reorg, too few confirmations) is settled later by
//! [`Settler::reconcile`] from chain state.
//!
//! Errors of the chain node or facilitator never reach clients or logs with their URL (RPC
//! URLs carry API keys): transport failures become fixed messages.

use super::networks::{Network, Offer, SettlementKind};
use super::verify::Refusal;
use agentpmt_protocol::x402::{DecodedPayment, SettleResponse, X402_VERSION};
use alloy::network::EthereumWallet;
use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{Filter, TransactionReceipt};
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
            event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);
        }
    }
}
use abi::IEip3009;

/// Blocks searched below the recorded start block (the head read before a preflight may lag
/// the block the node simulated on).
const SEARCH_SLACK_BLOCKS: u64 = 16;
/// Blocks searched back from the head when a settlement has no recorded start block.
const LEGACY_LOOKBACK_BLOCKS: u64 = 50_000;
/// Time limit of one JSON-RPC call.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A payment the chain shows at the required depth: the transfer log that pays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    /// `0x`-prefixed lowercase hash of the transaction carrying the log.
    pub transaction: String,
    /// Index of the `Transfer` log in its block (the claim key, with chain and transaction).
    pub log_index: u64,
    /// Block the transaction is in (0 on the dev network).
    pub block_number: u64,
    /// Blocks on top of it when it was counted.
    pub confirmations: u64,
}

/// Result of [`Settler::broadcast`].
#[derive(Debug)]
pub enum Broadcast {
    /// Counted already (dev network).
    Settled(Paid),
    /// Sent; wait for it with [`Settler::confirm`].
    Sent(String),
    /// Definitely not sent (or sent and definitely refused).
    Failed(Refusal),
    /// Maybe sent: reconcile later.
    Unknown(String),
}

/// Result of [`Settler::confirm`] and [`Settler::reconcile`].
#[derive(Debug)]
pub enum Outcome {
    /// Paid, at depth.
    Settled(Paid),
    /// Not paid, and it never will be with this authorization or transaction.
    Failed(Refusal),
    /// Not known yet (not mined, too few confirmations, node unreachable, ...).
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
    #[error("chain {chain}: {what} is not a valid URL")]
    BadUrl { chain: u64, what: &'static str },
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
        let url = |text: &Option<String>,
                   what: &'static str|
         -> Result<Option<reqwest::Url>, SettlerError> {
            text.as_deref()
                .map(|u| {
                    u.parse().map_err(|_| SettlerError::BadUrl {
                        chain: network.chain_id,
                        what,
                    })
                })
                .transpose()
        };
        Ok(match network.settlement {
            SettlementKind::Dev => Settler::Dev,
            SettlementKind::Evm => {
                let key = key.ok_or(SettlerError::MissingKey(network.chain_id))?;
                let rpc = url(&network.rpc_url, "rpc_url")?
                    .ok_or(SettlerError::MissingKey(network.chain_id))?;
                Settler::Evm(EvmChain::new(rpc, Some(key), network, options.clone())?)
            }
            SettlementKind::Facilitator => {
                let base = url(&network.facilitator_url, "facilitator_url")?.ok_or(
                    SettlerError::BadUrl {
                        chain: network.chain_id,
                        what: "facilitator_url",
                    },
                )?;
                let rpc = url(&network.rpc_url, "rpc_url")?.ok_or(SettlerError::BadUrl {
                    chain: network.chain_id,
                    what: "rpc_url",
                })?;
                Settler::Facilitator(Facilitator {
                    base,
                    http: reqwest::Client::builder()
                        .timeout(options.receipt_timeout + Duration::from_secs(10))
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .unwrap_or_default(),
                    reader: EvmChain::new(rpc, None, network, options.clone())?,
                })
            }
        })
    }

    /// Chain checks before claiming (simulation, or the facilitator's `/verify`). Returns the
    /// block the authorization was seen unused at: searches for its use start there.
    pub async fn preflight(&self, offer: &Offer, payment: &DecodedPayment) -> Result<u64, Refusal> {
        match self {
            Settler::Dev => Ok(0),
            Settler::Evm(chain) => {
                let head = chain.head().await.map_err(unreachable_refusal)?;
                chain.simulate(offer, payment).await?;
                Ok(head)
            }
            Settler::Facilitator(f) => {
                let head = f.reader.head().await.map_err(unreachable_refusal)?;
                f.verify(offer, payment).await?;
                Ok(head)
            }
        }
    }

    /// Submits the payment.
    pub async fn broadcast(&self, offer: &Offer, payment: &DecodedPayment) -> Broadcast {
        match self {
            Settler::Dev => Broadcast::Settled(dev_paid(offer, payment)),
            Settler::Evm(chain) => chain.broadcast(offer, payment).await,
            Settler::Facilitator(f) => f.settle(offer, payment).await,
        }
    }

    /// Waits (at most `budget`, and at most the receipt timeout) until the sent transaction
    /// `tx` pays at depth, or is known not to.
    pub async fn confirm(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        tx: &str,
        search_from: Option<u64>,
        budget: Duration,
    ) -> Outcome {
        match self {
            Settler::Dev => Outcome::Settled(dev_paid(offer, payment)),
            Settler::Evm(chain) => chain.confirm(offer, payment, tx, search_from, budget).await,
            Settler::Facilitator(f) => {
                f.reader
                    .confirm(offer, payment, tx, search_from, budget)
                    .await
            }
        }
    }

    /// Settles an unknown outcome from chain state.
    pub async fn reconcile(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        tx: Option<&str>,
        search_from: Option<u64>,
        now_secs: u64,
    ) -> Outcome {
        match self {
            // Dev settlement has no chain: a claimed dev payment is settled by definition.
            Settler::Dev => Outcome::Settled(dev_paid(offer, payment)),
            Settler::Evm(chain) => {
                chain
                    .reconcile(offer, payment, tx, search_from, now_secs)
                    .await
            }
            // The facilitator, not us, submits: Resubmit means asking it to settle again.
            Settler::Facilitator(f) => {
                f.reader
                    .reconcile(offer, payment, tx, search_from, now_secs)
                    .await
            }
        }
    }

    /// The chain reader (transfers, audits), if this network has one.
    pub fn reader(&self) -> Option<&EvmChain> {
        match self {
            Settler::Dev => None,
            Settler::Evm(chain) => Some(chain),
            Settler::Facilitator(f) => Some(&f.reader),
        }
    }

    /// Whether the RPC node or facilitator answers (readiness).
    pub async fn reachable(&self) -> bool {
        match self {
            Settler::Dev => true,
            Settler::Evm(chain) => chain.head().await.is_ok(),
            Settler::Facilitator(f) => {
                f.reader.head().await.is_ok()
                    && f.http
                        .get(f.url("supported"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
            }
        }
    }
}

fn unreachable_refusal(_: RpcError) -> Refusal {
    Refusal::new(
        "unexpected_settle_error",
        "the chain node cannot be reached; nothing was charged, try again",
    )
}

/// The recorded "transaction" of a dev settlement: a hash of the authorization's identity.
fn dev_paid(offer: &Offer, payment: &DecodedPayment) -> Paid {
    let mut bytes = b"agentpmt-dev-settlement".to_vec();
    bytes.extend_from_slice(&offer.network.chain_id.to_be_bytes());
    bytes.extend_from_slice(offer.token.address.as_slice());
    bytes.extend_from_slice(payment.authorization.from.as_slice());
    bytes.extend_from_slice(payment.authorization.nonce.as_slice());
    Paid {
        transaction: format!("{:#x}", keccak256(bytes)),
        log_index: 0,
        block_number: 0,
        confirmations: 0,
    }
}

/// A failed JSON-RPC call, described without the node's URL.
#[derive(Debug, Clone)]
pub struct RpcError(String);

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl RpcError {
    /// Maps a transport error: the node's own error message when it answered with one (it
    /// never contains our URL), else a fixed text.
    fn transport(e: &alloy::transports::TransportError) -> RpcError {
        match e.as_error_resp() {
            Some(resp) => {
                let message: String = resp.message.chars().take(200).collect();
                RpcError(format!("the chain node refused the call: {message}"))
            }
            None if e.is_transport_error() => {
                RpcError("the chain node cannot be reached".to_owned())
            }
            None => RpcError("the chain node gave an unreadable answer".to_owned()),
        }
    }

    fn contract(e: &alloy::contract::Error) -> RpcError {
        match e {
            alloy::contract::Error::TransportError(t) => RpcError::transport(t),
            _ => RpcError("the chain node gave an unreadable answer".to_owned()),
        }
    }

    fn timeout() -> RpcError {
        RpcError("the chain node did not answer in time".to_owned())
    }
}

/// Runs one RPC future under [`RPC_TIMEOUT`].
async fn rpc<T, E>(
    future: impl std::future::IntoFuture<Output = Result<T, E>>,
    map: impl FnOnce(&E) -> RpcError,
) -> Result<T, RpcError> {
    match tokio::time::timeout(RPC_TIMEOUT, future).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map(&e)),
        Err(_) => Err(RpcError::timeout()),
    }
}

/// An authorization's fate as its events tell it.
#[derive(Debug)]
enum AuthorizationEvent {
    Used { transaction: B256 },
    Canceled,
}

/// What a transfer purchase's transaction holds.
#[derive(Debug)]
pub struct TransferFound {
    /// Every `Transfer` log of exactly the offer's amount of its token to `payTo`, in log
    /// order: (sender, log index).
    pub transfers: Vec<(Address, u64)>,
    pub block_number: u64,
    /// Blocks on top of it now.
    pub confirmations: u64,
    /// The network's required depth.
    pub required: u64,
}

/// A chain reached through its JSON-RPC node, optionally with a gas-paying key.
#[derive(Debug)]
pub struct EvmChain {
    chain_id: u64,
    provider: DynProvider,
    signer: Option<Address>,
    /// Broadcasts from one key are serialized, each with the node's pending nonce, so
    /// concurrent settlements never collide and a failed send leaves no nonce gap.
    send_lock: tokio::sync::Mutex<()>,
    options: SettleOptions,
    /// Blocks required on top of a payment's block before it counts.
    confirmations: u64,
    /// Largest block range of one `eth_getLogs` query.
    log_block_range: u64,
}

impl EvmChain {
    /// Connects (lazily) to `rpc`.
    pub fn new(
        rpc: reqwest::Url,
        key: Option<&str>,
        network: &Network,
        options: SettleOptions,
    ) -> Result<EvmChain, SettlerError> {
        let (provider, signer) = match key {
            Some(key) => {
                let signer: PrivateKeySigner =
                    key.trim().parse().map_err(|_| SettlerError::BadKey)?;
                let address = signer.address();
                let provider = ProviderBuilder::new()
                    .wallet(EthereumWallet::from(signer))
                    .with_reqwest(rpc, |b| b.timeout(RPC_TIMEOUT).build().unwrap_or_default())
                    .erased();
                (provider, Some(address))
            }
            None => (
                ProviderBuilder::new()
                    .with_reqwest(rpc, |b| b.timeout(RPC_TIMEOUT).build().unwrap_or_default())
                    .erased(),
                None,
            ),
        };
        Ok(EvmChain {
            chain_id: network.chain_id,
            provider,
            signer,
            send_lock: tokio::sync::Mutex::new(()),
            options,
            confirmations: network.confirmations,
            log_block_range: network.log_block_range.max(1),
        })
    }

    /// The gas-paying address.
    pub fn signer(&self) -> Option<Address> {
        self.signer
    }

    /// The chain id this reader serves.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Blocks required on top of a payment.
    pub fn required_confirmations(&self) -> u64 {
        self.confirmations
    }

    /// The latest block number.
    pub async fn head(&self) -> Result<u64, RpcError> {
        rpc(self.provider.get_block_number(), RpcError::transport).await
    }

    async fn head_timestamp(&self) -> Result<u64, RpcError> {
        let block = rpc(
            self.provider
                .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest),
            RpcError::transport,
        )
        .await?;
        block
            .map(|b| b.header.timestamp)
            .ok_or_else(|| RpcError("the chain node has no latest block".to_owned()))
    }

    async fn receipt(&self, tx: B256) -> Result<Option<TransactionReceipt>, RpcError> {
        rpc(
            self.provider.get_transaction_receipt(tx),
            RpcError::transport,
        )
        .await
    }

    /// Whether the node knows `tx` and it is not mined (waiting in its pool).
    async fn is_pending(&self, tx: B256) -> Result<bool, RpcError> {
        let found = rpc(
            self.provider.get_transaction_by_hash(tx),
            RpcError::transport,
        )
        .await?;
        Ok(found.is_some_and(|t| t.block_number.is_none()))
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
        match rpc(call.call(), RpcError::contract).await {
            Ok(_) => Ok(()),
            Err(err) => Err(self.diagnose(offer, payment, &err.to_string()).await),
        }
    }

    /// A precise reason for a failed simulation or a reverted transaction.
    async fn diagnose(&self, offer: &Offer, payment: &DecodedPayment, detail: &str) -> Refusal {
        let auth = &payment.authorization;
        let token = IEip3009::new(offer.token.address, &self.provider);
        if let Ok(true) = rpc(
            token.authorizationState(auth.from, auth.nonce).call(),
            RpcError::contract,
        )
        .await
        {
            return Refusal::new(
                "invalid_exact_evm_nonce_already_used",
                "this authorization nonce was already used (or cancelled) on chain",
            );
        }
        if let Ok(balance) = rpc(token.balanceOf(auth.from).call(), RpcError::contract).await {
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
        let nonce = match rpc(
            self.provider.get_transaction_count(signer).pending(),
            RpcError::transport,
        )
        .await
        {
            Ok(n) => n,
            // Nothing was sent: a definite failure the payer can retry.
            Err(_) => {
                return Broadcast::Failed(Refusal::new(
                    "unexpected_settle_error",
                    "the chain node cannot be reached; nothing was charged, try again",
                ))
            }
        };
        let token = IEip3009::new(offer.token.address, &self.provider);
        let call = token
            .call_builder(&Self::call_data(payment))
            .from(signer)
            .nonce(nonce);
        match tokio::time::timeout(RPC_TIMEOUT * 2, call.send()).await {
            Ok(Ok(pending)) => Broadcast::Sent(format!("{:#x}", pending.tx_hash())),
            Ok(Err(alloy::contract::Error::TransportError(e))) if e.is_error_resp() => {
                // The node refused the transaction (e.g. gas estimation reverted).
                let detail = RpcError::transport(&e).to_string();
                Broadcast::Failed(self.diagnose(offer, payment, &detail).await)
            }
            Ok(Err(e)) => Broadcast::Unknown(format!(
                "sending the settlement failed: {}",
                RpcError::contract(&e)
            )),
            Err(_) => Broadcast::Unknown("sending the settlement timed out".to_owned()),
        }
    }

    /// The `Transfer` log that pays `payment` in `receipt`: from the token contract, next to
    /// an `AuthorizationUsed(from, nonce)` log of the same contract, with exactly the
    /// offer's `payTo` and amount. None when the receipt holds no such pair.
    fn payment_log(
        receipt: &TransactionReceipt,
        offer: &Offer,
        payment: &DecodedPayment,
    ) -> Option<u64> {
        if !receipt.status() {
            return None;
        }
        let auth = &payment.authorization;
        let logs: Vec<_> = receipt
            .inner
            .logs()
            .iter()
            .filter(|l| l.address() == offer.token.address)
            .collect();
        let used_at = logs.iter().find_map(|l| {
            let event = IEip3009::AuthorizationUsed::decode_log_data(l.data()).ok()?;
            (event.authorizer == auth.from && event.nonce == auth.nonce)
                .then(|| l.log_index.unwrap_or_default())
        })?;
        logs.iter()
            .filter_map(|l| {
                let event = IEip3009::Transfer::decode_log_data(l.data()).ok()?;
                (event.from == auth.from && event.to == offer.pay_to && event.value == offer.amount)
                    .then(|| l.log_index.unwrap_or_default())
            })
            .min_by_key(|index| index.abs_diff(used_at))
    }

    /// `Settled` when the payment log of `receipt` has the required depth, else unknown.
    async fn at_depth(&self, receipt: &TransactionReceipt, log_index: u64) -> Outcome {
        let Some(block) = receipt.block_number else {
            return Outcome::Unknown("the settlement is not mined yet".to_owned());
        };
        let head = match self.head().await {
            Ok(h) => h,
            Err(e) => return Outcome::Unknown(e.to_string()),
        };
        let confirmations = head.saturating_sub(block);
        if confirmations < self.confirmations {
            return Outcome::Unknown(format!(
                "the settlement has {confirmations} of {} confirmations",
                self.confirmations
            ));
        }
        Outcome::Settled(Paid {
            transaction: format!("{:#x}", receipt.transaction_hash),
            log_index,
            block_number: block,
            confirmations,
        })
    }

    async fn confirm(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        tx: &str,
        search_from: Option<u64>,
        budget: Duration,
    ) -> Outcome {
        let Ok(hash) = tx.parse::<B256>() else {
            return Outcome::Unknown(format!("bad transaction hash {tx}"));
        };
        let wait = self.options.receipt_timeout.min(budget);
        let deadline = tokio::time::Instant::now() + wait;
        let mut last;
        loop {
            match self.receipt(hash).await {
                Ok(Some(receipt)) => match Self::payment_log(&receipt, offer, payment) {
                    Some(log_index) => match self.at_depth(&receipt, log_index).await {
                        Outcome::Unknown(why) => last = why,
                        outcome => return outcome,
                    },
                    None => {
                        // Reverted, or successful without the payment's logs: unless the
                        // authorization paid in another transaction, this one did not pay.
                        return match self.reconcile(offer, payment, None, search_from, 0).await {
                            Outcome::Resubmit => Outcome::Failed(
                                self.diagnose(
                                    offer,
                                    payment,
                                    "the settlement transaction reverted",
                                )
                                .await,
                            ),
                            outcome => outcome,
                        };
                    }
                },
                Ok(None) => last = format!("{tx} is not mined yet"),
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Outcome::Unknown(format!(
                    "not confirmed within {} s ({last})",
                    wait.as_secs()
                ));
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    /// Finds `AuthorizationUsed` / `AuthorizationCanceled` of `payment` in bounded block
    /// ranges from `search_from` to the head. `Ok(None)`: neither is in those blocks.
    async fn authorization_event(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        search_from: Option<u64>,
    ) -> Result<Option<AuthorizationEvent>, RpcError> {
        let auth = &payment.authorization;
        let head = self.head().await?;
        let start = match search_from {
            Some(block) => block.saturating_sub(SEARCH_SLACK_BLOCKS),
            None => head.saturating_sub(LEGACY_LOOKBACK_BLOCKS),
        };
        let mut from = start;
        while from <= head {
            let to = from.saturating_add(self.log_block_range - 1).min(head);
            let filter = Filter::new()
                .address(offer.token.address)
                .event_signature(vec![
                    IEip3009::AuthorizationUsed::SIGNATURE_HASH,
                    IEip3009::AuthorizationCanceled::SIGNATURE_HASH,
                ])
                .topic1(auth.from.into_word())
                .topic2(auth.nonce)
                .from_block(from)
                .to_block(to);
            let logs = rpc(self.provider.get_logs(&filter), RpcError::transport).await?;
            for log in logs {
                if log.removed {
                    continue;
                }
                if log.topic0() == Some(&IEip3009::AuthorizationUsed::SIGNATURE_HASH) {
                    if let Some(transaction) = log.transaction_hash {
                        return Ok(Some(AuthorizationEvent::Used { transaction }));
                    }
                } else {
                    return Ok(Some(AuthorizationEvent::Canceled));
                }
            }
            from = to + 1;
        }
        Ok(None)
    }

    /// Reads chain state. Our transaction paid at depth → settled. Otherwise, the
    /// authorization used on chain → settled by the transaction that used it (if that one
    /// carries the exact payment), cancelled → failed, event not found → unknown. Unused →
    /// unknown while our transaction waits in the node's pool, failed once no block can
    /// include it any more (the head's timestamp reached `validBefore`), else resubmit.
    async fn reconcile(
        &self,
        offer: &Offer,
        payment: &DecodedPayment,
        tx: Option<&str>,
        search_from: Option<u64>,
        now_secs: u64,
    ) -> Outcome {
        let auth = &payment.authorization;
        let ours = tx.and_then(|t| t.parse::<B256>().ok());
        if let Some(hash) = ours {
            match self.receipt(hash).await {
                Err(e) => return Outcome::Unknown(e.to_string()),
                Ok(Some(receipt)) => {
                    if let Some(log_index) = Self::payment_log(&receipt, offer, payment) {
                        return self.at_depth(&receipt, log_index).await;
                    }
                }
                Ok(None) => {}
            }
        }
        let token = IEip3009::new(offer.token.address, &self.provider);
        let used = match rpc(
            token.authorizationState(auth.from, auth.nonce).call(),
            RpcError::contract,
        )
        .await
        {
            Ok(used) => used,
            Err(e) => return Outcome::Unknown(format!("authorizationState: {e}")),
        };
        if used {
            return match self.authorization_event(offer, payment, search_from).await {
                Err(e) => Outcome::Unknown(format!("searching the authorization's events: {e}")),
                Ok(None) => Outcome::Unknown(
                    "the authorization is used on chain but its event was not found yet".to_owned(),
                ),
                Ok(Some(AuthorizationEvent::Canceled)) => Outcome::Failed(Refusal::new(
                    "invalid_exact_evm_nonce_already_used",
                    "the payer cancelled this authorization on chain; nothing was paid",
                )),
                Ok(Some(AuthorizationEvent::Used { transaction })) => {
                    match self.receipt(transaction).await {
                        Err(e) => Outcome::Unknown(e.to_string()),
                        Ok(None) => Outcome::Unknown(format!(
                            "the receipt of {transaction:#x} is not available yet"
                        )),
                        Ok(Some(receipt)) => match Self::payment_log(&receipt, offer, payment) {
                            Some(log_index) => self.at_depth(&receipt, log_index).await,
                            None => Outcome::Failed(Refusal::new(
                                "invalid_exact_evm_transaction_failed",
                                "the authorization was used without the exact transfer to payTo; nothing was paid",
                            )),
                        },
                    }
                }
            };
        }
        match self.head_timestamp().await {
            Err(e) => return Outcome::Unknown(e.to_string()),
            Ok(ts) if ts >= auth.valid_before => {
                return Outcome::Failed(Refusal::new(
                    "invalid_exact_evm_payload_authorization_valid_before",
                    "the authorization expired before it could be settled; nothing was charged",
                ))
            }
            Ok(_) => {}
        }
        if let Some(hash) = ours {
            match self.is_pending(hash).await {
                Err(e) => return Outcome::Unknown(e.to_string()),
                Ok(true) => return Outcome::Unknown(format!("{hash:#x} is not mined yet")),
                Ok(false) => {}
            }
        }
        if now_secs.saturating_add(agentpmt_protocol::x402::MIN_VALIDITY_MARGIN_SECS)
            < auth.valid_before
        {
            Outcome::Resubmit
        } else {
            Outcome::Unknown("the authorization is unused and about to expire".to_owned())
        }
    }

    /// Reads transaction `tx_hash`: a successful transaction with at least one `Transfer` of
    /// exactly the offer's amount of its token to `payTo`.
    pub async fn find_transfer(
        &self,
        offer: &Offer,
        tx_hash: B256,
    ) -> Result<TransferFound, Refusal> {
        let receipt = match self.receipt(tx_hash).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(Refusal::new(
                    "transaction_not_found",
                    "the transaction is unknown or not mined yet; retry once it is mined",
                ))
            }
            Err(e) => return Err(Refusal::new("unexpected_settle_error", e.to_string())),
        };
        if !receipt.status() {
            return Err(Refusal::new(
                "invalid_exact_evm_transaction_failed",
                "the transaction reverted",
            ));
        }
        let transfers: Vec<(Address, u64)> = receipt
            .inner
            .logs()
            .iter()
            .filter(|l| l.address() == offer.token.address)
            .filter_map(|l| {
                let event = IEip3009::Transfer::decode_log_data(l.data()).ok()?;
                (event.to == offer.pay_to && event.value == offer.amount)
                    .then(|| (event.from, l.log_index.unwrap_or_default()))
            })
            .collect();
        if transfers.is_empty() {
            return Err(Refusal::new(
                "invalid_transfer",
                format!(
                    "the transaction has no transfer of exactly {} base units of {} to {}",
                    offer.amount,
                    offer.token.symbol,
                    offer.pay_to.to_checksum(None)
                ),
            ));
        }
        let block_number = receipt.block_number.unwrap_or_default();
        let head = self
            .head()
            .await
            .map_err(|e| Refusal::new("unexpected_settle_error", e.to_string()))?;
        Ok(TransferFound {
            transfers,
            block_number,
            confirmations: head.saturating_sub(block_number),
            required: self.confirmations,
        })
    }

    /// Re-reads a counted payment for the audit: the receipt of `transaction` is successful
    /// and its log `log_index` (any log, for a claim recorded before log indexes were:
    /// `None`) is a `Transfer` of `amount` of `asset` to `pay_to` (from `from`, when given);
    /// returns the confirmations now.
    pub async fn check_claim(
        &self,
        transaction: &str,
        log_index: Option<u64>,
        asset: Address,
        pay_to: Address,
        amount: U256,
        from: Option<Address>,
    ) -> Result<u64, String> {
        let hash: B256 = transaction
            .parse()
            .map_err(|_| format!("bad transaction hash {transaction}"))?;
        let receipt = self
            .receipt(hash)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the transaction is not on the chain (reorged out or unknown)")?;
        if !receipt.status() {
            return Err("the transaction reverted".to_owned());
        }
        let pays = |l: &alloy::rpc::types::Log| -> Result<(), String> {
            let index = l.log_index.unwrap_or_default();
            if l.address() != asset {
                return Err(format!("log {index} is not from the token {asset}"));
            }
            let event = IEip3009::Transfer::decode_log_data(l.data())
                .map_err(|_| format!("log {index} is not a Transfer"))?;
            if event.to != pay_to || event.value != amount || from.is_some_and(|f| f != event.from)
            {
                return Err(format!(
                    "log {index} moves {} from {} to {}, not {amount} to {pay_to}",
                    event.value, event.from, event.to
                ));
            }
            Ok(())
        };
        match log_index {
            Some(index) => {
                let log = receipt
                    .inner
                    .logs()
                    .iter()
                    .find(|l| l.log_index == Some(index))
                    .ok_or(format!("the transaction has no log {index}"))?;
                pays(log)?;
            }
            None => {
                if !receipt.inner.logs().iter().any(|l| pays(l).is_ok()) {
                    return Err(format!(
                        "the transaction has no Transfer of {amount} of {asset} to {pay_to}"
                    ));
                }
            }
        }
        let head = self.head().await.map_err(|e| e.to_string())?;
        Ok(head.saturating_sub(receipt.block_number.unwrap_or_default()))
    }
}

/// A remote x402 facilitator (its outcome is checked on chain through `reader`).
#[derive(Debug)]
pub struct Facilitator {
    base: reqwest::Url,
    http: reqwest::Client,
    /// Chain reader: confirmation, reconciliation, transfers.
    reader: EvmChain,
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
            .map_err(|_| {
                Refusal::new(
                    "unexpected_verify_error",
                    "the facilitator cannot be reached; nothing was charged, try again",
                )
            })?;
        let value: serde_json::Value = response.json().await.map_err(|_| {
            Refusal::new(
                "unexpected_verify_error",
                "the facilitator gave an unreadable answer",
            )
        })?;
        if value.get("isValid").and_then(|v| v.as_bool()) == Some(true) {
            return Ok(());
        }
        let text = |key: &str, default: &str| -> String {
            value
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .chars()
                .take(300)
                .collect()
        };
        Err(Refusal::new(
            text("invalidReason", "invalid_payload"),
            text("invalidMessage", "the facilitator refused the payment"),
        ))
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
                    "the facilitator cannot be reached; nothing was charged, try again",
                ))
            }
            Err(_) => return Broadcast::Unknown("the facilitator did not answer".to_owned()),
        };
        match response.json::<SettleResponse>().await {
            // Its word is not proof: the transaction is checked on chain like our own.
            Ok(s) if s.success && s.transaction.parse::<B256>().is_ok() => {
                Broadcast::Sent(s.transaction.to_ascii_lowercase())
            }
            Ok(s) if s.success => Broadcast::Unknown(
                "the facilitator reported success without a transaction hash".to_owned(),
            ),
            Ok(s) => Broadcast::Failed(Refusal::new(
                s.error_reason
                    .unwrap_or_else(|| "unexpected_settle_error".into()),
                s.error_message
                    .map(|m| m.chars().take(300).collect::<String>())
                    .unwrap_or_else(|| "the facilitator could not settle".into()),
            )),
            Err(_) => Broadcast::Unknown("the facilitator's answer cannot be read".to_owned()),
        }
    }
}
