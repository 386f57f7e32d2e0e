//! Validation of workflow graphs on write.
//!
//! Rules: 1-200 nodes and at most 1000 edges; node and edge ids unique (1-64 characters);
//! every edge joins two existing, different nodes; each node kind carries its fields
//! (`tool.product_id` + `tool.action`, `prompt`, `items`, `message`); a `branch` has at
//! least two outgoing edges, all but at most one (the default path) with a `condition`; a
//! `merge` has at least two incoming edges; a `for_each` has an outgoing edge; at least one
//! node has no incoming edge (an entry point). Tool references are checked by
//! [`check_tool_refs`].

use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use agentpmt_protocol::wire::{LocItem, ValidationIssue};
use agentpmt_protocol::workflows::{NodeKind, WorkflowGraph};
use std::collections::{HashMap, HashSet};

pub const MAX_NODES: usize = 200;
pub const MAX_EDGES: usize = 1000;
const MAX_ID_LEN: usize = 64;
const MAX_TEXT_LEN: usize = 20_000;

/// Where the operator API's bodies carry the graph (`{"graph": {"nodes", "edges"}}`).
pub const NESTED: &[&str] = &["body", "graph"];
/// Where the job workflow bodies carry it (`{"nodes", "edges"}` at the top level).
pub const TOP_LEVEL: &[&str] = &["body"];

/// Validation issues located below `at` (where the request carried the graph).
struct Issues<'a> {
    at: &'a [&'a str],
    list: Vec<ValidationIssue>,
}

impl<'a> Issues<'a> {
    fn new(at: &'a [&'a str]) -> Self {
        Issues {
            at,
            list: Vec::new(),
        }
    }

    fn push(&mut self, loc: &[LocItem], msg: impl Into<String>) {
        let mut full: Vec<LocItem> = self.at.iter().map(|&k| LocItem::from(k)).collect();
        full.extend_from_slice(loc);
        self.list.push(ValidationIssue {
            loc: full,
            msg: msg.into(),
            kind: "value_error".into(),
        });
    }
}

fn idx(i: usize) -> LocItem {
    LocItem::Index(i as u64)
}

fn key(k: &str) -> LocItem {
    LocItem::from(k)
}

fn bad_id(id: &str) -> bool {
    id.is_empty() || id.chars().count() > MAX_ID_LEN || id.chars().any(char::is_control)
}

fn missing_text(value: &Option<String>) -> bool {
    value
        .as_deref()
        .is_none_or(|v| v.trim().is_empty() || v.chars().count() > MAX_TEXT_LEN)
}

/// Checks the shape of `graph` (everything but whether tool products exist), locating
/// issues as the operator API sends it (below `body.graph`).
pub fn validate(graph: &WorkflowGraph) -> ApiResult<()> {
    validate_at(graph, NESTED)
}

/// [`validate`] for a graph the request carried at `at` ([`NESTED`] or [`TOP_LEVEL`]).
pub fn validate_at(graph: &WorkflowGraph, at: &[&str]) -> ApiResult<()> {
    let mut issues = Issues::new(at);
    if graph.nodes.is_empty() || graph.nodes.len() > MAX_NODES {
        issues.push(
            &[key("nodes")],
            format!("a graph has 1 to {MAX_NODES} nodes"),
        );
    }
    if graph.edges.len() > MAX_EDGES {
        issues.push(
            &[key("edges")],
            format!("a graph has at most {MAX_EDGES} edges"),
        );
    }
    if !issues.list.is_empty() {
        return Err(ApiError::validation(issues.list));
    }
    let mut kinds: HashMap<&str, NodeKind> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if bad_id(&node.id) {
            issues.push(
                &[key("nodes"), idx(i), key("id")],
                "node id must be 1-64 characters without control characters",
            );
        } else if kinds.insert(node.id.as_str(), node.kind).is_some() {
            issues.push(
                &[key("nodes"), idx(i), key("id")],
                format!("duplicate node id {:?}", node.id),
            );
        }
        match node.kind {
            NodeKind::Tool => match &node.tool {
                None => issues.push(
                    &[key("nodes"), idx(i), key("tool")],
                    "a tool node needs tool {product_id, action}",
                ),
                Some(tool) => {
                    if let Some(p) = &tool.parameters {
                        if !p.is_object() {
                            issues.push(
                                &[key("nodes"), idx(i), key("tool"), key("parameters")],
                                "tool parameters must be a JSON object",
                            );
                        }
                    }
                }
            },
            NodeKind::Prompt if missing_text(&node.prompt) => issues.push(
                &[key("nodes"), idx(i), key("prompt")],
                "a prompt node needs a non-empty prompt",
            ),
            NodeKind::ForEach if missing_text(&node.items) => issues.push(
                &[key("nodes"), idx(i), key("items")],
                "a for_each node needs items (what to iterate over)",
            ),
            NodeKind::NotifyHuman if missing_text(&node.message) => issues.push(
                &[key("nodes"), idx(i), key("message")],
                "a notify_human node needs a non-empty message",
            ),
            _ => {}
        }
    }
    let mut edge_ids = HashSet::new();
    let mut outgoing: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut incoming: HashMap<&str, usize> = HashMap::new();
    for (i, edge) in graph.edges.iter().enumerate() {
        if bad_id(&edge.id) {
            issues.push(
                &[key("edges"), idx(i), key("id")],
                "edge id must be 1-64 characters without control characters",
            );
        } else if !edge_ids.insert(edge.id.as_str()) {
            issues.push(
                &[key("edges"), idx(i), key("id")],
                format!("duplicate edge id {:?}", edge.id),
            );
        }
        let from_ok = kinds.contains_key(edge.from.as_str());
        let to_ok = kinds.contains_key(edge.to.as_str());
        if !from_ok {
            issues.push(
                &[key("edges"), idx(i), key("from")],
                format!("edge points from unknown node {:?}", edge.from),
            );
        }
        if !to_ok {
            issues.push(
                &[key("edges"), idx(i), key("to")],
                format!("edge points to unknown node {:?}", edge.to),
            );
        }
        if from_ok && to_ok && edge.from == edge.to {
            issues.push(
                &[key("edges"), idx(i)],
                "an edge cannot join a node to itself",
            );
        }
        if from_ok && to_ok {
            outgoing.entry(edge.from.as_str()).or_default().push(i);
            *incoming.entry(edge.to.as_str()).or_default() += 1;
        }
    }
    for (i, node) in graph.nodes.iter().enumerate() {
        let out = outgoing.get(node.id.as_str()).map_or(&[][..], |v| &v[..]);
        let ins = incoming.get(node.id.as_str()).copied().unwrap_or(0);
        match node.kind {
            NodeKind::Branch => {
                let unconditioned = out
                    .iter()
                    .filter(|&&e| missing_text(&graph.edges[e].condition))
                    .count();
                if out.len() < 2 {
                    issues.push(
                        &[key("nodes"), idx(i)],
                        "a branch node needs at least two outgoing edges",
                    );
                } else if unconditioned > 1 {
                    issues.push(
                        &[key("nodes"), idx(i)],
                        "all edges leaving a branch but one (the default) need a condition",
                    );
                }
            }
            NodeKind::Merge if ins < 2 => issues.push(
                &[key("nodes"), idx(i)],
                "a merge node needs at least two incoming edges",
            ),
            NodeKind::ForEach if out.is_empty() => issues.push(
                &[key("nodes"), idx(i)],
                "a for_each node needs an outgoing edge (the steps to repeat)",
            ),
            _ => {}
        }
    }
    if issues.list.is_empty()
        && graph
            .nodes
            .iter()
            .all(|n| incoming.get(n.id.as_str()).copied().unwrap_or(0) > 0)
    {
        issues.push(
            &[key("nodes")],
            "the graph has no entry node (every node has an incoming edge)",
        );
    }
    if issues.list.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(issues.list))
    }
}

fn is_product_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks that every tool node references an active product (by its 24-hex id) and one of
/// its active actions (by slug or name, as the invoke URL accepts them).
/// Issues are located below `at`, as in [`validate_at`].
pub async fn check_tool_refs(db: &Db, graph: &WorkflowGraph, at: &[&str]) -> ApiResult<()> {
    let mut issues = Issues::new(at);
    let mut conn = db.read().await?;
    for (i, node) in graph.nodes.iter().enumerate() {
        let Some(tool) = &node.tool else { continue };
        if node.kind != NodeKind::Tool {
            continue;
        }
        let at = |field: &'static str| [key("nodes"), idx(i), key("tool"), key(field)];
        if !is_product_id(&tool.product_id) {
            issues.push(&at("product_id"), "product_id must be a 24-hex product id");
            continue;
        }
        let action = tool.action.trim();
        if action.is_empty() || action.chars().count() > MAX_ID_LEN {
            issues.push(
                &at("action"),
                "action must be the product's action slug (1-64 characters)",
            );
            continue;
        }
        let product_id = tool.product_id.to_ascii_lowercase();
        let product = crate::db::macros::sql_fetch_optional!(
            conn.conn(),
            crate::tools::catalog::ProductRow,
            "SELECT product_id, slug, name, description, categories, vendor_id, status, is_private, updated_at_ms \
             FROM products WHERE product_id = $1 AND status = 'active'",
            &product_id
        )?;
        let Some(product) = product else {
            issues.push(&at("product_id"), "no active product has this id");
            continue;
        };
        let actions = crate::tools::catalog::actions_of(&mut conn, &product.product_id).await?;
        if crate::tools::catalog::pick_action(&product, &actions, action).is_err() {
            issues.push(
                &at("action"),
                "the product has no active action with this slug or name",
            );
        }
    }
    if issues.list.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(issues.list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(value: serde_json::Value) -> WorkflowGraph {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn accepts_a_branching_graph() {
        let g = graph(json!({
            "nodes": [
                {"id": "a", "type": "prompt", "prompt": "Find leads"},
                {"id": "b", "type": "branch"},
                {"id": "c", "type": "notify_human", "message": "none found"},
                {"id": "d", "type": "tool", "tool": {"product_id": "0123456789abcdef01234567", "action": "search"}},
                {"id": "e", "type": "merge"}
            ],
            "edges": [
                {"id": "1", "from": "a", "to": "b"},
                {"id": "2", "from": "b", "to": "c", "condition": "count == 0"},
                {"id": "3", "from": "b", "to": "d"},
                {"id": "4", "from": "c", "to": "e"},
                {"id": "5", "from": "d", "to": "e", "sourceHandle": "out"}
            ]
        }));
        validate(&g).unwrap();
    }

    #[test]
    fn refuses_dangling_edges_and_branches() {
        let g = graph(json!({
            "nodes": [
                {"id": "a", "type": "prompt", "prompt": "x"},
                {"id": "b", "type": "branch"}
            ],
            "edges": [
                {"id": "1", "from": "a", "to": "b"},
                {"id": "2", "from": "b", "to": "zzz"}
            ]
        }));
        let err = validate(&g).unwrap_err();
        assert_eq!(err.code(), agentpmt_protocol::ErrorCode::VALIDATION_ERROR);
    }
}
