//! Generating an AgentAddress wallet: 128 bits of OS randomness → 12-word BIP-39 English
//! mnemonic → seed (empty passphrase) → BIP-32 key at `m/44'/60'/0'/0/0` → EIP-55 address.
//!
//! The private key and mnemonic only ever live in zeroizing containers (`secrecy`,
//! `zeroize`, and the zeroize-on-drop types of `bip39`/`bip32`/`k256`); `Debug` redacts
//! them.

use agentpmt_protocol::PrivateKey;
use bip32::{DerivationPath, XPrv};
use bip39::{Language, Mnemonic};
use secrecy::SecretString;
use std::fmt::Write as _;
use zeroize::Zeroizing;

/// The derivation path of the key (the first account of the standard Ethereum path).
pub const DERIVATION_PATH: &str = "m/44'/60'/0'/0/0";

/// A freshly generated wallet. Only `address` is public.
pub struct GeneratedWallet {
    /// EIP-55 checksummed address.
    pub address: String,
    /// `0x` + 64 hex digits.
    pub private_key: SecretString,
    /// Twelve space-separated English words.
    pub mnemonic: SecretString,
}

impl std::fmt::Debug for GeneratedWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedWallet")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Why a wallet could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("the operating system's randomness source failed: {0}")]
    Randomness(getrandom::Error),
    #[error("invalid mnemonic: {0}")]
    Mnemonic(#[from] bip39::Error),
    #[error("key derivation failed: {0}")]
    Derivation(#[from] bip32::Error),
    #[error("the derived key is not a valid secp256k1 key")]
    InvalidKey,
}

/// A new wallet from 128 bits of operating-system randomness.
pub fn generate() -> Result<GeneratedWallet, WalletError> {
    let mut entropy = Zeroizing::new([0u8; 16]);
    getrandom::fill(&mut entropy[..]).map_err(WalletError::Randomness)?;
    let mnemonic = Mnemonic::from_entropy_in(Language::English, &entropy[..])?;
    from_mnemonic(&mnemonic)
}

/// The wallet a BIP-39 English phrase stands for (used by tests and tools).
pub fn from_phrase(phrase: &str) -> Result<GeneratedWallet, WalletError> {
    let mnemonic = Mnemonic::parse_in_normalized(Language::English, phrase)?;
    from_mnemonic(&mnemonic)
}

fn from_mnemonic(mnemonic: &Mnemonic) -> Result<GeneratedWallet, WalletError> {
    let seed = Zeroizing::new(mnemonic.to_seed_normalized(""));
    let path: DerivationPath = DERIVATION_PATH.parse()?;
    let xprv = XPrv::derive_from_path(&seed[..], &path)?;
    let secret = Zeroizing::new(xprv.private_key().to_bytes());
    drop(xprv);
    let key = PrivateKey::from_bytes(&secret[..]).map_err(|_| WalletError::InvalidKey)?;
    let address = key.address().to_checksum();

    // Built in buffers of exactly their final size, so turning them into the boxed secret
    // never reallocates (which would leave an unzeroized copy behind).
    let mut hex_key = String::with_capacity(66);
    hex_key.push_str("0x");
    for byte in secret.iter() {
        let _ = write!(hex_key, "{byte:02x}");
    }
    let words: Vec<&'static str> = mnemonic.words().collect();
    let phrase_len = words.iter().map(|w| w.len()).sum::<usize>() + words.len().saturating_sub(1);
    let mut phrase = String::with_capacity(phrase_len);
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            phrase.push(' ');
        }
        phrase.push_str(word);
    }
    Ok(GeneratedWallet {
        address,
        private_key: SecretString::from(hex_key),
        mnemonic: SecretString::from(phrase),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn known_mnemonics_derive_their_known_accounts() {
        // Hardhat/Anvil's default mnemonic: account 0 is well known.
        let w = from_phrase("test test test test test test test test test test test junk").unwrap();
        assert_eq!(w.address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert_eq!(
            w.private_key.expose_secret(),
            "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
        );
        // The BIP-39 all-zero-entropy phrase (MetaMask, ethers test vectors).
        let w = from_phrase(
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        )
        .unwrap();
        assert_eq!(w.address, "0x9858EfFD232B4033E47d90003D41EC34EcaEda94");
    }

    #[test]
    fn fresh_wallets_are_twelve_words_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.mnemonic.expose_secret().split(' ').count(), 12);
        assert_ne!(a.address, b.address);
        assert_eq!(
            from_phrase(a.mnemonic.expose_secret()).unwrap().address,
            a.address
        );
        let shown = format!("{a:?}");
        assert!(!shown.contains(a.private_key.expose_secret()));
        assert!(!shown.contains(a.mnemonic.expose_secret()));
    }
}
