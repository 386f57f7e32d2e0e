//! Workflow-creation jobs with the reservation's token (`X-Job-Workflow-Token`): create,
//! update and privately publish the workflow the job asks for, without the wallet key.
//! The token comes with the reserve response (`workflow_access.access_token`); `agentpmt
//! jobs run` hands it to its CMD as `AGENTPMT_JOB_WORKFLOW_TOKEN`.
//!
//! - `POST /api/external/jobs/{jobId}/workflow/create`
//! - `PUT /api/external/jobs/{jobId}/workflow/{workflowId}`
//! - `POST /api/external/jobs/{jobId}/workflow/{workflowId}/publish`

use crate::{decode, default_http, Error, Result};
use agentpmt_protocol::jobs::{JobWorkflowResponse, JobWorkflowWriteRequest};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// A client of one reserved workflow-creation job. The token never appears in `Debug`.
pub struct JobWorkflowClient {
    http: reqwest::Client,
    base_url: String,
    job_id: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for JobWorkflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWorkflowClient")
            .field("base_url", &self.base_url)
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

impl JobWorkflowClient {
    /// A client for job `job_id` on `base_url`, presenting `token`.
    pub fn new(base_url: &str, job_id: &str, token: Zeroizing<String>) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::InvalidUrl(base_url));
        }
        Ok(JobWorkflowClient {
            http: default_http()?,
            base_url,
            job_id: job_id
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                .collect(),
            token,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        tail: &str,
        body: &impl serde::Serialize,
    ) -> Result<JobWorkflowResponse> {
        let response = self
            .http
            .request(
                method,
                format!(
                    "{}/api/external/jobs/{}/workflow/{tail}",
                    self.base_url, self.job_id
                ),
            )
            .header(
                "X-Job-Workflow-Token",
                format!("Bearer {}", self.token.as_str()),
            )
            .json(body)
            .send()
            .await?;
        decode(response).await
    }

    /// Creates the job's workflow.
    pub async fn create(&self, request: &JobWorkflowWriteRequest) -> Result<JobWorkflowResponse> {
        self.call(reqwest::Method::POST, "create", request).await
    }

    /// Replaces the workflow's content.
    pub async fn update(
        &self,
        workflow_id: &str,
        request: &JobWorkflowWriteRequest,
    ) -> Result<JobWorkflowResponse> {
        self.call(reqwest::Method::PUT, &segment(workflow_id), request)
            .await
    }

    /// Publishes the workflow privately (what the job's completion refers to).
    pub async fn publish(&self, workflow_id: &str) -> Result<JobWorkflowResponse> {
        self.call(
            reqwest::Method::POST,
            &format!("{}/publish", segment(workflow_id)),
            &Value::Object(Map::new()),
        )
        .await
    }
}

fn segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect()
}
