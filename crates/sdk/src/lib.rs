//! Typed async client for the External Agent API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentpmt_sdk::Error> {
//! use agentpmt_sdk::{Client, PrivateKey};
//! let key = PrivateKey::from_hex("0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")?;
//! let client = Client::new("http://127.0.0.1:8080", key)?;
//! let balance = client.balance().await?;
//! println!("{} credits", balance.balance_credits);
//! # Ok(()) }
//! ```
//!
//! The client creates a session nonce on first use and caches it; when the server answers
//! `EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID` or `…_EXPIRED` it renews the session once and
//! retries with a fresh request id. Every signed call gets a new UUID request id. Server
//! errors surface as [`Error::Api`] with the `error_code`, message and checklist. A call
//! whose answer is lost is sent again with the identical body; when the server had
//! accepted the first copy, the answer is [`Error::Replay`] with what became of it
//! (succeeded and what it cost, failed, released), never a guess.
//!
//! Sessions are renewed ahead of expiry by a margin relative to the lifetime the server
//! announces (`min(30 s, lifetime / 4)`), so short session windows still reuse a nonce.
//! [`Error::is_transient`], [`Error::is_configuration`] and [`Error::retry_after`] classify
//! failures for callers that retry; [`backoff::Backoff`] spaces the retries.

pub mod admin;
pub mod backoff;
pub mod job_workflow;
pub mod jobs;
pub mod keystore;
pub mod schedules;
pub mod tools;
pub mod workflows;

use agentpmt_protocol::signing::{sign_body, BuildError};
pub use agentpmt_protocol::wire::ReplayOriginal;
use agentpmt_protocol::wire::{
    AgentAddressResponse, BalanceResponse, ErrorBody, PurchaseResponse, ReplayState,
    SessionRequest, SessionResponse,
};
use agentpmt_protocol::x402::{self, PaymentRequired, PaymentRequirements};
pub use agentpmt_protocol::{ErrorCode, PrivateKey, SignedAction, WalletAddress};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

/// How many times a signed body whose answer was lost is sent again.
const LOST_CALL_RESENDS: u32 = 3;
/// Pause before sending a lost call again (times the attempt), and between asks while its
/// first copy is still in progress.
const LOST_CALL_PAUSE: Duration = Duration::from_millis(250);
/// How many times a call in progress on the server is asked about again (about 15 s).
const IN_PROGRESS_POLLS: u32 = 60;

/// Renew a session at most this long before the server says it expires.
const SESSION_RENEW_MARGIN: Duration = Duration::from_secs(30);

/// How long before expiry a session of `lifetime` is renewed: `min(30 s, lifetime / 4)`, so
/// a 20 s session is used for 15 s instead of being renewed on every call.
pub fn session_renew_margin(lifetime: Duration) -> Duration {
    SESSION_RENEW_MARGIN.min(lifetime / 4)
}

/// An error answered by the server, in its envelope.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// The code, when this SDK knows it.
    pub code: Option<ErrorCode>,
    /// The code as sent.
    pub error_code: String,
    pub message: String,
    /// `details.checklist`: steps to fix the request.
    pub checklist: Vec<String>,
    /// The whole body.
    pub body: ErrorBody,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} {}: {}",
            self.status, self.error_code, self.message
        )?;
        for step in &self.checklist {
            write!(f, "\n  - {step}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in this crate. New variants may be added; classify with
/// [`Error::is_transient`] and [`Error::is_configuration`] rather than by matching.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{0}")]
    Api(Box<ApiFailure>),
    #[error("HTTP transport: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected response (HTTP {status}): {message}")]
    Decode { status: u16, message: String },
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Key(#[from] agentpmt_protocol::signature::InvalidPrivateKey),
    #[error(transparent)]
    Keystore(#[from] keystore::KeystoreError),
    /// The server had already accepted this very request (same body, same `request_id`):
    /// what became of it. Returned when the answer to a call was lost and the client asked
    /// again with the same body: `original.state` says whether it ran (`succeeded`, with
    /// `charged_credits`) or not (`failed`, `released`: nothing charged). Never sign the
    /// call again after `succeeded`.
    #[error("the server already accepted this request ({:?}, {} credits charged)", original.state, original.charged_credits)]
    Replay { original: ReplayOriginal },
}

impl Error {
    /// The server's error code, if this is an API error with a known code.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(f) => f.code,
            Error::Replay { .. } => Some(ErrorCode::EXTERNAL_SIGNATURE_REQUEST_REPLAY),
            _ => None,
        }
    }

    /// True when the same request may succeed later unchanged: the server could not be
    /// reached or the connection broke, it timed out, it answered 5xx, or it rate-limited
    /// the caller (429). Retry these with a [`backoff::Backoff`].
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Http(e) => {
                e.is_connect()
                    || e.is_timeout()
                    || e.is_request()
                    || e.is_body()
                    || e.status().is_some_and(|s| s.is_server_error())
            }
            Error::Api(f) => f.status >= 500 || f.status == 429,
            Error::Decode { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// True when retrying cannot help until the operator changes the setup: an invalid
    /// URL, key or keystore (wrong password), or credentials the server refuses (401/403,
    /// other than an expired session nonce, which the client renews itself).
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::InvalidUrl(_) | Error::Key(_) | Error::Keystore(_) => true,
            Error::Api(f) => {
                (f.status == 401 || f.status == 403)
                    && !matches!(
                        f.code,
                        Some(ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID)
                            | Some(ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED)
                            | Some(ErrorCode::JOB_WORKFLOW_TOKEN_INVALID)
                    )
            }
            _ => false,
        }
    }

    /// How long the server asked the caller to wait (429 `rate_limit.retry_after_seconds`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api(f) => f
                .body
                .rate_limit
                .map(|r| Duration::from_secs(r.retry_after_seconds)),
            _ => None,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
struct CachedSession {
    nonce: String,
    renew_at: Instant,
}

/// A client bound to one server and one wallet.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    key: PrivateKey,
    session: Mutex<Option<CachedSession>>,
}

impl Client {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8080`) signing with `key`.
    pub fn new(base_url: &str, key: PrivateKey) -> Result<Self> {
        let http = default_http()?;
        Self::with_http_client(base_url, key, http)
    }

    /// A client signing with the key in an encrypted keystore file (v3 JSON).
    pub fn from_keystore(
        base_url: &str,
        keystore: &std::path::Path,
        password: &str,
    ) -> Result<Self> {
        Self::new(base_url, keystore::load(keystore, password)?)
    }

    /// Like [`Client::new`] with a caller-configured `reqwest::Client`.
    pub fn with_http_client(
        base_url: &str,
        key: PrivateKey,
        http: reqwest::Client,
    ) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::InvalidUrl(base_url));
        }
        Ok(Client {
            http,
            base_url,
            key,
            session: Mutex::new(None),
        })
    }

    /// The signing wallet.
    pub fn wallet(&self) -> WalletAddress {
        self.key.address()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Creates a new session nonce (not cached; signed calls manage their own).
    pub async fn create_session(&self) -> Result<SessionResponse> {
        let body = SessionRequest {
            wallet_address: self.wallet(),
        };
        let response = self
            .http
            .post(format!("{}/api/external/auth/session", self.base_url))
            .json(&body)
            .send()
            .await?;
        decode(response).await
    }

    /// The cached session nonce, creating one when there is none or it is about to expire.
    async fn session_nonce(&self) -> Result<String> {
        let mut cached = self.session.lock().await;
        if let Some(s) = cached.as_ref() {
            if Instant::now() < s.renew_at {
                return Ok(s.nonce.clone());
            }
        }
        let fresh = self.create_session().await?;
        let lifetime = Duration::from_secs(fresh.expires_in);
        let lifetime = lifetime.saturating_sub(session_renew_margin(lifetime));
        *cached = Some(CachedSession {
            nonce: fresh.session_nonce.clone(),
            renew_at: Instant::now() + lifetime,
        });
        Ok(fresh.session_nonce)
    }

    async fn forget_session(&self, nonce: &str) {
        let mut cached = self.session.lock().await;
        if cached.as_ref().is_some_and(|s| s.nonce == nonce) {
            *cached = None;
        }
    }

    /// Calls a signed endpoint: `fields` are the endpoint's own body fields, `path_params`
    /// fill the route (`{jobId}`, ...). Renews the session once if the server rejects it.
    pub async fn signed_call<T: DeserializeOwned>(
        &self,
        action: SignedAction,
        path_params: &[(&str, &str)],
        fields: Map<String, Value>,
    ) -> Result<T> {
        let spec = action.spec();
        let param = |name: &str| {
            path_params
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let url = agentpmt_protocol::message::fill_template(spec.route, param)
            .ok_or_else(|| BuildError::MissingPathParam(spec.route.to_owned()))?;
        let mut renewed = false;
        loop {
            let nonce = self.session_nonce().await?;
            let request_id = uuid::Uuid::new_v4().to_string();
            let (body, _) = sign_body(&self.key, spec, param, &nonce, &request_id, fields.clone())?;
            let method = reqwest::Method::from_bytes(spec.method.as_bytes())
                .unwrap_or(reqwest::Method::POST);
            let url = format!("{}{url}", self.base_url);
            match self.send_resolving(method, &url, &body).await {
                Err(Error::Api(failure))
                    if !renewed
                        && matches!(
                            failure.code,
                            Some(ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID)
                                | Some(ErrorCode::EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED)
                        ) =>
                {
                    self.forget_session(&nonce).await;
                    renewed = true;
                }
                other => return other,
            }
        }
    }

    /// Sends one signed `body`; when its answer is lost (the connection broke or timed out
    /// after the request may have reached the server), sends the identical body again: the
    /// server either runs it (the first copy never arrived) or answers what became of the
    /// first copy ([`Error::Replay`]), waiting while that one is still in progress. So a
    /// lost call is resolved from the server's record, never by guessing or signing again.
    async fn send_resolving<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &Map<String, Value>,
    ) -> Result<T> {
        let mut lost = 0;
        let mut waited = 0;
        loop {
            let sent = self
                .http
                .request(method.clone(), url)
                .json(body)
                .send()
                .await;
            let answer = match sent {
                Ok(response) => decode::<T>(response).await,
                Err(e) => Err(Error::Http(e)),
            };
            match answer {
                Err(Error::Http(e)) if lost < LOST_CALL_RESENDS && !e.is_builder() => {
                    lost += 1;
                    tokio::time::sleep(LOST_CALL_PAUSE * lost).await;
                }
                Err(Error::Replay { original })
                    if original.state == ReplayState::InProgress && waited < IN_PROGRESS_POLLS =>
                {
                    waited += 1;
                    tokio::time::sleep(LOST_CALL_PAUSE).await;
                }
                answer => return answer,
            }
        }
    }

    /// The wallet's credit balance.
    pub async fn balance(&self) -> Result<BalanceResponse> {
        self.signed_call(SignedAction::Balance, &[], Map::new())
            .await
    }

    /// Buys `credits` (a multiple of 500) with an x402 payment signed by this wallet:
    /// asks for the 402 challenge, signs an EIP-3009 authorization for its first accepted
    /// network (or the one `chain_id` / `token` select), sends it, and, while settlement is
    /// pending, repeats the same request (same `request_id`, never a new signature) until it
    /// settles, fails, or `wait` passes. `progress` hears each step.
    pub async fn buy_credits(
        &self,
        credits: i64,
        chain_id: Option<u64>,
        token: Option<&str>,
        wait: Duration,
        mut progress: impl FnMut(PurchaseProgress<'_>),
    ) -> Result<PurchaseResponse> {
        let url = format!("{}/api/external/credits/purchase", self.base_url);
        let mut body = serde_json::json!({
            "wallet_address": self.key.address().to_string(),
            "credits": credits,
            "payment_method": "x402",
            "request_id": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(chain_id) = chain_id {
            body["chain_id"] = chain_id.into();
        }
        if let Some(token) = token {
            body["token"] = token.into();
        }
        let response = self.http.post(&url).json(&body).send().await?;
        if response.status().as_u16() != 402 {
            return decode(response).await;
        }
        let (_, header) = self
            .sign_challenge(response, |requirement| {
                progress(PurchaseProgress::Challenge(requirement))
            })
            .await?;
        progress(PurchaseProgress::Signed);
        let deadline = Instant::now() + wait;
        loop {
            let response = self
                .http
                .post(&url)
                .header(x402::HEADER_PAYMENT_SIGNATURE, &header)
                .json(&body)
                .send()
                .await?;
            let status = response.status().as_u16();
            let conflict_in_progress = status == 409;
            let result: Result<PurchaseResponse> = decode(response).await;
            match result {
                Ok(r) if r.status == "pending" && Instant::now() < deadline => {
                    progress(PurchaseProgress::Pending(&r));
                }
                Err(Error::Api(f))
                    if conflict_in_progress
                        && f.code == Some(ErrorCode::PAYMENT_IN_PROGRESS)
                        && Instant::now() < deadline =>
                {
                    progress(PurchaseProgress::Waiting);
                }
                other => return other,
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

impl Client {
    /// Reads a 402 challenge (the `PAYMENT-REQUIRED` header, else the body), shows its first
    /// accepted requirement to `seen`, and signs an EIP-3009 authorization for it with this
    /// wallet. Returns the requirement and the payment header value.
    pub(crate) async fn sign_challenge(
        &self,
        response: reqwest::Response,
        seen: impl FnOnce(&PaymentRequirements),
    ) -> Result<(PaymentRequirements, String)> {
        let header = response
            .headers()
            .get(x402::HEADER_PAYMENT_REQUIRED)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let required: PaymentRequired = match header {
            Some(h) => x402::decode_header(&h).map_err(|e| Error::Decode {
                status: 402,
                message: e.to_string(),
            })?,
            None => decode_json(402, &response.bytes().await?)?,
        };
        let requirement = required.accepts.first().ok_or_else(|| Error::Decode {
            status: 402,
            message: "the challenge offers no way to pay".into(),
        })?;
        seen(requirement);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let payment =
            x402::sign_authorization(&self.key, requirement, Some(required.resource.clone()), now)
                .map_err(|e| Error::Decode {
                    status: 402,
                    message: e.to_string(),
                })?;
        Ok((requirement.clone(), x402::encode_header(&payment)))
    }
}

/// Steps of [`Client::buy_credits`].
#[derive(Debug)]
pub enum PurchaseProgress<'a> {
    /// The server asked for this payment.
    Challenge(&'a PaymentRequirements),
    /// The authorization is signed and being sent.
    Signed,
    /// Settlement was broadcast; waiting for its outcome.
    Pending(&'a PurchaseResponse),
    /// Another request is settling this purchase; waiting.
    Waiting,
}

fn decode_json<T: DeserializeOwned>(status: u16, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        status,
        message: e.to_string(),
    })
}

/// A wallet the server generated (`POST /api/external/agentaddress`). The key and mnemonic
/// were sent once; `Debug` never shows them and they are zeroized on drop.
pub struct NewAgentAddress {
    /// The address (lowercase form; `checksum_address` is what the server sent).
    pub address: WalletAddress,
    /// EIP-55 form, as sent.
    pub checksum_address: String,
    /// The private key (checked to belong to `address`).
    pub key: PrivateKey,
    /// The 12-word BIP-39 mnemonic the key derives from (m/44'/60'/0'/0/0).
    pub mnemonic: Zeroizing<String>,
}

impl std::fmt::Debug for NewAgentAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAgentAddress")
            .field("address", &self.checksum_address)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Asks the server at `base_url` for a fresh AgentAddress (no wallet needed). Checks
    /// that the returned key belongs to the returned address.
    pub async fn create_agent_address(base_url: &str) -> Result<NewAgentAddress> {
        let base_url = base_url.trim_end_matches('/');
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::InvalidUrl(base_url.to_owned()));
        }
        let http = default_http()?;
        let response = http
            .post(format!("{base_url}/api/external/agentaddress"))
            .json(&serde_json::json!({}))
            .send()
            .await?;
        let created: AgentAddressResponse = decode(response).await?;
        let data = &created.data;
        let bad = |message: &str| Error::Decode {
            status: 200,
            message: message.to_owned(),
        };
        let address: WalletAddress = data
            .evm_address
            .parse()
            .map_err(|_| bad("evmAddress is not an address"))?;
        let key = PrivateKey::from_hex(&data.evm_private_key)
            .map_err(|_| bad("evmPrivateKey is not a private key"))?;
        if key.address() != address {
            return Err(bad("evmPrivateKey does not belong to evmAddress"));
        }
        Ok(NewAgentAddress {
            address,
            checksum_address: data.evm_address.clone(),
            key,
            mnemonic: Zeroizing::new(data.mnemonic.clone()),
        })
    }
}

/// The HTTP client every SDK client uses unless given one: 60 s timeout, SDK user agent.
pub(crate) fn default_http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("agentpmt-sdk/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// Decodes a success body as `T`, or an error body as [`Error::Api`].
pub(crate) async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            status,
            message: e.to_string(),
        });
    }
    let body: ErrorBody = serde_json::from_slice(&bytes).map_err(|_| Error::Decode {
        status,
        message: String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned(),
    })?;
    if body.error_code == ErrorCode::EXTERNAL_SIGNATURE_REQUEST_REPLAY.as_str() {
        if let Some(original) = body
            .details
            .get("original")
            .and_then(|o| serde_json::from_value::<ReplayOriginal>(o.clone()).ok())
        {
            return Err(Error::Replay { original });
        }
    }
    let checklist = body.checklist();
    Err(Error::Api(Box::new(ApiFailure {
        status,
        code: body.error_code.parse().ok(),
        error_code: body.error_code.clone(),
        message: body.message.clone(),
        checklist,
        body,
    })))
}
