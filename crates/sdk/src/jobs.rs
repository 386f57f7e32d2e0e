//! The jobs board (`/api/external/jobs…`): list, reserve, complete, status (signed), the
//! workflow-creation job endpoints (`X-Job-Workflow-Token`), and the operator calls.

use crate::admin::AdminClient;
use crate::{decode, Client, Result};
use agentpmt_protocol::jobs::{
    JobAdminResponse, JobCompleteBody, JobCompleteResponse, JobCreateRequest, JobListResponse,
    JobReserveResponse, JobStatusResponse, JobWorkflowResponse, JobWorkflowWriteRequest,
    ReviewRequest, ReviewResponse, SubmissionListResponse,
};
use agentpmt_protocol::SignedAction;
use serde_json::{Map, Value};

impl Client {
    /// `POST /api/external/jobs/list`: open jobs, newest first.
    pub async fn list_jobs(
        &self,
        limit: Option<u32>,
        skip: Option<u32>,
    ) -> Result<JobListResponse> {
        let mut fields = Map::new();
        if let Some(limit) = limit {
            fields.insert("limit".into(), Value::from(limit));
        }
        if let Some(skip) = skip {
            fields.insert("skip".into(), Value::from(skip));
        }
        self.signed_call(SignedAction::JobList, &[], fields).await
    }

    /// `POST /api/external/jobs/{jobId}/reserve`: reserve a job exclusively.
    pub async fn reserve_job(&self, job_id: &str) -> Result<JobReserveResponse> {
        self.signed_call(SignedAction::JobReserve, &[("jobId", job_id)], Map::new())
            .await
    }

    /// `POST /api/external/jobs/{jobId}/complete`: submit completion proof (the signed
    /// payload is exactly the fields of `body` that are present).
    pub async fn complete_job(
        &self,
        job_id: &str,
        body: &JobCompleteBody,
    ) -> Result<JobCompleteResponse> {
        let fields = match serde_json::to_value(body) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        self.signed_call(SignedAction::JobComplete, &[("jobId", job_id)], fields)
            .await
    }

    /// `POST /api/external/jobs/{jobId}/status`: this wallet's view of a job.
    pub async fn job_status(&self, job_id: &str) -> Result<JobStatusResponse> {
        self.signed_call(SignedAction::JobStatus, &[("jobId", job_id)], Map::new())
            .await
    }

    async fn job_workflow_call(
        &self,
        method: reqwest::Method,
        path: String,
        token: &str,
        body: &impl serde::Serialize,
    ) -> Result<JobWorkflowResponse> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .header("X-Job-Workflow-Token", format!("Bearer {token}"))
            .json(body)
            .send()
            .await?;
        decode(response).await
    }

    /// `POST /api/external/jobs/{jobId}/workflow/create` with the reservation's token.
    pub async fn create_job_workflow(
        &self,
        job_id: &str,
        token: &str,
        request: &JobWorkflowWriteRequest,
    ) -> Result<JobWorkflowResponse> {
        self.job_workflow_call(
            reqwest::Method::POST,
            format!("/api/external/jobs/{job_id}/workflow/create"),
            token,
            request,
        )
        .await
    }

    /// `PUT /api/external/jobs/{jobId}/workflow/{workflowId}` with the reservation's token.
    pub async fn update_job_workflow(
        &self,
        job_id: &str,
        workflow_id: &str,
        token: &str,
        request: &JobWorkflowWriteRequest,
    ) -> Result<JobWorkflowResponse> {
        self.job_workflow_call(
            reqwest::Method::PUT,
            format!("/api/external/jobs/{job_id}/workflow/{workflow_id}"),
            token,
            request,
        )
        .await
    }

    /// `POST /api/external/jobs/{jobId}/workflow/{workflowId}/publish` (private publish).
    pub async fn publish_job_workflow(
        &self,
        job_id: &str,
        workflow_id: &str,
        token: &str,
    ) -> Result<JobWorkflowResponse> {
        self.job_workflow_call(
            reqwest::Method::POST,
            format!("/api/external/jobs/{job_id}/workflow/{workflow_id}/publish"),
            token,
            &Value::Object(Map::new()),
        )
        .await
    }
}

impl AdminClient {
    /// `POST /api/admin/jobs`: create a job.
    pub async fn create_job(&self, request: &JobCreateRequest) -> Result<JobAdminResponse> {
        let response = self
            .authed(reqwest::Method::POST, "/api/admin/jobs")
            .json(request)
            .send()
            .await?;
        decode(response).await
    }

    /// `GET /api/admin/jobs/submissions?status=…`: submissions (default: awaiting review).
    pub async fn job_submissions(&self, status: Option<&str>) -> Result<SubmissionListResponse> {
        let mut request = self.authed(reqwest::Method::GET, "/api/admin/jobs/submissions");
        if let Some(status) = status {
            request = request.query(&[("status", status)]);
        }
        decode(request.send().await?).await
    }

    /// `POST /api/admin/jobs/submissions/{id}/approve` or `/reject`.
    pub async fn review_submission(
        &self,
        submission_id: &str,
        approve: bool,
        reason: Option<&str>,
    ) -> Result<ReviewResponse> {
        let verb = if approve { "approve" } else { "reject" };
        let response = self
            .authed(
                reqwest::Method::POST,
                &format!("/api/admin/jobs/submissions/{submission_id}/{verb}"),
            )
            .json(&ReviewRequest {
                reason: reason.map(str::to_owned),
            })
            .send()
            .await?;
        decode(response).await
    }
}
