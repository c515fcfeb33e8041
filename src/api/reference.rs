//! The CRD field reference (`docs/crd-reference.md`), generated from the same schemas as `crds/`, so the
//! documentation can never drift from the types (a test compares them, like the CRDs).

use serde_json::Value;
use std::fmt::Write as _;

fn kind_of(schema: &Value) -> String {
    let base = match schema["type"].as_str() {
        Some("array") => format!("[]{}", kind_of(&schema["items"])),
        Some("object") if schema.get("additionalProperties").is_some_and(Value::is_object) => {
            format!("map[string]{}", kind_of(&schema["additionalProperties"]))
        }
        Some(t) => t.to_string(),
        None => "any".to_string(),
    };
    match schema["format"].as_str() {
        Some(f) => format!("{base} ({f})"),
        None => base,
    }
}

fn constraints(schema: &Value) -> String {
    let mut out = Vec::new();
    if let Some(values) = schema["enum"].as_array() {
        out.push(format!("one of {}", values.iter().filter_map(Value::as_str).map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")));
    }
    for (key, label) in
        [("minLength", "min length"), ("maxLength", "max length"), ("minItems", "min items"), ("maxItems", "max items"), ("minimum", "min"), ("maximum", "max")]
    {
        if let Some(v) = schema.get(key).filter(|v| !v.is_null()) {
            out.push(format!("{label} {v}"));
        }
    }
    if let Some(p) = schema["pattern"].as_str() {
        out.push(format!("pattern `{p}`"));
    }
    for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
        if let Some(m) = rule["message"].as_str() {
            out.push(format!("rule: {m}"));
        }
    }
    out.join("; ")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn walk(path: &str, schema: &Value, required: bool, out: &mut String) {
    let description = schema["description"].as_str().unwrap_or_default();
    if !path.is_empty() {
        let _ = writeln!(
            out,
            "| `{path}` | {} | {} | {} | {} |",
            cell(&kind_of(schema)),
            if required { "yes" } else { "" },
            cell(description),
            cell(&constraints(schema))
        );
    }
    let (props, req, prefix) = match schema["type"].as_str() {
        Some("array") => (&schema["items"]["properties"], &schema["items"]["required"], format!("{path}[]")),
        _ => (&schema["properties"], &schema["required"], path.to_string()),
    };
    if let Some(props) = props.as_object() {
        let required: Vec<&str> = req.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut names: Vec<&String> = props.keys().collect();
        names.sort();
        for name in names {
            let child = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            walk(&child, &props[name], required.contains(&name.as_str()), out);
        }
    }
}

/// The whole reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# CRD field reference\n\nGenerated from the Rust types by `jpki-access crd --reference` (a test fails when this file \
         differs). API group `access.jpki.dev`, version `v1alpha1`.\n",
    );
    for crd in super::all_crds() {
        let version = &crd.spec.versions[0];
        let Some(schema) = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()) else {
            continue;
        };
        let schema = serde_json::to_value(schema).unwrap_or_default();
        let names = &crd.spec.names;
        let _ = writeln!(out, "\n## {}\n", names.kind);
        let _ = writeln!(out, "{}\n", schema["description"].as_str().unwrap_or_default());
        let _ = writeln!(out, "Scope: {}. Short names: {}.\n", crd.spec.scope, names.short_names.clone().unwrap_or_default().join(", "));
        for rule in schema["x-kubernetes-validations"].as_array().into_iter().flatten() {
            if let Some(m) = rule["message"].as_str() {
                let _ = writeln!(out, "- Rule: {m}");
            }
        }
        out.push_str("\n| field | type | required | description | constraints |\n|---|---|---|---|---|\n");
        for part in ["spec", "status"] {
            let required = schema["required"].as_array().is_some_and(|r| r.iter().any(|v| v == part));
            walk(part, &schema["properties"][part], required, &mut out);
        }
    }
    out
}
