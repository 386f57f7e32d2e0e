//! Wire protocol of the External Agent API, shared by the server and the client SDK.
//!
//! - [`canonical`]: canonical JSON and the payload hash.
//! - [`message`]: the signed message, its scopes and the table of signed actions.
//! - [`signature`]: EIP-191 hashing, signature decoding, recovery and signing.
//! - [`signing`]: building signed request bodies (client side).
//! - [`errors`]: the error codes with status, meaning and recovery.
//! - [`wire`]: request and response bodies.
//! - [`address`]: wallet addresses.
//! - [`x402`]: x402 v2 payments (challenge, payment payload, EIP-3009 authorization).
//! - [`tools`]: the tool marketplace (catalog, invocation, operator documents).
//! - [`workflows`]: workflows, workflow sessions, accounts/budgets and workflow schedules.
//! - [`jobs`]: the jobs board (reservations, completion proof, verification, payout).

pub mod address;
pub mod canonical;
pub mod errors;
pub mod jobs;
pub mod message;
pub mod signature;
pub mod signing;
pub mod tools;
pub mod wire;
pub mod workflows;
pub mod x402;

pub use address::{InvalidAddress, WalletAddress};
pub use canonical::{JsonError, JsonValue};
pub use errors::ErrorCode;
pub use message::{build_message, ActionSpec, PayloadRule, Scope, SignedAction, ENVELOPE_FIELDS};
pub use signature::{eip191_hash, PrivateKey, Signature, SignatureError};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Address(#[from] InvalidAddress),
    #[error(transparent)]
    PrivateKey(#[from] signature::InvalidPrivateKey),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
