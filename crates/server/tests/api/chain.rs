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
use serde_json::json;
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
            function cancelAuthorization(address authorizer, bytes32 nonce, bytes signature) external;
            function DOMAIN_SEPARATOR() external view returns (bytes32);
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

    /// A raw JSON-RPC call to anvil (test-only methods: `evm_mine`, `evm_snapshot`, ...).
    pub async fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: serde_json::Value = reqwest::Client::new()
            .post(&self.anvil.rpc_url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Turns automatic mining on or off (off: transactions wait in the pool until [`mine`]).
    ///
    /// [`mine`]: Chain::mine
    pub async fn set_automine(&self, on: bool) {
        self.rpc("evm_setAutomine", json!([on])).await;
    }

    /// Mines `blocks` blocks (the pool's transactions go into the first, highest tip first).
    pub async fn mine(&self, blocks: u64) {
        self.rpc("anvil_mine", json!([format!("{blocks:#x}")]))
            .await;
    }

    /// A snapshot of the chain to return to with [`revert`](Chain::revert) (a reorg).
    pub async fn snapshot(&self) -> serde_json::Value {
        self.rpc("evm_snapshot", json!([])).await
    }

    /// Returns to `snapshot`: every block after it disappears (as in a reorg).
    pub async fn revert(&self, snapshot: serde_json::Value) {
        let ok = self.rpc("evm_revert", json!([snapshot])).await;
        assert_eq!(ok, json!(true));
    }

    /// Hashes of the transactions from `sender` waiting in the pool.
    pub async fn pending_from(&self, sender: Address) -> Vec<String> {
        let content = self.rpc("txpool_content", json!([])).await;
        let mut out = Vec::new();
        for (from, txs) in content["pending"].as_object().into_iter().flatten() {
            if from.eq_ignore_ascii_case(&format!("{sender:#x}")) {
                for tx in txs.as_object().into_iter().flatten().map(|(_, t)| t) {
                    out.push(tx["hash"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
        out
    }

    /// Waits until the gas key has a transaction in the pool (the server broadcast its
    /// settlement); returns its hash.
    pub async fn wait_for_settlement_in_pool(&self) -> String {
        let gas: PrivateKeySigner = GAS_KEY.parse().unwrap();
        for _ in 0..400 {
            if let Some(tx) = self.pending_from(gas.address()).await.into_iter().next() {
                return tx;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the server never broadcast its settlement");
    }

    /// Gives `who` 0.1 ETH for gas (call it while automining).
    pub async fn fund_gas(&self, who: Address) {
        let funding = TransactionRequest::default()
            .with_to(who)
            .with_value(U256::from(10u64).pow(U256::from(17u64)));
        self.provider
            .send_transaction(funding)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }

    /// The payer cancels its authorization `nonce` (EIP-3009 `cancelAuthorization`), sent
    /// from its own account with a tip far above the server's, so it is mined first. Does
    /// not wait for it to be mined.
    pub async fn cancel_authorization(&self, payer: &PrivateKey, nonce: alloy::primitives::B256) {
        let signer: PrivateKeySigner = hex::encode(payer.secret_bytes()).parse().unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.rpc_url.parse().unwrap());
        let token = ITestToken::new(self.token, &provider);
        let domain = token.DOMAIN_SEPARATOR().call().await.unwrap();
        let typehash =
            alloy::primitives::keccak256("CancelAuthorization(address authorizer,bytes32 nonce)");
        let struct_hash =
            alloy::primitives::keccak256((typehash, payer.address().address(), nonce).abi_encode());
        let mut bytes = vec![0x19, 0x01];
        bytes.extend_from_slice(domain.as_slice());
        bytes.extend_from_slice(struct_hash.as_slice());
        let digest = alloy::primitives::keccak256(bytes);
        let signature = payer.sign_digest(&digest).to_bytes();
        token
            .cancelAuthorization(
                payer.address().address(),
                nonce,
                Bytes::from(signature.to_vec()),
            )
            .max_priority_fee_per_gas(100_000_000_000)
            .max_fee_per_gas(200_000_000_000)
            .gas(200_000)
            .send()
            .await
            .unwrap()
            .tx_hash();
    }

    /// The payer moves `amount` away (to a fresh address) with a tip far above the server's,
    /// so it is mined first. Does not wait for it to be mined.
    pub async fn move_funds_away(&self, payer: &PrivateKey, amount: u64) {
        let signer: PrivateKeySigner = hex::encode(payer.secret_bytes()).parse().unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.rpc_url.parse().unwrap());
        ITestToken::new(self.token, &provider)
            .transfer(PrivateKey::random().address().address(), U256::from(amount))
            .max_priority_fee_per_gas(100_000_000_000)
            .max_fee_per_gas(200_000_000_000)
            .gas(100_000)
            .send()
            .await
            .unwrap()
            .tx_hash();
    }

    /// Someone (here: `submitter`) submits the payer's signed authorization itself, with a tip
    /// far above the server's, so it is mined first. Does not wait for it to be mined.
    pub async fn front_run_with_authorization(&self, submitter: &str, payload: &serde_json::Value) {
        let signer: PrivateKeySigner = submitter.parse().unwrap();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(signer))
            .connect_http(self.anvil.rpc_url.parse().unwrap());
        let auth = &payload["authorization"];
        let text = |k: &str| auth[k].as_str().unwrap_or_default().to_owned();
        let number = |k: &str| U256::from_str_radix(&text(k), 10).unwrap_or_default();
        let signature = hex::decode(text_of(&payload["signature"]).trim_start_matches("0x"))
            .unwrap_or_default();
        ITestToken::new(self.token, &provider)
            .transferWithAuthorization(
                text("from").parse().unwrap(),
                text("to").parse().unwrap(),
                number("value"),
                number("validAfter"),
                number("validBefore"),
                text("nonce").parse().unwrap(),
                Bytes::from(signature),
            )
            .max_priority_fee_per_gas(100_000_000_000)
            .max_fee_per_gas(200_000_000_000)
            .gas(200_000)
            .send()
            .await
            .unwrap()
            .tx_hash();
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
                confirmations: None,
                log_block_range: None,
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
