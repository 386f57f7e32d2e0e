//! Which networks and tokens this server accepts payments in, and how each settles.
//!
//! Configured with a TOML file (`--payments-config`, `AGENTPMT_PAYMENTS_CONFIG`):
//!
//! ```toml
//! pay_to = "0xYourTreasury"          # receives every payment
//! default_chain_id = 8453            # optional: the first network otherwise
//! max_timeout_seconds = 300          # clients' validBefore = now + this
//! receipt_timeout_secs = 120         # how long a settlement waits for its receipt
//!
//! [[networks]]
//! chain_id = 8453                    # Base; its USDC and EURC are built in
//! settlement = "evm"                 # evm | facilitator | dev
//! rpc_url = "https://mainnet.base.org"
//!
//! [[networks]]
//! chain_id = 84532
//! settlement = "facilitator"
//! facilitator_url = "https://x402.org/facilitator"
//! rpc_url = "https://sepolia.base.org"   # the facilitator's settlements are checked on chain
//! confirmations = 5                  # blocks on top of a payment before it counts
//! log_block_range = 500              # largest eth_getLogs range the node accepts
//!
//! [[networks]]                       # a chain or token that is not built in
//! chain_id = 31337
//! settlement = "evm"
//! rpc_url = "http://127.0.0.1:8545"
//! [[networks.tokens]]
//! symbol = "USDC"
//! address = "0x…"
//! eip712_name = "USD Coin"
//! eip712_version = "2"
//! ```
//!
//! The gas-paying key of `evm` settlement comes from `AGENTPMT_SETTLEMENT_PRIVATE_KEY`, never
//! from the file.
//!
//! `confirmations` is the depth a payment needs before it counts (blocks built on top of the
//! block that holds it); defaults per chain are [`default_confirmations`]. `0` (count as
//! soon as mined) is refused on every chain but the local test chains 1337 and 31337. With no file the server runs the embedded **dev network** (`eip155:1337`):
//! every signature and field is checked as on a real chain, the settlement is recorded in the
//! database only, and the challenge says so. The dev network cannot be combined with a real
//! chain.

use agentpmt_protocol::wire::{cents_text, CREDITS_PER_USD};
use agentpmt_protocol::x402::{PaymentRequirements, KNOWN_CHAINS, KNOWN_TOKENS};
use alloy::primitives::{Address, U256};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Chain id of the embedded dev network.
pub const DEV_CHAIN_ID: u64 = 1337;
/// Token address used on the dev network (no contract exists there).
pub const DEV_ASSET: &str = "0x0000000000000000000000000000000000001337";
/// Default `payTo` of the dev network.
pub const DEV_PAY_TO: &str = "0x000000000000000000000000000000000000c0de";
/// Default `maxTimeoutSeconds`.
pub const DEFAULT_MAX_TIMEOUT_SECONDS: u64 = 300;
/// Default receipt wait.
pub const DEFAULT_RECEIPT_TIMEOUT_SECS: u64 = 120;
/// Default largest `eth_getLogs` block range (hosted nodes refuse wide ranges).
pub const DEFAULT_LOG_BLOCK_RANGE: u64 = 500;
/// Local test chains (the dev network and anvil), where a depth of 0 is allowed.
pub const LOCAL_CHAIN_IDS: [u64; 2] = [1337, 31337];

/// The default confirmation depth of a chain: how many blocks must be built on top of a
/// payment's block before it counts. Chosen from each chain's observed reorg depths, with a
/// margin: Ethereum 12 (about 2.4 min), Base, Optimism and Base Sepolia 10 (20 s; OP-stack
/// reorgs come from the sequencer), Arbitrum 20 (5 s), Polygon PoS 64 (about 2 min; reorgs of
/// tens of blocks were routine before milestones), Avalanche C-Chain 1 (single-slot
/// finality), local test chains 0, any other chain 12.
pub fn default_confirmations(chain_id: u64) -> u64 {
    match chain_id {
        1 => 12,
        8453 | 10 | 84532 => 10,
        42161 => 20,
        137 => 64,
        43114 => 1,
        c if LOCAL_CHAIN_IDS.contains(&c) => 0,
        _ => 12,
    }
}

/// How payments on a network are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettlementKind {
    /// This server submits `transferWithAuthorization` through an RPC node.
    Evm,
    /// A remote x402 facilitator verifies and settles.
    Facilitator,
    /// No chain: checks only, recorded in the database (test credits).
    Dev,
}

impl SettlementKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementKind::Evm => "evm",
            SettlementKind::Facilitator => "facilitator",
            SettlementKind::Dev => "dev",
        }
    }
}

/// The payments file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsFile {
    /// Address receiving payments (required for real chains).
    pub pay_to: Option<String>,
    /// Network used when a purchase names no chain.
    pub default_chain_id: Option<u64>,
    /// `maxTimeoutSeconds` of the requirements.
    pub max_timeout_seconds: Option<u64>,
    /// Receipt wait of `evm` settlement.
    pub receipt_timeout_secs: Option<u64>,
    /// Accepted networks.
    #[serde(default)]
    pub networks: Vec<NetworkFile>,
}

/// One network of the payments file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub chain_id: u64,
    pub settlement: SettlementKind,
    /// JSON-RPC URL (`evm`; optional for `facilitator`, used to reconcile).
    pub rpc_url: Option<String>,
    /// Facilitator base URL (`facilitator`).
    pub facilitator_url: Option<String>,
    /// Display name (built-in chains have one).
    pub name: Option<String>,
    /// Blocks on top of a payment before it counts (default: [`default_confirmations`]).
    #[serde(default)]
    pub confirmations: Option<u64>,
    /// Largest block range of one `eth_getLogs` query (default [`DEFAULT_LOG_BLOCK_RANGE`]).
    #[serde(default)]
    pub log_block_range: Option<u64>,
    /// Tokens; default: the built-in tokens of the chain.
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
}

/// One token of a network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub symbol: String,
    pub address: String,
    pub eip712_name: String,
    pub eip712_version: String,
    #[serde(default = "six")]
    pub decimals: u8,
}

fn six() -> u8 {
    6
}

/// A configuration the server refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum NetworkConfigError {
    #[error("payments config: {0}")]
    Invalid(String),
    #[error("payments config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("payments config file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
}

fn invalid(msg: impl Into<String>) -> NetworkConfigError {
    NetworkConfigError::Invalid(msg.into())
}

/// A token accepted on a network.
#[derive(Debug, Clone)]
pub struct Token {
    pub symbol: String,
    pub address: Address,
    pub eip712_name: String,
    pub eip712_version: String,
    pub decimals: u8,
    /// Atomic units per credit (1 credit = 0.01 of the token's unit): 10^(decimals-2).
    pub base_units_per_credit: U256,
}

/// An accepted network.
#[derive(Debug, Clone)]
pub struct Network {
    pub chain_id: u64,
    pub name: String,
    pub settlement: SettlementKind,
    pub rpc_url: Option<String>,
    pub facilitator_url: Option<String>,
    pub tokens: Vec<Token>,
    /// Blocks on top of a payment before it counts.
    pub confirmations: u64,
    /// Largest block range of one `eth_getLogs` query.
    pub log_block_range: u64,
}

impl Network {
    /// `eip155:<chain id>`.
    pub fn caip2(&self) -> String {
        format!("eip155:{}", self.chain_id)
    }
}

/// Every accepted network, resolved and checked.
#[derive(Debug, Clone)]
pub struct Networks {
    pub pay_to: Address,
    pub default_chain_id: u64,
    pub max_timeout_seconds: u64,
    pub receipt_timeout_secs: u64,
    pub networks: Vec<Network>,
}

/// What a purchase is offered: a network, a token, and the exact price.
#[derive(Debug, Clone)]
pub struct Offer {
    pub network: Network,
    pub token: Token,
    pub pay_to: Address,
    pub credits: i64,
    pub amount: U256,
    /// The x402 requirement (an entry of `accepts`).
    pub requirement: PaymentRequirements,
}

impl Offer {
    /// Price in USD as exact text.
    pub fn amount_usd(&self) -> String {
        cents_text(self.credits * 100 / CREDITS_PER_USD)
    }
}

impl Networks {
    /// The embedded dev network only.
    pub fn dev() -> Networks {
        Networks {
            pay_to: DEV_PAY_TO.parse().expect("valid dev address"),
            default_chain_id: DEV_CHAIN_ID,
            max_timeout_seconds: DEFAULT_MAX_TIMEOUT_SECONDS,
            receipt_timeout_secs: DEFAULT_RECEIPT_TIMEOUT_SECS,
            networks: vec![Network {
                chain_id: DEV_CHAIN_ID,
                name: "AgentPMT dev network (no chain, test credits)".into(),
                settlement: SettlementKind::Dev,
                rpc_url: None,
                facilitator_url: None,
                confirmations: 0,
                log_block_range: DEFAULT_LOG_BLOCK_RANGE,
                tokens: vec![token(
                    "USDC",
                    DEV_ASSET.parse().expect("valid dev asset"),
                    "USD Coin",
                    "2",
                    6,
                )],
            }],
        }
    }

    /// Reads and resolves a payments file.
    pub fn load(path: &str) -> Result<Networks, NetworkConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetworkConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let file: PaymentsFile =
            toml::from_str(&text).map_err(|source| NetworkConfigError::Parse {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        Networks::resolve(&file)
    }

    /// Resolves a parsed payments file (built-in chains and tokens filled in) and checks it.
    pub fn resolve(file: &PaymentsFile) -> Result<Networks, NetworkConfigError> {
        if file.networks.is_empty() {
            return Ok(Networks::dev());
        }
        let has_dev = file
            .networks
            .iter()
            .any(|n| n.settlement == SettlementKind::Dev);
        if has_dev && file.networks.len() > 1 {
            return Err(invalid(
                "the dev network cannot be combined with real chains",
            ));
        }
        let pay_to = match (&file.pay_to, has_dev) {
            (Some(text), _) => parse_address(text, "pay_to")?,
            (None, true) => DEV_PAY_TO.parse().expect("valid dev address"),
            (None, false) => return Err(invalid("pay_to is required for real chains")),
        };
        let mut networks = Vec::new();
        for n in &file.networks {
            if networks.iter().any(|m: &Network| m.chain_id == n.chain_id) {
                return Err(invalid(format!("chain {} is listed twice", n.chain_id)));
            }
            networks.push(resolve_network(n)?);
        }
        let default_chain_id = file.default_chain_id.unwrap_or(networks[0].chain_id);
        if !networks.iter().any(|n| n.chain_id == default_chain_id) {
            return Err(invalid(format!(
                "default_chain_id {default_chain_id} is not a configured network"
            )));
        }
        let max_timeout_seconds = file
            .max_timeout_seconds
            .unwrap_or(DEFAULT_MAX_TIMEOUT_SECONDS);
        if !(30..=86_400).contains(&max_timeout_seconds) {
            return Err(invalid("max_timeout_seconds must be between 30 and 86400"));
        }
        Ok(Networks {
            pay_to,
            default_chain_id,
            max_timeout_seconds,
            receipt_timeout_secs: file
                .receipt_timeout_secs
                .unwrap_or(DEFAULT_RECEIPT_TIMEOUT_SECS)
                .max(1),
            networks,
        })
    }

    /// Whether only the dev network is configured.
    pub fn is_dev(&self) -> bool {
        self.networks
            .iter()
            .all(|n| n.settlement == SettlementKind::Dev)
    }

    /// Every (network, token) pair, for error messages and discovery.
    pub fn offered(&self) -> Vec<Value> {
        self.networks
            .iter()
            .flat_map(|n| {
                n.tokens.iter().map(move |t| {
                    serde_json::json!({
                        "chain_id": n.chain_id,
                        "network": n.caip2(),
                        "name": n.name,
                        "token": t.symbol,
                        "asset": t.address.to_checksum(None),
                        "settlement": n.settlement.as_str(),
                    })
                })
            })
            .collect()
    }

    /// The offer for `credits` on the chosen chain and token (defaults: the default network,
    /// USDC or its first token).
    pub fn offer(
        &self,
        credits: i64,
        chain_id: Option<u64>,
        token: Option<&str>,
    ) -> Result<Offer, String> {
        let chain_id = chain_id.unwrap_or(self.default_chain_id);
        let network = self
            .networks
            .iter()
            .find(|n| n.chain_id == chain_id)
            .ok_or_else(|| format!("chain_id {chain_id} is not accepted by this server"))?;
        let token = match token {
            Some(symbol) => network
                .tokens
                .iter()
                .find(|t| t.symbol.eq_ignore_ascii_case(symbol.trim()))
                .ok_or_else(|| format!("token {symbol} is not accepted on chain {chain_id}"))?,
            None => network
                .tokens
                .iter()
                .find(|t| t.symbol == "USDC")
                .or_else(|| network.tokens.first())
                .ok_or_else(|| format!("chain {chain_id} has no token"))?,
        };
        let credits_u =
            u64::try_from(credits).map_err(|_| "credits must be positive".to_owned())?;
        let amount = token
            .base_units_per_credit
            .checked_mul(U256::from(credits_u))
            .ok_or_else(|| "the amount is too large".to_owned())?;
        let mut extra = Map::new();
        extra.insert("name".into(), token.eip712_name.clone().into());
        extra.insert("version".into(), token.eip712_version.clone().into());
        if network.settlement == SettlementKind::Dev {
            extra.insert("settlement".into(), "dev".into());
            extra.insert(
                "note".into(),
                "DEV NETWORK: no chain; payments are checked but no funds move".into(),
            );
        }
        let requirement = PaymentRequirements {
            scheme: "exact".into(),
            network: network.caip2(),
            amount: amount.to_string(),
            asset: token.address.to_checksum(None),
            pay_to: self.pay_to.to_checksum(None),
            max_timeout_seconds: self.max_timeout_seconds,
            extra,
        };
        Ok(Offer {
            network: network.clone(),
            token: token.clone(),
            pay_to: self.pay_to,
            credits,
            amount,
            requirement,
        })
    }
}

fn parse_address(text: &str, field: &str) -> Result<Address, NetworkConfigError> {
    text.trim()
        .parse()
        .map_err(|_| invalid(format!("{field} is not an address: {text}")))
}

fn token(symbol: &str, address: Address, name: &str, version: &str, decimals: u8) -> Token {
    Token {
        symbol: symbol.to_owned(),
        address,
        eip712_name: name.to_owned(),
        eip712_version: version.to_owned(),
        decimals,
        base_units_per_credit: U256::from(10u64).pow(U256::from(decimals.saturating_sub(2))),
    }
}

fn resolve_network(n: &NetworkFile) -> Result<Network, NetworkConfigError> {
    let known = KNOWN_CHAINS.iter().find(|c| c.chain_id == n.chain_id);
    let name = n
        .name
        .clone()
        .or_else(|| known.map(|c| c.name.to_owned()))
        .unwrap_or_else(|| format!("chain {}", n.chain_id));
    let tokens = if n.tokens.is_empty() {
        KNOWN_TOKENS
            .iter()
            .filter(|t| t.chain_id == n.chain_id)
            .map(|t| {
                token(
                    t.symbol,
                    t.address
                        .parse()
                        .expect("built-in token addresses are valid"),
                    t.eip712_name,
                    t.eip712_version,
                    t.decimals,
                )
            })
            .collect::<Vec<_>>()
    } else {
        n.tokens
            .iter()
            .map(|t| {
                if !(2..=36).contains(&t.decimals) {
                    return Err(invalid(format!(
                        "token {}: decimals must be 2..=36",
                        t.symbol
                    )));
                }
                Ok(token(
                    &t.symbol,
                    parse_address(&t.address, "token address")?,
                    &t.eip712_name,
                    &t.eip712_version,
                    t.decimals,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if tokens.is_empty() {
        return Err(invalid(format!(
            "chain {} has no built-in tokens: list them under [[networks.tokens]]",
            n.chain_id
        )));
    }
    match n.settlement {
        SettlementKind::Evm if n.rpc_url.is_none() => {
            return Err(invalid(format!(
                "chain {}: evm settlement needs rpc_url",
                n.chain_id
            )))
        }
        SettlementKind::Facilitator if n.facilitator_url.is_none() => {
            return Err(invalid(format!(
                "chain {}: facilitator settlement needs facilitator_url",
                n.chain_id
            )))
        }
        SettlementKind::Facilitator if n.rpc_url.is_none() => {
            return Err(invalid(format!(
                "chain {}: facilitator settlement needs rpc_url (a facilitator's settlement is counted only once the chain shows it)",
                n.chain_id
            )))
        }
        _ => {}
    }
    let confirmations = n
        .confirmations
        .unwrap_or_else(|| default_confirmations(n.chain_id));
    if confirmations == 0 && !LOCAL_CHAIN_IDS.contains(&n.chain_id) {
        return Err(invalid(format!(
            "chain {}: confirmations = 0 is allowed only on the local test chains {LOCAL_CHAIN_IDS:?}; a payment at depth 0 can be undone by a reorg",
            n.chain_id
        )));
    }
    if confirmations > 10_000 {
        return Err(invalid(format!(
            "chain {}: confirmations must be at most 10000",
            n.chain_id
        )));
    }
    let log_block_range = n.log_block_range.unwrap_or(DEFAULT_LOG_BLOCK_RANGE);
    if !(1..=1_000_000).contains(&log_block_range) {
        return Err(invalid(format!(
            "chain {}: log_block_range must be from 1 to 1000000",
            n.chain_id
        )));
    }
    Ok(Network {
        chain_id: n.chain_id,
        name,
        settlement: n.settlement,
        rpc_url: n.rpc_url.clone(),
        facilitator_url: n.facilitator_url.clone(),
        tokens,
        confirmations,
        log_block_range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_base_units() {
        let nets = Networks::dev();
        let offer = nets.offer(500, None, None).unwrap();
        assert_eq!(offer.requirement.amount, "5000000");
        assert_eq!(offer.amount_usd(), "5.00");
        assert_eq!(offer.requirement.network, "eip155:1337");
        assert_eq!(offer.requirement.extra["settlement"], "dev");
        assert!(nets.offer(500, Some(8453), None).is_err());
        assert!(nets.offer(500, None, Some("EURC")).is_err());
    }

    #[test]
    fn built_in_chains_fill_in_tokens_and_dev_is_exclusive() {
        let file: PaymentsFile = toml::from_str(
            r#"
            pay_to = "0x1111111111111111111111111111111111111111"
            [[networks]]
            chain_id = 8453
            settlement = "evm"
            rpc_url = "http://127.0.0.1:1"
            "#,
        )
        .unwrap();
        let nets = Networks::resolve(&file).unwrap();
        let offer = nets.offer(1500, None, Some("eurc")).unwrap();
        assert_eq!(offer.requirement.amount, "15000000");
        assert_eq!(offer.requirement.extra["name"], "EURC");
        assert!(!nets.is_dev());

        let mixed: PaymentsFile = toml::from_str(
            r#"
            pay_to = "0x1111111111111111111111111111111111111111"
            [[networks]]
            chain_id = 8453
            settlement = "evm"
            rpc_url = "http://127.0.0.1:1"
            [[networks]]
            chain_id = 1337
            settlement = "dev"
            [[networks.tokens]]
            symbol = "USDC"
            address = "0x0000000000000000000000000000000000001337"
            eip712_name = "USD Coin"
            eip712_version = "2"
            "#,
        )
        .unwrap();
        assert!(Networks::resolve(&mixed).is_err());
    }
}
