//! The one error type of the HTTP layer and the one place its JSON body is built.
//!
//! Every error response has the envelope
//! `{success: false, error, message, error_code, code, detail, request_id, help_url,
//! help_doc, details: {checklist, ...}}`; `detail` repeats `message` as a string, except
//! for 422 where it is the `[{loc, msg, type}]` list. A 429 adds
//! `rate_limit: {limit, window_seconds, retry_after_seconds}` and a `Retry-After` header. 5xx bodies are opaque: the cause
//! goes to the log under the same `request_id`.

use agentpmt_protocol::errors::status_label;
use agentpmt_protocol::wire::{RateLimitInfo, ValidationIssue};
use agentpmt_protocol::ErrorCode;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Per-request facts the error body needs, set by the request-context middleware.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Correlation id (from `x-request-id` or generated).
    pub request_id: Arc<str>,
    /// Absolute base URL of this server, for `help_url` and `help_doc`.
    pub public_url: Arc<str>,
}

tokio::task_local! {
    pub(crate) static REQUEST_CONTEXT: RequestContext;
}

/// The current request's context, if running inside a request.
pub fn current_context() -> Option<RequestContext> {
    REQUEST_CONTEXT.try_with(Clone::clone).ok()
}

/// An error answered to the client.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    details: Map<String, Value>,
    issues: Option<Vec<ValidationIssue>>,
    source: Option<anyhow::Error>,
    /// Extra top-level body fields and response headers (rare; boxed to keep errors small).
    extras: Option<Box<Extras>>,
}

/// Extra top-level body fields (e.g. the x402 challenge beside the envelope) and response
/// headers (e.g. `PAYMENT-RESPONSE`).
#[derive(Debug, Default)]
struct Extras {
    /// The limit a 429 reports (`rate_limit` in the body, `Retry-After`).
    rate_limit: Option<RateLimitInfo>,
    fields: Map<String, Value>,
    headers: Vec<(axum::http::HeaderName, HeaderValue)>,
    /// Replaces the envelope's `error` (the status label), e.g. the schedule 409 enums.
    error_label: Option<&'static str>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `code` and a human-readable `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Map::new(),
            issues: None,
            source: None,
            extras: None,
        }
    }

    /// Adds a top-level body field; envelope fields keep their values.
    pub fn with_field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extras
            .get_or_insert_with(Default::default)
            .fields
            .insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header (ignored when the value is not a valid header value).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.extras
                .get_or_insert_with(Default::default)
                .headers
                .push((axum::http::HeaderName::from_static(name), value));
        }
        self
    }

    /// A 429 `RATE_LIMITED` with the `rate_limit` object and a `Retry-After` header.
    pub fn rate_limited(message: impl Into<String>, rate_limit: RateLimitInfo) -> Self {
        let mut err = ApiError::new(ErrorCode::RATE_LIMITED, message);
        err.extras.get_or_insert_with(Default::default).rate_limit = Some(rate_limit);
        err
    }

    /// A 503 `SERVICE_UNAVAILABLE` whose cause is logged, not sent.
    pub fn unavailable(message: impl Into<String>, source: impl Into<anyhow::Error>) -> Self {
        let mut err = ApiError::new(ErrorCode::SERVICE_UNAVAILABLE, message);
        err.source = Some(source.into());
        err
    }

    /// The `rate_limit` of a 429.
    pub fn rate_limit(&self) -> Option<RateLimitInfo> {
        self.extras.as_ref().and_then(|e| e.rate_limit)
    }

    /// Adds a field to `details`.
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A 422 with the given issues.
    pub fn validation(issues: Vec<ValidationIssue>) -> Self {
        let message = match issues.first() {
            Some(first) if issues.len() == 1 => format!("Validation failed: {}", first.msg),
            Some(_) => format!("Validation failed on {} fields", issues.len()),
            None => "Validation failed".to_owned(),
        };
        let mut err = ApiError::new(ErrorCode::VALIDATION_ERROR, message);
        err.issues = Some(issues);
        err
    }

    /// A 422 for one field.
    pub fn invalid_field(loc: &[&str], kind: &str, msg: impl Into<String>) -> Self {
        ApiError::validation(vec![ValidationIssue {
            loc: loc.iter().map(|s| (*s).into()).collect(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }])
    }

    /// A 500 whose cause is logged, not sent.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let mut err = ApiError::new(ErrorCode::INTERNAL_ERROR, "Internal server error");
        err.source = Some(source.into());
        err
    }

    /// Sets the envelope's `error` field to `label` instead of the HTTP status label (the
    /// schedule endpoints publish enums there, e.g. `claim_mismatch`).
    pub fn with_error_label(mut self, label: &'static str) -> Self {
        self.extras.get_or_insert_with(Default::default).error_label = Some(label);
        self
    }

    /// The same error under another code (and so another status); a 422's `detail[]` list
    /// is kept.
    pub fn recode(mut self, code: ErrorCode) -> Self {
        self.code = code;
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The 422 issues, if any.
    pub fn validation_issues(&self) -> &[ValidationIssue] {
        self.issues.as_deref().unwrap_or_default()
    }

    /// Removes a field from `details` (e.g. a diagnostic that would echo a secret).
    pub fn without_detail(mut self, key: &str) -> Self {
        self.details.remove(key);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `details` fields set on this error (without the checklist the body adds).
    pub fn details(&self) -> &Map<String, Value> {
        &self.details
    }

    /// Logs the cause of a 5xx (whose body stays opaque), as answering it over HTTP would.
    pub fn log_cause(&self) {
        if let Some(source) = &self.source {
            tracing::error!(error_code = self.code.as_str(), error = ?source, "request failed");
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            let mut e = ApiError::new(
                ErrorCode::SERVICE_UNAVAILABLE,
                "The database is unavailable",
            );
            e.source = Some(err.into());
            e
        } else {
            ApiError::internal(err)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let ctx = current_context();
        let (request_id, public_url) = match &ctx {
            Some(c) => (c.request_id.to_string(), c.public_url.to_string()),
            None => (String::new(), String::new()),
        };
        if status >= 500 {
            match &self.source {
                Some(source) => tracing::error!(
                    request_id = %request_id, error_code = %self.code, error = format!("{source:#}"),
                    "request failed"
                ),
                None => {
                    tracing::warn!(request_id = %request_id, error_code = %self.code, "request failed")
                }
            }
        }
        let mut details = self.details;
        details
            .entry("checklist")
            .or_insert_with(|| json!(self.code.checklist()));
        details
            .entry("recovery")
            .or_insert_with(|| json!(self.code.recovery()));
        let detail = match self.issues {
            Some(issues) => serde_json::to_value(issues).unwrap_or(Value::Null),
            None => Value::String(self.message.clone()),
        };
        let envelope = json!({
            "success": false,
            "error": status_label(status),
            "message": self.message,
            "error_code": self.code.as_str(),
            "code": self.code.as_str(),
            "detail": detail,
            "request_id": request_id,
            "help_url": format!("{public_url}/api/external/agent-help"),
            "help_doc": format!("{public_url}/docs"),
            "details": details,
        });
        let extras = self.extras.map(|e| *e).unwrap_or_default();
        let mut body = extras.fields;
        if let Value::Object(envelope) = envelope {
            body.extend(envelope);
        }
        let mut body = Value::Object(body);
        if let Some(rate_limit) = extras.rate_limit {
            body["rate_limit"] = json!(rate_limit);
        }
        if let Some(label) = extras.error_label {
            body["error"] = json!(label);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        for (name, value) in extras.headers {
            response.headers_mut().insert(name, value);
        }
        if let Some(rate_limit) = extras.rate_limit {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(rate_limit.retry_after_seconds.max(1)),
            );
        }
        response
    }
}
