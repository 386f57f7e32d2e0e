//! Ledger invariants under concurrency: no negative balance, balance == sum of entries,
//! racing debits succeed exactly as often as the balance allows, entries are append-only.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::PrivateKey;
use reqwest::Method;
use serde_json::json;

backend_tests!(
    racing_debits_succeed_floor_b_over_c_times,
    random_concurrent_changes_keep_invariants,
    entries_are_append_only
);

async fn racing_debits_succeed_floor_b_over_c_times(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    app.adjust(&wallet, 100).await;
    let results = futures::future::join_all((0..200).map(|_| app.adjust(&wallet, -7))).await;
    let ok = results.iter().filter(|(s, _)| *s == 201).count();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == 402 && b["error_code"] == json!("INSUFFICIENT_CREDITS"))
        .count();
    assert_eq!((ok, refused), (14, 186));
    assert_eq!(app.scalar("SELECT balance_credits FROM wallets").await, 2);
    assert_eq!(
        app.scalar("SELECT CAST(SUM(amount_credits) AS BIGINT) FROM ledger_entries")
            .await,
        2
    );
}

async fn random_concurrent_changes_keep_invariants(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallets: Vec<_> = (0..4).map(|_| PrivateKey::random().address()).collect();
    // A deterministic pseudo-random mix of grants and removals over four wallets.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut changes = Vec::new();
    for _ in 0..160 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wallet = wallets[(seed % 4) as usize];
        let amount = (seed >> 8) as i64 % 200 - 90;
        changes.push((wallet, if amount == 0 { 1 } else { amount }));
    }
    let results = futures::future::join_all(changes.iter().map(|(w, a)| app.adjust(w, *a))).await;
    assert!(
        results.iter().all(|(s, _)| *s == 201 || *s == 402),
        "{results:?}"
    );
    for wallet in &wallets {
        let (_, view) = app
            .admin(Method::GET, &format!("/api/admin/wallets/{wallet}"), None)
            .await;
        let balance = view["balance_credits"].as_i64().unwrap();
        assert!(balance >= 0);
        assert_eq!(
            view["ledger_sum_credits"].as_i64().unwrap(),
            balance,
            "{view}"
        );
        // Every posted change is one entry; every refused one left no trace.
        let posted = results
            .iter()
            .zip(&changes)
            .filter(|((s, _), (w, _))| *s == 201 && w == wallet)
            .count() as i64;
        assert_eq!(view["ledger_entry_count"].as_i64().unwrap(), posted);
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM wallets WHERE balance_credits < 0")
            .await,
        0
    );
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM ledger_entries WHERE balance_after < 0")
            .await,
        0
    );
}

async fn entries_are_append_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let wallet = PrivateKey::random().address();
    app.adjust(&wallet, 10).await;
    assert!(app
        .execute("UPDATE ledger_entries SET amount_credits = 1000")
        .await
        .is_err());
    assert!(app.execute("DELETE FROM ledger_entries").await.is_err());
    assert!(
        app.execute("UPDATE wallets SET balance_credits = -1")
            .await
            .is_err(),
        "CHECK (balance >= 0)"
    );
    assert_eq!(
        app.scalar("SELECT CAST(SUM(amount_credits) AS BIGINT) FROM ledger_entries")
            .await,
        10
    );
}
