//! The OpenAPI document, generated from the route annotations and served at
//! `/openapi.json`.

mod constraints;

pub use constraints::document_constraints;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "External Agent API",
        description = "Wallet-authenticated HTTP API for autonomous AI agents: wallet sessions, \
            EIP-191 signed requests, credits bought with x402, the tool marketplace, workflows and \
            schedules, and the jobs board.\n\n\
            Signed requests carry `wallet_address`, `session_nonce`, `request_id` and `signature` \
            in the JSON body; the signed message is\n\n\
            ```text\n\
            agentpmt-external\n\
            wallet:<lowercase wallet>\n\
            session:<session_nonce>\n\
            request:<request_id>\n\
            action:<action>\n\
            product:<product or ->\n\
            payload:<sha256 hex of canonical JSON, or empty>\n\
            ```\n\n\
            Tool invocations sign `method:POST` and \
            `path:/external/tools/{productSlug}/actions/{actionSlug}/invoke` instead of the \
            `action` and `product` lines.\n\n\
            Every error uses one envelope: `success=false`, `error`, `message`, `error_code`, \
            `code`, `detail`, `request_id`, `help_url`, `help_doc`, `details.checklist`.\n\n\
            A `request_id` is used once per session: a reuse is 409 \
            `EXTERNAL_SIGNATURE_REQUEST_REPLAY`. When the body is identical to the accepted \
            request's (a lost answer sent again), `details.original` (schema `ReplayOriginal`) \
            says what became of it: `status`, `state` (`in_progress`, `succeeded`, `failed`, \
            `released`), `charged_credits`, and `usage_id` or `reservation_id`. Another body \
            under a used `request_id` gets the plain 409.",
        license(name = "Apache-2.0")
    ),
    modifiers(&AdminSecurity),
    // Referenced by `ErrorBody.detail`'s hand-written schema and by the replay answer's
    // `details.original` (described in text), so not collected by themselves.
    components(schemas(
        agentpmt_protocol::wire::ValidationIssue,
        agentpmt_protocol::wire::ReplayOriginal,
        agentpmt_protocol::wire::ReplayState
    )),
    tags(
        (name = "auth", description = "Wallet sessions"),
        (name = "credits", description = "Credit balance and purchases (x402)"),
        (name = "tools", description = "Tool marketplace: listing and invocation (credits or direct x402)"),
        (name = "admin", description = "Operator API (admin bearer token)"),
        (name = "identity", description = "AgentAddress: anonymous wallet identities"),
        (name = "help", description = "Help for agents"),
        (name = "meta", description = "About this server"),
        (name = "workflows", description = "Workflows (skill chains) and wallet-scoped workflow sessions"),
        (name = "workflow-schedules", description = "BYO-agent workflow schedules (API-key + budget-key bearer)"),
        (name = "jobs", description = "Jobs board: list, reserve, complete, status; workflow-creation job endpoints"),
        (name = "mcp", description = "MCP endpoint (streamable HTTP, JSON-RPC 2.0): the marketplace's tools for MCP clients, paid from a budget (API-key + budget-key bearer) or per call with x402"),
    )
)]
struct ApiDoc;

struct AdminSecurity;

impl Modify for AdminSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "budget_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "base64(\"<api_key>:<budget_key>\"), or base64/base64url of \
                         {\"api_key\",\"budget_key\"}; or the headers X-API-Key + X-Budget-Key",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "job_workflow_token",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "X-Job-Workflow-Token",
                    "Bearer <workflow_access.access_token> of a workflow_creation reservation",
                ),
            )),
        );
    }
}

/// The document before the routes add their paths.
pub fn base_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Documents, on every operation secured by the admin token, the refusals the [`Admin`]
/// extractor gives before the handler runs: 401 `ADMIN_UNAUTHORIZED` (missing or wrong
/// token) and 403 `ADMIN_API_DISABLED` (no token configured). A status the operation
/// already documents keeps its description, with the refusal added to it.
///
/// [`Admin`]: crate::admin::Admin
pub fn document_admin_refusals(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
    let refusals = [
        (
            "401",
            "ADMIN_UNAUTHORIZED: missing or wrong admin bearer token",
        ),
        (
            "403",
            "ADMIN_API_DISABLED: the operator API is disabled on this server",
        ),
    ];
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let admin = operation.security.iter().flatten().any(|requirement| {
                serde_json::to_value(requirement)
                    .ok()
                    .and_then(|v| v.get("admin_token").cloned())
                    .is_some()
            });
            if !admin {
                continue;
            }
            for (status, text) in refusals {
                match operation.responses.responses.get_mut(status) {
                    Some(RefOr::T(response)) => {
                        if !response
                            .description
                            .contains(text.split(':').next().unwrap_or(text))
                        {
                            response.description = format!("{}; or {text}", response.description);
                        }
                    }
                    Some(RefOr::Ref(_)) => {}
                    None => {
                        let response = ResponseBuilder::new()
                            .description(text)
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(utoipa::openapi::Ref::from_schema_name(
                                        "ErrorBody",
                                    )))
                                    .build(),
                            )
                            .build();
                        operation
                            .responses
                            .responses
                            .insert(status.to_owned(), RefOr::T(response));
                    }
                }
            }
        }
    }
}

/// Adds `GET /openapi.json` (served by the router itself) to the document, and the
/// refusals every admin operation can give ([`document_admin_refusals`]).
pub fn document_self(openapi: &mut utoipa::openapi::OpenApi) {
    document_admin_refusals(openapi);
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::{ContentBuilder, ResponseBuilder};
    let operation = OperationBuilder::new()
        .tag("meta")
        .summary(Some("This OpenAPI document"))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The OpenAPI 3.1 document of this server")
                .content("application/json", ContentBuilder::new().build())
                .build(),
        )
        .build();
    openapi
        .paths
        .add_path_operation("/openapi.json", vec![HttpMethod::Get], operation);
}
