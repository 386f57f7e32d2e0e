//! The signed message: its lines, its scopes, and the table of signed actions.
//!
//! ```text
//! agentpmt-external
//! wallet:<lowercase wallet address>
//! session:<session_nonce>
//! request:<request_id>
//! action:<action>            | method:<HTTP method>     (tool-action invokes)
//! product:<product or ->     | path:<signed path>
//! payload:<sha256 hex of canonical JSON, or empty>
//! ```
//!
//! Lines are joined by `\n` with no trailing newline.

use crate::address::WalletAddress;
use crate::canonical::{self, JsonValue};

/// First line of every signed message.
pub const MESSAGE_HEADER: &str = "agentpmt-external";

/// Body fields that carry the signature envelope; never part of a payload hash.
pub const ENVELOPE_FIELDS: [&str; 4] =
    ["wallet_address", "session_nonce", "request_id", "signature"];

/// The scope lines of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `action:` and `product:` lines (`-` when the action has no product).
    Action { action: String, product: String },
    /// `method:` and `path:` lines (tool-action invokes).
    MethodPath { method: String, path: String },
}

impl Scope {
    /// An action scope.
    pub fn action(action: impl Into<String>, product: impl Into<String>) -> Self {
        Scope::Action {
            action: action.into(),
            product: product.into(),
        }
    }

    /// A method/path scope.
    pub fn method_path(method: impl Into<String>, path: impl Into<String>) -> Self {
        Scope::MethodPath {
            method: method.into(),
            path: path.into(),
        }
    }
}

/// Builds the exact text to sign. `payload_hash` is `None` for an empty `payload:` line.
pub fn build_message(
    wallet: &WalletAddress,
    session_nonce: &str,
    request_id: &str,
    scope: &Scope,
    payload_hash: Option<&str>,
) -> String {
    let (k1, v1, k2, v2) = match scope {
        Scope::Action { action, product } => {
            ("action", action.as_str(), "product", product.as_str())
        }
        Scope::MethodPath { method, path } => ("method", method.as_str(), "path", path.as_str()),
    };
    let payload = payload_hash.unwrap_or("");
    format!(
        "{MESSAGE_HEADER}\nwallet:{wallet}\nsession:{session_nonce}\nrequest:{request_id}\n{k1}:{v1}\n{k2}:{v2}\npayload:{payload}"
    )
}

/// Where the `product:` line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductRule {
    /// Always `-`.
    Dash,
    /// The value of a path parameter (`{jobId}`, `{workflowId}`, `{productId}`).
    PathParam(&'static str),
}

/// Which scope lines an action signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeRule {
    /// `action:<name>` and `product:<rule>`.
    Action(ProductRule),
    /// `method:<method>` and `path:<template with path parameters filled in>`.
    MethodPath { path: &'static str },
}

/// Which part of the body is hashed into the `payload:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadRule {
    /// The `payload:` line is empty.
    Empty,
    /// An object of the listed body fields. Fields absent from the body are left out (what
    /// `JSON.stringify` does with `undefined`); the variant with absent fields as `null`
    /// (Python's `None`) is accepted as well.
    Fields(&'static [&'static str]),
    /// Like `Fields` when at least one listed field is present, else an empty line.
    FieldsOrEmpty(&'static [&'static str]),
    /// The value of one body field; an absent, `null` or empty-object field hashes as `{}`
    /// or is an empty line.
    Field(&'static str),
    /// The whole body without the envelope fields.
    BodyWithoutEnvelope,
}

impl PayloadRule {
    /// The payload objects a client may have hashed for `body`, primary first.
    /// `None` stands for an empty `payload:` line.
    pub fn candidates(&self, body: &JsonValue) -> Vec<Option<JsonValue>> {
        match self {
            PayloadRule::Empty => vec![None],
            PayloadRule::Fields(fields) => fields_candidates(fields, body),
            PayloadRule::FieldsOrEmpty(fields) => {
                if fields.iter().any(|f| body.get(f).is_some()) {
                    fields_candidates(fields, body)
                } else {
                    vec![None]
                }
            }
            PayloadRule::Field(name) => match body.get(name) {
                // No value (absent, `null` or `{}`): the hash of `{}` or, as seed 002 tells
                // clients to send for an empty payload, an empty `payload:` line.
                None | Some(JsonValue::Null) => vec![Some(JsonValue::empty_object()), None],
                Some(JsonValue::Object(members)) if members.is_empty() => {
                    vec![Some(JsonValue::empty_object()), None]
                }
                Some(value) => vec![Some(value.clone())],
            },
            PayloadRule::BodyWithoutEnvelope => {
                let members = match body {
                    JsonValue::Object(members) => members
                        .iter()
                        .filter(|(k, _)| !ENVELOPE_FIELDS.contains(&k.as_str()))
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                };
                vec![Some(JsonValue::Object(members))]
            }
        }
    }

    /// The payload object the SDK signs for `body` (the primary candidate).
    pub fn primary(&self, body: &JsonValue) -> Option<JsonValue> {
        self.candidates(body).into_iter().next().flatten()
    }
}

fn fields_candidates(fields: &[&str], body: &JsonValue) -> Vec<Option<JsonValue>> {
    let present: Vec<(String, JsonValue)> = fields
        .iter()
        .filter_map(|f| body.get(f).map(|v| ((*f).to_owned(), v.clone())))
        .collect();
    let mut out = vec![Some(JsonValue::Object(present))];
    if fields.iter().any(|f| body.get(f).is_none()) {
        let with_nulls = fields
            .iter()
            .map(|f| {
                (
                    (*f).to_owned(),
                    body.get(f).cloned().unwrap_or(JsonValue::Null),
                )
            })
            .collect();
        out.push(Some(JsonValue::Object(with_nulls)));
    }
    out
}

/// Every signed action of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignedAction {
    Balance,
    /// Legacy `POST /api/external/tools/{productId}/invoke`.
    Invoke,
    /// `POST /api/external/tools/{productSlug}/actions/{actionSlug}/invoke` (method/path scope).
    ToolActionInvoke,
    WorkflowFetch,
    WorkflowStart,
    WorkflowActive,
    WorkflowEnd,
    JobList,
    JobReserve,
    JobComplete,
    JobStatus,
}

/// How one signed action is called and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionSpec {
    pub action: SignedAction,
    /// The `action:` line value (for method/path actions, a name used only in diagnostics).
    pub name: &'static str,
    /// HTTP method of the endpoint.
    pub method: &'static str,
    /// Route template of the endpoint, e.g. `/api/external/jobs/{jobId}/reserve`.
    pub route: &'static str,
    pub scope: ScopeRule,
    pub payload: PayloadRule,
}

/// The signing table of seeds `002_*`, `003_*` and `004_*`.
pub const ACTIONS: [ActionSpec; 11] = [
    ActionSpec {
        action: SignedAction::Balance,
        name: "balance",
        method: "POST",
        route: "/api/external/credits/balance",
        scope: ScopeRule::Action(ProductRule::Dash),
        payload: PayloadRule::Empty,
    },
    ActionSpec {
        action: SignedAction::Invoke,
        name: "invoke",
        method: "POST",
        route: "/api/external/tools/{productId}/invoke",
        scope: ScopeRule::Action(ProductRule::PathParam("productId")),
        payload: PayloadRule::Field("parameters"),
    },
    ActionSpec {
        action: SignedAction::ToolActionInvoke,
        name: "tool_action_invoke",
        method: "POST",
        route: "/api/external/tools/{productSlug}/actions/{actionSlug}/invoke",
        scope: ScopeRule::MethodPath {
            path: "/external/tools/{productSlug}/actions/{actionSlug}/invoke",
        },
        payload: PayloadRule::Field("parameters"),
    },
    ActionSpec {
        action: SignedAction::WorkflowFetch,
        name: "workflow_fetch",
        method: "POST",
        route: "/api/external/workflows/{workflowId}/fetch",
        scope: ScopeRule::Action(ProductRule::PathParam("workflowId")),
        payload: PayloadRule::Empty,
    },
    ActionSpec {
        action: SignedAction::WorkflowStart,
        name: "workflow_start",
        method: "POST",
        route: "/api/external/workflows/{workflowId}/start",
        scope: ScopeRule::Action(ProductRule::PathParam("workflowId")),
        payload: PayloadRule::Fields(&["instance_id"]),
    },
    ActionSpec {
        action: SignedAction::WorkflowActive,
        name: "workflow_active",
        method: "POST",
        route: "/api/external/workflows/active",
        scope: ScopeRule::Action(ProductRule::Dash),
        payload: PayloadRule::FieldsOrEmpty(&["instance_id"]),
    },
    ActionSpec {
        action: SignedAction::WorkflowEnd,
        name: "workflow_end",
        method: "POST",
        route: "/api/external/workflows/{workflowId}/end",
        scope: ScopeRule::Action(ProductRule::PathParam("workflowId")),
        payload: PayloadRule::Fields(&["workflow_session_id"]),
    },
    ActionSpec {
        action: SignedAction::JobList,
        name: "job_list",
        method: "POST",
        route: "/api/external/jobs/list",
        scope: ScopeRule::Action(ProductRule::Dash),
        payload: PayloadRule::Fields(&["limit", "skip"]),
    },
    ActionSpec {
        action: SignedAction::JobReserve,
        name: "job_reserve",
        method: "POST",
        route: "/api/external/jobs/{jobId}/reserve",
        scope: ScopeRule::Action(ProductRule::PathParam("jobId")),
        payload: PayloadRule::Fields(&[]),
    },
    ActionSpec {
        action: SignedAction::JobComplete,
        name: "job_complete",
        method: "POST",
        route: "/api/external/jobs/{jobId}/complete",
        scope: ScopeRule::Action(ProductRule::PathParam("jobId")),
        payload: PayloadRule::BodyWithoutEnvelope,
    },
    ActionSpec {
        action: SignedAction::JobStatus,
        name: "job_status",
        method: "POST",
        route: "/api/external/jobs/{jobId}/status",
        scope: ScopeRule::Action(ProductRule::PathParam("jobId")),
        payload: PayloadRule::Fields(&[]),
    },
];

impl SignedAction {
    /// This action's row of the signing table.
    pub fn spec(self) -> &'static ActionSpec {
        ACTIONS
            .iter()
            .find(|s| s.action == self)
            .expect("every action has a row in ACTIONS")
    }

    /// The action whose `action:` name is `name` (method/path actions have none).
    pub fn from_name(name: &str) -> Option<Self> {
        ACTIONS
            .iter()
            .find(|s| s.name == name && matches!(s.scope, ScopeRule::Action(_)))
            .map(|s| s.action)
    }
}

/// Fills `{name}` placeholders of a route or path template.
pub fn fill_template(template: &str, param: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}')? + open;
        out.push_str(&rest[..open]);
        out.push_str(&param(&rest[open + 1..close])?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

impl ActionSpec {
    /// The scope lines for a request, given its path parameters. `None` when a path
    /// parameter the scope needs is missing.
    pub fn scope(&self, param: impl Fn(&str) -> Option<String>) -> Option<Scope> {
        match self.scope {
            ScopeRule::Action(ProductRule::Dash) => Some(Scope::action(self.name, "-")),
            ScopeRule::Action(ProductRule::PathParam(p)) => {
                Some(Scope::action(self.name, param(p)?))
            }
            ScopeRule::MethodPath { path } => {
                Some(Scope::method_path(self.method, fill_template(path, param)?))
            }
        }
    }
}

/// The payload hash of the primary candidate for `body` under `rule`, or `None` for an
/// empty `payload:` line.
pub fn primary_payload_hash(rule: PayloadRule, body: &JsonValue) -> Option<String> {
    rule.primary(body).map(|p| canonical::payload_hash(&p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet() -> WalletAddress {
        "0xAbC0000000000000000000000000000000000dEf"
            .parse()
            .unwrap()
    }

    #[test]
    fn action_message_layout() {
        let m = build_message(&wallet(), "n1", "r1", &Scope::action("balance", "-"), None);
        assert_eq!(
            m,
            "agentpmt-external\nwallet:0xabc0000000000000000000000000000000000def\nsession:n1\nrequest:r1\naction:balance\nproduct:-\npayload:"
        );
    }

    #[test]
    fn method_path_message_layout() {
        let spec = SignedAction::ToolActionInvoke.spec();
        let scope = spec
            .scope(|p| {
                Some(if p == "productSlug" {
                    "weather".into()
                } else {
                    "get-forecast".into()
                })
            })
            .unwrap();
        let m = build_message(&wallet(), "n", "r", &scope, Some("abc"));
        assert!(m.ends_with(
            "\nmethod:POST\npath:/external/tools/weather/actions/get-forecast/invoke\npayload:abc"
        ));
        assert!(!m.ends_with('\n'));
    }

    #[test]
    fn payload_rules() {
        let body = canonical::parse(
            br#"{"wallet_address":"0x","session_nonce":"n","request_id":"r","signature":"s","limit":5,"proof_text":"p","parameters":{"b":1,"a":2}}"#,
        )
        .unwrap();
        let hashed = |rule: PayloadRule| {
            rule.candidates(&body)
                .into_iter()
                .map(|c| {
                    c.map(|v| {
                        canonical::to_canonical(
                            &v,
                            canonical::Escaping::Utf8,
                            canonical::KeyOrder::CodePoint,
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(hashed(PayloadRule::Empty), vec![None]);
        assert_eq!(
            hashed(PayloadRule::Field("parameters")),
            vec![Some(r#"{"a":2,"b":1}"#.into())]
        );
        assert_eq!(
            hashed(PayloadRule::Field("missing")),
            vec![Some("{}".into()), None]
        );
        assert_eq!(
            hashed(PayloadRule::Fields(&["limit", "skip"])),
            vec![
                Some(r#"{"limit":5}"#.into()),
                Some(r#"{"limit":5,"skip":null}"#.into())
            ]
        );
        assert_eq!(
            hashed(PayloadRule::FieldsOrEmpty(&["instance_id"])),
            vec![None]
        );
        assert_eq!(hashed(PayloadRule::Fields(&[])), vec![Some("{}".into())]);
        assert_eq!(
            hashed(PayloadRule::BodyWithoutEnvelope),
            vec![Some(
                r#"{"limit":5,"parameters":{"a":2,"b":1},"proof_text":"p"}"#.into()
            )]
        );
    }

    #[test]
    fn every_action_has_a_spec_and_a_unique_route() {
        for spec in ACTIONS {
            assert_eq!(spec.action.spec(), &spec);
        }
        let mut routes: Vec<_> = ACTIONS.iter().map(|s| s.route).collect();
        routes.sort();
        routes.dedup();
        assert_eq!(routes.len(), ACTIONS.len());
    }
}
