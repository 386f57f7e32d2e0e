//! Client of the operator API (`/api/admin/…`), authenticated with the admin bearer token.

use crate::{decode, default_http, Error, Result, WalletAddress};
use agentpmt_protocol::wire::{
    AdminWalletView, CreditAdjustmentRequest, CreditAdjustmentResponse, HelpTicketList,
    HelpTicketResponse, PaymentAuditReport,
};
use zeroize::Zeroizing;

/// A client of one server's operator API.
pub struct AdminClient {
    http: reqwest::Client,
    base_url: String,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AdminClient {
    /// A client for `base_url` presenting `token`.
    pub fn new(base_url: &str, token: Zeroizing<String>) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::InvalidUrl(base_url));
        }
        let http = default_http()?;
        Ok(AdminClient {
            http,
            base_url,
            token,
        })
    }

    /// A request to `path` (from `/api/admin/…`) carrying the admin token.
    pub(crate) fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.token.as_str())
    }

    /// `GET /api/admin/wallets/{address}`: balance, ledger totals, recent entries.
    pub async fn wallet(&self, wallet: &WalletAddress) -> Result<AdminWalletView> {
        let response = self
            .http
            .get(format!("{}/api/admin/wallets/{wallet}", self.base_url))
            .bearer_auth(self.token.as_str())
            .send()
            .await?;
        decode(response).await
    }

    /// `POST /api/admin/wallets/{address}/credits`: grant (positive) or remove (negative).
    pub async fn adjust_credits(
        &self,
        wallet: &WalletAddress,
        request: &CreditAdjustmentRequest,
    ) -> Result<CreditAdjustmentResponse> {
        let response = self
            .http
            .post(format!(
                "{}/api/admin/wallets/{wallet}/credits",
                self.base_url
            ))
            .bearer_auth(self.token.as_str())
            .json(request)
            .send()
            .await?;
        decode(response).await
    }

    /// `GET /api/admin/audit/payments`: the payment audit (`clean` false when it found
    /// discrepancies).
    pub async fn audit_payments(&self) -> Result<PaymentAuditReport> {
        let response = self
            .authed(reqwest::Method::GET, "/api/admin/audit/payments")
            .send()
            .await?;
        decode(response).await
    }

    /// `GET /api/admin/help-tickets?limit=N`: the newest agent-help tickets.
    pub async fn help_tickets(&self, limit: u32) -> Result<HelpTicketList> {
        let response = self
            .http
            .get(format!(
                "{}/api/admin/help-tickets?limit={limit}",
                self.base_url
            ))
            .bearer_auth(self.token.as_str())
            .send()
            .await?;
        decode(response).await
    }

    /// `POST /api/admin/help-tickets/{ticketId}/close` (`open: false`) or `.../reopen`.
    pub async fn set_help_ticket_open(
        &self,
        ticket_id: &str,
        open: bool,
    ) -> Result<HelpTicketResponse> {
        let verb = if open { "reopen" } else { "close" };
        let response = self
            .authed(
                reqwest::Method::POST,
                &format!("/api/admin/help-tickets/{ticket_id}/{verb}"),
            )
            .send()
            .await?;
        decode(response).await
    }
}
