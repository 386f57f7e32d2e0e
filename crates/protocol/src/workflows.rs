//! Wire types of workflows (skill chains), wallet-scoped workflow sessions, accounts /
//! API keys / budgets, and BYO-agent workflow schedules (API-key + budget-key bearer auth).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Kinds of workflow graph nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// Calls a marketplace tool (`tool.product_id`, `tool.action`, `tool.parameters`).
    Tool,
    /// An instruction for the agent itself (`prompt`).
    Prompt,
    /// Runs the nodes after it once per element of `items`.
    ForEach,
    /// Chooses among its outgoing edges by their `condition`.
    Branch,
    /// Joins two or more incoming paths.
    Merge,
    /// Asks a human (`message`, optional `channel`).
    NotifyHuman,
}

/// Position of a node on the editor canvas (informational).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodePosition {
    pub x: f64,
    pub y: f64,
}

/// The tool a `tool` node calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ToolRef {
    /// The product's 24-hex id.
    pub product_id: String,
    /// The action slug (or name) of the product to call.
    pub action: String,
    /// Parameters to call it with (a JSON object; may contain `{{…}}` placeholders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub parameters: Option<Value>,
    /// Extra guidance for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// One node of a workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowNode {
    /// Unique within the graph (1-64 characters).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<NodePosition>,
    /// `tool` nodes: the tool to call (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolRef>,
    /// `prompt` nodes: the instruction (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// `for_each` nodes: what to iterate over, e.g. `{{search.results}}` (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// `notify_human` nodes: the message for the human (required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `notify_human` nodes: how to reach the human (e.g. `email`), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// One edge of a workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowEdge {
    /// Unique within the graph.
    pub id: String,
    /// Id of the source node.
    pub from: String,
    /// Id of the target node.
    pub to: String,
    #[serde(
        default,
        rename = "sourceHandle",
        alias = "source_handle",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_handle: Option<String>,
    #[serde(
        default,
        rename = "targetHandle",
        alias = "target_handle",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_handle: Option<String>,
    /// When this edge is taken (edges leaving a `branch`; one of them may omit it: the
    /// default path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A workflow graph: nodes and edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowGraph {
    pub nodes: Vec<WorkflowNode>,
    pub edges: Vec<WorkflowEdge>,
}

/// A workflow as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowSummary {
    /// 24-hex id.
    pub workflow_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub categories: Vec<String>,
    pub industry_tags: Vec<String>,
    pub publisher: String,
    /// `public` (listed) or `private` (unlisted: reachable by id or slug only).
    pub visibility: String,
    /// `draft` or `published`.
    pub status: String,
    /// Bumped on every update.
    pub version: i64,
    pub node_count: usize,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    pub published_at: Option<String>,
}

/// A workflow with its graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowDetail {
    #[serde(flatten)]
    pub summary: WorkflowSummary,
    pub graph: WorkflowGraph,
}

/// `GET /api/external/workflows` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowListResponse {
    pub success: bool,
    pub workflows: Vec<WorkflowSummary>,
    /// Number of workflows in this page.
    pub count: usize,
    pub limit: i64,
    pub skip: i64,
}

/// A tool call attributed to a workflow session (`_workflow_session_id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowCallView {
    /// The call's usage id (`use_…`): the `usage_id` its invoke answered (or its error's
    /// `details.usage_id`). One id for one call everywhere.
    pub usage_id: String,
    pub product_slug: String,
    pub action_slug: String,
    /// The invoke's request_id.
    pub request_id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    pub charged_credits: i64,
    /// The tool's response (succeeded calls).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub response: Option<Value>,
    /// The error (failed calls).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub error: Option<Value>,
    pub created_at: String,
}

/// A wallet-scoped workflow session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowSessionView {
    pub workflow_session_id: String,
    pub workflow_id: String,
    pub wallet_address: String,
    /// The agent instance id given at start (null: none).
    pub instance_id: Option<String>,
    /// `active` or `ended`.
    pub status: String,
    pub started_at: String,
    pub last_activity_at: String,
    /// Active sessions: when the session ends by itself unless used before.
    pub idle_expires_at: Option<String>,
    pub ended_at: Option<String>,
    /// `ended` (by the agent) or `idle` (timed out).
    pub end_reason: Option<String>,
    /// Tool calls attributed to the session, oldest first (in `fetch` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<WorkflowCallView>>,
}

/// `POST /api/external/workflows/{workflowId}/fetch` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowFetchResponse {
    pub success: bool,
    pub workflow: WorkflowDetail,
    /// The signed wallet's sessions of this workflow, newest first (at most 20), each with
    /// its results.
    pub sessions: Vec<WorkflowSessionView>,
    /// Ids of the wallet's active sessions of this workflow.
    pub active_session_ids: Vec<String>,
}

/// `POST /api/external/workflows/{workflowId}/start` and `/active` body fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowInstanceBody {
    /// Optional agent instance id (1-128 characters): one active session per wallet,
    /// workflow and instance id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

/// `POST /api/external/workflows/{workflowId}/start` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowStartResponse {
    pub success: bool,
    pub workflow_session_id: String,
    /// True when an active session of this wallet, workflow and instance was resumed.
    pub resumed: bool,
    /// Sessions idle this long end by themselves.
    pub idle_timeout_seconds: u64,
    pub session: WorkflowSessionView,
}

/// `POST /api/external/workflows/active` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowActiveResponse {
    pub success: bool,
    /// The most recently used active session (null: none).
    pub workflow_session_id: Option<String>,
    /// Active sessions, most recently used first.
    pub sessions: Vec<WorkflowSessionView>,
    pub count: usize,
}

/// `POST /api/external/workflows/{workflowId}/end` body fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowEndBody {
    /// The session to end; absent: the wallet's only active session of this workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_session_id: Option<String>,
}

/// `POST /api/external/workflows/{workflowId}/end` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowEndResponse {
    pub success: bool,
    pub workflow_session_id: String,
    /// True when the session had already ended (by the agent or by idling).
    pub already_ended: bool,
    pub session: WorkflowSessionView,
}

/// Operator request: create or replace a workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowWriteRequest {
    /// Lowercase letters, digits and `-` (1-64), unique.
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub industry_tags: Vec<String>,
    pub publisher: String,
    /// `public` (default) or `private`.
    #[serde(default)]
    pub visibility: Option<String>,
    pub graph: WorkflowGraph,
}

/// Operator response carrying one workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowAdminResponse {
    pub success: bool,
    pub workflow: WorkflowDetail,
}

/// Operator request: create an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountCreateRequest {
    pub name: String,
}

/// An account (the human side owning API keys and budgets).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    pub account_id: String,
    pub name: String,
    pub created_at: String,
}

/// Operator response carrying an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountResponse {
    pub success: bool,
    pub account: AccountView,
}

/// Operator request: create an API key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreateRequest {
    /// What the key is for (0-200 characters).
    #[serde(default)]
    pub label: String,
}

/// An API key without its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyView {
    pub key_id: String,
    pub account_id: String,
    pub label: String,
    /// The first characters of the key, to recognize it.
    pub key_prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Operator response for a new API key: the key is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyCreated {
    pub success: bool,
    pub key: ApiKeyView,
    /// The secret key (`apmt_ak_…`). Store it now: only its SHA-256 is kept.
    pub api_key: String,
}

/// Operator request: create a budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BudgetCreateRequest {
    pub name: String,
    /// Spending cap in credits (0 to 1,000,000,000).
    pub cap_credits: i64,
    /// The wallet the budget draws from; absent: the account.
    #[serde(default)]
    pub wallet_address: Option<String>,
}

/// A budget without its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetView {
    pub budget_id: String,
    pub account_id: String,
    pub name: String,
    pub cap_credits: i64,
    pub spent_credits: i64,
    /// The wallet the budget draws from (null: the account).
    pub wallet_address: Option<String>,
    /// `wallet` or `account`.
    pub draws_from: String,
    pub key_prefix: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Operator response for a new budget: the budget key is shown here once and never again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BudgetCreated {
    pub success: bool,
    pub budget: BudgetView,
    /// The secret budget key (`apmt_bk_…`). Store it now: only its SHA-256 is kept.
    pub budget_key: String,
}

/// Operator response of a revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedResponse {
    pub success: bool,
    pub revoked_at: String,
}

/// How a schedule recurs: exactly one of `cron` and `interval_seconds`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recurrence {
    /// `cron` or `interval` (answers only; ignored in requests).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A 5-field cron expression (`minute hour day-of-month month day-of-week`; a 6th,
    /// leading seconds field is accepted), read in the schedule's `time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval in seconds (60 to 31,536,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<i64>,
    /// The IANA time zone (answers only; set `time_zone` on the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// Operator request: create a schedule for a budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleCreateRequest {
    /// The workflow (id or slug) the external agent runs.
    pub workflow_id: String,
    pub name: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    pub recurrence: Recurrence,
    /// IANA time zone the recurrence is read in (default `UTC`).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The first due time (RFC 3339); default: the first occurrence after now (cron), or
    /// now (interval).
    #[serde(default)]
    pub start_at: Option<String>,
}

/// Operator request: change a schedule (absent fields keep their values).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleUpdateRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
    #[serde(default)]
    pub time_zone: Option<String>,
    /// `active` or `paused` (paused schedules are never due).
    #[serde(default)]
    pub status: Option<String>,
    /// Move the next due time (RFC 3339); drops any claim.
    #[serde(default)]
    pub due_at: Option<String>,
}

/// A BYO-agent workflow schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    pub schedule_id: String,
    pub budget_id: String,
    pub workflow_id: String,
    pub workflow_name: Option<String>,
    pub workflow_slug: Option<String>,
    pub name: String,
    pub prompt: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// Always `external_due`: the schedule is executed by an external agent.
    pub execution_mode: String,
    /// `active` or `paused`.
    pub status: String,
    /// The next (or current) occurrence, RFC 3339 UTC.
    pub due_at: String,
    pub time_zone: String,
    pub recurrence: Recurrence,
    /// True while a claim on the current occurrence is unexpired.
    pub claimed: bool,
    pub claim_expires_at: Option<String>,
    pub last_outcome: Option<String>,
    pub last_external_run_id: Option<String>,
    pub last_note: Option<String>,
    pub last_advanced_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Operator response carrying a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleAdminResponse {
    pub success: bool,
    pub schedule: ScheduleView,
}

/// `GET /api/external/workflow-schedules/due` data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DueData {
    pub items: Vec<ScheduleView>,
    pub count: usize,
    pub as_of: String,
}

/// `GET /api/external/workflow-schedules/due` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DueResponse {
    pub success: bool,
    pub data: DueData,
    /// Correlation id (echoes `x-request-id` when sent).
    pub request_id: String,
    pub help_url: String,
    pub help_doc: String,
}

/// `POST /api/external/workflow-schedules/claim` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Occurrences to claim (1-100, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Claim occurrences due at or before this time (RFC 3339; default now; at most 7 days
    /// ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Lease length (1-86,400 seconds, default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<i64>,
    /// Idempotency key: retrying with the same request_id returns the same claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One claimed occurrence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedItem {
    pub schedule_id: String,
    pub budget_id: String,
    pub workflow_id: String,
    pub workflow_name: Option<String>,
    pub workflow_slug: Option<String>,
    pub name: String,
    pub prompt: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    pub execution_mode: String,
    pub due_at: String,
    pub time_zone: String,
    pub recurrence: Recurrence,
    /// Visible, non-secret lease token: send it to advance or release (with bearer auth).
    pub claim_token: String,
    pub claim_expires_at: String,
    pub claim_lease_seconds: i64,
}

/// `POST /api/external/workflow-schedules/claim` data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimData {
    pub items: Vec<ClaimedItem>,
    pub count: usize,
    pub as_of: String,
    pub claim_lease_seconds: i64,
}

/// `POST /api/external/workflow-schedules/claim` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    pub success: bool,
    pub data: ClaimData,
    pub request_id: String,
    pub help_url: String,
    pub help_doc: String,
}

/// The outcome of a handled occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Success,
    Failed,
    Skipped,
}

impl RunOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Success => "success",
            RunOutcome::Failed => "failed",
            RunOutcome::Skipped => "skipped",
        }
    }
}

/// `POST /api/external/workflow-schedules/{scheduleId}/advance` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdvanceRequest {
    /// The claimed occurrence's `due_at`.
    pub due_at: String,
    pub claim_token: String,
    /// Default `success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /api/external/workflow-schedules/{scheduleId}/advance` data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdvanceData {
    pub schedule: ScheduleView,
    /// True when this occurrence had already been advanced with this claim token.
    pub already_advanced: bool,
}

/// `POST /api/external/workflow-schedules/{scheduleId}/advance` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdvanceResponse {
    pub success: bool,
    pub data: AdvanceData,
    pub request_id: String,
    pub help_url: String,
    pub help_doc: String,
}

/// `POST /api/external/workflow-schedules/{scheduleId}/release` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub due_at: String,
    pub claim_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /api/external/workflow-schedules/{scheduleId}/release` data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseData {
    pub released: bool,
    pub schedule: ScheduleView,
}

/// `POST /api/external/workflow-schedules/{scheduleId}/release` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseResponse {
    pub success: bool,
    pub data: ReleaseData,
    pub request_id: String,
    pub help_url: String,
    pub help_doc: String,
}

/// The 409 `error` values of advance and release, as the seeds publish them.
pub mod schedule_conflicts {
    pub const DUE_AT_MISMATCH: &str = "due_at_mismatch";
    pub const CLAIM_REQUIRED: &str = "claim_required";
    pub const CLAIM_EXPIRED: &str = "claim_expired";
    pub const CLAIM_MISMATCH: &str = "claim_mismatch";
}
