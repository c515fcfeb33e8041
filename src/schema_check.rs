//! What the API server checks before it stores an object, checked offline: the limits of the CRDs' own schemas
//! (types, lengths, list sizes, patterns, enums, ranges; from the same Rust types as `crds/`) and the rules of
//! object metadata (names, namespaces, labels, annotations). So `validate` refuses what the server would refuse
//! (a name over 253 characters, 300 CIDRs) instead of passing it.
//!
//! The CEL rules of the schemas are not evaluated here: each of them has a Rust counterpart in `crate::domain`
//! with a better message. Our own small walker instead of a JSON Schema crate: the subset a structural CRD schema
//! uses is small, and the crates that implement all of JSON Schema bring a large tree for what is not needed here.

use crate::domain::problem::Problem;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::HashMap;
use std::sync::OnceLock;

/// The `openAPIV3Schema` of each of our kinds.
fn schemas() -> &'static HashMap<String, Value> {
    static SCHEMAS: OnceLock<HashMap<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        crate::api::all_crds()
            .into_iter()
            .filter_map(|crd| {
                let kind = crd.spec.names.kind.clone();
                let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
                Some((kind, serde_json::to_value(schema).ok()?))
            })
            .collect()
    })
}

/// Compiled patterns of the schemas, by source, compiled once: a cloned `Regex` starts a cache of its own, which
/// was most of the walk's time.
fn pattern(source: &str) -> Option<&'static regex::Regex> {
    static PATTERNS: OnceLock<HashMap<String, regex::Regex>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        fn collect(schema: &Value, out: &mut HashMap<String, regex::Regex>) {
            match schema {
                Value::Object(map) => {
                    if let Some(source) = map.get("pattern").and_then(Value::as_str)
                        && let Ok(re) = regex::Regex::new(source)
                    {
                        out.insert(source.to_string(), re);
                    }
                    map.values().for_each(|v| collect(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
                _ => {}
            }
        }
        let mut out = HashMap::new();
        schemas().values().for_each(|s| collect(s, &mut out));
        out
    });
    patterns.get(source)
}

/// The path of the field being walked, written out only for a problem.
struct Path<'a>(Vec<Step<'a>>);

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

impl Path<'_> {
    fn text(&self) -> String {
        let mut out = String::new();
        for step in &self.0 {
            match step {
                Step::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Step::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

/// Everything the API server would refuse in `value`, an object of our `kind` as read from YAML, outside its CEL
/// rules. Walks the YAML value itself: converting every document to JSON first was a third of `validate`.
pub fn check(kind: &str, value: &Yaml) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let (Some(schema), Yaml::Mapping(map)) = (schemas().get(kind), value) {
        // apiVersion, kind and metadata are the server's own business; the rest follows the schema.
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, v) in map {
            let Some(key) = key.as_str() else { continue };
            if let Some(s) = properties.and_then(|p| p.get(key)).filter(|_| key != "metadata") {
                walk(s, v, &mut Path(vec![Step::Key(key)]), &mut problems);
            }
        }
    }
    metadata(value.get("metadata").unwrap_or(&Yaml::Null), kind, &mut problems);
    problems
}

fn walk<'v>(schema: &Value, value: &'v Yaml, path: &mut Path<'v>, problems: &mut Vec<Problem>) {
    let mut refuse = |message: String| problems.push(Problem::error(path.text(), message));
    let value = match value {
        Yaml::Tagged(t) => &t.value,
        v => v,
    };
    let expected = schema.get("type").and_then(Value::as_str);
    let fits = match (expected, value) {
        (None, _) | (_, Yaml::Null) => true,
        (Some("string"), Yaml::String(_)) | (Some("boolean"), Yaml::Bool(_)) | (Some("object"), Yaml::Mapping(_)) | (Some("array"), Yaml::Sequence(_)) => true,
        (Some("integer"), Yaml::Number(n)) => n.is_i64() || n.is_u64(),
        (Some("number"), Yaml::Number(_)) => true,
        _ => false,
    };
    if !fits {
        return; // the reader's type error names it, with a hint at quoting
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let as_json = match value {
            Yaml::String(s) => Some(Value::String(s.clone())),
            _ => None,
        };
        if let Some(v) = as_json
            && !options.contains(&v)
        {
            let list: Vec<String> = options.iter().map(|o| o.as_str().map(str::to_string).unwrap_or_else(|| o.to_string())).collect();
            refuse(format!("{v} is not one of {}", list.join(", ")));
        }
    }
    match value {
        Yaml::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                refuse(format!("is {chars} characters long; at most {max} are allowed"));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                refuse(format!("is {chars} characters long; at least {min} are needed"));
            }
            if let Some(source) = schema.get("pattern").and_then(Value::as_str)
                && pattern(source).is_some_and(|re| !re.is_match(s))
            {
                refuse(format!("{s:?} does not match the pattern {source}"));
            }
        }
        Yaml::Number(n) => {
            let v = n.as_f64().unwrap_or(0.0);
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && v > max
            {
                refuse(format!("{n} is above the maximum {max}"));
            }
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && v < min
            {
                refuse(format!("{n} is below the minimum {min}"));
            }
        }
        Yaml::Sequence(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                refuse(format!("lists {} items; at most {max} are allowed", items.len()));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                refuse(format!("lists {} items; at least {min} are needed", items.len()));
            }
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    path.0.push(Step::Index(i));
                    walk(item, v, path, problems);
                    path.0.pop();
                }
            }
        }
        Yaml::Mapping(map) => {
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                refuse(format!("has {} entries; at most {max} are allowed", map.len()));
            }
            // Missing required fields: the reader's "missing field" names them.
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, v) in map {
                let Some(key) = key.as_str() else { continue };
                let child = match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(s), _) => s,
                    (None, Some(s)) if s.is_object() => s,
                    _ => continue, // unknown fields are found by the reader (serde_ignored), with a better message
                };
                path.0.push(Step::Key(key));
                walk(child, v, path, problems);
                path.0.pop();
            }
        }
        _ => {}
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, at most 63.
fn is_label(s: &str) -> bool {
    crate::domain::forms::is_dns_label(s)
}

/// RFC 1123 subdomain: labels joined by '.', at most 253.
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_label)
}

/// A label or annotation key: an optional subdomain prefix and '/', then a name of at most 63 characters.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_subdomain(p)) {
        return Some(format!("{key:?}: the prefix before '/' must be a DNS subdomain (lower case, digits, '-', '.')"));
    }
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ok_ends = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    (!(ok_chars && ok_ends && name.len() <= 63))
        .then(|| format!("{key:?}: a name of at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit"))
}

fn metadata(meta: &Yaml, kind: &str, problems: &mut Vec<Problem>) {
    if let Some(name) = meta.get("name").and_then(Yaml::as_str)
        && !is_subdomain(name)
    {
        problems.push(Problem::error(
            "metadata.name",
            format!(
                "{:?} is not a valid name: at most 253 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
                if name.chars().count() > 60 { format!("{}…", name.chars().take(60).collect::<String>()) } else { name.to_string() }
            ),
        ));
    }
    if let Some(ns) = meta.get("namespace").and_then(Yaml::as_str)
        && !is_label(ns)
    {
        problems.push(Problem::error("metadata.namespace", format!("{ns:?} is not a namespace name (a DNS label of at most 63 characters)")));
    }
    if matches!(kind, "SignatureVerifier" | "AccessEnvironment" | "AccessRecord") && meta.get("namespace").is_some_and(|n| !n.is_null()) {
        problems.push(Problem::warning("metadata.namespace", format!("{kind} is cluster-scoped: the namespace is ignored")));
    }
    for (key, value) in meta.get("labels").and_then(Yaml::as_mapping).into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if let Some(why) = key_problem(key) {
            problems.push(Problem::error("metadata.labels", why));
        }
        let value = value.as_str().unwrap_or_default();
        let ok = value.is_empty()
            || (value.len() <= 63
                && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && value.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()));
        if !ok {
            problems.push(Problem::error(
                "metadata.labels".to_string(),
                format!("{value:?} is not a label value: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"),
            ));
        }
    }
    let mut annotation_bytes = 0;
    for (key, value) in meta.get("annotations").and_then(Yaml::as_mapping).into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if let Some(why) = key_problem(key) {
            problems.push(Problem::error("metadata.annotations", why));
        }
        annotation_bytes += key.len() + value.as_str().map_or(0, str::len);
    }
    if annotation_bytes > 256 * 1024 {
        problems.push(Problem::error("metadata.annotations", format!("{annotation_bytes} bytes; the API server allows at most 262144")));
    }
}
