//! `agentpmt wallet new|import|show`: the local wallet, kept as an encrypted keystore file.

use crate::keys::{self, Origin};
use crate::output::Output;
use agentpmt_sdk::{keystore, PrivateKey};
use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The `wallet` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Generate a new private key and save it encrypted in the keystore.
    New,
    /// Save an existing private key encrypted in the keystore. The key is read from
    /// AGENTPMT_PRIVATE_KEY or a hidden prompt, never from an argument (shell history).
    Import,
    /// Show the wallet's address (lowercase and EIP-55) and where its key is kept.
    Show {
        /// Also print the private key. Anyone who sees it controls the wallet.
        #[arg(long)]
        show_private_key: bool,
    },
}

/// What the wallet commands print.
#[derive(Debug, Serialize)]
struct WalletView {
    /// Lowercase address, as in signed messages.
    address: String,
    /// EIP-55 checksummed address.
    checksum_address: String,
    /// `keystore` or `environment` (AGENTPMT_PRIVATE_KEY).
    source: &'static str,
    /// The keystore file, when the key comes from one.
    keystore: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
}

impl WalletView {
    fn new(key: &PrivateKey, origin: &Origin, show_private_key: bool) -> Self {
        let address = key.address();
        let (source, keystore) = match origin {
            Origin::Environment => ("environment", None),
            Origin::Keystore(path) => ("keystore", Some(path.clone())),
        };
        WalletView {
            address: address.to_string(),
            checksum_address: address.to_checksum(),
            source,
            keystore,
            private_key: show_private_key.then(|| {
                let secret = zeroize::Zeroizing::new(key.secret_bytes());
                format!("0x{}", hex::encode(&secret[..]))
            }),
        }
    }

    fn print(&self, out: &Output) {
        let mut rows = vec![
            ("address", self.address.clone()),
            ("checksum", self.checksum_address.clone()),
        ];
        match &self.keystore {
            Some(path) => rows.push(("keystore", path.display().to_string())),
            None => rows.push(("source", format!("environment ({})", keys::PRIVATE_KEY_ENV))),
        }
        if let Some(private_key) = &self.private_key {
            rows.push(("private key", private_key.clone()));
        }
        out.emit(self, &rows);
    }
}

/// Runs one wallet subcommand against the keystore at `keystore`.
pub fn run(command: WalletCommand, keystore: &Path, out: &Output) -> Result<()> {
    match command {
        WalletCommand::New => {
            refuse_existing(keystore)?;
            let key = PrivateKey::random();
            save(keystore, &key, out)
        }
        WalletCommand::Import => {
            refuse_existing(keystore)?;
            let key = keys::read_private_key()?;
            save(keystore, &key, out)
        }
        WalletCommand::Show { show_private_key } => {
            let loaded = keys::load_key(keystore)?;
            if show_private_key && !out.is_json() {
                eprintln!("warning: the private key below controls the wallet; do not share it");
            }
            WalletView::new(&loaded.key, &loaded.origin, show_private_key).print(out);
            Ok(())
        }
    }
}

/// Checked before asking for a password, so nobody types one for nothing.
fn refuse_existing(keystore: &Path) -> Result<()> {
    if keystore.exists() {
        bail!(
            "a keystore already exists at {}; refusing to overwrite it (move it away, or choose \
             another file with --keystore)",
            keystore.display()
        );
    }
    Ok(())
}

fn save(keystore: &Path, key: &PrivateKey, out: &Output) -> Result<()> {
    let file_name = keystore
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("the keystore path {} has no file name", keystore.display()))?;
    let dir = match keystore.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let password = keys::new_password()?;
    let path = keystore::save(dir, file_name, key, &password)?;
    WalletView::new(key, &Origin::Keystore(path), false).print(out);
    Ok(())
}
