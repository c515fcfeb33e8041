//! Content digests: `sha256:` plus lowercase hex over a canonical JSON encoding (object keys sorted at every
//! level, no whitespace), so the same content always has the same digest whatever the key order in the YAML.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Digest of any serialisable value.
pub fn digest_of<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let canonical = canonical_json(&serde_json::to_value(value)?);
    Ok(digest_bytes(canonical.as_bytes()))
}

/// `sha256:` + hex of raw bytes.
pub fn digest_bytes(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// JSON with object keys sorted recursively (independent of serde_json's `preserve_order` feature).
pub fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_digest() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b = json!({"a": {"x": "s", "y": [1, 2]}, "b": 1});
        assert_eq!(digest_of(&a).unwrap(), digest_of(&b).unwrap());
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
    }

    #[test]
    fn digest_has_the_documented_shape() {
        let d = digest_bytes(b"");
        assert_eq!(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(crate::domain::forms::is_digest(&d));
    }
}
