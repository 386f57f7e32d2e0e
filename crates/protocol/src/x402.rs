//! x402 v2 wire types and the EVM "exact" scheme (EIP-3009 `TransferWithAuthorization`).
//!
//! - [`PaymentRequired`] is the 402 challenge (header `PAYMENT-REQUIRED`, base64 JSON).
//! - [`PaymentPayload`] is what a client sends back (header `PAYMENT-SIGNATURE`, or the legacy
//!   `X-PAYMENT` / `PAYMENT`); [`decode_payment_header`] also accepts the legacy shapes seen in
//!   the field (a `{paymentPayload: ...}` wrapper, x402Version 1, snake_case time fields,
//!   numbers instead of decimal strings) and normalises them to [`DecodedPayment`].
//! - [`SettleResponse`] is the `PAYMENT-RESPONSE` header.
//! - [`transfer_digest`] is the EIP-712 hash a payer signs; [`sign_authorization`] builds a
//!   complete payload for a requirement (the SDK's side).

use crate::signature::{PrivateKey, Signature};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this crate speaks.
pub const X402_VERSION: u64 = 2;
/// The 402 challenge header.
pub const HEADER_PAYMENT_REQUIRED: &str = "payment-required";
/// The v2 payment header.
pub const HEADER_PAYMENT_SIGNATURE: &str = "payment-signature";
/// Legacy payment header (x402 v1).
pub const HEADER_X_PAYMENT: &str = "x-payment";
/// Legacy payment header.
pub const HEADER_PAYMENT: &str = "payment";
/// The settlement result header.
pub const HEADER_PAYMENT_RESPONSE: &str = "payment-response";
/// The v1 settlement result header (sent too, for v1 clients).
pub const HEADER_X_PAYMENT_RESPONSE: &str = "x-payment-response";
/// Payment headers in the order they are looked for.
pub const PAYMENT_HEADERS: [&str; 3] = [HEADER_PAYMENT_SIGNATURE, HEADER_X_PAYMENT, HEADER_PAYMENT];
/// A client must be left at least this many seconds before `validBefore`.
pub const MIN_VALIDITY_MARGIN_SECS: u64 = 6;

alloy_sol_types::sol! {
    /// EIP-3009 `TransferWithAuthorization`, as signed by the payer.
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// The resource a payment is for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Absolute URL of the resource.
    pub url: String,
    /// What is being bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the paid response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay (an entry of `accepts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Always `exact` here.
    pub scheme: String,
    /// CAIP-2 network, `eip155:<chain id>`.
    pub network: String,
    /// Amount in the token's atomic units, as a decimal string.
    pub amount: String,
    /// Token contract address.
    pub asset: String,
    /// Recipient of the payment.
    pub pay_to: String,
    /// Longest time a payment may take; clients set `validBefore = now + this`.
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 domain `{name, version}` (and, on a dev network, a label).
    pub extra: Map<String, Value>,
}

impl PaymentRequirements {
    /// The chain id of `network` (`eip155:<id>`).
    pub fn chain_id(&self) -> Option<u64> {
        parse_caip2(&self.network)
    }

    /// The EIP-712 domain of the token.
    pub fn domain(&self) -> Option<Eip712Domain> {
        let name = self.extra.get("name")?.as_str()?.to_owned();
        let version = self.extra.get("version")?.as_str()?.to_owned();
        let asset: Address = self.asset.parse().ok()?;
        Some(Eip712Domain::new(
            Some(name.into()),
            Some(version.into()),
            Some(U256::from(self.chain_id()?)),
            Some(asset),
            None,
        ))
    }
}

/// The 402 challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// 2.
    pub x402_version: u64,
    /// Why the previous payment (if any) was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is being paid for.
    pub resource: ResourceInfo,
    /// The accepted ways to pay.
    pub accepts: Vec<PaymentRequirements>,
    /// Protocol extensions (none here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// EIP-3009 authorization fields as sent on the wire (decimal strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAuthorization {
    /// Payer.
    pub from: String,
    /// Recipient (must be `payTo`).
    pub to: String,
    /// Amount in atomic units.
    pub value: String,
    /// Unix seconds after which the authorization is valid.
    pub valid_after: String,
    /// Unix seconds before which the authorization is valid.
    pub valid_before: String,
    /// 32-byte random nonce, `0x` + 64 hex.
    pub nonce: String,
}

/// The scheme payload of an "exact" EVM payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    /// 65-byte signature, `0x` hex.
    pub signature: String,
    /// The signed authorization.
    pub authorization: WireAuthorization,
}

/// The payment a client sends (v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// 2.
    pub x402_version: u64,
    /// The resource paid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// A verbatim copy of the chosen requirement.
    pub accepted: PaymentRequirements,
    /// The scheme payload.
    pub payload: ExactEvmPayload,
    /// Protocol extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// The settlement result (`PAYMENT-RESPONSE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the payment settled.
    pub success: bool,
    /// Transaction hash, or an empty string on failure.
    pub transaction: String,
    /// CAIP-2 network.
    pub network: String,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Machine-readable failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Human-readable failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// A verified-shape authorization with typed fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Payer.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Amount in atomic units.
    pub value: U256,
    /// Valid after (unix seconds).
    pub valid_after: u64,
    /// Valid before (unix seconds).
    pub valid_before: u64,
    /// Authorization nonce.
    pub nonce: B256,
}

impl Authorization {
    /// The EIP-712 struct.
    pub fn to_struct(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: U256::from(self.valid_after),
            validBefore: U256::from(self.valid_before),
            nonce: self.nonce,
        }
    }

    /// The wire form (decimal strings, lowercase hex addresses as checksummed text).
    pub fn to_wire(&self) -> WireAuthorization {
        WireAuthorization {
            from: self.from.to_checksum(None),
            to: self.to.to_checksum(None),
            value: self.value.to_string(),
            valid_after: self.valid_after.to_string(),
            valid_before: self.valid_before.to_string(),
            nonce: format!("{:#x}", self.nonce),
        }
    }
}

/// A payment header decoded and normalised, whatever shape it came in.
#[derive(Debug, Clone)]
pub struct DecodedPayment {
    /// 1 or 2.
    pub x402_version: u64,
    /// The `accepted` requirement as sent (v2), compared by deep equality.
    pub accepted: Option<Value>,
    /// The `resource` object as sent (v2; not covered by the signature).
    pub resource: Option<Value>,
    /// Top-level `scheme` (v1).
    pub scheme: Option<String>,
    /// Top-level `network` (v1), as sent.
    pub network: Option<String>,
    /// The signature.
    pub signature: Signature,
    /// The authorization.
    pub authorization: Authorization,
}

impl DecodedPayment {
    /// The payment as a v2 payload for `accepted` (the requirement it was verified
    /// against), whatever shape it arrived in: what is stored for reconciliation and sent
    /// to a facilitator.
    pub fn to_payload(&self, accepted: &PaymentRequirements) -> PaymentPayload {
        PaymentPayload {
            x402_version: X402_VERSION,
            resource: None,
            accepted: accepted.clone(),
            payload: ExactEvmPayload {
                signature: self.signature.to_hex(),
                authorization: self.authorization.to_wire(),
            },
            extensions: None,
        }
    }
}

/// Why a payment header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct PaymentDecodeError {
    /// x402 reason code (`invalid_payload`, `invalid_x402_version`, ...).
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

fn bad(reason: &'static str, message: impl Into<String>) -> PaymentDecodeError {
    PaymentDecodeError {
        reason,
        message: message.into(),
    }
}

/// Standard padded base64 of the JSON of `value`.
pub fn encode_header<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(json)
}

/// Decodes a base64 (standard or URL-safe, padded or not) JSON header into `T`.
pub fn decode_header<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, PaymentDecodeError> {
    let bytes = decode_base64(text.trim())
        .ok_or_else(|| bad("invalid_payload", "the header is not valid base64"))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        bad(
            "invalid_payload",
            format!("the header is not the expected JSON: {e}"),
        )
    })
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// Decodes a payment header (`PAYMENT-SIGNATURE`, `X-PAYMENT` or `PAYMENT`) of any known shape.
pub fn decode_payment_header(text: &str) -> Result<DecodedPayment, PaymentDecodeError> {
    if text.len() > 16 * 1024 {
        return Err(bad("invalid_payload", "the payment header is too long"));
    }
    decode_payment_value(decode_header(text)?)
}

/// Normalises a payment payload already parsed as JSON (see [`decode_payment_header`]).
pub fn decode_payment_value(mut value: Value) -> Result<DecodedPayment, PaymentDecodeError> {
    // Legacy wrapper: {paymentPayload: {...}}.
    if let Some(inner) = value.get_mut("paymentPayload").map(Value::take) {
        value = inner;
    }
    let obj = value.as_object().ok_or_else(|| {
        bad(
            "invalid_payload",
            "the payment payload is not a JSON object",
        )
    })?;
    let version = match obj.get("x402Version").or_else(|| obj.get("x402_version")) {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad("invalid_x402_version", "x402Version must be 1 or 2"))?,
        None => return Err(bad("invalid_x402_version", "x402Version is missing")),
    };
    if version != 1 && version != 2 {
        return Err(bad(
            "invalid_x402_version",
            format!("x402Version {version} is not supported (use 2)"),
        ));
    }
    let accepted = obj.get("accepted").cloned();
    if version == 2 && !accepted.as_ref().is_some_and(Value::is_object) {
        return Err(bad(
            "invalid_payload",
            "accepted (a copy of one entry of accepts) is missing",
        ));
    }
    let text_field =
        |o: &Map<String, Value>, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
    let payload = obj
        .get("payload")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            bad(
                "invalid_payload",
                "payload {signature, authorization} is missing",
            )
        })?;
    let signature_text = text_field(payload, "signature")
        .ok_or_else(|| bad("invalid_payload", "payload.signature is missing"))?;
    let signature = Signature::parse(&signature_text).map_err(|e| {
        bad(
            "invalid_exact_evm_payload_signature",
            format!("payload.signature: {e}"),
        )
    })?;
    let auth = payload
        .get("authorization")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("invalid_payload", "payload.authorization is missing"))?;
    let authorization = parse_authorization(auth)?;
    Ok(DecodedPayment {
        resource: obj.get("resource").cloned(),
        x402_version: version,
        accepted,
        scheme: text_field(obj, "scheme"),
        network: text_field(obj, "network"),
        signature,
        authorization,
    })
}

fn parse_authorization(auth: &Map<String, Value>) -> Result<Authorization, PaymentDecodeError> {
    let field = |names: &[&str]| -> Result<&Value, PaymentDecodeError> {
        names.iter().find_map(|n| auth.get(*n)).ok_or_else(|| {
            bad(
                "invalid_payload",
                format!("authorization.{} is missing", names[0]),
            )
        })
    };
    let address = |names: &[&str]| -> Result<Address, PaymentDecodeError> {
        field(names)?
            .as_str()
            .and_then(|s| s.parse::<Address>().ok())
            .ok_or_else(|| {
                bad(
                    "invalid_payload",
                    format!("authorization.{} is not an address", names[0]),
                )
            })
    };
    let number = |names: &[&str]| -> Result<U256, PaymentDecodeError> {
        let value = field(names)?;
        let parsed = match value {
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                U256::from_str_radix(s, 10).ok()
            }
            Value::Number(n) => n.as_u64().map(U256::from),
            _ => None,
        };
        parsed.ok_or_else(|| {
            bad(
                "invalid_payload",
                format!(
                    "authorization.{} is not a non-negative decimal integer",
                    names[0]
                ),
            )
        })
    };
    let seconds = |names: &[&str]| -> Result<u64, PaymentDecodeError> {
        u64::try_from(number(names)?).map_err(|_| {
            bad(
                "invalid_payload",
                format!("authorization.{} is out of range", names[0]),
            )
        })
    };
    let nonce = field(&["nonce"])?
        .as_str()
        .and_then(|s| {
            let hex = s.strip_prefix("0x")?;
            (hex.len() == 64).then(|| s.parse::<B256>().ok()).flatten()
        })
        .ok_or_else(|| {
            bad(
                "invalid_payload",
                "authorization.nonce must be 0x + 64 hex digits",
            )
        })?;
    Ok(Authorization {
        from: address(&["from"])?,
        to: address(&["to"])?,
        value: number(&["value"])?,
        valid_after: seconds(&["validAfter", "valid_after"])?,
        valid_before: seconds(&["validBefore", "valid_before"])?,
        nonce,
    })
}

/// `eip155:<id>` → id.
pub fn parse_caip2(network: &str) -> Option<u64> {
    network.strip_prefix("eip155:")?.parse().ok()
}

/// The EIP-712 digest the payer signs for `authorization` under `domain`.
pub fn transfer_digest(authorization: &Authorization, domain: &Eip712Domain) -> B256 {
    authorization.to_struct().eip712_signing_hash(domain)
}

/// Builds and signs a v2 payment for `requirement` (client side): `to = payTo`,
/// `value = amount`, valid from 10 minutes ago (clock skew) until `now + maxTimeoutSeconds`,
/// and a random 32-byte nonce.
pub fn sign_authorization(
    key: &PrivateKey,
    requirement: &PaymentRequirements,
    resource: Option<ResourceInfo>,
    now_secs: u64,
) -> Result<PaymentPayload, PaymentDecodeError> {
    let domain = requirement.domain().ok_or_else(|| {
        bad(
            "invalid_payload",
            "the requirement has no usable EIP-712 domain",
        )
    })?;
    let to: Address = requirement
        .pay_to
        .parse()
        .map_err(|_| bad("invalid_payload", "payTo is not an address"))?;
    let value = U256::from_str_radix(&requirement.amount, 10)
        .map_err(|_| bad("invalid_payload", "amount is not a decimal integer"))?;
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| bad("invalid_payload", e.to_string()))?;
    let authorization = Authorization {
        from: key.address().address(),
        to,
        value,
        valid_after: now_secs.saturating_sub(600),
        valid_before: now_secs + requirement.max_timeout_seconds,
        nonce: B256::from(nonce),
    };
    let signature = key.sign_digest(&transfer_digest(&authorization, &domain));
    Ok(PaymentPayload {
        x402_version: X402_VERSION,
        resource,
        accepted: requirement.clone(),
        payload: ExactEvmPayload {
            signature: signature.to_hex(),
            authorization: authorization.to_wire(),
        },
        extensions: None,
    })
}

/// A token known to this protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownToken {
    /// Chain id.
    pub chain_id: u64,
    /// Symbol (`USDC`, `EURC`).
    pub symbol: &'static str,
    /// Contract address (checksummed).
    pub address: &'static str,
    /// EIP-712 domain name.
    pub eip712_name: &'static str,
    /// EIP-712 domain version.
    pub eip712_version: &'static str,
    /// Decimals.
    pub decimals: u8,
}

/// A chain known to this protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownChain {
    /// Chain id.
    pub chain_id: u64,
    /// Short name used by the CLI (`base`, `arbitrum`, ...).
    pub slug: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Whether it is a test network.
    pub testnet: bool,
}

/// The chains of the seeds (Base is the default).
pub const KNOWN_CHAINS: &[KnownChain] = &[
    KnownChain {
        chain_id: 8453,
        slug: "base",
        name: "Base",
        testnet: false,
    },
    KnownChain {
        chain_id: 42161,
        slug: "arbitrum",
        name: "Arbitrum One",
        testnet: false,
    },
    KnownChain {
        chain_id: 10,
        slug: "optimism",
        name: "Optimism",
        testnet: false,
    },
    KnownChain {
        chain_id: 137,
        slug: "polygon",
        name: "Polygon",
        testnet: false,
    },
    KnownChain {
        chain_id: 43114,
        slug: "avalanche",
        name: "Avalanche C-Chain",
        testnet: false,
    },
    KnownChain {
        chain_id: 84532,
        slug: "base-sepolia",
        name: "Base Sepolia",
        testnet: true,
    },
];

/// The tokens of the seeds, with their EIP-712 domains.
pub const KNOWN_TOKENS: &[KnownToken] = &[
    KnownToken {
        chain_id: 8453,
        symbol: "USDC",
        address: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownToken {
        chain_id: 8453,
        symbol: "EURC",
        address: "0x60a3E35Cc302bFA44Cb288Bc5a4F316Fdb1adb42",
        eip712_name: "EURC",
        eip712_version: "2",
        decimals: 6,
    },
    KnownToken {
        chain_id: 42161,
        symbol: "USDC",
        address: "0xaf88d065e77c8cC2239327C5EDb3A432268e5831",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownToken {
        chain_id: 10,
        symbol: "USDC",
        address: "0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownToken {
        chain_id: 137,
        symbol: "USDC",
        address: "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownToken {
        chain_id: 43114,
        symbol: "USDC",
        address: "0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E",
        eip712_name: "USD Coin",
        eip712_version: "2",
        decimals: 6,
    },
    KnownToken {
        chain_id: 84532,
        symbol: "USDC",
        address: "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        eip712_name: "USDC",
        eip712_version: "2",
        decimals: 6,
    },
];

/// Looks a chain up by id or slug (`8453`, `base`, `eip155:8453`).
pub fn find_chain(text: &str) -> Option<&'static KnownChain> {
    let text = text.trim().to_ascii_lowercase();
    let id = text
        .strip_prefix("eip155:")
        .unwrap_or(&text)
        .parse::<u64>()
        .ok();
    KNOWN_CHAINS
        .iter()
        .find(|c| Some(c.chain_id) == id || c.slug == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement() -> PaymentRequirements {
        let mut extra = Map::new();
        extra.insert("name".into(), "USD Coin".into());
        extra.insert("version".into(), "2".into());
        PaymentRequirements {
            scheme: "exact".into(),
            network: "eip155:8453".into(),
            amount: "5000000".into(),
            asset: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913".into(),
            pay_to: "0x1111111111111111111111111111111111111111".into(),
            max_timeout_seconds: 300,
            extra,
        }
    }

    #[test]
    fn signed_payment_round_trips_and_recovers_to_the_payer() {
        let key = PrivateKey::random();
        let req = requirement();
        let payment = sign_authorization(&key, &req, None, 1_800_000_000).unwrap();
        let decoded = decode_payment_header(&encode_header(&payment)).unwrap();
        assert_eq!(decoded.x402_version, 2);
        assert_eq!(decoded.accepted, Some(serde_json::to_value(&req).unwrap()));
        let digest = transfer_digest(&decoded.authorization, &req.domain().unwrap());
        assert_eq!(
            decoded.signature.recover_digest(&digest).unwrap(),
            key.address()
        );
        assert_eq!(decoded.authorization.value, U256::from(5_000_000u64));
        assert_eq!(decoded.authorization.valid_before, 1_800_000_300);
    }

    #[test]
    fn legacy_shapes_are_normalised() {
        let key = PrivateKey::random();
        let payment = sign_authorization(&key, &requirement(), None, 1_800_000_000).unwrap();
        let mut v = serde_json::to_value(&payment).unwrap();
        let auth = v["payload"]["authorization"].as_object_mut().unwrap();
        let after = auth.remove("validAfter").unwrap();
        auth.insert("valid_after".into(), after);
        auth.insert("validBefore".into(), Value::from(1_800_000_300u64));
        let wrapped = serde_json::json!({"paymentPayload": v});
        let decoded = decode_payment_header(&encode_header(&wrapped)).unwrap();
        assert_eq!(decoded.authorization.valid_after, 1_800_000_000 - 600);
        assert_eq!(decoded.authorization.valid_before, 1_800_000_300);
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        assert_eq!(
            decode_payment_header("%%%").unwrap_err().reason,
            "invalid_payload"
        );
        let not_json = base64::engine::general_purpose::STANDARD.encode("nope");
        assert_eq!(
            decode_payment_header(&not_json).unwrap_err().reason,
            "invalid_payload"
        );
        let v3 = encode_header(&serde_json::json!({"x402Version": 3}));
        assert_eq!(
            decode_payment_header(&v3).unwrap_err().reason,
            "invalid_x402_version"
        );
        let no_accepted = encode_header(&serde_json::json!({"x402Version": 2, "payload": {}}));
        assert_eq!(
            decode_payment_header(&no_accepted).unwrap_err().reason,
            "invalid_payload"
        );
    }

    #[test]
    fn known_chains_resolve() {
        assert_eq!(find_chain("base").unwrap().chain_id, 8453);
        assert_eq!(find_chain("eip155:42161").unwrap().slug, "arbitrum");
        assert!(find_chain("solana").is_none());
        for token in KNOWN_TOKENS {
            assert!(token.address.parse::<Address>().is_ok());
            assert!(KNOWN_CHAINS.iter().any(|c| c.chain_id == token.chain_id));
        }
    }
}
