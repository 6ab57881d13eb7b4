//! The walls of the codebase, held by the test suite rather than by comments (issue 22):
//! - the core crate's normal dependencies hold no async runtime, HTTP stack, TLS or Kubernetes client,
//!   and its code reads no file, network, environment or clock;
//! - the top-level modules of each crate import only modules below them (the order their `lib.rs`
//!   documents), and the peer subsystems (planner, doctor, report, usage) do not import each other;
//! - no production source file is over 800 lines (data tables excepted) and no function over 120;
//! - the crate roots re-export nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The file's production code: everything before its `#[cfg(test)]` module.
fn production(text: &str) -> &str {
    text.find("\n#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn the_core_crate_depends_on_no_runtime_http_tls_or_kubernetes_client() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "gpu-slicer-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"serde"),
        "cargo tree printed no dependencies:\n{tree}"
    );
    for forbidden in [
        "tokio",
        "hyper",
        "hyper-util",
        "axum",
        "rustls",
        "tokio-rustls",
        "kube",
        "kube-client",
        "kube-runtime",
        "reqwest",
        "tower",
        "mio",
        "socket2",
    ] {
        assert!(
            !crates.contains(&forbidden),
            "gpu-slicer-core depends on {forbidden}:\n{tree}"
        );
    }
}

#[test]
fn the_core_crate_reads_no_file_network_environment_or_clock() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::env",
        "std::process",
        "std::io::stdin",
        "File::open",
        "SystemTime::now",
        "Instant::now",
        "OffsetDateTime::now",
        "UNIX_EPOCH",
        "thread::sleep",
        "static mut",
        "tracing::",
    ];
    let mut found = Vec::new();
    for file in rust_files(&root().join("crates/gpu-slicer-core/src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in production(&text).lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for f in forbidden {
                if line.contains(f) {
                    found.push(format!("{}:{}: {f}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O, clock or global state in the core:\n{}",
        found.join("\n")
    );
}

/// A crate's top-level modules, lowest first: each may import only modules of earlier groups (and
/// itself). Modules of one group are peers and may not import each other.
struct Layers {
    src: &'static str,
    /// The top-level modules in groups, lowest first.
    groups: &'static [&'static [&'static str]],
}

const CORE: Layers = Layers {
    src: "crates/gpu-slicer-core/src",
    groups: &[
        &["quantity"],
        &["gpus"],
        &["annotations"],
        &["labels"],
        &["yaml"],
        &["pod"],
        &["catalog"],
        &["audit"],
        &["policy"],
        &["nodepool"],
        &["dra"],
        &["equivalents"],
        &["engine"],
        &["budget", "spend"],
        &["gpu_operator"],
        &["karpenter"],
        &["check"],
    ],
};

const APP: Layers = Layers {
    src: "src",
    groups: &[
        &["input", "terminal", "html"],
        &["cluster"],
        &["policy_source"],
        &["controller"],
        &["webhook"],
        &["planner", "doctor", "report", "usage"],
        &["cli"],
    ],
};

/// Every `crate::<module>` a file's code names, with `use crate::{a, b}` groups opened.
fn crate_references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let preceded_by_ident = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !preceded_by_ident {
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                out.push(name);
            }
        }
        rest = after;
    }
    out
}

fn check_layers(layers: &Layers) -> Vec<String> {
    let src = root().join(layers.src);
    let rank: BTreeMap<&str, usize> = layers
        .groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| g.iter().map(move |m| (*m, i)))
        .collect();
    let mut wrong = Vec::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(top.as_str(), "lib" | "main") {
            continue;
        }
        let Some(&own) = rank.get(top.as_str()) else {
            wrong.push(format!(
                "{}: module {top} is in no layer of tests/walls.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for name in crate_references(&text) {
            if name == top {
                continue;
            }
            match rank.get(name.as_str()) {
                Some(&r) if r < own => {}
                Some(_) => wrong.push(format!("{}: {top} imports crate::{name}", rel.display())),
                None => wrong.push(format!(
                    "{}: crate::{name} is not a top-level module (a re-export?)",
                    rel.display()
                )),
            }
        }
    }
    wrong
}

#[test]
fn crate_roots_re_export_nothing() {
    // Imports name where things live (`gpu_slicer_core::engine`, `crate::webhook::server`), never a
    // shortcut at the root.
    for lib in ["src/lib.rs", "crates/gpu-slicer-core/src/lib.rs"] {
        let text = std::fs::read_to_string(root().join(lib)).unwrap();
        let uses: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("pub use"))
            .collect();
        assert!(uses.is_empty(), "{lib} re-exports: {uses:?}");
    }
}

#[test]
fn top_level_modules_import_only_downward() {
    let mut wrong = check_layers(&CORE);
    wrong.extend(check_layers(&APP));
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

/// Data tables a reader looks things up in rather than reads through.
const DATA_TABLES: &[&str] = &["crates/gpu-slicer-core/src/catalog.rs"];

#[test]
fn production_files_and_functions_stay_short() {
    let mut long = Vec::new();
    for dir in ["src", "crates/gpu-slicer-core/src"] {
        for file in rust_files(&root().join(dir)) {
            let rel = file.strip_prefix(root()).unwrap().display().to_string();
            let text = std::fs::read_to_string(&file).unwrap();
            // The whole file counts, its test module too: a reader holds all of it.
            let total = text.lines().count();
            if total > 800 && !DATA_TABLES.contains(&rel.as_str()) {
                long.push(format!("{rel}: {total} lines"));
            }
            let lines: Vec<&str> = production(&text).lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let t = line.trim_start();
                let is_fn = [
                    "fn ",
                    "pub fn ",
                    "pub(crate) fn ",
                    "async fn ",
                    "pub async fn ",
                ]
                .iter()
                .any(|p| t.starts_with(p));
                if !is_fn || t.ends_with(';') {
                    continue;
                }
                // rustfmt closes a body at the indentation its signature starts at.
                let indent = line.len() - t.len();
                let close = format!("{}}}", " ".repeat(indent));
                if let Some(len) = lines[i + 1..].iter().position(|l| *l == close)
                    && len + 2 > 120
                {
                    let name: String = t
                        .split("fn ")
                        .nth(1)
                        .unwrap_or("")
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    long.push(format!("{rel}:{}: fn {name}: {} lines", i + 1, len + 2));
                }
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}
