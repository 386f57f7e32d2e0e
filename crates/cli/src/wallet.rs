//! `agentpmt wallet new [--remote]|import|show`: the local wallet, kept as an encrypted
//! keystore file. `--remote` has the server generate it (an AgentAddress).

use crate::keys::{self, Origin};
use crate::output::{self, Output};
use agentpmt_sdk::{keystore, PrivateKey};
use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The `wallet` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Generate a new private key and save it encrypted in the keystore. With --remote the
    /// server generates it (POST /api/external/agentaddress, limited to one per minute per IP).
    New {
        /// Ask the server for a new AgentAddress instead of generating the key locally.
        #[arg(long)]
        remote: bool,
        /// With --remote: also print the 12-word mnemonic (it is not kept in the keystore;
        /// anyone who sees it controls the wallet).
        #[arg(long, requires = "remote")]
        show_mnemonic: bool,
    },
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
    /// `local` or `remote` (`wallet new` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    generated: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mnemonic: Option<String>,
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
            generated: None,
            mnemonic: None,
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
        if let Some(generated) = self.generated {
            rows.push(("generated", generated.to_owned()));
        }
        if let Some(private_key) = &self.private_key {
            rows.push(("private key", private_key.clone()));
        }
        if let Some(mnemonic) = &self.mnemonic {
            rows.push(("mnemonic", mnemonic.clone()));
        }
        out.emit(self, &rows);
    }
}

/// Runs one wallet subcommand against the keystore at `keystore`.
pub fn run(command: WalletCommand, keystore: &Path, server: &str, out: &Output) -> Result<()> {
    match command {
        WalletCommand::New {
            remote: false,
            show_mnemonic: _,
        } => {
            refuse_existing(keystore)?;
            let key = PrivateKey::random();
            let mut view = save(keystore, &key)?;
            view.generated = Some("local");
            view.print(out);
            Ok(())
        }
        WalletCommand::New {
            remote: true,
            show_mnemonic,
        } => {
            refuse_existing(keystore)?;
            // Ask for the password first: a created AgentAddress cannot be asked for twice.
            let password = keys::new_password()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let created = runtime
                .block_on(agentpmt_sdk::Client::create_agent_address(server))
                .map_err(|e| output::sdk_error(e, server))?;
            let mut view = save_with(keystore, &created.key, &password)?;
            view.generated = Some("remote");
            if show_mnemonic {
                if !out.is_json() {
                    eprintln!(
                        "warning: the mnemonic below controls the wallet; it is not stored anywhere"
                    );
                }
                view.mnemonic = Some(created.mnemonic.to_string());
            }
            view.print(out);
            Ok(())
        }
        WalletCommand::Import => {
            refuse_existing(keystore)?;
            let key = keys::read_private_key()?;
            save(keystore, &key)?.print(out);
            Ok(())
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

fn save(keystore: &Path, key: &PrivateKey) -> Result<WalletView> {
    let password = keys::new_password()?;
    save_with(keystore, key, &password)
}

fn save_with(keystore: &Path, key: &PrivateKey, password: &str) -> Result<WalletView> {
    let file_name = keystore
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("the keystore path {} has no file name", keystore.display()))?;
    let dir = match keystore.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let path = keystore::save(dir, file_name, key, password)?;
    Ok(WalletView::new(key, &Origin::Keystore(path), false))
}
