//! Encrypted Ethereum keystore files (Web3 Secret Storage, v3 JSON, scrypt + AES-128-CTR).

use agentpmt_protocol::PrivateKey;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why a keystore could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("wrong password or corrupted keystore {0}")]
    Decrypt(PathBuf),
    #[error("keystore {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("the keystore holds an invalid private key")]
    InvalidKey,
}

/// Decrypts the key in `path`.
pub fn load(path: &Path, password: &str) -> Result<PrivateKey, KeystoreError> {
    if !path.exists() {
        return Err(KeystoreError::Io {
            path: path.to_owned(),
            message: "no such file".into(),
        });
    }
    let bytes = Zeroizing::new(
        eth_keystore::decrypt_key(path, password.as_bytes()).map_err(|e| match e {
            eth_keystore::KeystoreError::MacMismatch => KeystoreError::Decrypt(path.to_owned()),
            other => KeystoreError::Io {
                path: path.to_owned(),
                message: other.to_string(),
            },
        })?,
    );
    PrivateKey::from_bytes(&bytes).map_err(|_| KeystoreError::InvalidKey)
}

/// Encrypts `key` into `dir/file_name` (the folder is created, an existing file is refused).
/// Returns the file's path.
pub fn save(
    dir: &Path,
    file_name: &str,
    key: &PrivateKey,
    password: &str,
) -> Result<PathBuf, KeystoreError> {
    let path = dir.join(file_name);
    let io = |message: String| KeystoreError::Io {
        path: path.clone(),
        message,
    };
    if path.exists() {
        return Err(io(
            "a keystore already exists there; refusing to overwrite it".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(e.to_string()))?;
    let secret = Zeroizing::new(key.secret_bytes());
    eth_keystore::encrypt_key(
        dir,
        &mut rand::rngs::OsRng,
        &secret[..],
        password.as_bytes(),
        Some(file_name),
    )
    .map_err(|e| io(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(e.to_string()))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random();
        let path = save(dir.path(), "wallet.json", &key, "correct horse").unwrap();
        assert_eq!(
            load(&path, "correct horse").unwrap().address(),
            key.address()
        );
        assert!(matches!(
            load(&path, "wrong"),
            Err(KeystoreError::Decrypt(_))
        ));
        assert!(
            save(dir.path(), "wallet.json", &key, "x").is_err(),
            "must not overwrite"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(key.secret_bytes())));
    }
}
