//! The catalog in the database: vendors, products and actions; listing, lookup by the
//! URL's slugs, and declarative upserts (operator API and catalog files).

use super::runner;
use super::schema;
use super::secrets::SecretsKey;
use crate::db::macros::{sql_execute, sql_fetch_all, sql_fetch_optional, sql_scalar_optional};
use crate::db::{is_unique_violation, AsConn};
use crate::error::{ApiError, ApiResult};
use crate::time::{now_ms, rfc3339_ms};
use agentpmt_protocol::tools::{
    action_slug, ActionAdminView, ActionSpecDoc, ProductAdminView, ProductSpecDoc, RunnerSpec,
    ToolActionView, ToolView, VendorSpecDoc, VendorView,
};
use agentpmt_protocol::wire::credits_to_usd;
use agentpmt_protocol::ErrorCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Vendor slug shown for built-in tools.
pub const BUILTIN_VENDOR: &str = "agentpmt";
/// Highest action price (10,000 USD).
pub const MAX_PRICE_CREDITS: i64 = 1_000_000;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductRow {
    pub product_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub categories: String,
    pub vendor_id: Option<String>,
    pub status: String,
    pub is_private: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActionRow {
    pub product_id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub price_credits: i64,
    pub x402_enabled: i64,
    pub schema_source: String,
    pub input_schema: String,
    pub runner: String,
    pub status: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VendorRow {
    pub vendor_id: String,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub secret_sealed: Option<String>,
    pub updated_at_ms: i64,
}

const PRODUCT_COLUMNS: &str =
    "product_id, slug, name, description, categories, vendor_id, status, is_private, updated_at_ms";
const ACTION_COLUMNS: &str = "product_id, slug, name, description, price_credits, x402_enabled, schema_source, input_schema, runner, status";
const VENDOR_COLUMNS: &str = "vendor_id, slug, name, status, secret_sealed, updated_at_ms";

impl ActionRow {
    pub fn runner(&self) -> Result<RunnerSpec, ApiError> {
        serde_json::from_str(&self.runner).map_err(ApiError::internal)
    }

    pub fn schema(&self) -> Value {
        serde_json::from_str(&self.input_schema).unwrap_or_else(|_| json!({"type": "object"}))
    }

    fn view(&self, product_slug: &str) -> ToolActionView {
        let schema = self.schema();
        let flat = schema::normalize(&schema)
            .map(|n| n.flat)
            .unwrap_or_else(|_| json!({}));
        ToolActionView {
            action_slug: self.slug.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            price_credits: self.price_credits,
            price_usd: credits_to_usd(self.price_credits),
            unit_type: "request".into(),
            x402_enabled: self.x402_enabled != 0,
            input_schema: schema,
            parameters: flat,
            invoke_path: format!(
                "/api/external/tools/{product_slug}/actions/{}/invoke",
                self.slug
            ),
        }
    }
}

impl ProductRow {
    pub fn categories(&self) -> Vec<String> {
        serde_json::from_str(&self.categories).unwrap_or_default()
    }
}

/// Normalized category for filtering: lowercase, letters/digits, everything else `-`.
pub fn category_key(category: &str) -> String {
    category
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                '-'
            }
        })
        .collect()
}

/// A listing filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Lowercase text searched in name and description.
    pub query: Option<String>,
    /// Category keys; a product matches when it has any of them.
    pub categories: Vec<String>,
}

impl ListFilter {
    /// `(where clause, search pattern, categories pattern)`; the clause uses `$1` and `$2`.
    fn sql(&self) -> (String, String, String) {
        let mut clause = String::from("p.status = 'active' AND p.is_private = 0");
        let pattern = match &self.query {
            Some(q) => {
                clause.push_str(" AND p.search_text LIKE $1 ESCAPE '\\'");
                crate::db::like_contains(q)
            }
            None => {
                clause.push_str(" AND $1 = ''");
                String::new()
            }
        };
        let cats = if self.categories.is_empty() {
            clause.push_str(" AND $2 = ''");
            String::new()
        } else {
            clause.push_str(
                " AND EXISTS (SELECT 1 FROM product_categories c WHERE c.product_id = p.product_id \
                 AND $2 LIKE '%|' || c.category || '|%')",
            );
            format!("|{}|", self.categories.join("|"))
        };
        (clause, pattern, cats)
    }
}

/// One page of listed tools and the total count.
pub async fn list(
    conn: &mut impl AsConn,
    filter: &ListFilter,
    page: i64,
    page_size: i64,
) -> Result<(Vec<ToolView>, i64), ApiError> {
    let (clause, pattern, cats) = filter.sql();
    let total = if filter.query.is_none() && filter.categories.is_empty() {
        // Every active public tool: the counter the triggers of migration 0012 keep.
        sql_scalar_optional!(
            conn.conn(),
            i64,
            "SELECT n FROM listing_counts WHERE listing = 'public_tools'"
        )?
    } else {
        sql_scalar_optional!(
            conn.conn(),
            i64,
            &format!("SELECT COUNT(*) FROM products p WHERE {clause}"),
            &pattern,
            &cats
        )?
    }
    .unwrap_or(0);
    let offset = (page - 1).saturating_mul(page_size);
    if total == 0 || offset >= total {
        return Ok((Vec::new(), total));
    }
    let products = sql_fetch_all!(
        conn.conn(),
        ProductRow,
        &format!(
            "SELECT {} FROM products p WHERE {clause} ORDER BY p.slug LIMIT $3 OFFSET $4",
            prefixed(PRODUCT_COLUMNS, "p")
        ),
        &pattern,
        &cats,
        page_size,
        offset
    )?;
    let actions = sql_fetch_all!(
        conn.conn(),
        ActionRow,
        &format!(
            "SELECT {} FROM product_actions a WHERE a.status = 'active' AND a.product_id IN \
             (SELECT p.product_id FROM products p WHERE {clause} ORDER BY p.slug LIMIT $3 OFFSET $4) \
             ORDER BY a.product_id, a.position, a.slug",
            prefixed(ACTION_COLUMNS, "a")
        ),
        &pattern,
        &cats,
        page_size,
        offset
    )?;
    let vendors = all_vendors(conn).await?;
    let views = products
        .iter()
        .map(|p| {
            product_view(
                p,
                actions.iter().filter(|a| a.product_id == p.product_id),
                &vendors,
            )
        })
        .collect();
    Ok((views, total))
}

fn prefixed(columns: &str, alias: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn vendor_slug(vendor_id: Option<&str>, vendors: &[VendorRow]) -> String {
    vendor_id
        .and_then(|id| vendors.iter().find(|v| v.vendor_id == id))
        .map(|v| v.slug.clone())
        .unwrap_or_else(|| BUILTIN_VENDOR.to_owned())
}

fn product_view<'a>(
    p: &ProductRow,
    actions: impl Iterator<Item = &'a ActionRow>,
    vendors: &[VendorRow],
) -> ToolView {
    ToolView {
        product_id: p.product_id.clone(),
        product_slug: p.slug.clone(),
        name: p.name.clone(),
        description: p.description.clone(),
        categories: p.categories(),
        vendor: vendor_slug(p.vendor_id.as_deref(), vendors),
        actions: actions.map(|a| a.view(&p.slug)).collect(),
    }
}

async fn all_vendors(conn: &mut impl AsConn) -> Result<Vec<VendorRow>, sqlx::Error> {
    sql_fetch_all!(
        conn.conn(),
        VendorRow,
        &format!("SELECT {VENDOR_COLUMNS} FROM vendors ORDER BY slug")
    )
}

/// A product and one of its actions, as an invocation resolved them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub product: ProductRow,
    pub action: ActionRow,
    pub vendor: Option<VendorRow>,
}

/// Slug case: lowercase, `_` → `-`.
fn slug_case(text: &str) -> String {
    action_slug(text)
}

/// The active product a URL names: by slug, by id, or by its slug-case form.
pub async fn find_product(conn: &mut impl AsConn, reference: &str) -> ApiResult<ProductRow> {
    let normalized = slug_case(reference);
    let rows = sql_fetch_all!(
        conn.conn(),
        ProductRow,
        &format!(
            "SELECT {PRODUCT_COLUMNS} FROM products WHERE status = 'active' AND \
             (slug = $1 OR product_id = $2 OR slug = $3)"
        ),
        reference,
        reference.to_ascii_lowercase(),
        &normalized
    )?;
    rows.iter()
        .find(|p| p.slug == reference)
        .or_else(|| {
            rows.iter()
                .find(|p| p.product_id == reference.to_ascii_lowercase())
        })
        .or_else(|| rows.first())
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::TOOL_NOT_FOUND,
                format!("No active product {reference:?}"),
            )
            .with_detail("product", reference.to_owned())
        })
}

/// The active actions of a product, in catalog order.
pub async fn actions_of(
    conn: &mut impl AsConn,
    product_id: &str,
) -> Result<Vec<ActionRow>, sqlx::Error> {
    sql_fetch_all!(
        conn.conn(),
        ActionRow,
        &format!(
            "SELECT {ACTION_COLUMNS} FROM product_actions WHERE product_id = $1 AND status = 'active' \
             ORDER BY position, slug"
        ),
        product_id
    )
}

/// The action a URL names: exactly by slug, else by name or slug case; several → 409.
pub fn pick_action(
    product: &ProductRow,
    actions: &[ActionRow],
    reference: &str,
) -> ApiResult<ActionRow> {
    if let Some(a) = actions.iter().find(|a| a.slug == reference) {
        let others: Vec<&ActionRow> = actions
            .iter()
            .filter(|b| {
                b.slug != a.slug && (b.name == reference || slug_case(&b.name) == reference)
            })
            .collect();
        if others.is_empty() {
            return Ok(a.clone());
        }
        return Err(ambiguous(
            product,
            reference,
            std::iter::once(a).chain(others),
        ));
    }
    let normalized = slug_case(reference);
    let matches: Vec<&ActionRow> = actions
        .iter()
        .filter(|a| a.name == reference || a.slug == normalized || slug_case(&a.name) == normalized)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::new(
            ErrorCode::TOOL_NOT_FOUND,
            format!(
                "Product {:?} has no active action {reference:?}",
                product.slug
            ),
        )
        .with_detail("product_slug", product.slug.clone())
        .with_detail("action", reference.to_owned())
        .with_detail(
            "available_actions",
            actions.iter().map(|a| a.slug.clone()).collect::<Vec<_>>(),
        )),
        several => Err(ambiguous(product, reference, several.iter().copied())),
    }
}

fn ambiguous<'a>(
    product: &ProductRow,
    reference: &str,
    candidates: impl Iterator<Item = &'a ActionRow>,
) -> ApiError {
    ApiError::new(
        ErrorCode::TOOL_ACTION_AMBIGUOUS,
        format!(
            "Action {reference:?} matches several actions of {:?}",
            product.slug
        ),
    )
    .with_detail("product_slug", product.slug.clone())
    .with_detail(
        "candidates",
        candidates.map(|a| a.slug.clone()).collect::<Vec<_>>(),
    )
}

/// Resolves product and action references of a URL.
pub async fn resolve(conn: &mut impl AsConn, product: &str, action: &str) -> ApiResult<Resolved> {
    let product = find_product(conn, product).await?;
    let actions = actions_of(conn, &product.product_id).await?;
    let action = pick_action(&product, &actions, action)?;
    let vendor = vendor_of(conn, &product).await?;
    Ok(Resolved {
        product,
        action,
        vendor,
    })
}

/// The vendor of a product (none for built-in tools).
pub async fn vendor_of(
    conn: &mut impl AsConn,
    product: &ProductRow,
) -> Result<Option<VendorRow>, sqlx::Error> {
    match &product.vendor_id {
        None => Ok(None),
        Some(id) => sql_fetch_optional!(
            conn.conn(),
            VendorRow,
            &format!("SELECT {VENDOR_COLUMNS} FROM vendors WHERE vendor_id = $1"),
            id
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Declarative upserts.

/// Stable 24-hex id of a slug.
pub fn derived_id(kind: &str, slug: &str) -> String {
    let digest = Sha256::digest(format!("agentpmt-{kind}:{slug}").as_bytes());
    hex::encode(&digest[..12])
}

fn invalid(loc: &[&str], msg: impl Into<String>) -> ApiError {
    ApiError::invalid_field(loc, "value_error", msg)
}

fn check_slug(loc: &[&str], slug: &str) -> ApiResult<()> {
    let ok = (1..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            loc,
            "slugs are 1-64 characters: lowercase letters, digits and -, not starting with -",
        ))
    }
}

fn check_status(loc: &[&str], status: Option<&str>) -> ApiResult<String> {
    match status.unwrap_or("active") {
        s @ ("active" | "inactive") => Ok(s.to_owned()),
        _ => Err(invalid(loc, "status is active or inactive")),
    }
}

/// A validated action, ready to store.
struct ActionPlan {
    slug: String,
    name: String,
    description: String,
    price_credits: i64,
    x402_enabled: bool,
    schema_source: String,
    input_schema: String,
    runner: String,
    status: String,
}

fn plan_action(index: usize, doc: &ActionSpecDoc) -> ApiResult<ActionPlan> {
    let i = index.to_string();
    let loc = |field: &'static str| -> Vec<String> {
        vec!["body".into(), "actions".into(), i.clone(), field.into()]
    };
    let err = |field: &'static str, msg: String| {
        let l = loc(field);
        let refs: Vec<&str> = l.iter().map(String::as_str).collect();
        invalid(&refs, msg)
    };
    let name_ok = (1..=64).contains(&doc.name.len())
        && doc
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(err(
            "name",
            "action names are 1-64 characters: letters, digits, _ and -".into(),
        ));
    }
    let slug = doc.slug.clone().unwrap_or_else(|| action_slug(&doc.name));
    if check_slug(&[], &slug).is_err() {
        return Err(err(
            "slug",
            "action slugs are lowercase letters, digits and -".into(),
        ));
    }
    if !(1..=MAX_PRICE_CREDITS).contains(&doc.price_credits) {
        return Err(err(
            "price_credits",
            format!("price_credits must be from 1 to {MAX_PRICE_CREDITS}"),
        ));
    }
    let normalized = schema::normalize(&doc.parameters).map_err(|m| err("parameters", m))?;
    match &doc.runner {
        RunnerSpec::Builtin { name } if !runner::is_builtin(name) => {
            return Err(err("runner", format!("unknown built-in tool {name:?}")));
        }
        RunnerSpec::Http { url, timeout_ms } => {
            let ok = url.starts_with("http://") || url.starts_with("https://");
            if !ok || url.len() > 2048 {
                return Err(err("runner", "runner.url must be an http(s) URL".into()));
            }
            if timeout_ms.is_some_and(|t| t == 0 || t > runner::MAX_TIMEOUT_MS) {
                return Err(err(
                    "runner",
                    format!(
                        "runner.timeout_ms must be from 1 to {}",
                        runner::MAX_TIMEOUT_MS
                    ),
                ));
            }
        }
        RunnerSpec::Builtin { .. } => {}
    }
    let status = check_status(&[], doc.status.as_deref())
        .map_err(|_| err("status", "status is active or inactive".into()))?;
    Ok(ActionPlan {
        slug,
        name: doc.name.clone(),
        description: doc.description.clone(),
        price_credits: doc.price_credits,
        x402_enabled: doc.x402_enabled,
        schema_source: doc.parameters.to_string(),
        input_schema: normalized.json_schema.to_string(),
        runner: serde_json::to_string(&doc.runner).map_err(ApiError::internal)?,
        status,
    })
}

/// Creates or replaces a product and its actions (actions missing from `doc` become
/// inactive). Returns whether the product was new.
pub async fn upsert_product(conn: &mut impl AsConn, doc: &ProductSpecDoc) -> ApiResult<bool> {
    check_slug(&["body", "slug"], &doc.slug)?;
    if doc.name.trim().is_empty() || doc.name.len() > 200 {
        return Err(invalid(&["body", "name"], "name must be 1-200 characters"));
    }
    if doc.description.len() > 4000 {
        return Err(invalid(
            &["body", "description"],
            "description must be at most 4000 characters",
        ));
    }
    if doc.categories.len() > 20
        || doc
            .categories
            .iter()
            .any(|c| c.trim().is_empty() || c.len() > 64)
    {
        return Err(invalid(
            &["body", "categories"],
            "at most 20 categories of 1-64 characters",
        ));
    }
    if doc.actions.len() > 100 {
        return Err(invalid(&["body", "actions"], "at most 100 actions"));
    }
    let status = check_status(&["body", "status"], doc.status.as_deref())?;
    let product_id = match &doc.product_id {
        Some(id) => {
            let id = id.to_ascii_lowercase();
            if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    &["body", "product_id"],
                    "product_id is 24 hex digits",
                ));
            }
            id
        }
        None => derived_id("product", &doc.slug),
    };
    let plans = doc
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| plan_action(i, a))
        .collect::<ApiResult<Vec<_>>>()?;
    for (i, a) in plans.iter().enumerate() {
        if plans[..i]
            .iter()
            .any(|b| b.slug == a.slug || b.name == a.name)
        {
            return Err(ApiError::new(
                ErrorCode::CATALOG_CONFLICT,
                format!("two actions named or slugged {:?}", a.slug),
            ));
        }
    }
    let vendor_id = match &doc.vendor {
        None => None,
        Some(slug) => Some(
            sql_scalar_optional!(
                conn.conn(),
                String,
                "SELECT vendor_id FROM vendors WHERE slug = $1",
                slug
            )?
            .ok_or_else(|| {
                invalid(
                    &["body", "vendor"],
                    format!("no vendor {slug:?}: create it first"),
                )
            })?,
        ),
    };
    if plans.iter().any(|p| p.runner.contains("\"http\"")) && vendor_id.is_none() {
        return Err(invalid(
            &["body", "vendor"],
            "products with http actions need a vendor (its secret signs the calls)",
        ));
    }
    let existing_slug = sql_scalar_optional!(
        conn.conn(),
        String,
        "SELECT slug FROM products WHERE product_id = $1",
        &product_id
    )?;
    if existing_slug.as_ref().is_some_and(|s| *s != doc.slug) {
        return Err(ApiError::new(
            ErrorCode::CATALOG_CONFLICT,
            format!("product_id {product_id} belongs to another product"),
        ));
    }
    let existed = existing_slug.is_some();
    let now = now_ms();
    let categories = serde_json::to_string(&doc.categories).map_err(ApiError::internal)?;
    let search = format!("{}\n{}", doc.name, doc.description).to_lowercase();
    let written = sql_execute!(
        conn.conn(),
        "INSERT INTO products (product_id, slug, name, description, categories, vendor_id, status, is_private, search_text, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (product_id) DO UPDATE SET slug = excluded.slug, name = excluded.name, description = excluded.description, \
         categories = excluded.categories, vendor_id = excluded.vendor_id, status = excluded.status, is_private = excluded.is_private, \
         search_text = excluded.search_text, updated_at_ms = excluded.updated_at_ms",
        &product_id,
        &doc.slug,
        &doc.name,
        &doc.description,
        &categories,
        &vendor_id,
        &status,
        i64::from(doc.private),
        &search,
        now
    );
    match written {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::new(
                ErrorCode::CATALOG_CONFLICT,
                format!("slug {:?} belongs to another product", doc.slug),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    sql_execute!(
        conn.conn(),
        "DELETE FROM product_categories WHERE product_id = $1",
        &product_id
    )?;
    let mut keys: Vec<String> = doc.categories.iter().map(|c| category_key(c)).collect();
    keys.sort();
    keys.dedup();
    for key in &keys {
        sql_execute!(
            conn.conn(),
            "INSERT INTO product_categories (product_id, category) VALUES ($1, $2)",
            &product_id,
            key
        )?;
    }
    // Actions not in the document stay (usage records name them) but become inactive.
    sql_execute!(
        conn.conn(),
        "UPDATE product_actions SET status = 'inactive', updated_at_ms = $2 WHERE product_id = $1",
        &product_id,
        now
    )?;
    for (position, plan) in plans.iter().enumerate() {
        let written = sql_execute!(
            conn.conn(),
            "INSERT INTO product_actions (product_id, slug, name, description, price_credits, x402_enabled, schema_source, input_schema, runner, status, position, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
             ON CONFLICT (product_id, slug) DO UPDATE SET name = excluded.name, description = excluded.description, \
             price_credits = excluded.price_credits, x402_enabled = excluded.x402_enabled, schema_source = excluded.schema_source, \
             input_schema = excluded.input_schema, runner = excluded.runner, status = excluded.status, position = excluded.position, \
             updated_at_ms = excluded.updated_at_ms",
            &product_id,
            &plan.slug,
            &plan.name,
            &plan.description,
            plan.price_credits,
            i64::from(plan.x402_enabled),
            &plan.schema_source,
            &plan.input_schema,
            &plan.runner,
            &plan.status,
            position as i64,
            now
        );
        match written {
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(!existed)
}

/// Sets a product's status.
pub async fn set_product_status(conn: &mut impl AsConn, slug: &str, status: &str) -> ApiResult<()> {
    let n = sql_execute!(
        conn.conn(),
        "UPDATE products SET status = $2, updated_at_ms = $3 WHERE slug = $1",
        slug,
        status,
        now_ms()
    )?;
    if n == 0 {
        return Err(ApiError::new(
            ErrorCode::TOOL_NOT_FOUND,
            format!("No product {slug:?}"),
        ));
    }
    Ok(())
}

/// Creates or updates a vendor; a secret (given, or from `secret_env`) is sealed with `key`.
pub async fn upsert_vendor(
    conn: &mut impl AsConn,
    doc: &VendorSpecDoc,
    key: Option<&SecretsKey>,
) -> ApiResult<bool> {
    check_slug(&["body", "slug"], &doc.slug)?;
    if doc.name.trim().is_empty() || doc.name.len() > 200 {
        return Err(invalid(&["body", "name"], "name must be 1-200 characters"));
    }
    let status = check_status(&["body", "status"], doc.status.as_deref())?;
    let secret = match (&doc.secret, &doc.secret_env) {
        (Some(s), None) => Some(SecretString::from(s.clone())),
        (None, Some(var)) => Some(SecretString::from(std::env::var(var).map_err(|_| {
            invalid(
                &["body", "secret_env"],
                format!("environment variable {var} is not set"),
            )
        })?)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(invalid(
                &["body", "secret"],
                "send secret or secret_env, not both",
            ))
        }
    };
    if let Some(s) = &secret {
        use secrecy::ExposeSecret;
        if s.expose_secret().len() < 16 || s.expose_secret().len() > 256 {
            return Err(invalid(
                &["body", "secret"],
                "vendor secrets are 16-256 characters",
            ));
        }
    }
    let vendor_id = derived_id("vendor", &doc.slug);
    let sealed = match (&secret, key) {
        (Some(s), Some(k)) => Some(k.seal(&vendor_id, s)),
        (Some(_), None) => {
            return Err(ApiError::new(
                ErrorCode::SECRETS_KEY_MISSING,
                "No secrets key is configured: vendor secrets cannot be stored",
            ))
        }
        (None, _) => None,
    };
    let existed = sql_scalar_optional!(
        conn.conn(),
        String,
        "SELECT vendor_id FROM vendors WHERE vendor_id = $1",
        &vendor_id
    )?
    .is_some();
    let now = now_ms();
    sql_execute!(
        conn.conn(),
        "INSERT INTO vendors (vendor_id, slug, name, status, secret_sealed, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (vendor_id) DO UPDATE SET name = excluded.name, status = excluded.status, \
         secret_sealed = COALESCE(excluded.secret_sealed, vendors.secret_sealed), updated_at_ms = excluded.updated_at_ms",
        &vendor_id,
        &doc.slug,
        &doc.name,
        &status,
        &sealed,
        now
    )?;
    Ok(!existed)
}

/// Every vendor, as the operator API shows them.
pub async fn vendor_views(conn: &mut impl AsConn) -> Result<Vec<VendorView>, sqlx::Error> {
    Ok(all_vendors(conn)
        .await?
        .into_iter()
        .map(|v| VendorView {
            vendor_id: v.vendor_id,
            slug: v.slug,
            name: v.name,
            status: v.status,
            has_secret: v.secret_sealed.is_some(),
            updated_at: rfc3339_ms(v.updated_at_ms),
        })
        .collect())
}

/// Every product (any status), as the operator API shows them.
pub async fn admin_views(
    conn: &mut impl AsConn,
    slug: Option<&str>,
) -> ApiResult<Vec<ProductAdminView>> {
    let products = match slug {
        Some(s) => sql_fetch_all!(
            conn.conn(),
            ProductRow,
            &format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE slug = $1"),
            s
        )?,
        None => sql_fetch_all!(
            conn.conn(),
            ProductRow,
            &format!("SELECT {PRODUCT_COLUMNS} FROM products ORDER BY slug")
        )?,
    };
    let vendors = all_vendors(conn).await?;
    let mut out = Vec::with_capacity(products.len());
    for p in products {
        let actions = sql_fetch_all!(
            conn.conn(),
            ActionRow,
            &format!("SELECT {ACTION_COLUMNS} FROM product_actions WHERE product_id = $1 ORDER BY position, slug"),
            &p.product_id
        )?;
        out.push(ProductAdminView {
            product_id: p.product_id.clone(),
            slug: p.slug.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            categories: p.categories(),
            vendor: vendor_slug(p.vendor_id.as_deref(), &vendors),
            status: p.status.clone(),
            private: p.is_private != 0,
            actions: actions
                .iter()
                .map(|a| -> ApiResult<ActionAdminView> {
                    Ok(ActionAdminView {
                        slug: a.slug.clone(),
                        name: a.name.clone(),
                        description: a.description.clone(),
                        price_credits: a.price_credits,
                        x402_enabled: a.x402_enabled != 0,
                        status: a.status.clone(),
                        input_schema: a.schema(),
                        runner: a.runner()?,
                    })
                })
                .collect::<ApiResult<_>>()?,
            updated_at: rfc3339_ms(p.updated_at_ms),
        });
    }
    Ok(out)
}

/// The document that writes `view` back unchanged: the start of an edit in place (change a
/// field, then store it with [`super::put_product`], as `PUT /api/admin/tools/{slug}` does).
pub fn spec_of(view: &ProductAdminView) -> ProductSpecDoc {
    ProductSpecDoc {
        slug: view.slug.clone(),
        product_id: Some(view.product_id.clone()),
        name: view.name.clone(),
        description: view.description.clone(),
        categories: view.categories.clone(),
        vendor: (view.vendor != BUILTIN_VENDOR).then(|| view.vendor.clone()),
        status: Some(view.status.clone()),
        private: view.private,
        actions: view
            .actions
            .iter()
            .map(|a| ActionSpecDoc {
                name: a.name.clone(),
                slug: Some(a.slug.clone()),
                description: a.description.clone(),
                price_credits: a.price_credits,
                x402_enabled: a.x402_enabled,
                parameters: a.input_schema.clone(),
                runner: a.runner.clone(),
                status: Some(a.status.clone()),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// Catalog files.

/// A catalog file (TOML or JSON): vendors, then products.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub vendors: Vec<VendorSpecDoc>,
    #[serde(default)]
    pub products: Vec<ProductSpecDoc>,
}

/// The demo catalog shipped with the server (built-in tools only).
pub const DEMO_CATALOG: &str = include_str!("../../catalog/demo.toml");

impl CatalogFile {
    /// Parses TOML, or JSON when the text starts with `{`.
    pub fn parse(text: &str) -> Result<CatalogFile, String> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| e.to_string())
        } else {
            toml::from_str(text).map_err(|e| e.to_string())
        }
    }
}

/// Refuses (422) a vendor timeout that does not fit inside the request time limit with the
/// margin a call needs after its tool answered (posting the hold, or settling an x402
/// payment): a tool answering after the client was told "timeout" must never be charged,
/// and a charge must never be made for an answer that cannot be delivered.
pub fn check_fits_deadline(doc: &ProductSpecDoc, request_timeout_secs: u64) -> ApiResult<()> {
    let limit_ms = request_timeout_secs.max(1).saturating_mul(1000);
    for (i, action) in doc.actions.iter().enumerate() {
        let RunnerSpec::Http { timeout_ms, .. } = &action.runner else {
            continue;
        };
        let reserve = if action.x402_enabled {
            super::invoke::SETTLE_RESERVE
        } else {
            super::invoke::POST_RESERVE
        };
        let reserve_ms = u64::try_from(reserve.as_millis()).unwrap_or(u64::MAX);
        let allowed = limit_ms.saturating_sub(reserve_ms);
        let timeout = timeout_ms.unwrap_or(runner::DEFAULT_TIMEOUT_MS);
        if timeout > allowed {
            let index = i.to_string();
            return Err(invalid(
                &["body", "actions", &index, "runner", "timeout_ms"],
                format!(
                    "runner.timeout_ms ({timeout}{}) must leave {} s of the request time limit ({request_timeout_secs} s, --request-timeout-secs) for {}: at most {allowed}",
                    if timeout_ms.is_none() { ", the default" } else { "" },
                    reserve.as_secs(),
                    if action.x402_enabled {
                        "settling the payment and answering"
                    } else {
                        "posting the charge and answering"
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Loads a catalog in one transaction (idempotent: loading it again changes nothing but
/// timestamps). Returns (vendors, products). `request_timeout_secs`: see
/// [`check_fits_deadline`].
pub async fn load(
    db: &crate::db::Db,
    file: &CatalogFile,
    key: Option<&SecretsKey>,
    request_timeout_secs: u64,
) -> ApiResult<(usize, usize)> {
    let mut tx = db.begin().await?;
    for vendor in &file.vendors {
        upsert_vendor(&mut tx, vendor, key).await.map_err(|e| {
            ApiError::internal(anyhow::anyhow!(
                "catalog vendor {:?}: {}",
                vendor.slug,
                e.message()
            ))
        })?;
    }
    for product in &file.products {
        let written = match check_fits_deadline(product, request_timeout_secs) {
            Ok(()) => upsert_product(&mut tx, product).await.map(|_| ()),
            Err(e) => Err(e),
        };
        written.map_err(|e| {
            ApiError::internal(anyhow::anyhow!(
                "catalog product {:?}: {} {:?}",
                product.slug,
                e.message(),
                e.validation_issues()
            ))
        })?;
    }
    tx.commit().await?;
    Ok((file.vendors.len(), file.products.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_catalog_parses_and_validates() {
        let file = CatalogFile::parse(DEMO_CATALOG).unwrap();
        assert!(file.products.len() >= 4);
        for p in &file.products {
            for (i, a) in p.actions.iter().enumerate() {
                plan_action(i, a).unwrap_or_else(|e| panic!("{}: {}", p.slug, e.message()));
            }
        }
    }

    #[test]
    fn category_keys() {
        assert_eq!(category_key(" Data Tools"), "data-tools");
        assert_eq!(category_key("AI_agents"), "ai-agents");
    }
}
