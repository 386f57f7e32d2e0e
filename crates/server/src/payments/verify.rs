//! Checks of an x402 "exact" EVM payment against the offer, in the order the reference
//! facilitator uses: the accepted requirement, scheme, domain, network, signature, recipient,
//! time window, amount. Chain state (nonce used, balance) is the settlement backend's part.

use super::networks::Offer;
use agentpmt_protocol::x402::{
    parse_caip2, transfer_digest, DecodedPayment, MIN_VALIDITY_MARGIN_SECS,
};
use alloy::primitives::{Address, U256};

/// Why a payment was refused: an x402 reason code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// v1 network names seen in the field, by chain id.
fn v1_network_name(chain_id: u64) -> Option<&'static str> {
    Some(match chain_id {
        8453 => "base",
        84532 => "base-sepolia",
        42161 => "arbitrum",
        10 => "optimism",
        137 => "polygon",
        43114 => "avalanche",
        _ => return None,
    })
}

/// Verifies `payment` against `offer` at `now_secs`; returns the payer.
pub fn verify(payment: &DecodedPayment, offer: &Offer, now_secs: u64) -> Result<Address, Refusal> {
    let req = &offer.requirement;
    match &payment.accepted {
        Some(accepted) => {
            let offered = serde_json::to_value(req).unwrap_or_default();
            if *accepted != offered {
                return Err(Refusal::new(
                    "invalid_payment_requirements",
                    "accepted does not equal any entry of accepts for this purchase (copy one entry verbatim; price, network, asset and payTo must match)",
                ));
            }
        }
        None => {
            // x402 v1: no accepted copy; scheme and network are top-level.
            if payment.scheme.as_deref().unwrap_or("exact") != "exact" {
                return Err(Refusal::new(
                    "unsupported_scheme",
                    "only the exact scheme is accepted",
                ));
            }
            let network = payment.network.as_deref().unwrap_or_default();
            let chain_id = offer.network.chain_id;
            let matches = parse_caip2(network) == Some(chain_id)
                || v1_network_name(chain_id) == Some(network)
                || network == chain_id.to_string();
            if !matches {
                return Err(Refusal::new(
                    "invalid_exact_evm_network_mismatch",
                    format!(
                        "the payment is for network {network:?}, the purchase is on {}",
                        offer.network.caip2()
                    ),
                ));
            }
        }
    }
    if req.scheme != "exact" {
        return Err(Refusal::new(
            "unsupported_scheme",
            "only the exact scheme is accepted",
        ));
    }
    let domain = req.domain().ok_or_else(|| {
        Refusal::new(
            "invalid_payment_requirements",
            "the requirement has no EIP-712 domain",
        )
    })?;
    if req.chain_id() != Some(offer.network.chain_id) {
        return Err(Refusal::new(
            "invalid_exact_evm_network_mismatch",
            "network mismatch",
        ));
    }
    let auth = &payment.authorization;
    let digest = transfer_digest(auth, &domain);
    let signer = payment.signature.recover_digest(&digest).map_err(|e| {
        Refusal::new(
            "invalid_exact_evm_payload_signature",
            format!("the signature cannot be recovered: {e}"),
        )
    })?;
    if signer.address() != auth.from {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_signature",
            format!(
                "the EIP-712 TransferWithAuthorization signature recovers to {}, not to authorization.from {} (check the domain: name {:?}, version {:?}, chainId {}, verifyingContract {})",
                signer.address().to_checksum(None),
                auth.from.to_checksum(None),
                offer.token.eip712_name,
                offer.token.eip712_version,
                offer.network.chain_id,
                offer.token.address.to_checksum(None),
            ),
        ));
    }
    if auth.to != offer.pay_to {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_recipient_mismatch",
            format!(
                "authorization.to must be payTo {}",
                offer.pay_to.to_checksum(None)
            ),
        ));
    }
    if auth.valid_before < now_secs.saturating_add(MIN_VALIDITY_MARGIN_SECS) {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_valid_before",
            format!("the authorization expired or expires within {MIN_VALIDITY_MARGIN_SECS} seconds (validBefore {}, now {now_secs})", auth.valid_before),
        ));
    }
    if auth.valid_after > now_secs {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_valid_after",
            format!(
                "the authorization is not valid yet (validAfter {}, now {now_secs})",
                auth.valid_after
            ),
        ));
    }
    if auth.value != offer.amount {
        let which = if auth.value < offer.amount {
            "less"
        } else {
            "more"
        };
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_value",
            format!(
                "authorization.value {} is {which} than the price {} (exact amounts only)",
                auth.value, offer.amount
            ),
        ));
    }
    if auth.value == U256::ZERO {
        return Err(Refusal::new(
            "invalid_exact_evm_payload_authorization_value",
            "zero value",
        ));
    }
    Ok(auth.from)
}
