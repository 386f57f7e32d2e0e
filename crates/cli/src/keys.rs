//! Where the signing key comes from, and the passwords that guard it.
//!
//! | environment | meaning |
//! | --- | --- |
//! | `AGENTPMT_PRIVATE_KEY` | 0x-hex key used instead of the keystore; the input of `wallet import` |
//! | `AGENTPMT_KEYSTORE_PASSWORD` | the keystore password; otherwise asked on the terminal |
//!
//! Secrets are read from the environment or a hidden prompt, never from arguments (which
//! shell history and `ps` would show), and are zeroized after use.

use agentpmt_sdk::{keystore, PrivateKey};
use anyhow::{anyhow, bail, Context as _, Result};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Private key used instead of the keystore (and read by `wallet import`).
pub const PRIVATE_KEY_ENV: &str = "AGENTPMT_PRIVATE_KEY";
/// Keystore password.
pub const PASSWORD_ENV: &str = "AGENTPMT_KEYSTORE_PASSWORD";

/// The keystore file: `keystore` if given, else `<home>/keystore/wallet.json`, where `home`
/// defaults to `<config dir>/agentpmt`.
pub fn keystore_path(home: Option<&Path>, keystore: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = keystore {
        return Ok(path.to_owned());
    }
    let home = match home {
        Some(home) => home.to_owned(),
        None => dirs::config_dir()
            .ok_or_else(|| {
                anyhow!("cannot find the configuration folder; set --home or AGENTPMT_HOME")
            })?
            .join("agentpmt"),
    };
    Ok(home.join("keystore").join("wallet.json"))
}

/// Where a loaded key came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `AGENTPMT_PRIVATE_KEY`.
    Environment,
    /// The keystore file at this path.
    Keystore(PathBuf),
}

/// A key ready to sign, and its origin.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: PrivateKey,
    pub origin: Origin,
}

/// The signing key: `AGENTPMT_PRIVATE_KEY` when set, else the keystore at `path`, unlocked
/// with `AGENTPMT_KEYSTORE_PASSWORD` or a password prompt.
pub fn load_key(path: &Path) -> Result<LoadedKey> {
    if let Some(text) = env_secret(PRIVATE_KEY_ENV)? {
        let key = PrivateKey::from_hex(&text)
            .with_context(|| format!("{PRIVATE_KEY_ENV} is not a private key"))?;
        return Ok(LoadedKey {
            key,
            origin: Origin::Environment,
        });
    }
    if !path.exists() {
        bail!(
            "no wallet at {}: create one with `agentpmt wallet new` or `agentpmt wallet import`, \
             or set {PRIVATE_KEY_ENV}",
            path.display()
        );
    }
    let password = read_password(&format!("Password for {}: ", path.display()))?;
    let key = keystore::load(path, &password)?;
    Ok(LoadedKey {
        key,
        origin: Origin::Keystore(path.to_owned()),
    })
}

/// The key to import: `AGENTPMT_PRIVATE_KEY`, else a hidden prompt.
pub fn read_private_key() -> Result<PrivateKey> {
    let text = match env_secret(PRIVATE_KEY_ENV)? {
        Some(text) => text,
        None => prompt("Private key (0x + 64 hex digits): ")?,
    };
    PrivateKey::from_hex(&text).context("cannot import the key")
}

/// The password for a new keystore: `AGENTPMT_KEYSTORE_PASSWORD`, else asked twice.
pub fn new_password() -> Result<Zeroizing<String>> {
    let password = match std::env::var_os(PASSWORD_ENV) {
        Some(_) => read_password("")?,
        None => {
            let first = prompt("New keystore password: ")?;
            let second = prompt("Repeat the password: ")?;
            if *first != *second {
                bail!("the passwords do not match");
            }
            first
        }
    };
    if password.is_empty() {
        bail!("the keystore password must not be empty");
    }
    Ok(password)
}

/// `AGENTPMT_KEYSTORE_PASSWORD`, else a hidden prompt showing `prompt_text`.
fn read_password(prompt_text: &str) -> Result<Zeroizing<String>> {
    match std::env::var_os(PASSWORD_ENV) {
        Some(value) => value
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| anyhow!("{PASSWORD_ENV} is not valid UTF-8")),
        None => prompt(prompt_text),
    }
}

/// A non-empty environment variable, as a secret.
fn env_secret(name: &str) -> Result<Option<Zeroizing<String>>> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(value) => {
            let value = Zeroizing::new(
                value
                    .into_string()
                    .map_err(|_| anyhow!("{name} is not valid UTF-8"))?,
            );
            Ok((!value.trim().is_empty()).then_some(value))
        }
    }
}

/// Asks on the terminal without echoing.
fn prompt(text: &str) -> Result<Zeroizing<String>> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .with_context(|| {
            format!(
                "cannot ask on the terminal (set {PASSWORD_ENV}, or {PRIVATE_KEY_ENV} for keys)"
            )
        })
}
