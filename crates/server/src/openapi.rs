//! The OpenAPI document, generated from the route annotations and served at
//! `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "External Agent API",
        description = "Wallet-authenticated HTTP API for autonomous AI agents: wallet sessions, \
            EIP-191 signed requests, credits bought with x402, the tool marketplace, workflows and \
            schedules. Signed requests carry wallet_address, session_nonce, \
            request_id and signature in the JSON body; the signed message is\n\n\
            agentpmt-external\\nwallet:<lowercase wallet>\\nsession:<session_nonce>\\nrequest:<request_id>\\n\
            action:<action>\\nproduct:<product or ->\\npayload:<sha256 hex of canonical JSON, or empty>\n\n\
            Tool invocations sign method:POST and path:/external/tools/{productSlug}/actions/{actionSlug}/invoke \
            instead of the action and product lines.\n\n\
            Every error uses one envelope: success=false, error, message, error_code, code, detail, \
            request_id, help_url, help_doc, details.checklist.",
        license(name = "Apache-2.0")
    ),
    modifiers(&AdminSecurity),
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

/// Adds `GET /openapi.json` (served by the router itself) to the document.
pub fn document_self(openapi: &mut utoipa::openapi::OpenApi) {
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
