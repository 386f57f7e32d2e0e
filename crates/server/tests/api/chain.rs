//! A real local EVM chain for payment tests: anvil (from `tests/evm/node_modules`, installed
//! by `./scripts/test`), the repository's EIP-3009 test token deployed on it, funded payers.

use agentpmt_protocol::PrivateKey;
use agentpmt_server::payments::networks::{NetworkFile, PaymentsFile, SettlementKind, TokenFile};
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolValue;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Anvil's first dev account: deploys and owns the token.
pub const DEPLOYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Anvil's second dev account: the server's gas-paying settlement key.
pub const GAS_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

mod abi {
    #![allow(clippy::too_many_arguments)]
    alloy::sol! {
        #[sol(rpc)]
        interface ITestToken {
            function mint(address to, uint256 amount) external returns (bool);
            function balanceOf(address account) external view returns (uint256);
            function transfer(address to, uint256 value) external returns (bool);
            function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
            function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        }
    }
}
use abi::ITestToken;

fn text_of(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running anvil, killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    pub rpc_url: String,
}

impl Anvil {
    /// Starts anvil on a free port (chain id 31337, automine).
    pub fn start() -> Anvil {
        let bin =
            repo_root().join("tests/evm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
        assert!(
            bin.exists(),
            "anvil is required for payment tests: run `cd tests/evm && npm ci` (./scripts/test does it); missing {}",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--chain-id", "31337"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("anvil starts");
        let stdout = child.stdout.take().expect("anvil stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("anvil printed its address")
                .expect("anvil stdout is readable");
            if let Some(addr) = line.strip_prefix("Listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stdout so anvil never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Anvil {
            child,
            rpc_url: format!("http://{addr}"),
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Anvil with the test token deployed.
#[derive(Debug)]
pub struct Chain {
    pub anvil: Anvil,
    pub token: Address,
    pub pay_to: Address,
    provider: DynProvider,
}

impl Chain {
    /// Starts anvil and deploys `TestUSDC("USD Coin", "USDC", "2")`.
    pub async fn start() -> Chain {
        let anvil = Anvil::start();
        let deployer: PrivateKeySigner = DEPLOYER_KEY.parse().unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(deployer))
            .connect_http(anvil.rpc_url.parse().unwrap())
            .erased();
        let artifact: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join("tests/evm/contracts/TestUSDC.json"))
                .unwrap(),
        )
        .unwrap();
        let mut code = hex::decode(
            artifact["bytecode"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
        )
        .unwrap();
        code.extend(("USD Coin".to_owned(), "USDC".to_owned(), "2".to_owned()).abi_encode_params());
        let tx = TransactionRequest::default().with_deploy_code(Bytes::from(code));
        let receipt = provider
            .send_transaction(tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let token = receipt.contract_address.expect("deployed");
        Chain {
            anvil,
            token,
            pay_to: PrivateKey::random().address().address(),
            provider,
        }
    }

    /// Mints `amount` base units to `to`.
    pub async fn mint(&self, to: Address, amount: u64) {
        ITestToken::new(self.token, &self.provider)
            .mint(to, U256::from(amount))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }

    /// Token balance of `who`.
    pub async fn balance(&self, who: Address) -> U256 {
        ITestToken::new(self.token, &self.provider)
            .balanceOf(who)
            .call()
            .await
            .unwrap()
    }

    /// Transactions sent by the gas key so far.
    pub async fn gas_key_nonce(&self) -> u64 {
        let gas: PrivateKeySigner = GAS_KEY.parse().unwrap();
        self.provider
            .get_transaction_count(gas.address())
            .await
            .unwrap()
    }

    /// A transfer of `amount` from `payer` (given ETH for gas) to `to`; returns the hash.
    pub async fn transfer(&self, payer: &PrivateKey, to: Address, amount: u64) -> String {
        let funding = TransactionRequest::default()
            .with_to(payer.address().address())
            .with_value(U256::from(10u64).pow(U256::from(17u64)));
        self.provider
            .send_transaction(funding)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let signer: PrivateKeySigner = hex::encode(payer.secret_bytes()).parse().unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.rpc_url.parse().unwrap());
        let receipt = ITestToken::new(self.token, &provider)
            .transfer(to, U256::from(amount))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        format!("{:#x}", receipt.transaction_hash)
    }

    /// Submits an x402 exact-EVM payload's authorization from `submitter` (a facilitator's
    /// job); returns the transaction hash, or the revert as an error.
    pub async fn submit_authorization(
        &self,
        submitter: &str,
        payload: &serde_json::Value,
    ) -> Result<String, String> {
        let signer: PrivateKeySigner = submitter.parse().unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.rpc_url.parse().unwrap());
        let auth = &payload["authorization"];
        let text = |k: &str| auth[k].as_str().unwrap_or_default().to_owned();
        let number = |k: &str| U256::from_str_radix(&text(k), 10).unwrap_or_default();
        let signature = hex::decode(text_of(&payload["signature"]).trim_start_matches("0x"))
            .unwrap_or_default();
        let token = ITestToken::new(self.token, &provider);
        let call = token.transferWithAuthorization(
            text("from").parse().map_err(|_| "bad from".to_owned())?,
            text("to").parse().map_err(|_| "bad to".to_owned())?,
            number("value"),
            number("validAfter"),
            number("validBefore"),
            text("nonce").parse().map_err(|_| "bad nonce".to_owned())?,
            Bytes::from(signature),
        );
        let pending = call.send().await.map_err(|e| e.to_string())?;
        let receipt = pending.get_receipt().await.map_err(|e| e.to_string())?;
        if !receipt.status() {
            return Err("reverted".into());
        }
        Ok(format!("{:#x}", receipt.transaction_hash))
    }

    /// The payments configuration of a server settling on this chain.
    pub fn payments(&self) -> PaymentsFile {
        PaymentsFile {
            pay_to: Some(self.pay_to.to_checksum(None)),
            default_chain_id: None,
            max_timeout_seconds: None,
            receipt_timeout_secs: Some(20),
            networks: vec![NetworkFile {
                chain_id: 31337,
                settlement: SettlementKind::Evm,
                rpc_url: Some(self.anvil.rpc_url.clone()),
                facilitator_url: None,
                name: Some("anvil".into()),
                tokens: vec![TokenFile {
                    symbol: "USDC".into(),
                    address: self.token.to_checksum(None),
                    eip712_name: "USD Coin".into(),
                    eip712_version: "2".into(),
                    decimals: 6,
                }],
            }],
        }
    }
}

/// Runs the official x402 client (`tests/evm/x402-pay.mjs`: `@x402/fetch` + `@x402/evm` +
/// viem) against `url` with the JSON `body`, paying with `payer`; returns its one-line JSON
/// report `{status, body, paymentResponse, paymentRequired}`.
pub async fn official_x402_client(
    url: &str,
    body: &serde_json::Value,
    payer: &agentpmt_protocol::PrivateKey,
) -> serde_json::Value {
    let script = repo_root().join("tests/evm/x402-pay.mjs");
    let output = tokio::process::Command::new("node")
        .arg(&script)
        .arg(url)
        .arg(body.to_string())
        .env(
            "X402_PRIVATE_KEY",
            format!("0x{}", hex::encode(payer.secret_bytes())),
        )
        .output()
        .await
        .expect("node runs (Node.js is required; ./scripts/test installs tests/evm)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "x402-pay failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}
