//! Workflows: operator create/update/publish with graph validation, the public list, and
//! wallet-scoped sessions (fetch, start, active, end, idle expiry, tool-call attribution).

use crate::backend_tests;
use crate::helpers::*;
use agentpmt_protocol::{PrivateKey, SignedAction};
use agentpmt_server::workflows::sessions::{check_attribution, record_tool_call, ToolCallRecord};
use reqwest::Method;
use serde_json::{json, Map, Value};

backend_tests!(
    graphs_are_validated_on_write,
    publish_update_and_admin_errors,
    list_filters_and_pagination,
    absurd_list_parameters_are_422,
    concurrent_sessions_per_instance,
    end_without_id_and_foreign_sessions,
    fetch_shows_sessions_and_recorded_results,
    attribution_refuses_unknown_foreign_and_ended_sessions,
    idle_sessions_end_by_themselves,
    unpublished_workflows_are_not_reachable,
    concurrent_starts_of_one_instance_share_a_session,
);

/// The demo catalog's `text-tools` product (loaded by every test server).
pub fn product() -> String {
    agentpmt_server::tools::catalog::derived_id("product", "text-tools")
}

/// A valid three-node graph.
pub fn sample_graph() -> Value {
    json!({
        "nodes": [
            {"id": "find", "type": "tool", "label": "Search",
             "tool": {"product_id": product(), "action": "extract-urls", "parameters": {"text": "{{topic}}"}}},
            {"id": "each", "type": "for_each", "items": "{{find.results}}"},
            {"id": "tell", "type": "notify_human", "message": "Done", "channel": "email"}
        ],
        "edges": [
            {"id": "e1", "from": "find", "to": "each"},
            {"id": "e2", "from": "each", "to": "tell", "sourceHandle": "done"}
        ]
    })
}

/// Creates (and optionally publishes) a workflow; returns its id.
pub async fn create_workflow(app: &TestApp, slug: &str, extra: Value, publish: bool) -> String {
    let mut body = json!({
        "slug": slug,
        "name": format!("Workflow {slug}"),
        "description": "Finds things and tells a human",
        "categories": ["research"],
        "industry_tags": ["marketing"],
        "publisher": "Acme",
        "graph": sample_graph(),
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, created) = app
        .admin(Method::POST, "/api/admin/workflows", Some(&body))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["workflow"]["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    if publish {
        let (status, published) = app
            .admin(
                Method::POST,
                &format!("/api/admin/workflows/{id}/publish"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{published}");
        assert_eq!(published["workflow"]["status"], json!("published"));
    }
    id
}

/// A signed call of a workflow action by `key`.
pub async fn call(
    app: &TestApp,
    key: &PrivateKey,
    action: SignedAction,
    workflow_id: &str,
    fields: Value,
) -> (reqwest::StatusCode, Value) {
    let nonce = app.session(&key.address()).await;
    let fields: Map<String, Value> = fields.as_object().cloned().unwrap_or_default();
    let body = signed(
        key,
        action,
        &[("workflowId", workflow_id)],
        &nonce,
        &uuid::Uuid::new_v4().to_string(),
        fields,
    );
    let route = action.spec().route.replace("{workflowId}", workflow_id);
    app.post(&route, &body).await
}

async fn start(app: &TestApp, key: &PrivateKey, id: &str, instance: Option<&str>) -> Value {
    let fields = match instance {
        Some(i) => json!({"instance_id": i}),
        None => json!({}),
    };
    let (status, body) = call(app, key, SignedAction::WorkflowStart, id, fields).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn graphs_are_validated_on_write(backend: Backend) {
    let app = spawn_app(backend).await;
    let bad_graphs = [
        // an edge to a node that does not exist
        (
            json!({"nodes": [{"id": "a", "type": "prompt", "prompt": "x"}],
                   "edges": [{"id": "e", "from": "a", "to": "nowhere"}]}),
            json!(["body", "graph", "edges", 0, "to"]),
        ),
        // a tool node without a product
        (
            json!({"nodes": [{"id": "a", "type": "tool"}], "edges": []}),
            json!(["body", "graph", "nodes", 0, "tool"]),
        ),
        // a tool node pointing at something that is not a product id
        (
            json!({"nodes": [{"id": "a", "type": "tool", "tool": {"product_id": "nope", "action": "x"}}], "edges": []}),
            json!(["body", "graph", "nodes", 0, "tool", "product_id"]),
        ),
        // a well-formed id of a product that does not exist
        (
            json!({"nodes": [{"id": "a", "type": "tool", "tool": {"product_id": "0123456789abcdef01234567", "action": "x"}}], "edges": []}),
            json!(["body", "graph", "nodes", 0, "tool", "product_id"]),
        ),
        // an existing product without that action
        (
            json!({"nodes": [{"id": "a", "type": "tool", "tool": {"product_id": product(), "action": "teleport"}}], "edges": []}),
            json!(["body", "graph", "nodes", 0, "tool", "action"]),
        ),
        // a dangling branch (one way out)
        (
            json!({"nodes": [{"id": "a", "type": "prompt", "prompt": "x"}, {"id": "b", "type": "branch"},
                             {"id": "c", "type": "prompt", "prompt": "y"}],
                   "edges": [{"id": "1", "from": "a", "to": "b"}, {"id": "2", "from": "b", "to": "c", "condition": "ok"}]}),
            json!(["body", "graph", "nodes", 1]),
        ),
        // a merge with one way in
        (
            json!({"nodes": [{"id": "a", "type": "prompt", "prompt": "x"}, {"id": "m", "type": "merge"}],
                   "edges": [{"id": "1", "from": "a", "to": "m"}]}),
            json!(["body", "graph", "nodes", 1]),
        ),
        // duplicate node ids
        (
            json!({"nodes": [{"id": "a", "type": "prompt", "prompt": "x"}, {"id": "a", "type": "prompt", "prompt": "y"}],
                   "edges": []}),
            json!(["body", "graph", "nodes", 1, "id"]),
        ),
        // no nodes
        (
            json!({"nodes": [], "edges": []}),
            json!(["body", "graph", "nodes"]),
        ),
    ];
    for (graph, loc) in bad_graphs {
        let body = json!({"slug": "bad", "name": "Bad", "publisher": "Acme", "graph": graph});
        let (status, answer) = app
            .admin(Method::POST, "/api/admin/workflows", Some(&body))
            .await;
        assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
        let locs: Vec<Value> = answer["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["loc"].clone())
            .collect();
        assert!(locs.contains(&loc), "{loc} not in {answer}");
    }
    // An unknown node type is refused as well.
    let body = json!({"slug": "bad", "name": "Bad", "publisher": "Acme",
        "graph": {"nodes": [{"id": "a", "type": "teleport"}], "edges": []}});
    let (status, answer) = app
        .admin(Method::POST, "/api/admin/workflows", Some(&body))
        .await;
    assert_envelope(status, &answer, 422, "VALIDATION_ERROR");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM workflows").await, 0);
    // A valid graph round-trips with every field.
    let id = create_workflow(&app, "good", json!({}), false).await;
    let (status, shown) = app
        .admin(Method::GET, &format!("/api/admin/workflows/{id}"), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["workflow"]["graph"], sample_graph());
    assert_eq!(shown["workflow"]["status"], json!("draft"));
    assert_eq!(shown["workflow"]["version"], json!(1));
    assert_eq!(id.len(), 24);
}

async fn publish_update_and_admin_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = create_workflow(&app, "chain", json!({}), true).await;
    // Same slug again → 409.
    let body =
        json!({"slug": "chain", "name": "Dup", "publisher": "Acme", "graph": sample_graph()});
    let (status, answer) = app
        .admin(Method::POST, "/api/admin/workflows", Some(&body))
        .await;
    assert_envelope(status, &answer, 409, "WORKFLOW_SLUG_TAKEN");
    // Update: version + 1, still published.
    let body = json!({"slug": "chain", "name": "Renamed", "publisher": "Acme",
        "categories": ["Sales", "sales"], "graph": sample_graph()});
    let (status, updated) = app
        .admin(
            Method::PUT,
            &format!("/api/admin/workflows/{id}"),
            Some(&body),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["workflow"]["version"], json!(2));
    assert_eq!(updated["workflow"]["name"], json!("Renamed"));
    assert_eq!(updated["workflow"]["status"], json!("published"));
    assert_eq!(updated["workflow"]["categories"], json!(["sales"]));
    // Unknown workflow, no token.
    let (status, answer) = app
        .admin(
            Method::POST,
            "/api/admin/workflows/ffffffffffffffffffffffff/publish",
            None,
        )
        .await;
    assert_envelope(status, &answer, 404, "WORKFLOW_NOT_FOUND");
    let response = app
        .http
        .post(app.url("/api/admin/workflows"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_envelope(status, &answer, 401, "ADMIN_UNAUTHORIZED");
}

async fn list_filters_and_pagination(backend: Backend) {
    let app = spawn_app(backend).await;
    create_workflow(
        &app,
        "lead-finder",
        json!({"categories": ["Sales", "research"], "industry_tags": ["saas"], "publisher": "Acme"}),
        true,
    )
    .await;
    create_workflow(
        &app,
        "invoice-chaser",
        json!({"description": "Chase 100% of invoices", "categories": ["finance"],
               "industry_tags": ["accounting"], "publisher": "Ledgerly"}),
        true,
    )
    .await;
    create_workflow(&app, "secret-sauce", json!({"visibility": "private"}), true).await;
    create_workflow(&app, "draft-only", json!({}), false).await;

    let slugs = |body: &Value| -> Vec<String> {
        body["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["slug"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = app.get("/api/external/workflows").await;
    assert_eq!(status, 200, "{all}");
    let mut got = slugs(&all);
    got.sort();
    assert_eq!(
        got,
        ["invoice-chaser", "lead-finder"],
        "private and drafts are not listed"
    );
    assert_eq!(all["count"], json!(2));
    assert_eq!(all["limit"], json!(20));
    for (query, expected) in [
        ("query=LEAD", vec!["lead-finder"]),
        ("query=100%25", vec!["invoice-chaser"]),
        // LIKE wildcards are literal: only the description with "100%" has a %.
        ("query=%25", vec!["invoice-chaser"]),
        ("query=_", vec![]),
        ("categories=sales", vec!["lead-finder"]),
        ("categories=nothing,finance", vec!["invoice-chaser"]),
        ("industry_tags=SAAS", vec!["lead-finder"]),
        ("publisher=ledgerly", vec!["invoice-chaser"]),
        ("since=2000-01-01", vec!["invoice-chaser", "lead-finder"]),
        ("since=2999-01-01T00:00:00Z", vec![]),
        ("categories=research&publisher=Ledgerly", vec![]),
    ] {
        let (status, body) = app.get(&format!("/api/external/workflows?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        let mut got = slugs(&body);
        got.sort();
        assert_eq!(got, expected, "{query}");
    }
    let (_, first) = app.get("/api/external/workflows?limit=1").await;
    let (_, second) = app.get("/api/external/workflows?limit=1&skip=1").await;
    let (_, third) = app.get("/api/external/workflows?limit=1&skip=2").await;
    assert_eq!(slugs(&first).len(), 1);
    assert_eq!(slugs(&second).len(), 1);
    assert_ne!(slugs(&first), slugs(&second));
    assert!(slugs(&third).is_empty());
    let summary = &first["workflows"][0];
    for field in [
        "workflow_id",
        "name",
        "description",
        "publisher",
        "version",
        "updated_at",
    ] {
        assert!(!summary[field].is_null(), "{field} missing: {summary}");
    }
    assert!(summary.get("graph").is_none(), "the list has no graphs");
}

async fn absurd_list_parameters_are_422(backend: Backend) {
    let app = spawn_app(backend).await;
    for (query, field) in [
        ("limit=1000000000", "limit"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("skip=-1", "skip"),
        ("skip=99999999999", "skip"),
        ("since=yesterday", "since"),
        ("categories=a,b,c,d,e,f", "categories"),
        ("industry_tags=a|b", "industry_tags"),
    ] {
        let (status, body) = app.get(&format!("/api/external/workflows?{query}")).await;
        let details = assert_envelope(status, &body, 422, "VALIDATION_ERROR");
        assert!(details["checklist"].is_array());
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["query", field]),
            "{query}: {body}"
        );
    }
    let long = "x".repeat(201);
    let (status, body) = app
        .get(&format!("/api/external/workflows?query={long}"))
        .await;
    assert_envelope(status, &body, 422, "VALIDATION_ERROR");
}

async fn concurrent_sessions_per_instance(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = create_workflow(&app, "multi", json!({}), true).await;
    let key = PrivateKey::random();
    let a = start(&app, &key, &id, Some("agent-a")).await;
    let b = start(&app, &key, &id, Some("agent-b")).await;
    let plain = start(&app, &key, &id, None).await;
    let a_id = a["workflow_session_id"].as_str().unwrap();
    let b_id = b["workflow_session_id"].as_str().unwrap();
    assert_ne!(a_id, b_id);
    assert_ne!(a_id, plain["workflow_session_id"].as_str().unwrap());
    assert_eq!(a["resumed"], json!(false));
    assert_eq!(a["session"]["instance_id"], json!("agent-a"));
    assert_eq!(plain["session"]["instance_id"], Value::Null);
    assert_eq!(a["idle_timeout_seconds"], json!(3600));
    // Starting again resumes the instance's session.
    let again = start(&app, &key, &id, Some("agent-a")).await;
    assert_eq!(again["workflow_session_id"], json!(a_id));
    assert_eq!(again["resumed"], json!(true));

    let (status, active) = call(&app, &key, SignedAction::WorkflowActive, "-", json!({})).await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["count"], json!(3));
    let (_, only_b) = call(
        &app,
        &key,
        SignedAction::WorkflowActive,
        "-",
        json!({"instance_id": "agent-b"}),
    )
    .await;
    assert_eq!(only_b["count"], json!(1));
    assert_eq!(only_b["workflow_session_id"], json!(b_id));

    // Ending one leaves the others.
    let (status, ended) = call(
        &app,
        &key,
        SignedAction::WorkflowEnd,
        &id,
        json!({"workflow_session_id": a_id}),
    )
    .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["already_ended"], json!(false));
    assert_eq!(ended["session"]["status"], json!("ended"));
    assert_eq!(ended["session"]["end_reason"], json!("ended"));
    let (_, active) = call(&app, &key, SignedAction::WorkflowActive, "-", json!({})).await;
    assert_eq!(active["count"], json!(2));
    let ids: Vec<&str> = active["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["workflow_session_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&b_id) && !ids.contains(&a_id), "{active}");
    // Ending it again is idempotent; starting agent-a again opens a new session.
    let (status, again) = call(
        &app,
        &key,
        SignedAction::WorkflowEnd,
        &id,
        json!({"workflow_session_id": a_id}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["already_ended"], json!(true));
    let fresh = start(&app, &key, &id, Some("agent-a")).await;
    assert_ne!(fresh["workflow_session_id"], json!(a_id));
    assert_eq!(fresh["resumed"], json!(false));
    // Another wallet sees none of them.
    let other = PrivateKey::random();
    let (_, theirs) = call(&app, &other, SignedAction::WorkflowActive, "-", json!({})).await;
    assert_eq!(theirs["count"], json!(0));
    assert_eq!(theirs["workflow_session_id"], Value::Null);
    // A bad instance id is 422 and starts nothing.
    let before = app.scalar("SELECT COUNT(*) FROM workflow_sessions").await;
    for bad in [json!(""), json!(7), json!("x".repeat(129))] {
        let (status, body) = call(
            &app,
            &key,
            SignedAction::WorkflowStart,
            &id,
            json!({"instance_id": bad}),
        )
        .await;
        assert_envelope(status, &body, 422, "VALIDATION_ERROR");
    }
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_sessions").await,
        before
    );
}

async fn end_without_id_and_foreign_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = create_workflow(&app, "ender", json!({}), true).await;
    let key = PrivateKey::random();
    // Nothing to end.
    let (status, body) = call(&app, &key, SignedAction::WorkflowEnd, &id, json!({})).await;
    assert_envelope(status, &body, 404, "WORKFLOW_SESSION_NOT_FOUND");
    let one = start(&app, &key, &id, None).await;
    let two = start(&app, &key, &id, Some("second")).await;
    // Two live sessions, none named.
    let (status, body) = call(&app, &key, SignedAction::WorkflowEnd, &id, json!({})).await;
    let details = assert_envelope(status, &body, 409, "WORKFLOW_SESSION_AMBIGUOUS");
    assert_eq!(details["active_session_ids"].as_array().unwrap().len(), 2);
    // Another wallet cannot end mine.
    let thief = PrivateKey::random();
    let (status, body) = call(
        &app,
        &thief,
        SignedAction::WorkflowEnd,
        &id,
        json!({"workflow_session_id": one["workflow_session_id"]}),
    )
    .await;
    assert_envelope(status, &body, 403, "WORKFLOW_SESSION_FOREIGN");
    // Unknown id → 404.
    let (status, body) = call(
        &app,
        &key,
        SignedAction::WorkflowEnd,
        &id,
        json!({"workflow_session_id": "wfs_nope"}),
    )
    .await;
    assert_envelope(status, &body, 404, "WORKFLOW_SESSION_NOT_FOUND");
    // End one by id; then the other is the only live one and ends without an id.
    call(
        &app,
        &key,
        SignedAction::WorkflowEnd,
        &id,
        json!({"workflow_session_id": one["workflow_session_id"]}),
    )
    .await;
    let (status, body) = call(&app, &key, SignedAction::WorkflowEnd, &id, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workflow_session_id"], two["workflow_session_id"]);
    // The signed request's replay is refused and changes nothing.
    let nonce = app.session(&key.address()).await;
    let body = signed(
        &key,
        SignedAction::WorkflowStart,
        &[("workflowId", &id)],
        &nonce,
        "same-request",
        Map::new(),
    );
    let route = format!("/api/external/workflows/{id}/start");
    let (status, _) = app.post(&route, &body).await;
    assert_eq!(status, 200);
    let (status, replay) = app.post(&route, &body).await;
    assert_envelope(status, &replay, 409, "EXTERNAL_SIGNATURE_REQUEST_REPLAY");
    // A signature for another workflow does not start this one.
    let other = create_workflow(&app, "other", json!({}), true).await;
    let body = signed(
        &key,
        SignedAction::WorkflowStart,
        &[("workflowId", &other)],
        &nonce,
        "wrong-product",
        Map::new(),
    );
    let (status, answer) = app.post(&route, &body).await;
    assert_envelope(status, &answer, 401, "EXTERNAL_SIGNATURE_WALLET_MISMATCH");
}

fn tool_call(request_id: &str, succeeded: bool, at_ms: i64) -> ToolCallRecord {
    ToolCallRecord {
        usage_id: format!("use_{request_id}"),
        product_slug: "web-search".into(),
        action_slug: "search".into(),
        request_id: request_id.into(),
        succeeded,
        charged_credits: if succeeded { 5 } else { 0 },
        response: succeeded.then(|| json!({"results": ["a", "b"]})),
        error: (!succeeded).then(|| json!({"error_code": "TOOL_FAILED"})),
        at_ms,
    }
}

async fn fetch_shows_sessions_and_recorded_results(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = create_workflow(&app, "fetchable", json!({}), true).await;
    let key = PrivateKey::random();
    // Before any session: the graph, no sessions.
    let (status, body) = call(&app, &key, SignedAction::WorkflowFetch, &id, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["workflow"]["graph"], sample_graph());
    assert_eq!(body["sessions"], json!([]));
    // By slug too.
    let (status, by_slug) = call(
        &app,
        &key,
        SignedAction::WorkflowFetch,
        "fetchable",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{by_slug}");
    assert_eq!(by_slug["workflow"]["workflow_id"], json!(id));

    let started = start(&app, &key, &id, None).await;
    let session = started["workflow_session_id"].as_str().unwrap();
    let wallet = key.address().to_string();
    check_attribution(&app.state.db, &wallet, session)
        .await
        .unwrap();
    let at = agentpmt_server::time::now_ms();
    record_tool_call(&app.state.db, session, &tool_call("invoke-1", true, at))
        .await
        .unwrap();
    record_tool_call(
        &app.state.db,
        session,
        &tool_call("invoke-2", false, at + 1),
    )
    .await
    .unwrap();
    let (status, body) = call(&app, &key, SignedAction::WorkflowFetch, &id, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["active_session_ids"], json!([session]));
    let results = body["sessions"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{body}");
    assert_eq!(results[0]["request_id"], json!("invoke-1"));
    assert_eq!(results[0]["status"], json!("succeeded"));
    assert_eq!(results[0]["charged_credits"], json!(5));
    assert_eq!(results[0]["response"], json!({"results": ["a", "b"]}));
    assert_eq!(results[1]["status"], json!("failed"));
    assert_eq!(results[1]["error"]["error_code"], json!("TOOL_FAILED"));
    // Another wallet's fetch shows none of it.
    let other = PrivateKey::random();
    let (_, theirs) = call(&app, &other, SignedAction::WorkflowFetch, &id, json!({})).await;
    assert_eq!(theirs["sessions"], json!([]));
}

async fn attribution_refuses_unknown_foreign_and_ended_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = create_workflow(&app, "attrib", json!({}), true).await;
    let owner = PrivateKey::random();
    let stranger = PrivateKey::random();
    let started = start(&app, &owner, &id, None).await;
    let session = started["workflow_session_id"].as_str().unwrap();
    let db = &app.state.db;
    let err = check_attribution(db, &stranger.address().to_string(), session)
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "WORKFLOW_SESSION_FOREIGN");
    assert_eq!(err.code().status(), 403);
    let err = check_attribution(db, &owner.address().to_string(), "wfs_unknown")
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "WORKFLOW_SESSION_NOT_FOUND");
    assert_eq!(err.code().status(), 404);
    let err = check_attribution(db, &owner.address().to_string(), "")
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "VALIDATION_ERROR");
    // The owner (any address case) may attribute.
    check_attribution(db, &owner.address().to_checksum(), session)
        .await
        .unwrap();
    call(
        &app,
        &owner,
        SignedAction::WorkflowEnd,
        &id,
        json!({"workflow_session_id": session}),
    )
    .await;
    let err = check_attribution(db, &owner.address().to_string(), session)
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "WORKFLOW_SESSION_ENDED");
    assert_eq!(err.code().status(), 409);
}

async fn idle_sessions_end_by_themselves(backend: Backend) {
    let app = spawn_app_with(
        backend,
        AppOptions::configured(|c| c.workflow_session_idle_secs = 1),
    )
    .await;
    let id = create_workflow(&app, "idler", json!({}), true).await;
    let key = PrivateKey::random();
    let wallet = key.address().to_string();
    let first = start(&app, &key, &id, None).await;
    let session = first["workflow_session_id"].as_str().unwrap().to_owned();
    assert_eq!(first["idle_timeout_seconds"], json!(1));
    // Activity (a recorded tool call) postpones the end.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    record_tool_call(
        &app.state.db,
        &session,
        &tool_call("keep-alive", true, agentpmt_server::time::now_ms()),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    check_attribution(&app.state.db, &wallet, &session)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (_, active) = call(&app, &key, SignedAction::WorkflowActive, "-", json!({})).await;
    assert_eq!(active["count"], json!(0), "{active}");
    let err = check_attribution(&app.state.db, &wallet, &session)
        .await
        .unwrap_err();
    assert_eq!(err.code().as_str(), "WORKFLOW_SESSION_ENDED");
    let (_, fetched) = call(&app, &key, SignedAction::WorkflowFetch, &id, json!({})).await;
    assert_eq!(fetched["sessions"][0]["status"], json!("ended"));
    assert_eq!(fetched["sessions"][0]["end_reason"], json!("idle"));
    // Starting again opens a new session.
    let second = start(&app, &key, &id, None).await;
    assert_ne!(second["workflow_session_id"], json!(session));
    assert_eq!(second["resumed"], json!(false));
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_sessions WHERE end_reason = 'idle'")
            .await,
        1
    );
}

async fn unpublished_workflows_are_not_reachable(backend: Backend) {
    let app = spawn_app(backend).await;
    let draft = create_workflow(&app, "not-yet", json!({}), false).await;
    let key = PrivateKey::random();
    for action in [SignedAction::WorkflowFetch, SignedAction::WorkflowStart] {
        let (status, body) = call(&app, &key, action, &draft, json!({})).await;
        assert_envelope(status, &body, 404, "WORKFLOW_NOT_FOUND");
    }
    let (status, body) = call(
        &app,
        &key,
        SignedAction::WorkflowStart,
        "ffffffffffffffffffffffff",
        json!({}),
    )
    .await;
    assert_envelope(status, &body, 404, "WORKFLOW_NOT_FOUND");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_sessions").await,
        0
    );
    // The refused start did not use up its request_id either (the claim rolled back).
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM request_replays WHERE action = 'workflow_start'")
            .await,
        0
    );
}

async fn concurrent_starts_of_one_instance_share_a_session(backend: Backend) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    let id = create_workflow(&app, "racy", json!({}), true).await;
    let key = PrivateKey::random();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, key, id) = (app.clone(), key.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &app,
                &key,
                SignedAction::WorkflowStart,
                &id,
                json!({"instance_id": "same"}),
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        ids.insert(body["workflow_session_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one session: {ids:?}");
    assert_eq!(
        app.scalar("SELECT COUNT(*) FROM workflow_sessions").await,
        1
    );
}
