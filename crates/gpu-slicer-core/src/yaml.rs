//! Kubernetes YAML: the documents of a multi-document text (files are read by the binary's `input`).
//!
//! Imports: nothing of this crate (the lowest layer).

use serde::Deserialize;

/// Every non-empty YAML document in a string, as JSON values.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}
