//! The tool marketplace from the client side: listing (no wallet needed), signed credit
//! invocation, and direct x402 invocation paid per call by this wallet.

use crate::{decode, default_http, Client, Result};
use agentpmt_protocol::tools::{InvokeResponse, ToolListResponse, ToolView, MAX_PAGE_SIZE};
use agentpmt_protocol::x402;
use agentpmt_protocol::SignedAction;
use serde_json::{Map, Value};

/// A listing query of `GET /api/external/tools`.
#[derive(Debug, Clone, Default)]
pub struct ToolQuery {
    /// Text searched in names and descriptions.
    pub query: Option<String>,
    /// Categories (a tool matches when it has any).
    pub categories: Vec<String>,
    /// 1-based page (default 1).
    pub page: Option<i64>,
    /// Items per page, 1-1000 (default 100).
    pub page_size: Option<i64>,
}

/// One page of the tool listing of the server at `base_url`.
pub async fn list_tools(base_url: &str, query: &ToolQuery) -> Result<ToolListResponse> {
    list_with(&default_http()?, base_url.trim_end_matches('/'), query).await
}

async fn list_with(
    http: &reqwest::Client,
    base_url: &str,
    query: &ToolQuery,
) -> Result<ToolListResponse> {
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(q) = &query.query {
        params.push(("query", q.clone()));
    }
    if !query.categories.is_empty() {
        params.push(("categories", query.categories.join(",")));
    }
    if let Some(p) = query.page {
        params.push(("page", p.to_string()));
    }
    if let Some(s) = query.page_size {
        params.push(("page_size", s.to_string()));
    }
    let response = http
        .get(format!("{base_url}/api/external/tools"))
        .query(&params)
        .send()
        .await?;
    decode(response).await
}

/// The listed tool whose slug (or id) is `slug`, walking every page.
pub async fn find_tool(base_url: &str, slug: &str) -> Result<Option<ToolView>> {
    let http = default_http()?;
    let base_url = base_url.trim_end_matches('/');
    let mut page = 1;
    loop {
        let query = ToolQuery {
            page: Some(page),
            page_size: Some(MAX_PAGE_SIZE),
            ..ToolQuery::default()
        };
        let listing = list_with(&http, base_url, &query).await?;
        if let Some(tool) = listing
            .tools
            .into_iter()
            .find(|t| t.product_slug == slug || t.product_id == slug)
        {
            return Ok(Some(tool));
        }
        match listing.pagination.next_page {
            Some(next) => page = next,
            None => return Ok(None),
        }
    }
}

impl Client {
    /// Invokes `product/action` with credits: a signed request (method/path scope, payload
    /// hash over `parameters`). The server holds the price, runs the tool and charges only on
    /// success.
    pub async fn invoke(
        &self,
        product: &str,
        action: &str,
        parameters: Value,
    ) -> Result<InvokeResponse> {
        let mut fields = Map::new();
        fields.insert("parameters".into(), parameters);
        self.signed_call(
            SignedAction::ToolActionInvoke,
            &[("productSlug", product), ("actionSlug", action)],
            fields,
        )
        .await
    }

    /// Invokes `product/action` paying per call with x402 (no credits): sends the bare
    /// parameters, reads the 402 challenge, signs an EIP-3009 authorization for its first
    /// accepted network with this wallet, and sends the same body with `PAYMENT-SIGNATURE`.
    /// The payment settles only when the tool succeeded.
    pub async fn invoke_x402(
        &self,
        product: &str,
        action: &str,
        parameters: Value,
    ) -> Result<InvokeResponse> {
        let url = format!(
            "{}/api/external/tools/{product}/actions/{action}/invoke",
            self.base_url
        );
        let response = self.http.post(&url).json(&parameters).send().await?;
        if response.status().as_u16() != 402 {
            return decode(response).await;
        }
        let (_, payment) = self.sign_challenge(response, |_| {}).await?;
        let response = self
            .http
            .post(&url)
            .header(x402::HEADER_PAYMENT_SIGNATURE, payment)
            .json(&parameters)
            .send()
            .await?;
        decode(response).await
    }
}
