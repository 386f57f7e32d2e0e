//! Workflows and wallet-scoped workflow sessions (`/api/external/workflows…`).

use crate::{decode, Client, Result};
use agentpmt_protocol::workflows::{
    WorkflowActiveResponse, WorkflowEndResponse, WorkflowFetchResponse, WorkflowListResponse,
    WorkflowStartResponse,
};
use agentpmt_protocol::SignedAction;
use serde_json::{Map, Value};

/// Filters and paging of [`Client::list_workflows`] (all optional).
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    pub query: Option<String>,
    /// Comma-separated; any of them.
    pub categories: Option<String>,
    /// Comma-separated; any of them.
    pub industry_tags: Option<String>,
    pub publisher: Option<String>,
    /// RFC 3339 or YYYY-MM-DD.
    pub since: Option<String>,
    pub limit: Option<u32>,
    pub skip: Option<u32>,
}

fn instance_fields(name: &str, value: Option<&str>) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(value) = value {
        fields.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    fields
}

impl Client {
    /// `GET /api/external/workflows`: published public workflows (unsigned).
    pub async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<WorkflowListResponse> {
        let mut query: Vec<(&str, String)> = Vec::new();
        let text = [
            ("query", &filter.query),
            ("categories", &filter.categories),
            ("industry_tags", &filter.industry_tags),
            ("publisher", &filter.publisher),
            ("since", &filter.since),
        ];
        for (name, value) in text {
            if let Some(value) = value {
                query.push((name, value.clone()));
            }
        }
        if let Some(limit) = filter.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(skip) = filter.skip {
            query.push(("skip", skip.to_string()));
        }
        let response = self
            .http
            .get(format!("{}/api/external/workflows", self.base_url))
            .query(&query)
            .send()
            .await?;
        decode(response).await
    }

    /// `POST /api/external/workflows/{id}/fetch`: the graph and this wallet's sessions.
    pub async fn fetch_workflow(&self, workflow_id: &str) -> Result<WorkflowFetchResponse> {
        self.signed_call(
            SignedAction::WorkflowFetch,
            &[("workflowId", workflow_id)],
            Map::new(),
        )
        .await
    }

    /// `POST /api/external/workflows/{id}/start`: start or resume this wallet's session
    /// (one per `instance_id`).
    pub async fn start_workflow(
        &self,
        workflow_id: &str,
        instance_id: Option<&str>,
    ) -> Result<WorkflowStartResponse> {
        self.signed_call(
            SignedAction::WorkflowStart,
            &[("workflowId", workflow_id)],
            instance_fields("instance_id", instance_id),
        )
        .await
    }

    /// `POST /api/external/workflows/active`: this wallet's live sessions.
    pub async fn active_workflows(
        &self,
        instance_id: Option<&str>,
    ) -> Result<WorkflowActiveResponse> {
        self.signed_call(
            SignedAction::WorkflowActive,
            &[],
            instance_fields("instance_id", instance_id),
        )
        .await
    }

    /// `POST /api/external/workflows/{id}/end`: end a session (absent: the only live one).
    pub async fn end_workflow(
        &self,
        workflow_id: &str,
        workflow_session_id: Option<&str>,
    ) -> Result<WorkflowEndResponse> {
        self.signed_call(
            SignedAction::WorkflowEnd,
            &[("workflowId", workflow_id)],
            instance_fields("workflow_session_id", workflow_session_id),
        )
        .await
    }
}
