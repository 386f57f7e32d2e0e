//! BYO-agent workflow schedules with the API-key + budget-key bearer
//! (`/api/external/workflow-schedules/…`).

use crate::{decode, default_http, Error, Result};
use agentpmt_protocol::workflows::{
    AdvanceRequest, AdvanceResponse, ClaimRequest, ClaimResponse, DueResponse, ReleaseRequest,
    ReleaseResponse,
};
use base64::Engine as _;
use zeroize::Zeroizing;

/// A client of one budget's schedule queue. The bearer never appears in `Debug` output.
pub struct ScheduleClient {
    http: reqwest::Client,
    base_url: String,
    bearer: Zeroizing<String>,
}

impl std::fmt::Debug for ScheduleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ScheduleClient {
    /// A client presenting `bearer` (base64 of `api_key:budget_key`, or of the JSON form).
    pub fn with_bearer(base_url: &str, bearer: Zeroizing<String>) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::InvalidUrl(base_url));
        }
        Ok(ScheduleClient {
            http: default_http()?,
            base_url,
            bearer,
        })
    }

    /// A client for an API key and a budget key (sent as base64 of `api_key:budget_key`).
    pub fn with_keys(base_url: &str, api_key: &str, budget_key: &str) -> Result<Self> {
        let pair = Zeroizing::new(format!("{api_key}:{budget_key}"));
        let bearer = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*pair));
        Self::with_bearer(base_url, bearer)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(self.bearer.as_str())
    }

    /// `GET …/due`: due occurrences (read-only).
    pub async fn due(&self, as_of: Option<&str>, limit: Option<u32>) -> Result<DueResponse> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(as_of) = as_of {
            query.push(("as_of", as_of.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let response = self
            .http
            .get(format!(
                "{}/api/external/workflow-schedules/due",
                self.base_url
            ))
            .bearer_auth(self.bearer.as_str())
            .query(&query)
            .send()
            .await?;
        decode(response).await
    }

    /// `POST …/claim`: lease due occurrences.
    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse> {
        let response = self
            .post("/api/external/workflow-schedules/claim")
            .json(request)
            .send()
            .await?;
        decode(response).await
    }

    /// `POST …/{id}/advance`: record the run, move to the next occurrence.
    pub async fn advance(
        &self,
        schedule_id: &str,
        request: &AdvanceRequest,
    ) -> Result<AdvanceResponse> {
        let response = self
            .post(&format!(
                "/api/external/workflow-schedules/{}/advance",
                path_segment(schedule_id)
            ))
            .json(request)
            .send()
            .await?;
        decode(response).await
    }

    /// `POST …/{id}/release`: give the lease back without moving timing.
    pub async fn release(
        &self,
        schedule_id: &str,
        request: &ReleaseRequest,
    ) -> Result<ReleaseResponse> {
        let response = self
            .post(&format!(
                "/api/external/workflow-schedules/{}/release",
                path_segment(schedule_id)
            ))
            .json(request)
            .send()
            .await?;
        decode(response).await
    }
}

/// Keeps an id from escaping its path segment.
fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect()
}
