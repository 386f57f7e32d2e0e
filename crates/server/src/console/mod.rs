//! The operator console: server-rendered HTML pages (maud) for the people who run the
//! marketplace, served under `--console-path` (default `/console`) when an admin token is
//! configured, and absent (404) otherwise.
//!
//! Reading works without JavaScript, and the pages carry none: the Content-Security-Policy
//! forbids every script, framing (`frame-ancestors 'none'`) and foreign form targets, and
//! every page is `Cache-Control: no-store`. Sign-in, sessions and CSRF: [`session`].
//! Every action calls the function the operator API's handler calls (`admin::adjust`,
//! `jobs::admin::approve`, `accounts::revoke`, `tools::put_product`, ...): the console has
//! no ledger or job logic of its own.
//!
//! Pages (relative to the console path):
//! - `GET /login`, `POST /login`, `POST /logout` — sign-in with the admin token, sign-out.
//! - `GET /` — overview: credits outstanding, purchases and tool revenue by day (SVG),
//!   settlements pending, submissions awaiting review, help tickets, payment networks.
//! - `GET /wallets?q=&page=`, `GET /wallets/{address}?page=`,
//!   `POST /wallets/{address}/credits` — search, balance and ledger, grant or remove credits.
//! - `GET /jobs?status=&page=`, `POST /jobs`, `POST /jobs/submissions/{id}/approve|reject` —
//!   the review queue with each submission's proof and verifier outcome; creating jobs.
//! - `GET /tools?group_by=&days=&page=`, `POST /tools` — products and actions, vendors, usage
//!   per product / action / wallet; create or replace a product ([`tools`]).
//! - `POST /tools/{slug}/status`, `POST /tools/{slug}/actions/{action}` — edit in place: a
//!   product's status; an action's price, x402 switch, status and schema.
//! - `POST /vendors` — create or update a vendor (its secret is never shown).
//! - `GET /keys?page=`, `POST /accounts`, `POST /api-keys`, `POST /budgets` (keys are shown
//!   once), `POST /api-keys/{id}/revoke`, `POST /budgets/{id}/revoke` ([`keys`]).
//! - `GET /workflows?q=&page=`, `POST /workflows`, `POST /workflows/{id}/publish` — drafts
//!   and published workflows; drafting and publishing ([`workflows`]).
//! - `GET /schedules?q=&page=`, `POST /schedules`, `POST /schedules/{id}/pause|resume` —
//!   BYO-agent workflow schedules of budgets.
//! - `GET /payments?page=` — purchases and x402 tool payments.
//! - `GET /help-tickets?status=open|closed|all&page=`, `POST /help-tickets/{id}/close|reopen`
//!   — agents' help tickets; closing a handled one, reopening it.

mod keys;
mod pages;
pub mod session;
mod tools;
mod views;
mod workflows;

use crate::ratelimit::ClientIp;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use session::{Session, SESSION_COOKIE, SESSION_TTL, SIGN_IN_COOKIE};
use std::time::Duration;

/// The Content-Security-Policy of every console response: no script at all, styles and
/// images from this server only, forms posting back here only, never in a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Rows per page of every list.
pub const PAGE_SIZE: i64 = 50;

/// The console's routes under `base` (the console path), with its security headers; empty
/// when the operator API is disabled (no admin token).
pub fn router(state: &AppState) -> Router<AppState> {
    if state.admin_token_digest.is_none() {
        return Router::new();
    }
    let base = state.config.console_path.as_str();
    let at = |p: &str| format!("{base}{p}");
    Router::new()
        .route(base, get(pages::overview))
        .route(&at("/"), get(pages::overview))
        .route(&at("/console.css"), get(stylesheet))
        .route(&at("/login"), get(sign_in_form).post(sign_in))
        .route(&at("/logout"), post(sign_out))
        .route(&at("/wallets"), get(pages::wallets))
        .route(&at("/wallets/{address}"), get(pages::wallet))
        .route(&at("/wallets/{address}/credits"), post(pages::adjust))
        .route(&at("/jobs"), get(pages::jobs).post(pages::create_job))
        .route(&at("/jobs/submissions/{id}/approve"), post(pages::approve))
        .route(&at("/jobs/submissions/{id}/reject"), post(pages::reject))
        .route(&at("/tools"), get(tools::tools).post(tools::put_tool))
        .route(&at("/tools/{slug}/status"), post(tools::set_product_status))
        .route(
            &at("/tools/{slug}/actions/{action}"),
            post(tools::edit_action),
        )
        .route(&at("/vendors"), post(tools::put_vendor))
        .route(&at("/keys"), get(keys::keys))
        .route(&at("/accounts"), post(keys::create_account))
        .route(&at("/api-keys"), post(keys::create_api_key))
        .route(&at("/api-keys/{id}/revoke"), post(keys::revoke_key))
        .route(&at("/budgets"), post(keys::create_budget))
        .route(&at("/budgets/{id}/revoke"), post(keys::revoke_budget))
        .route(
            &at("/workflows"),
            get(workflows::workflows).post(workflows::create_workflow),
        )
        .route(
            &at("/workflows/{id}/publish"),
            post(workflows::publish_workflow),
        )
        .route(
            &at("/schedules"),
            get(workflows::schedules).post(workflows::create_schedule),
        )
        .route(
            &at("/schedules/{id}/pause"),
            post(workflows::pause_schedule),
        )
        .route(
            &at("/schedules/{id}/resume"),
            post(workflows::resume_schedule),
        )
        .route(&at("/payments"), get(pages::payments))
        .route(&at("/help-tickets"), get(pages::help_tickets))
        .route(&at("/help-tickets/{id}/close"), post(pages::close_ticket))
        .route(&at("/help-tickets/{id}/reopen"), post(pages::reopen_ticket))
        .layer(axum::middleware::map_response(security_headers))
}

/// Adds the console's security headers to a response.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
}

/// Whether cookies get `Secure` (the server is reached over https).
fn secure(state: &AppState) -> bool {
    state.public_url.starts_with("https://")
}

/// A signed-in operator (the request carried a live session cookie).
#[derive(Debug, Clone)]
pub struct Operator {
    pub session: Session,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let found =
            session::cookie(&parts.headers, SESSION_COOKIE).and_then(|id| state.console.find(id));
        match found {
            Some(session) => Ok(Operator { session }),
            None if parts.method == Method::GET => {
                Err(Redirect::to(&format!("{}/login", state.config.console_path)).into_response())
            }
            None => Err(message_page(
                state,
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "You are not signed in (or your session ended). Sign in again.",
            )),
        }
    }
}

/// A form posted by a signed-in operator whose CSRF token matched: `T` is the form's other
/// fields. Anything else is refused before the handler runs.
#[derive(Debug)]
pub struct CsrfForm<T>(pub Operator, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let operator = Operator::from_request_parts(&mut parts, state).await?;
        let fields = form_fields(Request::from_parts(parts, body), state).await?;
        if !form_csrf(&fields).is_some_and(|t| operator.session.csrf_ok(t)) {
            return Err(csrf_refused(state));
        }
        let form = serde_urlencoded::from_bytes::<T>(&fields.0).map_err(|e| {
            message_page(
                state,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid form",
                &format!("The form could not be read: {e}"),
            )
        })?;
        Ok(CsrfForm(operator, form))
    }
}

/// The raw body of a urlencoded form (at most the server's body limit).
struct FormBody(Bytes);

async fn form_fields(req: Request, state: &AppState) -> Result<FormBody, Response> {
    let urlencoded = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !urlencoded {
        return Err(message_page(
            state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Invalid form",
            "Forms are sent as application/x-www-form-urlencoded.",
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|_| {
        message_page(
            state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Invalid form",
            "The form is too large.",
        )
    })?;
    Ok(FormBody(bytes))
}

fn form_csrf(fields: &FormBody) -> Option<&str> {
    // The token is hex, so it never needs percent-decoding.
    std::str::from_utf8(&fields.0)
        .ok()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "csrf")
        .map(|(_, v)| v)
}

fn csrf_refused(state: &AppState) -> Response {
    message_page(
        state,
        StatusCode::FORBIDDEN,
        "Refused",
        "This form's security token is missing or wrong (CSRF check). Reload the page and try again.",
    )
}

/// A page of its own for one message (errors, refusals), without the navigation.
fn message_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    let base = &state.config.console_path;
    let body = html! {
        main.narrow {
            h1 { (title) }
            p.notice.error { (message) }
            p { a href={(base) "/login"} { "Sign in" } " · " a href=(base) { "Overview" } }
        }
    };
    (status, document(base, title, None, body)).into_response()
}

/// The HTML document around `content`; with a session, the navigation and sign-out button.
pub fn document(base: &str, title: &str, session: Option<&Session>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · Operator console" }
                link rel="stylesheet" href={(base) "/console.css"};
            }
            body {
                @if let Some(session) = session {
                    header.top {
                        span.brand { "Operator console" }
                        nav {
                            a href=(base) { "Overview" }
                            a href={(base) "/wallets"} { "Wallets" }
                            a href={(base) "/payments"} { "Payments" }
                            a href={(base) "/tools"} { "Tools" }
                            a href={(base) "/jobs"} { "Review queue" }
                            a href={(base) "/keys"} { "Keys & budgets" }
                            a href={(base) "/workflows"} { "Workflows" }
                            a href={(base) "/schedules"} { "Schedules" }
                            a href={(base) "/help-tickets"} { "Help tickets" }
                        }
                        form.inline method="post" action={(base) "/logout"} {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                (content)
            }
        }
    }
}

/// A full page for a signed-in operator.
pub fn page(state: &AppState, operator: &Operator, title: &str, content: Markup) -> Response {
    document(
        &state.config.console_path,
        title,
        Some(&operator.session),
        content,
    )
    .into_response()
}

/// The page of `title` when it could not be shown: the operator API's error, with its status.
pub fn error_page(
    state: &AppState,
    operator: &Operator,
    title: &str,
    e: crate::error::ApiError,
) -> Response {
    let status = StatusCode::from_u16(e.code().status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = html! { main { h1 { (title) } (views::outcome(&Err(e))) } };
    (status, page(state, operator, title, body)).into_response()
}

/// `response` (a page re-rendered after an action), answered with `status` when the action
/// failed but the page itself rendered.
pub fn failed_with(mut response: Response, failed: bool, status: StatusCode) -> Response {
    if failed && response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response
}

fn sign_in_page(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let base = &state.config.console_path;
    let token = session::random_token();
    let body = html! {
        main.narrow {
            h1 { "Operator console" }
            p { "Sign in with this server's admin token." }
            @if let Some(error) = error {
                p.notice.error id="sign-in-error" { (error) }
            }
            form method="post" action={(base) "/login"} {
                input type="hidden" name="csrf" value=(token);
                label for="token" { "Admin token" }
                input type="password" id="token" name="token" autocomplete="current-password" required;
                button type="submit" id="sign-in" { "Sign in" }
            }
        }
    };
    let cookie = session::set_cookie(
        SIGN_IN_COOKIE,
        &token,
        base,
        Duration::from_secs(3600),
        secure(state),
    );
    (
        status,
        [(header::SET_COOKIE, cookie)],
        document(base, "Sign in", None, body),
    )
        .into_response()
}

async fn sign_in_form(State(state): State<AppState>) -> Response {
    sign_in_page(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignIn { token: <redacted> }")
    }
}

/// Signs in: the double-submit token must match, the address must have attempts left, and
/// the token must be the admin token.
#[tracing::instrument(skip_all)]
async fn sign_in(State(state): State<AppState>, ClientIp(ip): ClientIp, req: Request) -> Response {
    let expected_csrf = session::cookie(req.headers(), SIGN_IN_COOKIE).map(str::to_owned);
    let fields = match form_fields(req, &state).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let csrf_ok = match (form_csrf(&fields), expected_csrf.as_deref()) {
        (Some(presented), Some(expected)) => {
            use subtle::ConstantTimeEq;
            bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
        }
        _ => false,
    };
    if !csrf_ok {
        return csrf_refused(&state);
    }
    if let Err(wait) = state.console.take_sign_in(ip) {
        tracing::warn!(client = %ip, "console sign-in attempts over the limit");
        let mut response = sign_in_page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many sign-in attempts from your address. Wait {wait} s and try again."
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let form: SignIn = serde_urlencoded::from_bytes(&fields.0).unwrap_or(SignIn {
        token: String::new(),
    });
    let matches = state
        .admin_token_digest
        .as_ref()
        .is_some_and(|expected| crate::admin::token_matches(expected, form.token.trim()));
    if !matches {
        tracing::warn!(client = %ip, "console sign-in with a wrong token");
        return sign_in_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
        );
    }
    let (id, _) = state.console.create();
    tracing::info!(client = %ip, "console sign-in");
    let base = &state.config.console_path;
    let cookie = session::set_cookie(SESSION_COOKIE, &id, base, SESSION_TTL, secure(&state));
    let clear = session::set_cookie(SIGN_IN_COOKIE, "", base, Duration::ZERO, secure(&state));
    let mut response = Redirect::to(base).into_response();
    let h = response.headers_mut();
    for c in [cookie, clear] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

/// A form with no field but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct Empty {}

/// Signs out: the session is forgotten on the server and the cookie cleared.
#[tracing::instrument(skip_all)]
async fn sign_out(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    CsrfForm(_operator, Empty {}): CsrfForm<Empty>,
) -> Response {
    if let Some(id) = session::cookie(&headers, SESSION_COOKIE) {
        state.console.remove(id);
    }
    let base = &state.config.console_path;
    let clear = session::set_cookie(SESSION_COOKIE, "", base, Duration::ZERO, secure(&state));
    let mut response = Redirect::to(&format!("{base}/login")).into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
