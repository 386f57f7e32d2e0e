//! Parameter schemas: an action's parameters are described either as JSON Schema (an object
//! schema) or in the vendor's flat form `{param: {type, description, required, enum,
//! default, minimum, maximum}}`. Both are stored as given and normalized to JSON Schema,
//! which validates invocations (the `jsonschema` crate) and is listed beside the flat form.

use agentpmt_protocol::canonical::JsonValue;
use agentpmt_protocol::tools::{CREDENTIALS_PARAM, WORKFLOW_SESSION_PARAM};
use agentpmt_protocol::wire::{LocItem, ValidationIssue};
use serde_json::{json, Map, Value};

/// JSON Schema keywords that mark a document as JSON Schema rather than the flat form.
const SCHEMA_MARKERS: [&str; 5] = [
    "$schema",
    "properties",
    "type",
    "required",
    "additionalProperties",
];

/// Fields of one flat-form parameter.
const FLAT_FIELDS: [&str; 12] = [
    "type",
    "description",
    "required",
    "enum",
    "default",
    "minimum",
    "maximum",
    "items",
    "minLength",
    "maxLength",
    "format",
    "pattern",
];

/// A normalized schema: the JSON Schema and the flat view.
#[derive(Debug, Clone)]
pub struct Normalized {
    pub json_schema: Value,
    pub flat: Value,
}

/// Normalizes `source` (JSON Schema or flat form); the error says what is wrong.
pub fn normalize(source: &Value) -> Result<Normalized, String> {
    let Value::Object(map) = source else {
        return Err("parameters must be a JSON object (JSON Schema or the flat form)".into());
    };
    let is_json_schema = SCHEMA_MARKERS.iter().any(|k| map.contains_key(*k))
        && !map.values().all(|v| {
            v.is_object()
                && v.get("type").is_some_and(|t| t.is_string())
                && !map.contains_key("properties")
        });
    let json_schema = if map.is_empty() {
        json!({"type": "object", "properties": {}})
    } else if is_json_schema {
        if map.get("type").and_then(Value::as_str).unwrap_or("object") != "object" {
            return Err("a JSON Schema for parameters must have type \"object\"".into());
        }
        let mut schema = map.clone();
        schema.entry("type").or_insert(json!("object"));
        Value::Object(schema)
    } else {
        flat_to_json_schema(map)?
    };
    jsonschema::validator_for(&json_schema).map_err(|e| format!("invalid JSON Schema: {e}"))?;
    let flat = json_schema_to_flat(&json_schema);
    Ok(Normalized { json_schema, flat })
}

fn flat_to_json_schema(map: &Map<String, Value>) -> Result<Value, String> {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, spec) in map {
        let Value::Object(spec) = spec else {
            return Err(format!(
                "parameter {name:?}: expected an object like {{\"type\": \"string\"}}"
            ));
        };
        let mut property = Map::new();
        for (key, value) in spec {
            match key.as_str() {
                "required" => match value {
                    Value::Bool(true) => required.push(Value::String(name.clone())),
                    Value::Bool(false) => {}
                    _ => {
                        return Err(format!(
                            "parameter {name:?}: required must be true or false"
                        ))
                    }
                },
                k if FLAT_FIELDS.contains(&k) => {
                    property.insert(key.clone(), value.clone());
                }
                other => return Err(format!("parameter {name:?}: unknown field {other:?}")),
            }
        }
        properties.insert(name.clone(), Value::Object(property));
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), Value::Array(required));
    }
    Ok(Value::Object(schema))
}

fn json_schema_to_flat(schema: &Value) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut flat = Map::new();
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, property) in properties {
            let mut entry = Map::new();
            if let Value::Object(p) = property {
                for key in FLAT_FIELDS {
                    if let Some(v) = p.get(key) {
                        entry.insert(key.to_owned(), v.clone());
                    }
                }
            }
            entry.insert(
                "required".into(),
                Value::Bool(required.contains(&name.as_str())),
            );
            flat.insert(name.clone(), Value::Object(entry));
        }
    }
    Value::Object(flat)
}

/// Validates invocation parameters (without the marketplace's `_` fields) against the
/// action's JSON Schema; every issue names the parameter (`loc: [body, parameters, name]`).
pub fn validate(schema: &Value, parameters: &Value) -> Result<(), Vec<ValidationIssue>> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => {
            return Err(vec![ValidationIssue {
                loc: vec!["body".into(), "parameters".into()],
                msg: format!("the action's schema is unusable: {e}"),
                kind: "schema_error".into(),
            }])
        }
    };
    let mut issues: Vec<ValidationIssue> = Vec::new();
    for error in validator.iter_errors(parameters) {
        let mut loc: Vec<LocItem> = vec!["body".into(), "parameters".into()];
        let pointer = error.instance_path().to_string();
        for part in pointer.split('/').filter(|p| !p.is_empty()) {
            let part = part.replace("~1", "/").replace("~0", "~");
            loc.push(match part.parse::<u64>() {
                Ok(i) => LocItem::Index(i),
                Err(_) => LocItem::from(part.as_str()),
            });
        }
        // A missing required property is reported at the object: name the parameter.
        let mut msg = error.to_string();
        if let Some(name) = missing_property(&msg) {
            loc.push(LocItem::from(name.as_str()));
            msg = format!("parameter {name:?} is required");
        }
        // Never echo values into messages (they may be secrets): keep the message short.
        if msg.len() > 300 {
            msg.truncate(300);
        }
        issues.push(ValidationIssue {
            loc,
            msg,
            kind: "value_error".into(),
        });
        if issues.len() >= 20 {
            break;
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

/// `"x" is a required property` → `x`.
fn missing_property(msg: &str) -> Option<String> {
    let rest = msg.strip_suffix(" is a required property")?;
    let name = rest.strip_prefix('"')?.strip_suffix('"')?;
    Some(name.to_owned())
}

/// The tool's parameters as sent (`sent`: the body's `parameters`, number lexemes
/// intact; absent or not an object: `{}`), without the reserved `_credentials` and
/// `_workflow_session_id` and the members named in `also`: the same members
/// [`split_reserved`] leaves in its value.
pub fn sent_tool_parameters(sent: Option<&JsonValue>, also: &[&str]) -> JsonValue {
    match sent {
        Some(JsonValue::Object(members)) => JsonValue::Object(
            members
                .iter()
                .filter(|(k, _)| {
                    k != CREDENTIALS_PARAM
                        && k != WORKFLOW_SESSION_PARAM
                        && !also.contains(&k.as_str())
                })
                .cloned()
                .collect(),
        ),
        _ => JsonValue::empty_object(),
    }
}

/// Splits the marketplace's fields off invocation parameters: returns the tool's
/// parameters, the credentials (passed to the tool, never stored) and the workflow session.
pub fn split_reserved(
    parameters: &Value,
) -> Result<(Value, Option<Value>, Option<String>), ValidationIssue> {
    let Value::Object(map) = parameters else {
        return Err(ValidationIssue {
            loc: vec!["body".into(), "parameters".into()],
            msg: "parameters must be a JSON object".into(),
            kind: "dict_type".into(),
        });
    };
    let mut tool = map.clone();
    let credentials = tool.remove(CREDENTIALS_PARAM);
    if let Some(c) = &credentials {
        if !c.is_object() {
            return Err(ValidationIssue {
                loc: vec!["body".into(), "parameters".into(), CREDENTIALS_PARAM.into()],
                msg: "_credentials must be a JSON object".into(),
                kind: "dict_type".into(),
            });
        }
    }
    let session = match tool.remove(WORKFLOW_SESSION_PARAM) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Some(s),
        Some(_) => {
            return Err(ValidationIssue {
                loc: vec![
                    "body".into(),
                    "parameters".into(),
                    WORKFLOW_SESSION_PARAM.into(),
                ],
                msg: "_workflow_session_id must be a non-empty string of at most 128 characters"
                    .into(),
                kind: "string_type".into(),
            })
        }
    };
    Ok((Value::Object(tool), credentials, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_form_becomes_json_schema() {
        let flat = json!({
            "text": {"type": "string", "description": "input", "required": true},
            "limit": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5}
        });
        let n = normalize(&flat).unwrap();
        assert_eq!(n.json_schema["required"], json!(["text"]));
        assert_eq!(n.json_schema["properties"]["limit"]["maximum"], json!(10));
        assert_eq!(n.flat["text"]["required"], json!(true));
        assert_eq!(n.flat["limit"]["required"], json!(false));
        assert!(validate(&n.json_schema, &json!({"text": "a"})).is_ok());
        let issues = validate(&n.json_schema, &json!({"limit": 50})).unwrap_err();
        let locs: Vec<String> = issues.iter().map(|i| format!("{:?}", i.loc)).collect();
        assert!(locs.iter().any(|l| l.contains("text")), "{locs:?}");
        assert!(locs.iter().any(|l| l.contains("limit")), "{locs:?}");
    }

    #[test]
    fn json_schema_is_kept() {
        let schema =
            json!({"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]});
        let n = normalize(&schema).unwrap();
        assert_eq!(n.json_schema, schema);
        assert_eq!(n.flat["n"]["type"], json!("number"));
        assert!(normalize(&json!({"type": "string"})).is_err());
        assert!(normalize(&json!({"x": 3})).is_err());
    }

    #[test]
    fn reserved_fields_are_split_off() {
        let (tool, creds, session) = split_reserved(&json!({
            "a": 1, "_credentials": {"k": "secret"}, "_workflow_session_id": "ws_1"
        }))
        .unwrap();
        assert_eq!(tool, json!({"a": 1}));
        assert_eq!(creds, Some(json!({"k": "secret"})));
        assert_eq!(session.as_deref(), Some("ws_1"));
        assert!(split_reserved(&json!([1])).is_err());
    }
}
