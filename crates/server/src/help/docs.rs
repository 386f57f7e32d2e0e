//! `GET /docs`: the API docs for humans, one self-contained HTML page rendered on the
//! server from the OpenAPI document (no scripts, no external assets): the API description
//! and each operation's description rendered from their Markdown, endpoints with their
//! parameters, bodies and responses, the schemas, and the error-code table.

use crate::state::AppState;
use agentpmt_protocol::ErrorCode;
use axum::extract::State;
use axum::response::Html;
use serde_json::Value;
use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders Markdown (CommonMark with tables) to HTML. Raw HTML in the source is shown as
/// text, never passed through: the descriptions are ours, but the page stays script-free
/// whatever they say.
pub fn markdown(source: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    let parser = Parser::new_ext(source, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut out, parser);
    out
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).map(escape).unwrap_or_default()
}

/// `#/components/schemas/Name` as a link to the schema's section.
fn schema_ref(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    if let Some(items) = schema.get("items") {
        return format!("array of {}", schema_ref(items));
    }
    match schema.get("type") {
        Some(Value::String(t)) => escape(t),
        Some(Value::Array(ts)) => escape(
            &ts.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" | "),
        ),
        _ => "object".to_owned(),
    }
}

fn anchor(method: &str, path: &str) -> String {
    let mut id = format!("op-{method}");
    for c in path.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    id
}

/// The page for `document` (the OpenAPI document as JSON).
pub fn render(document: &Value, base_url: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let info = document.get("info").cloned().unwrap_or(Value::Null);
    let title = text(info.get("title"));
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>\
         body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.45}}\
         code,pre{{font-family:ui-monospace,monospace;background:#f4f4f4}}pre{{padding:.6rem;overflow-x:auto}}\
         table{{border-collapse:collapse;margin:.5rem 0}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}}\
         .m{{font-weight:bold;text-transform:uppercase}}section{{border-top:1px solid #ddd;padding-top:.5rem}}\
         </style></head><body><h1>{title}</h1><p>Version {ver}. Base URL: <code>{base}</code>. \
         Machine-readable: <a href=\"/openapi.json\">OpenAPI document</a>, \
         <a href=\"/.well-known/agent.json\">discovery card</a>. Questions and failing requests: \
         <code>POST /api/external/agent-help</code>.</p><div class=\"d\">{desc}</div>",
        ver = text(info.get("version")),
        base = escape(base_url),
        desc = markdown(info.get("description").and_then(Value::as_str).unwrap_or_default()),
    );

    let paths = document
        .get("paths")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    h.push_str("<h2>Endpoints</h2><ul>");
    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let _ = write!(
                h,
                "<li><a href=\"#{}\"><span class=\"m\">{}</span> <code>{}</code></a> — {}</li>",
                anchor(method, path),
                escape(method),
                escape(path),
                text(op.get("summary"))
            );
        }
    }
    h.push_str("</ul>");

    for (path, item) in &paths {
        for (method, op) in item.as_object().into_iter().flatten() {
            let _ = write!(
                h,
                "<section id=\"{}\"><h3><span class=\"m\">{}</span> <code>{}</code></h3><p>{}</p>",
                anchor(method, path),
                escape(method),
                escape(path),
                text(op.get("summary"))
            );
            if let Some(d) = op.get("description").and_then(Value::as_str) {
                let _ = write!(h, "<div class=\"d\">{}</div>", markdown(d));
            }
            if op.get("security").is_some() {
                h.push_str(
                    "<p>Requires <code>Authorization: Bearer &lt;admin token&gt;</code>.</p>",
                );
            }
            if let Some(params) = op.get("parameters").and_then(Value::as_array) {
                h.push_str("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>required</th><th>description</th></tr>");
                for p in params {
                    let _ = write!(
                        h,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        text(p.get("name")),
                        text(p.get("in")),
                        p.get("schema").map(schema_ref).unwrap_or_default(),
                        p.get("required").and_then(Value::as_bool).unwrap_or(false),
                        text(p.get("description"))
                    );
                }
                h.push_str("</table>");
            }
            if let Some(body) = op.get("requestBody") {
                let schema = body.pointer("/content/application~1json/schema");
                let _ = write!(
                    h,
                    "<h4>Request body</h4><p>{} {}</p>",
                    schema.map(schema_ref).unwrap_or_default(),
                    text(body.get("description"))
                );
            }
            if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                h.push_str("<h4>Responses</h4><table><tr><th>status</th><th>description</th><th>body</th></tr>");
                for (status, r) in responses {
                    let schema = r
                        .get("content")
                        .and_then(Value::as_object)
                        .and_then(|c| c.values().next())
                        .and_then(|c| c.get("schema"));
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(status),
                        text(r.get("description")),
                        schema.map(schema_ref).unwrap_or_default()
                    );
                }
                h.push_str("</table>");
            }
            h.push_str("</section>");
        }
    }

    h.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = document
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        for (name, schema) in schemas {
            let _ = write!(
                h,
                "<section id=\"schema-{0}\"><h3>{0}</h3><p>{1}</p>",
                escape(name),
                text(schema.get("description"))
            );
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                h.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>description</th></tr>");
                for (field, p) in props {
                    let _ = write!(
                        h,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(field),
                        schema_ref(p),
                        if required.contains(&field.as_str()) {
                            "yes"
                        } else {
                            "no"
                        },
                        text(p.get("description"))
                    );
                }
                h.push_str("</table>");
            }
            h.push_str("</section>");
        }
    }

    h.push_str("<h2 id=\"error-codes\">Error codes</h2><p>Every error answers with one envelope: \
        <code>success: false, error, message, error_code, code, detail, request_id, help_url, help_doc, details.checklist</code> \
        (429 adds <code>rate_limit</code> and a <code>Retry-After</code> header).</p>\
        <table><tr><th>error_code</th><th>HTTP</th><th>meaning</th><th>recovery</th><th>checklist</th></tr>");
    for code in ErrorCode::ALL {
        let _ = write!(
            h,
            "<tr id=\"{0}\"><td><code>{0}</code></td><td>{1}</td><td>{2}</td><td>{3}</td><td><ul>",
            code.as_str(),
            code.status(),
            escape(code.meaning()),
            escape(code.recovery())
        );
        for step in code.checklist() {
            let _ = write!(h, "<li>{}</li>", escape(step));
        }
        h.push_str("</ul></td></tr>");
    }
    h.push_str("</table></body></html>");
    h
}

/// Human-readable API docs (HTML) rendered from the OpenAPI document.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    responses((status = 200, description = "The API docs as one HTML page", content_type = "text/html", body = String))
)]
pub async fn docs_page(State(state): State<AppState>) -> Html<String> {
    Html(render(&state.openapi_json(), &state.public_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
