//! `POST /api/external/agentaddress`: fresh wallets, derivable from their mnemonics by an
//! independent BIP-39/BIP-32 implementation; secrets never reach the logs or the database;
//! the shared per-source limit (across instances, not bypassed by a spoofed
//! `X-Forwarded-For`, fail-closed 503 when the limiter's table is gone).

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use secp256k1::{Scalar, SecretKey, SECP256K1};
use serde_json::{json, Value};
use sha2::Sha512;
use std::collections::HashSet;

const AGENTADDRESS: &str = "/api/external/agentaddress";

backend_tests!(
    thousand_addresses_are_distinct_derivable_and_never_logged,
    second_creation_in_the_window_is_refused_with_the_seed_body,
    limit_is_shared_by_instances_and_not_bypassed_by_forwarded_for,
    trusted_proxy_forwarded_for_selects_the_client,
    unavailable_limiter_fails_closed,
);

/// BIP-39 seed (PBKDF2-HMAC-SHA512, 2048 rounds, salt "mnemonic") and BIP-32 derivation of
/// m/44'/60'/0'/0/0, written here from the specifications, independently of the server's
/// crates.
fn derive_independently(phrase: &str) -> [u8; 32] {
    let mut seed = [0u8; 64];
    pbkdf2::pbkdf2::<Hmac<Sha512>>(phrase.as_bytes(), b"mnemonic", 2048, &mut seed);
    let hmac = |key: &[u8], parts: &[&[u8]]| -> [u8; 64] {
        let mut mac = Hmac::<Sha512>::new_from_slice(key).unwrap();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    };
    let master = hmac(b"Bitcoin seed", &[&seed]);
    let mut key: [u8; 32] = master[..32].try_into().unwrap();
    let mut chain: [u8; 32] = master[32..].try_into().unwrap();
    const H: u32 = 0x8000_0000;
    for index in [44 | H, 60 | H, H, 0, 0] {
        let secret = SecretKey::from_byte_array(&key).unwrap();
        let i = if index & H != 0 {
            hmac(&chain, &[&[0u8], &key, &index.to_be_bytes()])
        } else {
            let public = secret.public_key(SECP256K1).serialize();
            hmac(&chain, &[&public, &index.to_be_bytes()])
        };
        let tweak = Scalar::from_be_bytes(i[..32].try_into().unwrap()).unwrap();
        key = secret.add_tweak(&tweak).unwrap().secret_bytes();
        chain = i[32..].try_into().unwrap();
    }
    key
}

#[test]
fn the_independent_derivation_matches_known_accounts() {
    let key = derive_independently("test test test test test test test test test test test junk");
    assert_eq!(
        hex::encode(key),
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    );
    let key = derive_independently(
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
    );
    assert_eq!(
        PrivateKey::from_bytes(&key)
            .unwrap()
            .address()
            .to_checksum(),
        "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    );
}

async fn create(
    app: &TestApp,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    app.post_with_headers(AGENTADDRESS, &json!({}), headers)
        .await
}

async fn thousand_addresses_are_distinct_derivable_and_never_logged(backend: Backend) {
    let logs = capture_logs();
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| {
            c.agentaddress_limit = 10_000;
            c.ip_rate_burst = 10_000;
            c.ip_rate_per_sec = 10_000;
        }),
    )
    .await;
    let responses: Vec<(StatusCode, reqwest::header::HeaderMap, Value)> =
        futures::stream::iter(0..1000)
            .map(|_| create(&app, &[]))
            .buffer_unordered(16)
            .collect()
            .await;
    // The independent derivation is CPU-bound: spread it over a few threads.
    let bodies: Vec<&Value> = responses.iter().map(|(_, _, body)| body).collect();
    let derived: Vec<[u8; 32]> = std::thread::scope(|scope| {
        let workers: Vec<_> = bodies
            .chunks(250)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|b| derive_independently(b["data"]["mnemonic"].as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let mut addresses = HashSet::new();
    let mut keys = HashSet::new();
    let mut mnemonics = HashSet::new();
    for ((status, headers, body), derived) in responses.iter().zip(derived) {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(body["success"], json!(true));
        let data = &body["data"];
        let address = data["evmAddress"].as_str().unwrap();
        let key_hex = data["evmPrivateKey"].as_str().unwrap();
        let mnemonic = data["mnemonic"].as_str().unwrap();
        assert_eq!(mnemonic.split(' ').count(), 12, "{mnemonic}");
        assert!(mnemonic
            .split(' ')
            .all(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase())));
        assert!(key_hex.starts_with("0x") && key_hex.len() == 66);
        assert_eq!(
            key_hex[2..],
            hex::encode(derived),
            "key not at m/44'/60'/0'/0/0"
        );
        let key = PrivateKey::from_bytes(&derived).unwrap();
        assert_eq!(
            address,
            key.address().to_checksum(),
            "EIP-55 address of the key"
        );
        addresses.insert(address.to_owned());
        keys.insert(key_hex[2..].to_owned());
        mnemonics.insert(mnemonic.to_owned());
    }
    assert_eq!(addresses.len(), 1000);
    assert_eq!(keys.len(), 1000);
    assert_eq!(mnemonics.len(), 1000);
    // The server kept only the addresses.
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agent_addresses").await,
        1000
    );
    let stored: Vec<String> = match &app.state.db {
        agentpmt_server::db::Db::Sqlite { writer, .. } => {
            sqlx::query_scalar("SELECT address || ' ' || source FROM agent_addresses")
                .fetch_all(writer)
                .await
                .unwrap()
        }
        agentpmt_server::db::Db::Postgres(pool) => {
            sqlx::query_scalar("SELECT address || ' ' || source FROM agent_addresses")
                .fetch_all(pool)
                .await
                .unwrap()
        }
    };
    let lowercase: HashSet<String> = addresses.iter().map(|a| a.to_lowercase()).collect();
    for row in &stored {
        let (address, source) = row.split_once(' ').unwrap();
        assert!(lowercase.contains(address));
        assert_eq!(source, "127.0.0.1");
    }

    // Nothing in the captured logs: no 64-hex-digit run is a key, no run of 12 words is a
    // mnemonic (whatever the separators), and not even the first key appears verbatim.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_lowercase();
    assert!(
        text.contains("issued an agentaddress"),
        "the log capture works and saw the issuance"
    );
    let bytes = text.as_bytes();
    let mut run_start = None;
    for i in 0..=bytes.len() {
        let is_hex = i < bytes.len() && bytes[i].is_ascii_hexdigit();
        match (is_hex, run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(start)) => {
                if i - start >= 64 {
                    for w in start..=i - 64 {
                        assert!(
                            !keys.contains(&text[w..w + 64]),
                            "a private key reached the logs"
                        );
                    }
                }
                run_start = None;
            }
            _ => {}
        }
    }
    let words: Vec<&str> = text
        .split(|c: char| !c.is_ascii_lowercase())
        .filter(|w| !w.is_empty())
        .collect();
    let phrases: HashSet<[&str; 12]> = mnemonics
        .iter()
        .map(|m| m.split(' ').collect::<Vec<_>>().try_into().unwrap())
        .collect();
    for window in words.windows(12) {
        let window: &[&str; 12] = window.try_into().unwrap();
        assert!(!phrases.contains(window), "a mnemonic reached the logs");
    }
    let first = responses[0].2["data"]["mnemonic"].as_str().unwrap();
    assert!(!text.contains(first));
}

async fn second_creation_in_the_window_is_refused_with_the_seed_body(backend: Backend) {
    let app = spawn_app(backend).await;
    // No body at all is accepted, like `{}`.
    let response = app.http.post(app.url(AGENTADDRESS)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, headers, body) = create(&app, &[("x-request-id", "corr-429")]).await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], json!("agentaddress"));
    for field in [
        "error",
        "message",
        "error_code",
        "request_id",
        "help_url",
        "help_doc",
    ] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    assert_eq!(body["request_id"], json!("corr-429"));
    assert_eq!(body["rate_limit"]["limit"], json!(1));
    assert_eq!(body["rate_limit"]["window_seconds"], json!(60));
    let retry = body["rate_limit"]["retry_after_seconds"].as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{body}");
    assert_eq!(headers["retry-after"].to_str().unwrap(), retry.to_string());
    assert!(body.get("data").is_none());
    assert_eq!(app.scalar("SELECT COUNT(*) FROM agent_addresses").await, 1);
}

async fn limit_is_shared_by_instances_and_not_bypassed_by_forwarded_for(backend: Backend) {
    let first = spawn_app(backend).await;
    let second = spawn_on(&first.database_url, AppOptions::default()).await;
    // 20 racing requests from one source, half to each instance: exactly one wins.
    let racing = (0..20).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        create(app, &[])
    });
    let statuses: Vec<u16> = futures::future::join_all(racing)
        .await
        .into_iter()
        .map(|(status, _, body)| {
            if status != StatusCode::OK {
                assert_envelope(status, &body, 429, "RATE_LIMITED");
            }
            status.as_u16()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    let (status, _, body) = create(&second, &[]).await;
    assert_envelope(status, &body, 429, "RATE_LIMITED");
    for spoof in ["203.0.113.77", "203.0.113.78, 198.51.100.9", "::1"] {
        let (status, _, body) = create(&second, &[("x-forwarded-for", spoof)]).await;
        assert_envelope(status, &body, 429, "RATE_LIMITED");
        let (status, _, body) = create(&first, &[("x-forwarded-for", spoof)]).await;
        assert_envelope(status, &body, 429, "RATE_LIMITED");
    }
    assert_eq!(
        first.scalar("SELECT COUNT(*) FROM agent_addresses").await,
        1
    );
}

async fn trusted_proxy_forwarded_for_selects_the_client(backend: Backend) {
    let trusting = |c: &mut agentpmt_server::ServerConfig| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    };
    let first = spawn_app_with(backend, AppOptions::configured(trusting)).await;
    let second = spawn_on(&first.database_url, AppOptions::configured(trusting)).await;
    let client = [("x-forwarded-for", "198.51.100.1")];
    let (status, _, body) = create(&first, &client).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The same client through the other instance, with a forged entry in front.
    let (status, _, body) = create(&second, &[("x-forwarded-for", "6.6.6.6, 198.51.100.1")]).await;
    assert_envelope(status, &body, 429, "RATE_LIMITED");
    // Another client behind the proxy has its own allowance.
    let (status, _, body) = create(&second, &[("x-forwarded-for", "198.51.100.2")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sources = first
        .scalar(
            "SELECT COUNT(DISTINCT source) FROM agent_addresses WHERE source LIKE '198.51.100.%'",
        )
        .await;
    assert_eq!(sources, 2);
}

async fn unavailable_limiter_fails_closed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.execute("ALTER TABLE agentaddress_rate_limits RENAME TO agentaddress_rate_limits_away")
        .await
        .unwrap();
    let (status, headers, body) = create(&app, &[]).await;
    assert_envelope(status, &body, 503, "SERVICE_UNAVAILABLE");
    assert!(body.get("data").is_none());
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM agent_addresses").await, 0);
    app.execute("ALTER TABLE agentaddress_rate_limits_away RENAME TO agentaddress_rate_limits")
        .await
        .unwrap();
    let (status, _, body) = create(&app, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
