//! Discovery and help: `/.well-known/agent.json`, `/docs`, `POST /api/external/agent-help`.

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::message::ACTIONS;
use agentpmt_protocol::ErrorCode;
use reqwest::StatusCode;
use serde_json::{json, Value};

backend_tests!(
    agent_card_is_json_and_every_url_in_it_answers,
    docs_page_lists_every_endpoint_and_error_code,
    agent_help_stores_a_ticket_and_hints_known_codes,
    agent_help_refuses_bad_input,
    agent_help_redacts_secrets_and_limits_tickets_per_address,
    docs_page_renders_the_descriptions_markdown,
);

/// Pasted secrets never reach the ticket table; one address files at most 20 tickets an
/// hour (a 429 in the envelope), and tickets older than 30 days are pruned.
async fn agent_help_redacts_secrets_and_limits_tickets_per_address(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions {
            configure: Some(|c: &mut agentpmt_server::ServerConfig| {
                c.ip_rate_per_sec = 1000;
                c.ip_rate_burst = 1000;
            }),
            ..AppOptions::default()
        },
    )
    .await;
    let key = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    let signature = format!("0x{}", "ab".repeat(65));
    let tx = format!("0x{key}");
    let (status, body) = app
        .post(
            "/api/external/agent-help",
            &json!({
                "message": format!("my key is {key}, header Bearer sekrit-token-1, tx {tx}"),
                "context": {
                    "parameters": {"q": 1, "_credentials": {"api_key": "vendor-secret-9"}},
                    "signature": signature,
                    "note": format!("sig {signature}"),
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stored = app
        .text("SELECT message || ' ' || context FROM agent_help_tickets")
        .await;
    for secret in [key, "sekrit-token-1", "vendor-secret-9", &signature[2..]] {
        assert!(
            !stored.replace(&tx, "").contains(secret),
            "{secret} stored: {stored}"
        );
    }
    assert!(
        stored.contains(&tx),
        "the transaction hash is kept: {stored}"
    );
    assert!(stored.contains("[redacted]"), "{stored}");

    for i in 1..20 {
        let (status, body) = app
            .post(
                "/api/external/agent-help",
                &json!({"message": format!("q{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{i}: {body}");
    }
    let (status, body) = app
        .post("/api/external/agent-help", &json!({"message": "one more"}))
        .await;
    let details = assert_envelope(status, &body, 429, "RATE_LIMITED");
    assert_eq!(details["scope"], "help_tickets", "{body}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agent_help_tickets").await,
        20
    );
    // Retention: tickets older than 30 days go.
    let old = agentpmt_server::time::now_ms() - agentpmt_server::help::HELP_TICKET_RETENTION_MS - 1;
    app.execute(&format!(
        "UPDATE agent_help_tickets SET created_at_ms = {old} WHERE message = 'q1'"
    ))
    .await
    .unwrap();
    let pruned = agentpmt_server::help::prune_tickets(
        &app.state.db,
        agentpmt_server::time::now_ms() - agentpmt_server::help::HELP_TICKET_RETENTION_MS,
    )
    .await
    .unwrap();
    assert_eq!(pruned, 1);
}

fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

async fn agent_card_is_json_and_every_url_in_it_answers(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .http
        .get(app.url("/.well-known/agent.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let card: Value = serde_json::from_slice(&response.bytes().await.unwrap()).expect("valid JSON");
    assert_eq!(card["base_url"], json!(app.base_url));
    assert_eq!(card["auth"]["scheme"], json!("wallet_signature"));
    assert_eq!(
        card["auth"]["actions"].as_array().unwrap().len(),
        ACTIONS.len()
    );
    assert_eq!(card["payment"]["x402_version"], json!(2));
    assert_eq!(card["payment"]["credits_per_usd"], json!(100));
    let networks = card["payment"]["networks"].as_array().unwrap();
    // The test server runs the embedded dev network: the card says what it really accepts.
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert_eq!(networks[0]["network"], json!("eip155:1337"));
    assert_eq!(networks[0]["settlement"], json!("dev"));
    assert_eq!(networks[0]["assets"][0]["symbol"], json!("USDC"));
    let endpoints = card["endpoints"].as_array().unwrap();
    for (method, path) in [
        ("POST", "/api/external/agentaddress"),
        ("POST", "/api/external/agent-help"),
        ("POST", "/api/external/auth/session"),
        ("GET", "/docs"),
    ] {
        assert!(
            endpoints
                .iter()
                .any(|e| e["method"] == json!(method) && e["path"] == json!(path)),
            "{method} {path} listed"
        );
    }

    let mut all = Vec::new();
    strings(&card, &mut all);
    let urls: Vec<&str> = all
        .into_iter()
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
        .collect();
    assert!(urls.len() >= 5, "{urls:?}");
    for url in urls {
        assert!(url.starts_with(&app.base_url), "{url} is on this server");
        let status = app.http.get(url).send().await.unwrap().status();
        assert!(
            status != StatusCode::NOT_FOUND
                && !status.is_server_error()
                && status != StatusCode::METHOD_NOT_ALLOWED,
            "{url} answered {status}"
        );
    }
}

async fn docs_page_lists_every_endpoint_and_error_code(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script"), "self-contained, no scripts");
    let (_, document) = app.get("/openapi.json").await;
    for path in document["paths"].as_object().unwrap().keys() {
        assert!(
            html.contains(&format!("<code>{path}</code>")),
            "{path} on the page"
        );
    }
    for code in ErrorCode::ALL {
        assert!(
            html.contains(&format!("<code>{code}</code>")),
            "{code} on the page"
        );
    }
    assert!(html.contains("id=\"schema-ErrorBody\""));
    // The error envelope points at this page and at agent-help.
    let (_, body) = app.get("/no/such/route").await;
    assert_eq!(body["help_doc"], json!(app.url("/docs")));
    assert_eq!(body["help_url"], json!(app.url("/api/external/agent-help")));
}

async fn agent_help_stores_a_ticket_and_hints_known_codes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, failed) = app.get("/no/such/route").await;
    let help_url = failed["help_url"].as_str().unwrap();
    let (status, body) = app
        .post_to(
            help_url.to_owned(),
            serde_json::to_vec(&json!({
                "message": "My balance call says the wallet does not match",
                "request_id": failed["request_id"],
                "error_code": "EXTERNAL_SIGNATURE_WALLET_MISMATCH",
                "context": {"path": "/api/external/credits/balance"},
            }))
            .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let ticket = body["ticket_id"].as_str().unwrap();
    assert!(ticket.starts_with("help_"));
    assert_eq!(body["status"], json!("received"));
    let code = ErrorCode::EXTERNAL_SIGNATURE_WALLET_MISMATCH;
    assert_eq!(body["hint"]["error_code"], json!(code.as_str()));
    assert_eq!(body["hint"]["http_status"], json!(401));
    assert_eq!(body["hint"]["checklist"], json!(code.checklist()));
    assert_eq!(body["docs_url"], json!(app.url("/docs")));
    let stored = app
        .scalar(&format!(
            "SELECT COUNT(*) FROM agent_help_tickets WHERE ticket_id = '{ticket}' \
             AND error_code = 'EXTERNAL_SIGNATURE_WALLET_MISMATCH' AND request_id = '{}' \
             AND context LIKE '%credits/balance%'",
            failed["request_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(stored, 1);

    let (status, body) = app
        .post(
            "/api/external/agent-help",
            &json!({"message": "How do I buy credits?", "error_code": "NOT_A_CODE"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["hint"], Value::Null);
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agent_help_tickets").await,
        2
    );
}

async fn agent_help_refuses_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    for body in [
        json!({}),
        json!({"message": "   "}),
        json!({"message": "x".repeat(4001)}),
        json!({"message": 5}),
        json!({"message": "hi", "request_id": "a\nb"}),
        json!({"message": "hi", "context": {"blob": "y".repeat(17 * 1024)}}),
        json!({"message": "hi", "unknown": true}),
    ] {
        let (status, answer) = app.post("/api/external/agent-help", &body).await;
        assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
    }
    let (status, answer) = app
        .post_bytes("/api/external/agent-help", vec![b' '; 70 * 1024])
        .await;
    assert_envelope(status, &answer, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM agent_help_tickets").await,
        0
    );
}

/// `/docs` renders the API description's Markdown (paragraphs, inline code, the signed
/// message as a code block) instead of showing it raw in one scrolling block.
async fn docs_page_renders_the_descriptions_markdown(backend: Backend) {
    let app = spawn_app(backend).await;
    let html = app
        .http
        .get(app.url("/docs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, document) = app.get("/openapi.json").await;
    let description = document["info"]["description"].as_str().unwrap();
    assert!(description.contains("`wallet_address`"), "{description}");
    // The page's introduction is the rendered description.
    let intro = &html[..html.find("<h2>Endpoints</h2>").unwrap()];
    assert!(!intro.contains("```"), "no raw Markdown fences: {intro}");
    assert!(
        !intro.contains("`wallet_address`"),
        "no raw code spans: {intro}"
    );
    assert!(intro.contains("<code>wallet_address</code>"), "{intro}");
    assert!(
        intro.contains("<pre><code class=\"language-text\">agentpmt-external\nwallet:"),
        "the signed message is a code block: {intro}"
    );
    assert!(
        intro.contains("<p>Every error uses one envelope"),
        "{intro}"
    );
}
