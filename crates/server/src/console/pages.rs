//! The console's overview, wallets, review queue, payments and help tickets pages (keys,
//! tools and workflows have modules of their own). Reads query the tables directly
//! (read-only); every action calls the operator API's own function for it. Lists are
//! [`views::paged_table`]s.

use super::views::{self, credits, external_link, optional, outcome, time, whole, ListQuery};
use super::{error_page, failed_with, page, CsrfForm, Operator};
use crate::db::macros::{sql_fetch_all, sql_scalar_optional};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use agentpmt_protocol::wire::CreditAdjustmentRequest;
use agentpmt_protocol::WalletAddress;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

/// Days shown in the overview's chart.
const CHART_DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;

async fn count(state: &AppState, sql: &str) -> ApiResult<i64> {
    let mut conn = state.db.read().await?;
    Ok(sql_scalar_optional!(conn.conn(), i64, sql)?.unwrap_or(0))
}

#[derive(Debug, sqlx::FromRow)]
struct DaySum {
    day: i64,
    total: i64,
}

async fn by_day(state: &AppState, sql: &str, since: i64) -> ApiResult<Vec<DaySum>> {
    let mut conn = state.db.read().await?;
    Ok(sql_fetch_all!(conn.conn(), DaySum, sql, since)?)
}

fn day_label(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default()
}

/// The overview: money, work waiting, and the payment networks.
#[tracing::instrument(skip_all)]
pub async fn overview(operator: Operator, State(state): State<AppState>) -> Response {
    match overview_body(&state).await {
        Ok(body) => page(&state, &operator, "Overview", body),
        Err(e) => error_page(&state, &operator, "Overview", e),
    }
}

async fn overview_body(state: &AppState) -> ApiResult<Markup> {
    let outstanding = count(
        state,
        "SELECT CAST(COALESCE(SUM(balance_credits), 0) AS BIGINT) FROM wallets",
    )
    .await?;
    let wallets = count(state, "SELECT COUNT(*) FROM wallets").await?;
    let pending_purchases = count(
        state,
        "SELECT COUNT(*) FROM credit_purchases WHERE status IN ('pending', 'broadcast')",
    )
    .await?;
    let pending_tool_payments = count(
        state,
        "SELECT COUNT(*) FROM tool_usage WHERE status = 'settlement_pending'",
    )
    .await?;
    let awaiting_review = count(
        state,
        "SELECT COUNT(*) FROM job_submissions WHERE status = 'submitted'",
    )
    .await?;
    let tickets = count(
        state,
        "SELECT COUNT(*) FROM agent_help_tickets WHERE closed_at_ms IS NULL",
    )
    .await?;
    let today = crate::time::now_ms().div_euclid(DAY_MS);
    let first = today - CHART_DAYS + 1;
    let purchases = by_day(
        state,
        "SELECT created_at_ms / 86400000 AS day, CAST(SUM(credits) AS BIGINT) AS total \
         FROM credit_purchases WHERE status = 'settled' AND created_at_ms >= $1 \
         GROUP BY created_at_ms / 86400000",
        first * DAY_MS,
    )
    .await?;
    let revenue = by_day(
        state,
        "SELECT created_at_ms / 86400000 AS day, CAST(SUM(charged_credits) AS BIGINT) AS total \
         FROM tool_usage WHERE status = 'succeeded' AND created_at_ms >= $1 \
         GROUP BY created_at_ms / 86400000",
        first * DAY_MS,
    )
    .await?;
    let sum_of = |rows: &[DaySum], day: i64| {
        rows.iter()
            .filter(|r| r.day == day)
            .map(|r| r.total)
            .sum::<i64>()
    };
    let days: Vec<views::Day> = (first..=today)
        .map(|day| views::Day {
            label: day_label(day),
            purchases: sum_of(&purchases, day),
            tool_revenue: sum_of(&revenue, day),
        })
        .collect();
    let networks = crate::ops::payment_checks(state).await;
    let base = &state.config.console_path;
    Ok(html! {
        main {
            h1 { "Overview" }
            section.cards {
                div.card id="credits-outstanding" { h2 { "Credits outstanding" } p.big { (credits(outstanding)) } p { (wallets) " wallets" } }
                div.card id="settlements-pending" { h2 { "Settlements pending" } p.big { (pending_purchases + pending_tool_payments) } p { (pending_purchases) " purchases, " (pending_tool_payments) " tool payments" } }
                div.card id="awaiting-review" { h2 { "Awaiting review" } p.big { a href={(base) "/jobs"} { (awaiting_review) } } p { "job submissions" } }
                div.card id="help-tickets" { h2 { "Help tickets" } p.big { a href={(base) "/help-tickets"} { (tickets) } } p { "open, of the last 30 days" } }
            }
            section {
                h2 { "Purchases and tool revenue, last " (CHART_DAYS) " days" }
                (views::day_chart(&days))
            }
            section {
                h2 { "Payment networks" }
                table id="networks" {
                    thead { tr { th { "Network" } th { "Status" } th { "Detail" } } }
                    tbody {
                        @for n in &networks {
                            tr { td { (n.name) } td class={"status-" (n.status)} { (n.status) } td { (n.detail) } }
                        }
                        @if networks.is_empty() { tr { td colspan="3" { "No payment network is configured." } } }
                    }
                }
            }
        }
    })
}

#[derive(Debug, sqlx::FromRow)]
struct WalletRow {
    address: String,
    balance_credits: i64,
    updated_at_ms: i64,
}

/// Wallets, searched by (part of) their address.
#[tracing::instrument(skip_all)]
pub async fn wallets(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let search = q.q.as_deref().unwrap_or("").trim().to_ascii_lowercase();
    if !search.bytes().all(|b| b.is_ascii_hexdigit() || b == b'x') || search.len() > 42 {
        let e = ApiError::invalid_field(
            &["query", "q"],
            "value_error",
            "search by address: hex digits (and 0x) only",
        );
        return error_page(&state, &operator, "Wallets", e);
    }
    let (limit, offset) = q.limit_offset();
    let rows = async {
        let mut conn = state.db.read().await?;
        ApiResult::Ok(sql_fetch_all!(
            conn.conn(),
            WalletRow,
            "SELECT address, balance_credits, updated_at_ms FROM wallets \
             WHERE LOWER(address) LIKE $1 ORDER BY updated_at_ms DESC, address LIMIT $2 OFFSET $3",
            format!("%{search}%"),
            limit,
            offset
        )?)
    }
    .await;
    let rows = match rows {
        Ok(r) => q.paged(r),
        Err(e) => return error_page(&state, &operator, "Wallets", e),
    };
    let base = &state.config.console_path;
    let list = format!("{base}/wallets");
    let body = html! {
        main {
            h1 { "Wallets" }
            (views::search_form(&list, "Address", &search, "0x…"))
            (views::paged_table("wallets", &["Address", "Balance", "Last change"], &rows,
                "No wallet matches.", &views::href(&list, &[("q", &search)]), |w| html! {
                tr { td { a href={(list) "/" (w.address)} { code { (w.address) } } } td { (credits(w.balance_credits)) } td { (time(w.updated_at_ms)) } }
            }))
        }
    };
    page(&state, &operator, "Wallets", body)
}

fn parse_wallet(address: &str) -> ApiResult<WalletAddress> {
    address
        .parse()
        .map_err(|e: agentpmt_protocol::InvalidAddress| {
            ApiError::invalid_field(&["path", "address"], "value_error", e.to_string())
        })
}

async fn wallet_page(
    state: &AppState,
    operator: &Operator,
    wallet: &WalletAddress,
    q: &ListQuery,
    notice: Option<Markup>,
) -> Response {
    let title = "Wallet";
    let (limit, offset) = q.limit_offset();
    let data = async {
        let mut conn = state.db.read().await?;
        let balance = crate::ledger::balance(&mut conn, wallet).await?;
        let entries = crate::ledger::entries_page(&mut conn, wallet, limit, offset).await?;
        ApiResult::Ok((balance, entries))
    }
    .await;
    let (balance, entries) = match data {
        Ok((balance, entries)) => (balance, q.paged(entries)),
        Err(e) => return error_page(state, operator, title, e),
    };
    let base = &state.config.console_path;
    let here = format!("{base}/wallets/{wallet}");
    let body = html! {
        main {
            h1 { "Wallet " code { (wallet) } }
            @if let Some(n) = notice { (n) }
            p { "Balance: " strong id="balance" { (credits(balance)) } }
            section {
                h2 { "Grant or remove credits" }
                form.stack method="post" action={(here) "/credits"} id="adjust" {
                    (views::csrf(&operator.session.csrf))
                    // One key per rendering of the form: sending it twice posts once.
                    input type="hidden" name="idempotency_key" value=(super::session::random_token());
                    label for="amount_credits" { "Credits (negative to remove)" }
                    input type="number" id="amount_credits" name="amount_credits" required
                        min=(-crate::admin::MAX_ADJUSTMENT_CREDITS) max=(crate::admin::MAX_ADJUSTMENT_CREDITS);
                    label for="reason" { "Reason" }
                    input type="text" id="reason" name="reason" required maxlength="500";
                    button type="submit" { "Post entry" }
                }
            }
            section {
                h2 { "Ledger" }
                (views::paged_table("ledger", &["When", "Amount", "Kind", "Reason", "Reference", "Balance after"],
                    &entries, "No entries.", &here, |e| html! {
                    tr {
                        td { (time(e.created_at_ms)) }
                        td.amount { (e.amount_credits) }
                        td { (e.kind) }
                        td { (e.reason.as_deref().unwrap_or("")) }
                        td { code { (e.reference.as_deref().unwrap_or("")) } }
                        td { (e.balance_after) }
                    }
                }))
            }
        }
    };
    page(state, operator, title, body)
}

/// One wallet: balance, ledger, and the credit adjustment form.
#[tracing::instrument(skip_all)]
pub async fn wallet(
    operator: Operator,
    State(state): State<AppState>,
    Path(address): Path<String>,
    Query(q): Query<ListQuery>,
) -> Response {
    match parse_wallet(&address) {
        Ok(w) => wallet_page(&state, &operator, &w, &q, None).await,
        Err(e) => error_page(&state, &operator, "Wallet", e),
    }
}

/// The credit adjustment form.
#[derive(Debug, Deserialize)]
pub struct AdjustForm {
    amount_credits: String,
    reason: String,
    idempotency_key: Option<String>,
}

/// Grants or removes credits through [`crate::admin::adjust`].
#[tracing::instrument(skip_all)]
pub async fn adjust(
    State(state): State<AppState>,
    Path(address): Path<String>,
    CsrfForm(operator, form): CsrfForm<AdjustForm>,
) -> Response {
    let wallet = match parse_wallet(&address) {
        Ok(w) => w,
        Err(e) => return error_page(&state, &operator, "Wallet", e),
    };
    let result = async {
        let request = CreditAdjustmentRequest {
            amount_credits: whole("amount_credits", &form.amount_credits)?,
            reason: form.reason.clone(),
            idempotency_key: form.idempotency_key.clone().filter(|k| !k.is_empty()),
        };
        let (_, response) = crate::admin::adjust(&state, &wallet, &request).await?;
        Ok(if response.idempotent_replay {
            format!(
                "Already posted (the same form was sent before): balance {} credits.",
                response.balance_credits
            )
        } else {
            format!(
                "Posted {} credits: balance {} credits.",
                response.entry.amount_credits, response.balance_credits
            )
        })
    }
    .await;
    let failed = result.is_err();
    let notice = Some(outcome(&result));
    let response = wallet_page(&state, &operator, &wallet, &ListQuery::default(), notice).await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

/// The review queue: submissions with their proof and verifier outcome.
#[tracing::instrument(skip_all)]
pub async fn jobs(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    jobs_page(&state, &operator, &q, None).await
}

async fn jobs_page(
    state: &AppState,
    operator: &Operator,
    q: &ListQuery,
    notice: Option<Markup>,
) -> Response {
    let title = "Review queue";
    let status = match q.status.as_deref().unwrap_or("submitted") {
        "all" => None,
        s @ ("submitted" | "approved" | "rejected") => Some(s.to_owned()),
        _ => {
            let e = ApiError::invalid_field(
                &["query", "status"],
                "value_error",
                "status is submitted, approved, rejected or all",
            );
            return error_page(state, operator, title, e);
        }
    };
    let shown = status.clone().unwrap_or_else(|| "all".to_owned());
    let (limit, offset) = q.limit_offset();
    let rows = match crate::jobs::admin::submissions(state, status, None, limit, offset).await {
        Ok(r) => q.paged(r),
        Err(e) => return error_page(state, operator, title, e),
    };
    let base = &state.config.console_path;
    let list = format!("{base}/jobs");
    let token = &operator.session.csrf;
    let body = html! {
        main {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            (views::filters(&list, &["submitted", "approved", "rejected", "all"], &shown))
            @for s in &rows.rows {
                article.submission id={"submission-" (s.submission_id)} {
                    h2 { "Submission " code { (s.submission_id) } " · " span.status { (s.status) } }
                    dl {
                        dt { "Job" } dd { code { (s.job_id) } }
                        dt { "Wallet" } dd { a href={(base) "/wallets/" (s.wallet_address)} { code { (s.wallet_address) } } }
                        dt { "Submitted" } dd { (s.created_at) }
                        dt { "Proof" } dd { pre.proof { (s.proof_text) } }
                        @for p in &s.social_posts {
                            dt { "Post (" (p.platform) ")" } dd.post-url { (external_link(&p.post_url)) }
                            dt { "Tracked link used" } dd.tracked-link { (external_link(&p.target_url_used)) }
                            dt { "Message" } dd { (p.message_text) }
                        }
                        @if let Some(w) = &s.workflow_id { dt { "Workflow" } dd { code { (w) } } }
                        dt { "Verifier" }
                        dd.verification {
                            (s.verification.status)
                            @if let Some(m) = &s.verification.method { " · " (m) }
                            " · " (s.verification.attempts) " attempts"
                            @if let Some(r) = &s.verification.reason { br; span.evidence { (r) } }
                        }
                    }
                    @if s.status == "submitted" {
                        div.actions {
                            form.inline method="post" action={(list) "/submissions/" (s.submission_id) "/approve"} {
                                (views::csrf(token))
                                input type="text" name="reason" placeholder="Note (optional)" maxlength="1000";
                                button type="submit" class="approve" { "Approve and pay" }
                            }
                            form.inline method="post" action={(list) "/submissions/" (s.submission_id) "/reject"} {
                                (views::csrf(token))
                                input type="text" name="reason" placeholder="Reason (required)" required maxlength="1000";
                                button type="submit" class="reject" { "Reject" }
                            }
                        }
                    }
                }
            }
            @if rows.rows.is_empty() { p.empty { "No submission here." } }
            (views::pager(&views::href(&list, &[("status", &shown)]), rows.number, rows.more))
            section {
                h2 { "Create a job" }
                form.stack method="post" action=(list) id="job-form" {
                    (views::csrf(token))
                    label for="job_type" { "Kind" }
                    select id="job_type" name="job_type" {
                        option value="social_share" { "social_share (post a tracked link; verified automatically)" }
                        option value="workflow_creation" { "workflow_creation (build a workflow)" }
                        option value="general" { "general (reviewed by an operator)" }
                    }
                    label for="title" { "Title" } input type="text" id="title" name="title" required maxlength="200";
                    label for="public_description" { "Public description" } input type="text" id="public_description" name="public_description" required maxlength="5000";
                    label for="private_instructions" { "Private instructions (shown to the holder of a reservation)" }
                    textarea id="private_instructions" name="private_instructions" rows="3" required {}
                    label for="reward_credits" { "Reward (credits)" } input type="number" id="reward_credits" name="reward_credits" required min="1";
                    label for="max_completions" { "Completions" } input type="number" id="max_completions" name="max_completions" value="1" min="1";
                    label for="target_url" { "Target URL (social_share)" } input type="url" id="target_url" name="target_url";
                    label for="platform" { "Platform (social_share)" } input type="text" id="platform" name="platform";
                    label for="on_reject" { "On rejection" }
                    select id="on_reject" name="on_reject" { option value="reopen" { "reopen" } option value="close" { "close" } }
                    button type="submit" { "Create job" }
                }
            }
        }
    };
    page(state, operator, title, body)
}

/// The job form.
#[derive(Debug, Deserialize)]
pub struct JobForm {
    job_type: String,
    title: String,
    public_description: String,
    private_instructions: String,
    reward_credits: String,
    #[serde(default)]
    max_completions: String,
    #[serde(default)]
    target_url: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    on_reject: String,
}

/// Creates a job through [`crate::jobs::admin::create`].
#[tracing::instrument(skip_all)]
pub async fn create_job(
    State(state): State<AppState>,
    CsrfForm(operator, form): CsrfForm<JobForm>,
) -> Response {
    let result = async {
        let request = agentpmt_protocol::jobs::JobCreateRequest {
            job_type: form.job_type.clone(),
            title: form.title.clone(),
            public_description: form.public_description.clone(),
            private_instructions: form.private_instructions.clone(),
            reward_credits: whole("reward_credits", &form.reward_credits)?,
            target_url: optional(&form.target_url),
            platform: optional(&form.platform),
            max_completions: match optional(&form.max_completions) {
                Some(n) => Some(whole("max_completions", &n)?),
                None => None,
            },
            on_reject: optional(&form.on_reject),
        };
        let job = crate::jobs::admin::create(&state, &request).await?;
        Ok(format!(
            "Job {} created ({}).",
            job.summary.job_id, job.summary.status
        ))
    }
    .await;
    let failed = result.is_err();
    let response = jobs_page(
        &state,
        &operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::UNPROCESSABLE_ENTITY)
}

/// An approve or reject form.
#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    reason: Option<String>,
}

async fn reviewed(
    state: &AppState,
    operator: &Operator,
    result: ApiResult<axum::Json<agentpmt_protocol::jobs::ReviewResponse>>,
) -> Response {
    let failed = result.is_err();
    let result = result.map(|r| {
        let s = &r.0.submission;
        if r.0.changed {
            format!("Submission {} is {}.", s.submission_id, s.status)
        } else {
            format!(
                "Submission {} was already {}: nothing changed.",
                s.submission_id, s.status
            )
        }
    });
    let response = jobs_page(
        state,
        operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::CONFLICT)
}

fn reason_of(form: &ReviewForm) -> Option<&str> {
    form.reason.as_deref().filter(|r| !r.trim().is_empty())
}

/// Approves through [`crate::jobs::admin::approve`] (pays once).
#[tracing::instrument(skip_all)]
pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, form): CsrfForm<ReviewForm>,
) -> Response {
    let result = crate::jobs::admin::approve(&state, &id, reason_of(&form)).await;
    reviewed(&state, &operator, result).await
}

/// Rejects through [`crate::jobs::admin::reject`].
#[tracing::instrument(skip_all)]
pub async fn reject(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, form): CsrfForm<ReviewForm>,
) -> Response {
    let result = crate::jobs::admin::reject(&state, &id, reason_of(&form)).await;
    reviewed(&state, &operator, result).await
}

#[derive(Debug, sqlx::FromRow)]
struct PurchaseRow {
    purchase_id: String,
    wallet_address: String,
    method: String,
    settlement: String,
    chain_id: i64,
    credits: i64,
    transaction_hash: Option<String>,
    status: String,
    created_at_ms: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct ToolPaymentRow {
    usage_id: String,
    product_slug: String,
    action_slug: String,
    payer_address: Option<String>,
    price_credits: i64,
    network: Option<String>,
    transaction_hash: Option<String>,
    status: String,
    created_at_ms: i64,
}

/// The block explorer page of a transaction on the well-known chains.
fn explorer(chain_id: i64, tx: &str) -> Option<String> {
    let host = match chain_id {
        1 => "https://etherscan.io",
        11155111 => "https://sepolia.etherscan.io",
        8453 => "https://basescan.org",
        84532 => "https://sepolia.basescan.org",
        10 => "https://optimistic.etherscan.io",
        42161 => "https://arbiscan.io",
        137 => "https://polygonscan.com",
        _ => return None,
    };
    let hex = tx.strip_prefix("0x")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{host}/tx/{tx}"))
}

fn tx_cell(chain_id: Option<i64>, tx: Option<&str>) -> Markup {
    html! {
        @match (tx, chain_id.and_then(|c| tx.and_then(|t| explorer(c, t)))) {
            (Some(_), Some(url)) => { (external_link(&url)) },
            (Some(t), None) => { code { (t) } },
            (None, _) => { "—" },
        }
    }
}

fn chain_of(network: Option<&str>) -> Option<i64> {
    network?.strip_prefix("eip155:")?.parse().ok()
}

/// Purchases and x402 tool payments, newest first.
#[tracing::instrument(skip_all)]
pub async fn payments(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let title = "Payments";
    let (limit, offset) = q.limit_offset();
    let data = async {
        let mut conn = state.db.read().await?;
        let purchases = sql_fetch_all!(
            conn.conn(),
            PurchaseRow,
            "SELECT purchase_id, wallet_address, method, settlement, chain_id, credits, \
             transaction_hash, status, created_at_ms FROM credit_purchases \
             ORDER BY created_at_ms DESC, purchase_id LIMIT $1 OFFSET $2",
            limit,
            offset
        )?;
        let tool_payments = sql_fetch_all!(
            conn.conn(),
            ToolPaymentRow,
            "SELECT usage_id, product_slug, action_slug, payer_address, price_credits, network, \
             transaction_hash, status, created_at_ms FROM tool_usage WHERE mode = 'x402' \
             ORDER BY created_at_ms DESC, usage_id LIMIT $1 OFFSET $2",
            limit,
            offset
        )?;
        ApiResult::Ok((purchases, tool_payments))
    }
    .await;
    let (purchases, tool_payments) = match data {
        Ok((purchases, tool_payments)) => (q.paged(purchases), q.paged(tool_payments)),
        Err(e) => return error_page(&state, &operator, title, e),
    };
    let base = &state.config.console_path;
    let body = html! {
        main {
            h1 { (title) }
            h2 { "Credit purchases" }
            (views::table("purchases", &["When", "Wallet", "Credits", "Method", "Network", "Status", "Transaction"], &purchases.rows, "No purchase.", |p| html! {
                tr {
                    td { (time(p.created_at_ms)) br; small { (p.purchase_id) } }
                    td { a href={(base) "/wallets/" (p.wallet_address)} { code { (p.wallet_address) } } }
                    td { (credits(p.credits)) }
                    td { (p.method) " / " (p.settlement) }
                    td { "eip155:" (p.chain_id) }
                    td.status { (p.status) }
                    td { (tx_cell(Some(p.chain_id), p.transaction_hash.as_deref())) }
                }
            }))
            h2 { "x402 tool payments" }
            (views::table("tool-payments", &["When", "Tool", "Payer", "Price", "Network", "Status", "Transaction"],
                &tool_payments.rows, "No x402 tool payment.", |t| html! {
                tr {
                    td { (time(t.created_at_ms)) br; small { (t.usage_id) } }
                    td { code { (t.product_slug) "/" (t.action_slug) } }
                    td { code { (t.payer_address.as_deref().unwrap_or("")) } }
                    td { (credits(t.price_credits)) }
                    td { (t.network.as_deref().unwrap_or("")) }
                    td.status { (t.status) }
                    td { (tx_cell(chain_of(t.network.as_deref()), t.transaction_hash.as_deref())) }
                }
            }))
            (views::pager(&format!("{base}/payments"), q.page(), purchases.more || tool_payments.more))
        }
    };
    page(&state, &operator, title, body)
}

/// Help tickets, newest first: open ones (the default), closed ones or all, with buttons
/// closing or reopening each.
#[tracing::instrument(skip_all)]
pub async fn help_tickets(
    operator: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Response {
    tickets_page(&state, &operator, &q, None).await
}

async fn tickets_page(
    state: &AppState,
    operator: &Operator,
    q: &ListQuery,
    notice: Option<Markup>,
) -> Response {
    use crate::admin::TicketFilter;
    let title = "Help tickets";
    let shown = q.status.as_deref().unwrap_or("open");
    let filter = match shown {
        "open" => TicketFilter::Open,
        "closed" => TicketFilter::Closed,
        "all" => TicketFilter::All,
        _ => {
            let e = ApiError::invalid_field(
                &["query", "status"],
                "value_error",
                "status is open, closed or all",
            );
            return error_page(state, operator, title, e);
        }
    };
    let (limit, offset) = q.limit_offset();
    let tickets = match crate::admin::tickets(state, filter, limit, offset).await {
        Ok(t) => q.paged(t),
        Err(e) => return error_page(state, operator, title, e),
    };
    let base = &state.config.console_path;
    let list = format!("{base}/help-tickets");
    let token = &operator.session.csrf;
    let body = html! {
        main {
            h1 { (title) }
            @if let Some(n) = notice { (n) }
            (views::filters(&list, &["open", "closed", "all"], shown))
            (views::paged_table(
                "tickets",
                &["When", "Message", "Error code", "Request", "Source", "Status"],
                &tickets,
                "No ticket.",
                &views::href(&list, &[("status", shown)]),
                |t| {
                    let (to, label) = if t.status == "open" { ("close", "Close") } else { ("reopen", "Reopen") };
                    html! {
                        tr id={"ticket-" (t.ticket_id)} {
                            td { (t.created_at) br; small { (t.ticket_id) } }
                            td { (t.message) }
                            td { code { (t.error_code.as_deref().unwrap_or("")) } }
                            td { code { (t.request_id.as_deref().unwrap_or("")) } }
                            td { (t.source) }
                            td.status {
                                (t.status)
                                @if let Some(at) = &t.closed_at { br; small { (at) } }
                                " " (views::button_form(&format!("{list}/{}/{to}", t.ticket_id), token, to, &t.ticket_id, label))
                            }
                        }
                    }
                },
            ))
        }
    };
    page(state, operator, title, body)
}

async fn ticket_set_open(state: &AppState, operator: &Operator, id: &str, open: bool) -> Response {
    let result = crate::admin::set_ticket_open(state, id, open)
        .await
        .map(|r| match r.changed {
            true => format!("Ticket {} is {}.", r.ticket.ticket_id, r.ticket.status),
            false => format!(
                "Ticket {} was already {}: nothing changed.",
                r.ticket.ticket_id, r.ticket.status
            ),
        });
    let failed = result.is_err();
    let response = tickets_page(
        state,
        operator,
        &ListQuery::default(),
        Some(outcome(&result)),
    )
    .await;
    failed_with(response, failed, StatusCode::NOT_FOUND)
}

/// Closes a ticket (handled) through [`crate::admin::set_ticket_open`].
#[tracing::instrument(skip_all)]
pub async fn close_ticket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, _): CsrfForm<super::Empty>,
) -> Response {
    ticket_set_open(&state, &operator, &id, false).await
}

/// Reopens a closed ticket through [`crate::admin::set_ticket_open`].
#[tracing::instrument(skip_all)]
pub async fn reopen_ticket(
    State(state): State<AppState>,
    Path(id): Path<String>,
    CsrfForm(operator, _): CsrfForm<super::Empty>,
) -> Response {
    ticket_set_open(&state, &operator, &id, true).await
}
