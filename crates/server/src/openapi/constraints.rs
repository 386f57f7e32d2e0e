//! What the handlers accept, written into the OpenAPI document: the bounds, patterns and
//! enumerations each handler checks, next to the schemas and parameters utoipa derived
//! from the Rust types (which know only the types). The figures are the handlers' own
//! constants, so the document and the checks cannot drift apart; a table entry naming a
//! schema, property or parameter the document does not have fails the test
//! `openapi::every_constraint_finds_its_place_in_the_document`.
//!
//! Signed bodies whose type holds only the payload fields get the signature envelope
//! (`SignedEnvelope`) joined to them with `allOf`, as the server reads both from one
//! object.

use crate::accounts::MAX_CAP_CREDITS;
use crate::admin::{MAX_ADJUSTMENT_CREDITS, MAX_TICKET_PAGE};
use crate::credits::purchase::MAX_PURCHASE_CREDITS;
use crate::jobs::admin::{MAX_COMPLETIONS, MAX_REWARD_CREDITS};
use crate::workflows::recurrence::{MAX_INTERVAL_SECS, MIN_INTERVAL_SECS};
use crate::{jobs, workflows};
use agentpmt_protocol::jobs::MAX_PROOF_TEXT_CHARS;
use agentpmt_protocol::wire::{CREDIT_PACK_SIZE, MAX_HELP_MESSAGE_CHARS};
use serde_json::{json, Map, Value};

/// No control character (Unicode `Cc`, what `char::is_control` refuses).
const NO_CONTROL: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";
/// No control character, and not only white space (the handler trims, then needs one).
const NO_CONTROL_NOT_BLANK: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$";
/// Not only white space (the handler trims, then needs one character).
const NOT_BLANK: &str = r"\S";
const WALLET: &str = r"^0[xX][0-9a-fA-F]{40}$";
/// One category or tag value.
const TAG: &str = r"^[^|,]*[^|,\s][^|,]*$";
/// The shape of a cron expression (the handler also checks each field's range).
const CRON: &str =
    r"^\s*(?:[0-9*/,?#LW-]|[A-Za-z]{3})+(?:\s+(?:[0-9*/,?#LW-]|[A-Za-z]{3})+){4,5}\s*$";
/// A catalog or workflow slug.
const SLUG: &str = r"^[a-z0-9-]{1,64}$";

/// What a handler accepts for one value.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Trimmed text of `min..=max` characters without control characters.
    Text(usize, usize),
    /// Trimmed text of 1..=max characters (control characters allowed).
    Prose(usize),
    /// An id taken as sent: 1..=max characters without control characters.
    Token(usize),
    /// At most `max` characters without control characters, empty allowed.
    Short(usize),
    Wallet,
    Slug,
    /// An integer in `min..=max`.
    Int(i64, i64),
    /// A non-zero integer of at most `max` in absolute value.
    NonZero(i64),
    /// A positive multiple of `step`, at most `max`.
    Multiple(i64, i64),
    Enum(&'static [&'static str]),
    /// An RFC 3339 time or a `YYYY-MM-DD` date.
    TimeOrDate,
    /// Up to 20 category or tag values, each trimmed 1-64 characters without `|` or `,`.
    Tags,
    /// An e-mail address of at most 254 characters.
    Email,
    /// A cron expression: 5 fields, or 6 with leading seconds.
    Cron,
    /// A transaction hash: 0x and 64 hex digits.
    TxHash,
}

impl Rule {
    /// The keywords to merge into the value's schema.
    fn keywords(self) -> Value {
        match self {
            Rule::Text(min, max) => json!({
                "minLength": min,
                "maxLength": max,
                "pattern": if min == 0 { NO_CONTROL } else { NO_CONTROL_NOT_BLANK },
            }),
            Rule::Prose(max) => json!({"minLength": 1, "maxLength": max, "pattern": NOT_BLANK}),
            Rule::Token(max) => json!({"minLength": 1, "maxLength": max, "pattern": NO_CONTROL}),
            Rule::Short(max) => json!({"maxLength": max, "pattern": NO_CONTROL}),
            Rule::Wallet => json!({"pattern": WALLET}),
            Rule::Slug => json!({"pattern": SLUG}),
            Rule::Int(min, max) => json!({"minimum": min, "maximum": max}),
            Rule::NonZero(max) => json!({
                "anyOf": [{"minimum": -max, "maximum": -1}, {"minimum": 1, "maximum": max}],
            }),
            Rule::Multiple(step, max) => {
                json!({"minimum": step, "maximum": max, "multipleOf": step})
            }
            Rule::Enum(values) => json!({"enum": values}),
            Rule::TimeOrDate => json!({"anyOf": [{"format": "date-time"}, {"format": "date"}]}),
            Rule::Tags => json!({
                "maxItems": 20,
                "items": {"type": "string", "maxLength": 64, "pattern": TAG},
            }),
            Rule::Email => json!({"format": "email", "maxLength": 254}),
            Rule::Cron => json!({"minLength": 1, "pattern": CRON}),
            Rule::TxHash => json!({"pattern": r"^0x[0-9a-fA-F]{64}$"}),
        }
    }

    fn is_integer(self) -> bool {
        matches!(self, Rule::Int(..) | Rule::NonZero(_) | Rule::Multiple(..))
    }
}

/// `(schema, property, rule)`.
const FIELDS: &[(&str, &str, Rule)] = &[
    ("SessionRequest", "wallet_address", Rule::Wallet),
    ("SignedEnvelope", "session_nonce", Rule::Token(256)),
    ("SignedEnvelope", "request_id", Rule::Token(128)),
    ("InvokeRequest", "session_nonce", Rule::Token(256)),
    ("InvokeRequest", "request_id", Rule::Token(128)),
    ("PurchaseRequest", "wallet_address", Rule::Wallet),
    ("PurchaseRequest", "payer_wallet_address", Rule::Wallet),
    (
        "PurchaseRequest",
        "credits",
        Rule::Multiple(CREDIT_PACK_SIZE, MAX_PURCHASE_CREDITS),
    ),
    (
        "PurchaseRequest",
        "payment_method",
        Rule::Enum(&["x402", "transfer"]),
    ),
    ("PurchaseRequest", "request_id", Rule::Token(128)),
    (
        "AgentHelpRequest",
        "message",
        Rule::Prose(MAX_HELP_MESSAGE_CHARS),
    ),
    ("AgentHelpRequest", "request_id", Rule::Short(128)),
    ("AgentHelpRequest", "error_code", Rule::Short(64)),
    (
        "JobListBody",
        "limit",
        Rule::Int(1, jobs::agent::MAX_LIST_LIMIT),
    ),
    (
        "JobListBody",
        "skip",
        Rule::Int(0, jobs::agent::MAX_LIST_SKIP),
    ),
    (
        "JobCompleteBody",
        "proof_text",
        Rule::Prose(MAX_PROOF_TEXT_CHARS),
    ),
    ("WorkflowInstanceBody", "instance_id", Rule::Token(128)),
    ("AccountCreateRequest", "name", Rule::Text(1, 200)),
    ("ApiKeyCreateRequest", "label", Rule::Text(0, 200)),
    ("BudgetCreateRequest", "name", Rule::Text(1, 200)),
    ("BudgetCreateRequest", "wallet_address", Rule::Wallet),
    (
        "BudgetCreateRequest",
        "cap_credits",
        Rule::Int(0, MAX_CAP_CREDITS),
    ),
    ("ScheduleCreateRequest", "name", Rule::Text(1, 200)),
    ("ScheduleCreateRequest", "prompt", Rule::Text(0, 20_000)),
    ("ScheduleUpdateRequest", "name", Rule::Text(1, 200)),
    ("ScheduleUpdateRequest", "prompt", Rule::Text(0, 20_000)),
    (
        "Recurrence",
        "interval_seconds",
        Rule::Int(MIN_INTERVAL_SECS, MAX_INTERVAL_SECS),
    ),
    ("ClaimRequest", "limit", Rule::Int(1, 100)),
    ("ClaimRequest", "lease_seconds", Rule::Int(1, 86_400)),
    ("ClaimRequest", "request_id", Rule::Token(128)),
    (
        "JobCreateRequest",
        "job_type",
        Rule::Enum(&["social_share", "workflow_creation", "general"]),
    ),
    ("JobCreateRequest", "title", Rule::Text(1, 200)),
    (
        "JobCreateRequest",
        "public_description",
        Rule::Text(1, 5000),
    ),
    (
        "JobCreateRequest",
        "private_instructions",
        Rule::Prose(20_000),
    ),
    (
        "JobCreateRequest",
        "reward_credits",
        Rule::Int(1, MAX_REWARD_CREDITS),
    ),
    (
        "JobCreateRequest",
        "max_completions",
        Rule::Int(1, MAX_COMPLETIONS),
    ),
    ("ReviewRequest", "reason", Rule::Text(1, 1000)),
    (
        "CreditAdjustmentRequest",
        "amount_credits",
        Rule::NonZero(MAX_ADJUSTMENT_CREDITS),
    ),
    ("CreditAdjustmentRequest", "reason", Rule::Prose(500)),
    (
        "CreditAdjustmentRequest",
        "idempotency_key",
        Rule::Token(128),
    ),
    ("WorkflowWriteRequest", "slug", Rule::Slug),
    ("WorkflowWriteRequest", "name", Rule::Text(1, 200)),
    ("WorkflowWriteRequest", "description", Rule::Text(0, 5000)),
    ("WorkflowWriteRequest", "publisher", Rule::Text(1, 200)),
    ("JobWorkflowWriteRequest", "name", Rule::Text(1, 200)),
    (
        "JobWorkflowWriteRequest",
        "description",
        Rule::Text(0, 5000),
    ),
    ("JobWorkflowUpdateRequest", "name", Rule::Text(1, 200)),
    (
        "JobWorkflowUpdateRequest",
        "description",
        Rule::Text(0, 5000),
    ),
    (
        "WorkflowWriteRequest",
        "visibility",
        Rule::Enum(&["public", "private"]),
    ),
    ("WorkflowWriteRequest", "categories", Rule::Tags),
    ("WorkflowWriteRequest", "industry_tags", Rule::Tags),
    ("Recurrence", "cron", Rule::Cron),
    ("PurchaseRequest", "email", Rule::Email),
    ("PurchaseRequest", "transaction_hash", Rule::TxHash),
    ("ProductSpecDoc", "slug", Rule::Slug),
    ("VendorSpecDoc", "slug", Rule::Slug),
];

/// `(path, method, parameter, rule)`.
const PARAMS: &[(&str, &str, &str, Rule)] = &[
    (
        "/api/admin/help-tickets",
        "get",
        "limit",
        Rule::Int(1, MAX_TICKET_PAGE),
    ),
    (
        "/api/admin/jobs/submissions",
        "get",
        "limit",
        Rule::Int(1, 200),
    ),
    (
        "/api/admin/jobs/submissions",
        "get",
        "status",
        Rule::Enum(&["submitted", "approved", "rejected", "all"]),
    ),
    (
        "/api/admin/jobs/submissions",
        "get",
        "verification_status",
        Rule::Enum(&[
            "queued",
            "running",
            "verified",
            "rejected",
            "transient_error",
            "needs_human",
        ]),
    ),
    (
        "/api/admin/tools/usage",
        "get",
        "group_by",
        Rule::Enum(&["product", "action", "wallet", "api_key", "budget"]),
    ),
    (
        "/api/admin/tools/usage",
        "get",
        "since",
        Rule::Int(0, i64::MAX),
    ),
    (
        "/api/admin/tools/usage/records",
        "get",
        "limit",
        Rule::Int(1, 1000),
    ),
    (
        "/api/admin/wallets/{address}",
        "get",
        "address",
        Rule::Wallet,
    ),
    (
        "/api/admin/wallets/{address}/credits",
        "post",
        "address",
        Rule::Wallet,
    ),
    ("/api/admin/tools/{slug}", "put", "slug", Rule::Slug),
    ("/api/admin/vendors/{slug}", "put", "slug", Rule::Slug),
    (
        "/api/external/tools",
        "get",
        "page",
        Rule::Int(1, 1_000_000),
    ),
    (
        "/api/external/tools",
        "get",
        "page_size",
        Rule::Int(1, agentpmt_protocol::tools::MAX_PAGE_SIZE),
    ),
    ("/api/external/tools", "get", "query", Rule::Short(200)),
    (
        "/api/external/workflows",
        "get",
        "limit",
        Rule::Int(1, workflows::MAX_LIST_LIMIT),
    ),
    (
        "/api/external/workflows",
        "get",
        "skip",
        Rule::Int(0, workflows::MAX_LIST_SKIP),
    ),
    ("/api/external/workflows", "get", "since", Rule::TimeOrDate),
    (
        "/api/external/workflow-schedules/due",
        "get",
        "limit",
        Rule::Int(1, 100),
    ),
];

/// Signed operations whose body schema holds only the payload: `(path, method)`.
const SIGNED_PAYLOADS: &[(&str, &str)] = &[
    ("/api/external/jobs/list", "post"),
    ("/api/external/jobs/{jobId}/complete", "post"),
    ("/api/external/workflows/active", "post"),
    ("/api/external/workflows/{workflowId}/start", "post"),
    ("/api/external/workflows/{workflowId}/end", "post"),
];

/// Operations that need more of a shared body schema than the schema says:
/// `(path, method, extra schema)`, joined to the body's schema with `allOf`.
const STRICTER_BODIES: &[(&str, &str, &str)] = &[
    // A rejection says why.
    (
        "/api/admin/jobs/submissions/{submissionId}/reject",
        "post",
        r#"{"required": ["reason"]}"#,
    ),
    // The product-level invoke names its action in the parameters.
    (
        "/api/external/tools/{productId}/invoke",
        "post",
        r#"{"required": ["parameters"], "properties": {"parameters": {"type": "object",
            "required": ["action"], "properties": {"action": {"type": "string",
            "minLength": 1}}}}}"#,
    ),
];

/// Writes the constraints into the document (JSON). Returns the table entries it could
/// not place (none, unless the table and the routes disagree).
pub fn document_constraints(doc: &mut Value) -> Vec<String> {
    let mut missing = Vec::new();
    for &(schema, property, rule) in FIELDS {
        let slot = doc
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/{property}"
            ))
            .and_then(Value::as_object_mut);
        match slot {
            Some(slot) => apply(slot, rule),
            None => missing.push(format!("schema {schema}.{property}")),
        }
    }
    for &(path, method, name, rule) in PARAMS {
        let slot = operation(doc, path, method)
            .and_then(|op| op.get_mut("parameters"))
            .and_then(Value::as_array_mut)
            .and_then(|params| {
                params
                    .iter_mut()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
            })
            .and_then(|p| p.get_mut("schema"))
            .and_then(Value::as_object_mut);
        match slot {
            Some(slot) => apply(slot, rule),
            None => missing.push(format!("parameter {method} {path} {name}")),
        }
    }
    for &(path, method) in SIGNED_PAYLOADS {
        let slot = operation(doc, path, method)
            .and_then(|op| op.pointer_mut("/requestBody/content/application~1json/schema"));
        match slot {
            Some(schema) => {
                let payload = schema.take();
                *schema = json!({
                    "allOf": [{"$ref": "#/components/schemas/SignedEnvelope"}, payload]
                });
            }
            None => missing.push(format!("signed body {method} {path}")),
        }
    }
    for &(path, method, extra) in STRICTER_BODIES {
        let slot = operation(doc, path, method)
            .and_then(|op| op.pointer_mut("/requestBody/content/application~1json/schema"));
        match (slot, serde_json::from_str::<Value>(extra)) {
            (Some(schema), Ok(extra)) => {
                let body = schema.take();
                *schema = json!({"allOf": [body, extra]});
            }
            _ => missing.push(format!("stricter body {method} {path}")),
        }
    }
    document_body_limit(doc);
    // Exactly one of `cron` and `interval_seconds` in a request's recurrence.
    match doc
        .pointer_mut("/components/schemas/Recurrence")
        .and_then(Value::as_object_mut)
    {
        Some(recurrence) => {
            recurrence.insert(
                "oneOf".into(),
                json!([
                    {"required": ["cron"], "properties": {"cron": {"type": "string", "minLength": 1}}},
                    {"required": ["interval_seconds"],
                     "properties": {"interval_seconds": {"type": "integer"}}},
                ]),
            );
        }
        None => missing.push("schema Recurrence".into()),
    }
    missing
}

/// Every operation that takes a body can answer 413 `PAYLOAD_TOO_LARGE` (the body limit
/// is checked before the handler runs). The MCP endpoint answers it in JSON-RPC and
/// documents that itself.
fn document_body_limit(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if path.starts_with("/mcp") {
            continue;
        }
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            if op.get("requestBody").is_none() {
                continue;
            }
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            responses.entry("413").or_insert_with(|| {
                json!({
                    "description": "PAYLOAD_TOO_LARGE: the body is over the server's limit",
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorBody"}
                    }},
                })
            });
        }
    }
}

fn operation<'d>(doc: &'d mut Value, path: &str, method: &str) -> Option<&'d mut Value> {
    doc.get_mut("paths")?.get_mut(path)?.get_mut(method)
}

/// Merges a rule into a schema object: a nullable value stays nullable, and a query
/// parameter typed as a string that the handler reads as an integer becomes an integer.
fn apply(schema: &mut Map<String, Value>, rule: Rule) {
    let nullable = match schema.get("type") {
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => false,
    };
    if rule.is_integer() {
        schema.remove("format");
        schema.insert(
            "type".into(),
            if nullable {
                json!(["integer", "null"])
            } else {
                json!("integer")
            },
        );
    }
    let Value::Object(keywords) = rule.keywords() else {
        return;
    };
    for (key, mut value) in keywords {
        if key == "enum" && nullable {
            if let Value::Array(values) = &mut value {
                values.push(Value::Null);
            }
        }
        schema.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patterns_say_what_the_handlers_check() {
        let text = regex::Regex::new(NO_CONTROL_NOT_BLANK).unwrap();
        for ok in ["a", " a ", "héllo wörld"] {
            assert!(text.is_match(ok), "{ok:?}");
        }
        for bad in ["", "   ", "a\nb", "a\u{85}b", "\t"] {
            assert!(!text.is_match(bad), "{bad:?}");
        }
        let token = regex::Regex::new(NO_CONTROL).unwrap();
        assert!(token.is_match("req-1 x"));
        assert!(!token.is_match("req\u{7f}"));
    }
}
