//! Wire types of the jobs board: listing, reservations, completion proof, status, the
//! operator API and the workflow-creation job endpoints (`X-Job-Workflow-Token`).

use crate::workflows::{WorkflowDetail, WorkflowEdge, WorkflowNode};
use serde::{Deserialize, Serialize};

/// `utm_medium` of every tracked social link.
pub const UTM_MEDIUM: &str = "agent_social";
/// Longest accepted `proof_text`, in characters.
pub const MAX_PROOF_TEXT_CHARS: usize = 4000;

/// `POST /api/external/jobs/list` body fields (signed payload `{limit, skip}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobListBody {
    /// Page size, 1-100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Jobs to skip, 0-100000 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<i64>,
}

/// A job as listed (never its private instructions).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSummary {
    pub job_id: String,
    pub title: String,
    pub public_description: String,
    pub reward_credits: i64,
    /// `open`, `reserved`, `submitted`, `approved` or `rejected`.
    pub status: String,
    /// `social_share`, `workflow_creation` or `general`.
    pub job_type: String,
    /// The one platform of a social-share job (`x`, `linkedin`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// `POST /api/external/jobs/list` response: open jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobListResponse {
    pub success: bool,
    pub jobs: Vec<JobSummary>,
    /// Jobs in this page.
    pub count: usize,
    pub limit: i64,
    pub skip: i64,
    /// Whether another page follows (`skip + limit`).
    pub has_more: bool,
}

/// The tracked link of a social-share reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SocialShareAccess {
    pub platform: String,
    /// Exactly one URL: the job's target with `utm_source=<platform>`,
    /// `utm_medium=agent_social`, `utm_campaign=agent_job_<jobId>`,
    /// `utm_content=<tracking code>`. Submit it unchanged as `target_url_used`.
    pub tracking_links: Vec<String>,
    /// The reservation's tracking code (`utm_content`).
    pub tracking_code: String,
}

/// The job as the reservation holder sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservedJob {
    pub job_id: String,
    pub title: String,
    pub job_type: String,
    pub public_description: String,
    /// The private instructions, only ever sent to the holder.
    pub job_instructions: String,
    pub reservation_id: String,
    /// RFC 3339, UTC (database clock).
    pub reserved_until: String,
    pub reward_credits: i64,
    /// `reserved`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social_share: Option<SocialShareAccess>,
}

/// The capability token of a workflow-creation reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowAccess {
    /// Send as `X-Job-Workflow-Token: Bearer <access_token>` on the job workflow endpoints
    /// only.
    pub access_token: String,
    /// RFC 3339, UTC: the end of the reservation.
    pub expires_at: String,
}

/// `POST /api/external/jobs/{jobId}/reserve` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobReserveResponse {
    pub success: bool,
    pub message: String,
    pub job: ReservedJob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_access: Option<WorkflowAccess>,
}

/// One published social post, as proof.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SocialPostProof {
    pub platform: String,
    pub post_url: String,
    /// Must equal the issued tracked URL exactly.
    pub target_url_used: String,
    pub message_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posted_at: Option<String>,
}

/// `POST /api/external/jobs/{jobId}/complete` body fields (signed payload: this object).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCompleteBody {
    /// 1-4000 characters.
    pub proof_text: String,
    /// The active reservation's id (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// social_share jobs: exactly one item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social_posts: Option<Vec<SocialPostProof>>,
    /// workflow_creation jobs: the workflow this reservation created and published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
}

/// Automated or operator verification of a submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerificationView {
    /// `queued`, `running`, `verified`, `rejected`, `transient_error` or `needs_human`.
    pub status: String,
    /// `automated` or `operator` once decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Automated check attempts so far.
    pub attempts: i64,
}

/// A submitted completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmissionView {
    pub submission_id: String,
    pub job_id: String,
    pub reservation_id: String,
    pub wallet_address: String,
    /// `submitted`, `approved` or `rejected`.
    pub status: String,
    pub proof_text: String,
    pub social_posts: Vec<SocialPostProof>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    pub verification: VerificationView,
    pub created_at: String,
}

/// The job's status after a completion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStateView {
    pub job_id: String,
    pub status: String,
}

/// `POST /api/external/jobs/{jobId}/complete` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCompleteResponse {
    pub success: bool,
    pub message: String,
    pub job: JobStateView,
    pub submission: SubmissionView,
}

/// The reward of the caller's submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PayoutView {
    /// `none` (no submission), `pending`, `paid` or `rejected`.
    pub status: String,
    pub reward_credits: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<String>,
    /// The ledger entry of the reward, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    pub wallet_balance_credits: i64,
}

/// The caller's active reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationView {
    pub reservation_id: String,
    pub reserved_until: String,
    /// social_share jobs: the reservation's tracked link again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub social_share: Option<SocialShareAccess>,
}

/// `POST /api/external/jobs/{jobId}/status` response: the caller's view of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatusResponse {
    pub success: bool,
    pub wallet_address: String,
    pub job: JobSummary,
    pub has_active_reservation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<ReservationView>,
    /// Whether a completion from this wallet would be accepted now.
    pub can_submit: bool,
    /// The caller's latest submission for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission: Option<SubmissionView>,
    pub payout: PayoutView,
}

/// Operator request: create a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobCreateRequest {
    /// `social_share`, `workflow_creation` or `general`.
    pub job_type: String,
    pub title: String,
    pub public_description: String,
    /// Sent only to the reservation holder.
    pub private_instructions: String,
    pub reward_credits: i64,
    /// social_share: the absolute http(s) AgentPMT URL to share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    /// social_share: the one platform (`x`, `linkedin`, `reddit`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Approved submissions the job pays for (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completions: Option<i64>,
    /// `reopen` (default) or `close`: what a rejected submission does to the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reject: Option<String>,
}

/// A job as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAdminView {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub private_instructions: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    pub max_completions: i64,
    pub completions: i64,
    pub on_reject: String,
    pub reservation_epoch: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_until: Option<String>,
}

/// Operator response carrying one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAdminResponse {
    pub success: bool,
    pub job: JobAdminView,
}

/// Operator list of submissions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmissionListResponse {
    pub success: bool,
    pub submissions: Vec<SubmissionView>,
    pub count: usize,
}

/// Operator approval or rejection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// Required to reject (1-1000 characters); optional to approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Operator review response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewResponse {
    pub success: bool,
    pub submission: SubmissionView,
    pub job: JobAdminView,
    /// False when the submission already had this decision (nothing changed).
    pub changed: bool,
}

/// `X-Job-Workflow-Token` create / update body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobWorkflowWriteRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub nodes: Vec<WorkflowNode>,
    #[serde(default)]
    pub edges: Vec<WorkflowEdge>,
}

/// `X-Job-Workflow-Token` update body: every field is optional, and a field left out keeps
/// its stored value (`{"description": "..."}` changes only the description). `nodes` and
/// `edges` sent together replace the graph; one of them alone replaces that half.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobWorkflowUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<WorkflowNode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<WorkflowEdge>>,
}

impl From<JobWorkflowWriteRequest> for JobWorkflowUpdateRequest {
    fn from(w: JobWorkflowWriteRequest) -> Self {
        JobWorkflowUpdateRequest {
            name: Some(w.name),
            description: Some(w.description),
            nodes: Some(w.nodes),
            edges: Some(w.edges),
        }
    }
}

/// A workflow created under a job reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobWorkflowResponse {
    pub success: bool,
    pub job_id: String,
    pub reservation_id: String,
    pub workflow: WorkflowDetail,
}
