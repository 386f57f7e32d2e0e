//! Vendor secrets at rest: AES-256-GCM under the server's secrets key
//! (`AGENTPMT_SECRETS_KEY`, 64 hex digits), a fresh 96-bit nonce per secret, the vendor id
//! as associated data (a sealed secret copied to another vendor does not open). Stored as
//! `v1:<hex nonce>:<hex ciphertext>`. Without a key, no vendor secret can be stored.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretString};

/// The server's key for sealing vendor secrets.
pub struct SecretsKey(Aes256Gcm);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

/// Why a key or sealed secret was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets key must be 64 hex digits (32 bytes)")]
    BadKey,
    #[error("a sealed secret could not be opened (wrong key or damaged)")]
    Unseal,
}

impl SecretsKey {
    /// Parses the hex key.
    pub fn from_hex(hex_key: &SecretString) -> Result<SecretsKey, SecretsError> {
        let bytes = zeroize::Zeroizing::new(
            hex::decode(hex_key.expose_secret().trim()).map_err(|_| SecretsError::BadKey)?,
        );
        if bytes.len() != 32 {
            return Err(SecretsError::BadKey);
        }
        Aes256Gcm::new_from_slice(&bytes)
            .map(SecretsKey)
            .map_err(|_| SecretsError::BadKey)
    }

    /// Seals `secret` for `vendor_id`.
    pub fn seal(&self, vendor_id: &str, secret: &SecretString) -> String {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let sealed = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: vendor_id.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        format!("v1:{}:{}", hex::encode(nonce), hex::encode(sealed))
    }

    /// Opens a sealed secret of `vendor_id`.
    pub fn open(&self, vendor_id: &str, sealed: &str) -> Result<SecretString, SecretsError> {
        let mut parts = sealed.split(':');
        let (Some("v1"), Some(nonce), Some(ciphertext), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretsError::Unseal);
        };
        let nonce = hex::decode(nonce).map_err(|_| SecretsError::Unseal)?;
        let ciphertext = hex::decode(ciphertext).map_err(|_| SecretsError::Unseal)?;
        if nonce.len() != 12 {
            return Err(SecretsError::Unseal);
        }
        let plain = zeroize::Zeroizing::new(
            self.0
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: vendor_id.as_bytes(),
                    },
                )
                .map_err(|_| SecretsError::Unseal)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| SecretsError::Unseal)?;
        Ok(SecretString::from(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let key = SecretsKey::from_hex(&SecretString::from("11".repeat(32))).unwrap();
        let secret = SecretString::from("vendor-secret".to_owned());
        let sealed = key.seal("v1", &secret);
        assert!(!sealed.contains("vendor-secret"));
        assert_eq!(
            key.open("v1", &sealed).unwrap().expose_secret(),
            "vendor-secret"
        );
        assert!(key.open("v2", &sealed).is_err(), "bound to the vendor id");
        let other = SecretsKey::from_hex(&SecretString::from("22".repeat(32))).unwrap();
        assert!(other.open("v1", &sealed).is_err());
        assert!(SecretsKey::from_hex(&SecretString::from("abc".to_owned())).is_err());
    }
}
