//! EIP-191 personal-sign: hashing, signature decoding, public-key recovery and signing.
//!
//! Recovery uses libsecp256k1 (the `secp256k1` crate); it is the cost floor of every signed
//! request (see the README's performance section).
//!
//! Decisions:
//! - A signature is exactly 65 bytes written as `0x` + 130 hex digits (either letter case);
//!   `r ‖ s ‖ v` with `v` in {27, 28} or {0, 1}. Anything else is malformed.
//! - **High-S signatures are rejected** (s > n/2, EIP-2; OpenZeppelin's `ECDSA.recover` does
//!   the same). Every standard signer (viem, ethers, eth-account, libsecp256k1) emits low-S;
//!   a high-S twin is a second encoding of the same signature, and refusing it removes
//!   signature malleability altogether. To normalize: s' = n − s and flip v (27 ↔ 28).
//! - The message is UTF-8 text, never hex-decoded: a message starting with `0x` is hashed as
//!   its characters (as ethers and viem do for strings).

use crate::address::WalletAddress;
use alloy_primitives::{keccak256, Address, B256};
use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, SecretKey, SECP256K1};
use zeroize::Zeroizing;

/// Half the secp256k1 group order, big-endian: the largest accepted `s`.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// The secp256k1 group order, big-endian.
pub const CURVE_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature must start with 0x")]
    MissingPrefix,
    #[error("signature is not hexadecimal")]
    NotHex,
    #[error("signature must be 65 bytes (130 hex digits after 0x), got {0} hex digits")]
    WrongLength(usize),
    #[error("signature recovery byte v must be 27 or 28 (or 0 or 1), got {0}")]
    BadRecoveryId(u8),
    #[error("signature has a high s value (s > n/2); send the low-S form (EIP-2)")]
    HighS,
    #[error("signature r or s is out of range")]
    OutOfRange,
    #[error("no public key can be recovered from this signature")]
    Unrecoverable,
}

/// A decoded 65-byte recoverable signature with low S.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    inner: RecoverableSignature,
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl Signature {
    /// Decodes `0x` + 130 hex digits.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let hex_part = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .ok_or(SignatureError::MissingPrefix)?;
        if !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(SignatureError::NotHex);
        }
        if hex_part.len() != 130 {
            return Err(SignatureError::WrongLength(hex_part.len()));
        }
        let mut bytes = [0u8; 65];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| SignatureError::NotHex)?;
        Self::from_bytes(&bytes)
    }

    /// Decodes `r ‖ s ‖ v`.
    pub fn from_bytes(bytes: &[u8; 65]) -> Result<Self, SignatureError> {
        let v = bytes[64];
        let recid = match v {
            0 | 1 => v,
            27 | 28 => v - 27,
            other => return Err(SignatureError::BadRecoveryId(other)),
        };
        let s: &[u8] = &bytes[32..64];
        if s > &HALF_ORDER[..] {
            return Err(SignatureError::HighS);
        }
        let r: &[u8] = &bytes[..32];
        if r.iter().all(|&b| b == 0) || s.iter().all(|&b| b == 0) {
            return Err(SignatureError::OutOfRange);
        }
        let recid =
            RecoveryId::try_from(i32::from(recid)).map_err(|_| SignatureError::BadRecoveryId(v))?;
        let inner = RecoverableSignature::from_compact(&bytes[..64], recid)
            .map_err(|_| SignatureError::OutOfRange)?;
        Ok(Signature { inner })
    }

    /// `r ‖ s ‖ v` with v in {27, 28}.
    pub fn to_bytes(&self) -> [u8; 65] {
        let (recid, compact) = self.inner.serialize_compact();
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&compact);
        out[64] = 27 + i32::from(recid) as u8;
        out
    }

    /// `0x` + 130 lowercase hex digits, v in {27, 28}.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.to_bytes()))
    }

    /// Recovers the signer of a 32-byte digest.
    pub fn recover_digest(&self, digest: &B256) -> Result<WalletAddress, SignatureError> {
        let message = Message::from_digest(digest.0);
        let key = SECP256K1
            .recover_ecdsa(&message, &self.inner)
            .map_err(|_| SignatureError::Unrecoverable)?;
        Ok(address_of(&key))
    }

    /// Recovers the signer of an EIP-191 personal-sign `message`.
    pub fn recover_message(&self, message: &str) -> Result<WalletAddress, SignatureError> {
        self.recover_digest(&eip191_hash(message))
    }
}

/// `keccak256("\x19Ethereum Signed Message:\n" + len(message) + message)`, where the length
/// is the UTF-8 byte length in decimal.
pub fn eip191_hash(message: &str) -> B256 {
    let mut buf = Vec::with_capacity(message.len() + 32);
    buf.extend_from_slice(b"\x19Ethereum Signed Message:\n");
    buf.extend_from_slice(message.len().to_string().as_bytes());
    buf.extend_from_slice(message.as_bytes());
    keccak256(&buf)
}

/// The address of a public key: the last 20 bytes of keccak256 of the uncompressed point.
pub fn address_of(key: &secp256k1::PublicKey) -> WalletAddress {
    let uncompressed = key.serialize_uncompressed();
    let hash = keccak256(&uncompressed[1..]);
    WalletAddress::new(Address::from_slice(&hash[12..]))
}

/// A secp256k1 private key that signs EIP-191 messages. `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey {
    key: SecretKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.address())
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.key.non_secure_erase();
    }
}

/// Why bytes are not a private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a private key is 32 bytes (0x + 64 hex digits) in the range 1..n-1")]
pub struct InvalidPrivateKey;

impl PrivateKey {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidPrivateKey> {
        SecretKey::from_slice(bytes)
            .map(|key| PrivateKey { key })
            .map_err(|_| InvalidPrivateKey)
    }

    /// From `0x` + 64 hex digits (the prefix is optional).
    pub fn from_hex(text: &str) -> Result<Self, InvalidPrivateKey> {
        let text = text.trim();
        let hex_part = text.strip_prefix("0x").unwrap_or(text);
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_part, &mut bytes[..]).map_err(|_| InvalidPrivateKey)?;
        Self::from_bytes(&bytes[..])
    }

    /// A fresh key from the operating system's randomness.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        loop {
            getrandom::fill(&mut bytes[..])
                .expect("the operating system's randomness source failed");
            // Fails only for 0 or >= n: a probability of about 2^-128.
            if let Ok(key) = Self::from_bytes(&bytes[..]) {
                return key;
            }
        }
    }

    /// The raw 32 bytes. Handle with care.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.secret_bytes()
    }

    /// The key's address.
    pub fn address(&self) -> WalletAddress {
        address_of(&self.key.public_key(SECP256K1))
    }

    /// Signs a 32-byte digest (RFC 6979 deterministic nonce, low S).
    pub fn sign_digest(&self, digest: &B256) -> Signature {
        let message = Message::from_digest(digest.0);
        Signature {
            inner: SECP256K1.sign_ecdsa_recoverable(&message, &self.key),
        }
    }

    /// Signs an EIP-191 personal-sign message.
    pub fn sign_message(&self, message: &str) -> Signature {
        self.sign_digest(&eip191_hash(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_recover_round_trip() {
        let key = PrivateKey::from_hex(
            "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
        )
        .unwrap();
        assert_eq!(
            key.address().to_string(),
            "0x2c7536e3605d9c16a7a3d7b1898e529396a65c23"
        );
        let sig = key.sign_message("hello");
        assert_eq!(sig.recover_message("hello").unwrap(), key.address());
        assert_ne!(sig.recover_message("hello!").unwrap(), key.address());
        let reparsed = Signature::parse(&sig.to_hex()).unwrap();
        assert_eq!(reparsed, sig);
    }

    #[test]
    fn v_zero_one_accepted_and_high_s_rejected() {
        let key = PrivateKey::random();
        let sig = key.sign_message("m");
        let mut bytes = sig.to_bytes();
        bytes[64] -= 27;
        let zero_one = Signature::from_bytes(&bytes).unwrap();
        assert_eq!(zero_one.recover_message("m").unwrap(), key.address());

        // The high-S twin: s' = n - s, v flipped.
        let mut high = sig.to_bytes();
        let s = &high[32..64];
        let mut twin = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = CURVE_ORDER[i] as i16 - s[i] as i16 - borrow;
            twin[i] = d.rem_euclid(256) as u8;
            borrow = i16::from(d < 0);
        }
        high[32..64].copy_from_slice(&twin);
        high[64] = if high[64] == 27 { 28 } else { 27 };
        assert_eq!(Signature::from_bytes(&high), Err(SignatureError::HighS));
    }

    #[test]
    fn malformed_encodings() {
        let good = PrivateKey::random().sign_message("m").to_hex();
        assert_eq!(
            Signature::parse(&good[2..]),
            Err(SignatureError::MissingPrefix)
        );
        assert_eq!(
            Signature::parse(&good[..130]),
            Err(SignatureError::WrongLength(128))
        );
        assert_eq!(
            Signature::parse(&format!("{good}00")),
            Err(SignatureError::WrongLength(132))
        );
        assert_eq!(
            Signature::parse(&good.replace('a', "g")).unwrap_err(),
            SignatureError::NotHex
        );
        let mut bad_v = good.clone();
        bad_v.replace_range(130..132, "1d");
        assert_eq!(
            Signature::parse(&bad_v),
            Err(SignatureError::BadRecoveryId(29))
        );
        let zero_r = format!("0x{}{}", "00".repeat(32), &good[66..]);
        assert_eq!(Signature::parse(&zero_r), Err(SignatureError::OutOfRange));
    }

    #[test]
    fn hex_looking_message_is_hashed_as_text() {
        // ethers: hashMessage("0x4243") hashes the 6 characters, not the 2 bytes.
        let as_text = eip191_hash("0x4243");
        let mut buf = b"\x19Ethereum Signed Message:\n6".to_vec();
        buf.extend_from_slice(b"0x4243");
        assert_eq!(as_text, keccak256(&buf));
    }
}
