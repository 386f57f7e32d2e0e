//! Wallets, their sessions, and the pre-signed request bodies.
//!
//! Signing costs about as much as the server's recovery, so every body is signed and
//! serialized before the measured window opens; a load generator that signs on the fly
//! measures itself.

use crate::fire::{exchange, Target, SESSION_PATH};
use agentpmt_protocol::signing::sign_body;
use agentpmt_protocol::wire::SessionResponse;
use agentpmt_protocol::{PrivateKey, SignedAction};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::StatusCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A wallet with an open session.
#[derive(Debug, Clone)]
pub struct Wallet {
    pub key: PrivateKey,
    pub session_nonce: String,
}

/// The sessions of a set of wallets, and how long they last.
#[derive(Debug)]
pub struct Sessions {
    pub wallets: Vec<Wallet>,
    /// The shortest `expires_in` the server answered.
    pub lifetime: Duration,
}

/// Opens one session per key (`POST /api/external/auth/session`) over `connections`
/// keep-alive connections.
pub async fn open_sessions(
    target: &Arc<Target>,
    keys: &[PrivateKey],
    connections: usize,
) -> Result<Sessions> {
    let addresses: Arc<Vec<String>> =
        Arc::new(keys.iter().map(|k| k.address().to_string()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, keys.len().max(1)) {
        let (target, addresses, next) = (target.clone(), addresses.clone(), next.clone());
        let mut sender = target.connect().await?;
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<(usize, SessionResponse)> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(address) = addresses.get(i) else {
                    break;
                };
                let body = serde_json::to_vec(&serde_json::json!({ "wallet_address": address }))?;
                let (status, body) = exchange(&mut sender, target.post(SESSION_PATH, body.into()))
                    .await
                    .context("creating a session")?;
                if status != StatusCode::OK {
                    bail!(
                        "creating a session answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                let session: SessionResponse =
                    serde_json::from_slice(&body).context("reading the session response")?;
                got.push((i, session));
            }
            Ok::<_, anyhow::Error>(got)
        }));
    }
    let mut nonces = vec![None; keys.len()];
    let mut lifetime = u64::MAX;
    for task in tasks {
        for (i, session) in task
            .await
            .map_err(|e| anyhow!("session task failed: {e}"))??
        {
            lifetime = lifetime.min(session.expires_in);
            nonces[i] = Some(session.session_nonce);
        }
    }
    let wallets = keys
        .iter()
        .zip(nonces)
        .map(|(key, nonce)| {
            Ok(Wallet {
                key: key.clone(),
                session_nonce: nonce.context("a wallet got no session")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Sessions {
        wallets,
        lifetime: Duration::from_secs(lifetime),
    })
}

/// Grants `credits` to every key's wallet through the operator API
/// (`POST /api/admin/wallets/{address}/credits`).
pub async fn fund(
    target: &Arc<Target>,
    keys: &[PrivateKey],
    admin_token: &str,
    credits: i64,
) -> Result<()> {
    let mut sender = target.connect().await?;
    let bearer = hyper::header::HeaderValue::from_str(&format!("Bearer {admin_token}"))
        .context("the admin token is not a valid header value")?;
    for key in keys {
        let body = serde_json::to_vec(&serde_json::json!({
            "amount_credits": credits,
            "reason": "load generator funding",
        }))?;
        let mut request = target.post(
            &format!("/api/admin/wallets/{}/credits", key.address()),
            body.into(),
        );
        request
            .headers_mut()
            .insert(hyper::header::AUTHORIZATION, bearer.clone());
        let (status, body) = exchange(&mut sender, request)
            .await
            .context("funding a wallet")?;
        if !status.is_success() {
            bail!(
                "funding a wallet answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    Ok(())
}

/// One signed, serialized request body of `action` for `wallet`: `fields` besides the
/// envelope, `param` giving the route's path parameters.
pub fn sign(
    wallet: &Wallet,
    action: SignedAction,
    param: impl Fn(&str) -> Option<String>,
    request_id: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<Bytes> {
    let (body, _) = sign_body(
        &wallet.key,
        action.spec(),
        param,
        &wallet.session_nonce,
        request_id,
        fields,
    )?;
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// One signed balance request body for `wallet`.
pub fn sign_balance(wallet: &Wallet, request_id: &str) -> Result<Bytes> {
    sign(
        wallet,
        SignedAction::Balance,
        |_| None,
        request_id,
        serde_json::Map::new(),
    )
}

/// What the load generator sends.
#[derive(Debug, Clone)]
pub enum Scenario {
    /// `POST /api/external/credits/balance` (read-only, one group-committed replay claim).
    Balance,
    /// A signed credit invocation of `product/action` with `parameters` (hold, tool, post).
    Invoke {
        product: String,
        action: String,
        parameters: serde_json::Value,
    },
}

impl Scenario {
    /// The route the requests go to.
    pub fn path(&self) -> String {
        match self {
            Scenario::Balance => crate::fire::BALANCE_PATH.to_owned(),
            Scenario::Invoke {
                product, action, ..
            } => {
                format!("/api/external/tools/{product}/actions/{action}/invoke")
            }
        }
    }

    /// One signed body for `wallet`.
    pub fn sign(&self, wallet: &Wallet, request_id: &str) -> Result<Bytes> {
        match self {
            Scenario::Balance => sign_balance(wallet, request_id),
            Scenario::Invoke {
                product,
                action,
                parameters,
            } => {
                let mut fields = serde_json::Map::new();
                fields.insert("parameters".into(), parameters.clone());
                let param = |name: &str| match name {
                    "productSlug" => Some(product.clone()),
                    "actionSlug" => Some(action.clone()),
                    _ => None,
                };
                sign(
                    wallet,
                    SignedAction::ToolActionInvoke,
                    param,
                    request_id,
                    fields,
                )
            }
        }
    }
}

/// Signs `count` requests of `scenario`, round-robin over `wallets`, request ids
/// `<tag>-<index>`, on `threads` threads. Body `i` belongs to wallet `i % wallets.len()`.
pub fn presign(
    scenario: &Scenario,
    wallets: &[Wallet],
    count: usize,
    tag: &str,
    threads: usize,
) -> Result<Vec<Bytes>> {
    if wallets.is_empty() {
        bail!("no wallets to sign with");
    }
    let threads = threads.clamp(1, count.max(1));
    let chunk = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk).min(count)..((t + 1) * chunk).min(count);
                scope.spawn(move || {
                    range
                        .map(|i| scenario.sign(&wallets[i % wallets.len()], &format!("{tag}-{i}")))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut bodies = Vec::with_capacity(count);
        for handle in handles {
            bodies.extend(
                handle
                    .join()
                    .map_err(|_| anyhow!("a signing thread panicked"))??,
            );
        }
        Ok(bodies)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentpmt_protocol::{build_message, Scope, Signature, WalletAddress};
    use serde_json::Value;
    use std::collections::HashSet;

    #[test]
    fn presigned_bodies_recover_to_their_wallets() {
        let wallets: Vec<Wallet> = (0..3)
            .map(|i| Wallet {
                key: PrivateKey::random(),
                session_nonce: format!("nonce{i}"),
            })
            .collect();
        let bodies = presign(&Scenario::Balance, &wallets, 10, "t", 4).unwrap();
        assert_eq!(bodies.len(), 10);
        let mut ids = HashSet::new();
        for (i, bytes) in bodies.iter().enumerate() {
            let body: Value = serde_json::from_slice(bytes).unwrap();
            let field = |name: &str| body[name].as_str().unwrap().to_owned();
            let wallet = &wallets[i % 3];
            let address: WalletAddress = field("wallet_address").parse().unwrap();
            assert_eq!(address, wallet.key.address());
            assert_eq!(field("session_nonce"), wallet.session_nonce);
            assert_eq!(field("request_id"), format!("t-{i}"));
            assert!(ids.insert(field("request_id")));
            assert_eq!(
                body.as_object().unwrap().len(),
                4,
                "only the envelope: {body}"
            );

            let message = build_message(
                &address,
                &wallet.session_nonce,
                &field("request_id"),
                &Scope::action("balance", "-"),
                None,
            );
            let signature = Signature::parse(&field("signature")).unwrap();
            assert_eq!(signature.recover_message(&message).unwrap(), address);
        }
    }

    #[test]
    fn presign_handles_more_threads_than_requests() {
        let wallets = [Wallet {
            key: PrivateKey::random(),
            session_nonce: "n".into(),
        }];
        assert_eq!(
            presign(&Scenario::Balance, &wallets, 2, "x", 8)
                .unwrap()
                .len(),
            2
        );
        assert!(presign(&Scenario::Balance, &wallets, 0, "x", 8)
            .unwrap()
            .is_empty());
        assert!(presign(&Scenario::Balance, &[], 1, "x", 1).is_err());
    }

    #[test]
    fn invoke_bodies_sign_the_method_path_scope() {
        let wallet = Wallet {
            key: PrivateKey::random(),
            session_nonce: "n".into(),
        };
        let scenario = Scenario::Invoke {
            product: "clock".into(),
            action: "now".into(),
            parameters: serde_json::json!({"a": 1}),
        };
        assert_eq!(
            scenario.path(),
            "/api/external/tools/clock/actions/now/invoke"
        );
        let body: Value = serde_json::from_slice(&scenario.sign(&wallet, "r").unwrap()).unwrap();
        assert_eq!(body["parameters"], serde_json::json!({"a": 1}));
        let hash = agentpmt_protocol::canonical::payload_hash(
            &agentpmt_protocol::JsonValue::from_serde(&body["parameters"]),
        );
        let message = build_message(
            &wallet.key.address(),
            "n",
            "r",
            &Scope::method_path("POST", "/external/tools/clock/actions/now/invoke"),
            Some(&hash),
        );
        let signature = Signature::parse(body["signature"].as_str().unwrap()).unwrap();
        assert_eq!(
            signature.recover_message(&message).unwrap(),
            wallet.key.address()
        );
    }
}
