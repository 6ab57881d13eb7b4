//! Reading Kubernetes YAML: multi-document files and directories of them.

use std::path::Path;

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

/// Every document of every `*.yaml` / `*.yml` file directly in `dir`, sorted by file name, with the
/// file each came from (each read through [`crate::input`], so capped in size). Errors are
/// `(path, message)`.
pub fn documents_in_dir(dir: &Path) -> Result<Vec<(String, serde_json::Value)>, (String, String)> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| (shown.clone(), e.to_string()))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let path = file.display().to_string();
        let text = crate::input::read_text(&file).map_err(|e| (path.clone(), e.to_string()))?;
        for doc in documents(&text).map_err(|e| (path.clone(), e))? {
            out.push((path.clone(), doc));
        }
    }
    Ok(out)
}
