//! `agentpmt balance`: the wallet's credits (`POST /api/external/credits/balance`).

use crate::keys;
use crate::output::{self, Output};
use agentpmt_sdk::Client;
use std::path::Path;

/// Asks the server for the balance of the loaded wallet.
pub async fn run(server: &str, keystore: &Path, out: &Output) -> anyhow::Result<()> {
    let loaded = keys::load_key(keystore)?;
    let client = Client::new(server, loaded.key)?;
    let balance = client
        .balance()
        .await
        .map_err(|e| output::sdk_error(e, server))?;
    out.emit(
        &balance,
        &[
            ("wallet", balance.wallet_address.clone()),
            ("credits", balance.balance_credits.to_string()),
            ("usd", format!("{:.2}", balance.balance_usd)),
        ],
    );
    Ok(())
}
