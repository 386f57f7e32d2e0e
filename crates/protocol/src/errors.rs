//! Machine-readable error codes: HTTP status, meaning and recovery for each.
//!
//! Every error response of the API carries one of these as `error_code` (and `code`), with
//! `details.checklist` listing concrete steps a client can take.

use std::fmt;
use std::str::FromStr;

macro_rules! error_codes {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $status:literal, $meaning:literal, $recovery:literal, [$($step:literal),* $(,)?];
    )*) => {
        /// A stable machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code as sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => stringify!($variant),)* }
            }

            /// The HTTP status this code is answered with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// What the code means.
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => $meaning,)* }
            }

            /// How a client recovers.
            pub fn recovery(self) -> &'static str {
                match self { $(ErrorCode::$variant => $recovery,)* }
            }

            /// Concrete steps for `details.checklist`.
            pub fn checklist(self) -> &'static [&'static str] {
                match self { $(ErrorCode::$variant => &[$($step),*],)* }
            }
        }

        impl FromStr for ErrorCode {
            type Err = UnknownErrorCode;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $(stringify!($variant) => Ok(ErrorCode::$variant),)*
                    _ => Err(UnknownErrorCode(s.to_owned())),
                }
            }
        }
    };
}

error_codes! {
    /// The session nonce does not exist for this wallet.
    EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID = 401,
        "The session nonce does not exist for this wallet.",
        "Create a fresh session nonce with POST /api/external/auth/session and re-sign.",
        [
            "Call POST /api/external/auth/session with {\"wallet_address\": \"<the same wallet>\"}.",
            "Use the session_nonce from that response, for the same wallet_address it was issued to.",
            "Generate a fresh request_id and sign the message again with the new session line.",
        ];
    /// The session nonce expired.
    EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED = 401,
        "The session nonce expired.",
        "Create a new session nonce, use a fresh request_id, and re-sign.",
        [
            "Call POST /api/external/auth/session to get a new session_nonce (the response tells expires_in seconds).",
            "Use a fresh request_id.",
            "Sign the message again with the new session line.",
        ];
    /// The signature could not be recovered as an EIP-191 personal_sign signature.
    EXTERNAL_SIGNATURE_MALFORMED = 401,
        "The signature could not be recovered as an EIP-191 personal_sign signature.",
        "Sign the exact UTF-8 message string and send a 0x-prefixed 65-byte signature.",
        [
            "Send signature as 0x followed by 130 hex digits (r, s, v: 65 bytes).",
            "Use v = 27 or 28 (0 or 1 is accepted too).",
            "Use the low-S form (s <= n/2, EIP-2); standard signers (viem, ethers, eth-account) already do.",
            "Sign with EIP-191 personal_sign over the UTF-8 text of the message; do not hex-decode it.",
        ];
    /// The signature recovered to a different wallet than wallet_address.
    EXTERNAL_SIGNATURE_WALLET_MISMATCH = 401,
        "The signature recovered to a different wallet than wallet_address.",
        "Compare details.expected_message, details.accepted_path_candidates, and details.expected_payload_hash; then sign with the wallet private key for wallet_address.",
        [
            "Sign exactly details.expected_message (lines joined by \\n, no trailing newline).",
            "Lowercase wallet_address in the wallet: line.",
            "Hash the canonical JSON of the payload object only (sorted keys, no whitespace); compare with details.expected_payload_hash.",
            "Do not include wallet_address, session_nonce, request_id or signature in the payload hash.",
            "For tool invokes sign method:/path: lines (see details.accepted_path_candidates), not action:/product:.",
            "Sign with the private key of wallet_address.",
        ];
    /// The request_id was already used for this session.
    EXTERNAL_SIGNATURE_REQUEST_REPLAY = 409,
        "The request_id was already used for this session.",
        "Generate a fresh request_id and sign again.",
        [
            "Generate a new unique request_id (a UUID v4 is a good choice).",
            "Rebuild the message with the new request: line and sign again.",
            "If you were retrying after a timeout, check the effect first (e.g. the balance) before repeating a paid call.",
        ];
    /// The request body or parameters failed validation.
    VALIDATION_ERROR = 422,
        "The request failed validation.",
        "Fix the fields listed in detail[] (loc names the field) and send again.",
        [
            "Read detail[].loc for the field and detail[].msg for the problem.",
            "Send a JSON object body with Content-Type: application/json.",
            "Wallet addresses are 0x followed by 40 hex digits.",
        ];
    /// No such route or resource.
    NOT_FOUND = 404,
        "The requested resource does not exist.",
        "Check the URL and the identifier.",
        [
            "Check the path against /openapi.json.",
            "Check the identifier in the path.",
        ];
    /// The route exists but not for this HTTP method.
    METHOD_NOT_ALLOWED = 405,
        "The HTTP method is not allowed for this route.",
        "Use the method documented in /openapi.json.",
        ["Signed endpoints are POST; list endpoints are GET."];
    /// The request body is larger than the configured limit.
    PAYLOAD_TOO_LARGE = 413,
        "The request body is larger than the server accepts.",
        "Send a smaller body.",
        ["Keep the JSON body under the limit given in details.max_body_bytes."];
    /// The admin bearer token is missing or wrong.
    ADMIN_UNAUTHORIZED = 401,
        "The admin bearer token is missing or wrong.",
        "Send Authorization: Bearer <admin token>.",
        ["Send the header Authorization: Bearer <token> with the token the server was configured with."];
    /// The operator API is not enabled on this server.
    ADMIN_API_DISABLED = 403,
        "The operator API is disabled because no admin token is configured.",
        "Start the server with --admin-token (or AGENTPMT_ADMIN_TOKEN / AGENTPMT_ADMIN_TOKEN_SHA256).",
        ["Configure an admin token and restart the server."];
    /// The wallet has fewer credits than the operation needs.
    INSUFFICIENT_CREDITS = 402,
        "The wallet does not have enough credits.",
        "Buy credits with POST /api/external/credits/purchase, or use a smaller amount.",
        [
            "Check the balance with POST /api/external/credits/balance.",
            "Buy credits with POST /api/external/credits/purchase (packs of 500 credits).",
        ];
    /// An idempotency key was reused with a different request.
    IDEMPOTENCY_KEY_REUSED = 409,
        "This idempotency key was already used with a different request.",
        "Use a new idempotency key for a different request, or resend the original request unchanged.",
        ["Generate a new idempotency key for a new operation."];
    /// A credit purchase asked for a number of credits that is not a valid pack.
    INVALID_CREDIT_PACK = 400,
        "Credits are sold in packs that are multiples of 500.",
        "Send credits as a multiple of 500; details.suggested_credits is the next valid pack.",
        ["Use details.suggested_credits, or any positive multiple of 500 credits (100 credits = 1 USD)."];
    /// The requested chain or token is not offered by this server.
    UNSUPPORTED_PAYMENT_NETWORK = 400,
        "This server does not accept payments on that chain or in that token.",
        "Pick one of the networks listed in details.offered (or omit chain_id and token for the default).",
        [
            "Omit chain_id and token to pay on the server's default network.",
            "Otherwise send a chain_id and token listed in details.offered.",
        ];
    /// The x402 payment header could not be decoded.
    PAYMENT_MALFORMED = 400,
        "The payment header is not a base64-encoded x402 payment payload.",
        "Send PAYMENT-SIGNATURE (or X-PAYMENT / PAYMENT) as standard base64 of the x402 v2 PaymentPayload JSON.",
        [
            "Base64-encode (standard alphabet, padded) the UTF-8 JSON of the payment payload.",
            "The payload needs x402Version, accepted (a copy of one entry of accepts), and payload {signature, authorization}.",
            "authorization holds from, to, value, validAfter, validBefore (decimal strings) and nonce (0x + 64 hex).",
        ];
    /// The x402 payment was decoded but does not satisfy the requirements.
    PAYMENT_INVALID = 402,
        "The x402 payment does not satisfy the payment requirements.",
        "Read details.reason, sign a new authorization for one entry of accepts (in the PAYMENT-REQUIRED header) and retry.",
        [
            "Copy one entry of accepts verbatim into accepted.",
            "Sign EIP-712 TransferWithAuthorization with the domain {name: extra.name, version: extra.version, chainId, verifyingContract: asset}.",
            "Use to = payTo and value = amount exactly; validAfter <= now < validBefore (leave at least 6 seconds).",
            "Sign with the key of authorization.from and make sure it holds enough of the token.",
        ];
    /// Settlement of a verified payment failed on chain; nothing was charged.
    PAYMENT_SETTLEMENT_FAILED = 402,
        "Settlement of the payment failed; no credits were granted.",
        "Read details.reason (also in the PAYMENT-RESPONSE header); fix it (for example the token balance) and pay again.",
        [
            "Check the payer's token balance on the chain of the payment.",
            "Sign a new authorization with a fresh nonce and retry.",
        ];
    /// The payment authorization is being settled by another request.
    PAYMENT_IN_PROGRESS = 409,
        "This payment authorization is being settled by another request.",
        "Wait a few seconds, then check the balance or repeat the request with the same request_id.",
        [
            "Do not sign a new authorization for the same purchase: the first one may still settle.",
            "Repeat the original request (same request_id and body) to get its outcome.",
        ];
    /// The payment authorization or transaction was already used.
    PAYMENT_ALREADY_USED = 409,
        "This payment authorization or transaction has already been used.",
        "Sign a new authorization (fresh nonce) for a new purchase; to see an earlier purchase, repeat it with its request_id.",
        [
            "Every purchase needs its own EIP-3009 authorization nonce or its own transaction.",
            "details.purchase_id names the purchase that used it.",
        ];
    /// A sponsored purchase lacks a valid sponsor signature.
    SPONSOR_SIGNATURE_INVALID = 401,
        "A purchase paid by another wallet needs that wallet's sponsor_signature.",
        "Sign details.expected_message with the payer wallet (EIP-191) and send it as sponsor_signature.",
        [
            "Set payer_wallet_address to the paying wallet (authorization.from or the transfer sender).",
            "Sign details.expected_message with the payer key and send it as sponsor_signature.",
        ];
    /// The referenced on-chain transfer does not pay for this purchase.
    TRANSFER_INVALID = 402,
        "The transaction does not contain a transfer that pays for this purchase.",
        "Send the hash of a successful transfer of exactly the price, in the chosen token, to the payTo address.",
        [
            "Transfer exactly the price (credits x 10,000 base units for USDC) to the payTo address of the 402 challenge.",
            "Wait until the transaction is mined before sending its hash.",
            "Send from payer_wallet_address (or from wallet_address).",
        ];
    /// Too many requests from this client (source address or wallet) in the window.
    RATE_LIMITED = 429,
        "Too many requests from this client (source IP address or wallet) in the current window.",
        "Wait rate_limit.retry_after_seconds (also the Retry-After header) and send again.",
        [
            "Wait the number of seconds in the Retry-After header (rate_limit.retry_after_seconds) before retrying.",
            "Stay under rate_limit.limit requests per rate_limit.window_seconds.",
            "AgentAddress creation allows one new address per window per source IP: persist the address you were given and reuse it.",
        ];
    /// The product or action in the URL does not exist (or is inactive).
    TOOL_NOT_FOUND = 404,
        "No active product or action matches the URL.",
        "List the tools with GET /api/external/tools and use a product_slug and action_slug from it.",
        [
            "GET /api/external/tools lists every invocable product with its actions.",
            "The action slug is the action name with _ replaced by -; both forms are accepted.",
        ];
    /// The action slug matches more than one action of the product.
    TOOL_ACTION_AMBIGUOUS = 409,
        "The action slug matches several actions of this product.",
        "Use the exact action_slug from details.candidates.",
        ["Pick one action_slug from details.candidates and send it exactly."];
    /// The action cannot be paid per call with x402.
    X402_NOT_AVAILABLE = 404,
        "This action is not available for direct x402 payment.",
        "Invoke it with credits (signed request), or pick an action whose x402_enabled is true.",
        [
            "Buy credits with POST /api/external/credits/purchase and send a signed invocation.",
            "GET /api/external/tools shows x402_enabled per action.",
        ];
    /// Signature fields and an x402 payment header in one request.
    MIXED_PAYMENT_MODES = 400,
        "The request mixes a signed credit invocation with an x402 payment header.",
        "Send either the signed envelope with nested parameters (credits) or the bare parameters with a payment header (x402), not both.",
        [
            "Credits: body {wallet_address, session_nonce, request_id, signature, parameters}, no payment header.",
            "Direct x402: body = the action parameters, header PAYMENT-SIGNATURE (or X-PAYMENT).",
        ];
    /// The tool failed; nothing was charged.
    TOOL_FAILED = 502,
        "The tool failed to produce a result; the held credits were released and nothing was charged.",
        "Read details.reason; fix the parameters or retry later with a fresh request_id.",
        [
            "Nothing was charged: the hold on your credits was released (or the x402 payment was not settled).",
            "Retry with a fresh request_id; if it keeps failing, the vendor may be down.",
        ];
    /// The tool did not answer in time; nothing was charged.
    TOOL_TIMEOUT = 504,
        "The tool did not answer in time; the held credits were released and nothing was charged.",
        "Retry later with a fresh request_id.",
        ["Nothing was charged.", "Retry later with a fresh request_id."];
    /// A catalog entry conflicts with an existing one.
    CATALOG_CONFLICT = 409,
        "A product, action or vendor with this slug or id already exists.",
        "Use another slug, or update the existing entry with PUT.",
        ["Slugs are unique: products globally, actions per product, vendors globally."];
    /// A vendor secret cannot be stored because no secrets key is configured.
    SECRETS_KEY_MISSING = 400,
        "Vendor secrets are stored encrypted, and this server has no secrets key.",
        "Start the server with AGENTPMT_SECRETS_KEY (64 hex digits) and retry.",
        ["Generate a key with `openssl rand -hex 32` and set AGENTPMT_SECRETS_KEY."];
    /// The request took longer than the server allows.
    REQUEST_TIMEOUT = 503,
        "The request did not complete in time.",
        "Retry later with a fresh request_id; check first whether the first attempt took effect.",
        ["Retry after a short delay.", "Use a fresh request_id for signed requests."];
    /// A dependency (the database) is unavailable.
    SERVICE_UNAVAILABLE = 503,
        "The service is temporarily unavailable.",
        "Retry after a short delay.",
        ["Retry after a short delay."];
    /// An unexpected server error.
    INTERNAL_ERROR = 500,
        "The server failed unexpectedly.",
        "Retry later; if it persists, report the request_id.",
        ["Retry later.", "If it persists, report the request_id of this response."];
    /// No workflow with this id or slug is published.
    WORKFLOW_NOT_FOUND = 404,
        "No published workflow has this id or slug.",
        "List workflows with GET /api/external/workflows and use a workflow_id from there.",
        [
            "Call GET /api/external/workflows and copy a workflow_id (or slug).",
            "Sign product:<workflowId> with the same value you put in the path.",
        ];
    /// The workflow slug is used by another workflow.
    WORKFLOW_SLUG_TAKEN = 409,
        "Another workflow already uses this slug.",
        "Choose a different slug.",
        ["Slugs are unique across workflows: pick another one."];
    /// No workflow session with this id exists.
    WORKFLOW_SESSION_NOT_FOUND = 404,
        "No workflow session with this id exists (for this workflow).",
        "Start a session with POST /api/external/workflows/{workflowId}/start and use its workflow_session_id.",
        [
            "Call POST /api/external/workflows/active to list your active sessions.",
            "Start a session with POST /api/external/workflows/{workflowId}/start.",
        ];
    /// The workflow session belongs to another wallet.
    WORKFLOW_SESSION_FOREIGN = 403,
        "The workflow session belongs to another wallet.",
        "Use a workflow_session_id that your own wallet started.",
        [
            "Only the wallet that started a session may use it or attribute tool calls to it.",
            "Start your own session with POST /api/external/workflows/{workflowId}/start.",
        ];
    /// The workflow session has ended.
    WORKFLOW_SESSION_ENDED = 409,
        "The workflow session has ended (by the agent, or after being idle too long).",
        "Start or resume a session with POST /api/external/workflows/{workflowId}/start.",
        [
            "Call POST /api/external/workflows/{workflowId}/start (same instance_id) for a new session.",
            "Use the new workflow_session_id in _workflow_session_id.",
        ];
    /// Several active sessions match and none was named.
    WORKFLOW_SESSION_AMBIGUOUS = 409,
        "The wallet has several active sessions of this workflow; name one.",
        "Send workflow_session_id (one of details.active_session_ids).",
        ["Send workflow_session_id with one of details.active_session_ids."];
    /// The API-key + budget-key bearer token is missing, malformed, wrong or revoked.
    BEARER_UNAUTHORIZED = 401,
        "Missing or invalid API-key + budget-key bearer token.",
        "Send Authorization: Bearer <base64 of api_key:budget_key> (or X-API-Key and X-Budget-Key) with live keys of one account.",
        [
            "Send Authorization: Bearer base64(\"<api_key>:<budget_key>\"), or base64/base64url of {\"api_key\":…,\"budget_key\":…}.",
            "Or send the headers X-API-Key and X-Budget-Key.",
            "The API key and the budget must belong to the same account and must not be revoked.",
        ];
    /// The budget's cap has no room for this call's price (or the budget was revoked).
    BUDGET_EXHAUSTED = 402,
        "The budget's spending cap has no room left for this call.",
        "Ask the account's operator to raise the budget's cap, or use another budget.",
        [
            "details.price_credits is the price of the call; the budget has less than that left under its cap.",
            "Calls that failed or timed out gave their reservation back; nothing was charged for them.",
        ];
    /// The schedule request body or parameters are invalid.
    SCHEDULE_REQUEST_INVALID = 400,
        "Invalid schedule id, request body or query parameters.",
        "Fix the fields listed in detail[] (loc names the field) and send again.",
        [
            "Read detail[].loc for the field and detail[].msg for the problem.",
            "Times are RFC 3339, e.g. 2026-05-15T13:00:00.000Z.",
        ];
    /// No schedule with this id belongs to the authenticated budget.
    SCHEDULE_NOT_FOUND = 404,
        "Schedule not found for the authenticated budget.",
        "Use a schedule_id returned by claim or due for this budget.",
        ["Call POST /api/external/workflow-schedules/claim and use the schedule_id it returns."];
    /// The due_at sent does not match the schedule's current occurrence.
    SCHEDULE_DUE_AT_MISMATCH = 409,
        "The due time does not match the schedule's current occurrence.",
        "Send the due_at exactly as the claim returned it; the occurrence may have moved on.",
        [
            "Send due_at exactly as returned by claim.",
            "If the schedule moved on, claim again.",
        ];
    /// The occurrence has no active claim.
    SCHEDULE_CLAIM_REQUIRED = 409,
        "No active claim exists for this occurrence.",
        "Claim the occurrence with POST /api/external/workflow-schedules/claim first.",
        ["Call POST /api/external/workflow-schedules/claim and use the claim_token it returns."];
    /// The claim's lease expired.
    SCHEDULE_CLAIM_EXPIRED = 409,
        "The claim's lease expired; another worker may claim the occurrence.",
        "Claim again (with a longer lease_seconds if the work takes longer).",
        [
            "Call POST /api/external/workflow-schedules/claim again.",
            "Use a lease_seconds longer than the work takes.",
        ];
    /// The claim token is not the occurrence's current claim.
    SCHEDULE_CLAIM_MISMATCH = 409,
        "A different worker owns the claim (the claim_token is not the current one).",
        "Stop working on this occurrence; claim new work.",
        [
            "Another worker claimed this occurrence after your lease; do not advance it.",
            "Call POST /api/external/workflow-schedules/claim for new work.",
        ];
    /// No job has this id.
    JOB_NOT_FOUND = 404,
        "No job has this id.",
        "List open jobs with POST /api/external/jobs/list and use a job_id from there.",
        [
            "Call POST /api/external/jobs/list and copy a job_id.",
            "Sign product:<jobId> with the same value you put in the path.",
        ];
    /// The job cannot be reserved now (held by another agent, submitted, or finished).
    JOB_NOT_AVAILABLE = 409,
        "The job cannot be reserved now: another agent holds it, it awaits review, or it is finished.",
        "Pick another open job; reservations are exclusive.",
        [
            "Read details.reason (reserved, submitted, completed, already_submitted).",
            "Call POST /api/external/jobs/list for other open jobs.",
            "Retry this job later only if details.reason is reserved (reservations expire).",
        ];
    /// The caller holds no active reservation of this job.
    JOB_RESERVATION_REQUIRED = 409,
        "You hold no active reservation of this job (never reserved, expired, or someone else holds it).",
        "Reserve the job again if it is open; never submit work done under an expired reservation.",
        [
            "Call POST /api/external/jobs/{jobId}/status to see the job and your reservation.",
            "If the job is open, reserve it again with POST /api/external/jobs/{jobId}/reserve.",
        ];
    /// The reservation_id is not the caller's active reservation.
    JOB_RESERVATION_MISMATCH = 409,
        "The reservation_id is not your active reservation of this job.",
        "Send the reservation_id of your current reservation (from the reserve response or status).",
        [
            "Call POST /api/external/jobs/{jobId}/status and read reservation.reservation_id.",
            "Sign the completion again with that reservation_id and a fresh request_id.",
        ];
    /// The completion proof does not satisfy the job.
    JOB_PROOF_INVALID = 422,
        "The completion proof does not satisfy the job (see detail[]).",
        "Fix the fields named in detail[] and submit again with a fresh request_id.",
        [
            "social_share: send exactly one social_posts item for the job's platform.",
            "Copy target_url_used unchanged from job.social_share.tracking_links[0].",
            "workflow_creation: send the workflow_id you created and published under this reservation.",
        ];
    /// The X-Job-Workflow-Token is missing, unknown, expired or for another job.
    JOB_WORKFLOW_TOKEN_INVALID = 401,
        "The X-Job-Workflow-Token is missing, unknown, expired, superseded or for another job.",
        "Use workflow_access.access_token from your reserve response, on its own job, before it expires.",
        [
            "Send the header as X-Job-Workflow-Token: Bearer <access_token>.",
            "Use it only on /api/external/jobs/{jobId}/workflow/... of the job you reserved.",
            "If it expired, reserve the job again for a new token.",
        ];
    /// No submission has this id.
    JOB_SUBMISSION_NOT_FOUND = 404,
        "No submission has this id.",
        "List submissions with GET /api/admin/jobs/submissions.",
        ["Call GET /api/admin/jobs/submissions and copy a submission_id."];
    /// The submission was already decided the other way.
    JOB_SUBMISSION_ALREADY_REVIEWED = 409,
        "The submission was already approved or rejected; a decision is final.",
        "Read the submission's status; nothing was changed.",
        ["Call GET /api/admin/jobs/submissions?status=all to see the decision."];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A code this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0}")]
pub struct UnknownErrorCode(pub String);

/// The short HTTP reason phrase for a status (the envelope's `error` field).
pub fn status_label(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_signature_codes_have_their_statuses() {
        use ErrorCode::*;
        assert_eq!(EXTERNAL_SIGNATURE_SESSION_NONCE_INVALID.status(), 401);
        assert_eq!(EXTERNAL_SIGNATURE_SESSION_NONCE_EXPIRED.status(), 401);
        assert_eq!(EXTERNAL_SIGNATURE_MALFORMED.status(), 401);
        assert_eq!(EXTERNAL_SIGNATURE_WALLET_MISMATCH.status(), 401);
        assert_eq!(EXTERNAL_SIGNATURE_REQUEST_REPLAY.status(), 409);
        assert_eq!(RATE_LIMITED.status(), 429);
    }

    #[test]
    fn round_trips_and_checklists() {
        for &code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>().unwrap(), code);
            assert!(!code.checklist().is_empty(), "{code} has no checklist");
            assert!(!code.meaning().is_empty() && !code.recovery().is_empty());
        }
    }
}
