//! The guide's promises, checked: every complete YAML block in `docs/` and the README validates like the
//! manifests (core kinds as k8s-openapi types, Karpenter and GPU Operator objects against their CRDs,
//! device plugin and mig-parted configs, SlicingPolicies), every excerpt marked `yaml fragment` at least
//! parses, and every `gpu-slicer` command in an `sh` block runs against the shipped files and exits 0.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::validate::{self, crd_validator, errors};
use common::*;
use gpu_slicer_core::gpu_operator::{DevicePluginConfig, MigConfigs};
use gpu_slicer_core::policy::Policy;
use serde_json::Value;

/// A fenced block: its file, first line number, info string and text.
struct Block {
    file: String,
    line: usize,
    info: String,
    text: String,
}

fn pages() -> Vec<PathBuf> {
    let mut out = vec![repo("README.md")];
    for entry in std::fs::read_dir(repo("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let mut open: Option<Block> = None;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            match (&mut open, trimmed.strip_prefix("```")) {
                (None, Some(info)) => {
                    open = Some(Block {
                        file: page.display().to_string(),
                        line: n + 1,
                        info: info.trim().to_string(),
                        text: String::new(),
                    })
                }
                (Some(_), Some("")) => out.push(open.take().unwrap()),
                (Some(b), _) => {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
                (None, None) => {}
            }
        }
        assert!(open.is_none(), "{}: unclosed code block", page.display());
    }
    out
}

fn validate_object(obj: &Value) -> Result<(), String> {
    if let Some(result) = validate::core_object(obj) {
        let dropped = result?;
        return if dropped.is_empty() {
            Ok(())
        } else {
            Err(format!("unknown fields {dropped:?}"))
        };
    }
    let crd = match (
        obj["apiVersion"].as_str().unwrap_or(""),
        obj["kind"].as_str().unwrap_or(""),
    ) {
        ("karpenter.sh/v1", "NodePool") => Some(("karpenter.sh_nodepools.yaml", "v1")),
        ("karpenter.sh/v1alpha1", "NodeOverlay") => {
            Some(("karpenter.sh_nodeoverlays.yaml", "v1alpha1"))
        }
        ("karpenter.k8s.aws/v1", "EC2NodeClass") => {
            Some(("karpenter.k8s.aws_ec2nodeclasses.yaml", "v1"))
        }
        ("nvidia.com/v1", "ClusterPolicy") => Some(("nvidia.com_clusterpolicies.yaml", "v1")),
        ("gpu-slicer.io/v1alpha1", "SlicingPolicy") => {
            let yaml = serde_norway::to_string(obj).map_err(|e| e.to_string())?;
            return Policy::parse(&yaml, "block")
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        _ => None,
    };
    if let Some((file, version)) = crd {
        let errs = errors(&crd_validator(file, version), obj);
        return if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        };
    }
    if obj.get("mig-configs").is_some() {
        let yaml = serde_norway::to_string(obj).map_err(|e| e.to_string())?;
        return MigConfigs::parse(&yaml, "block")
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    if obj.get("version").and_then(|v| v.as_str()) == Some("v1")
        && (obj.get("sharing").is_some() || obj.get("flags").is_some())
    {
        return serde_json::from_value::<DevicePluginConfig>(obj.clone())
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    Err("not an object the docs test knows; fence it as `yaml fragment` if it is an excerpt".into())
}

#[test]
fn every_yaml_block_is_valid_or_marked_as_a_fragment() {
    let mut checked = 0;
    for b in blocks() {
        let docs = match b.info.as_str() {
            "yaml" | "yaml fragment" => gpu_slicer_core::yaml::documents(&b.text)
                .unwrap_or_else(|e| panic!("{}:{}: YAML does not parse: {e}", b.file, b.line)),
            _ => continue,
        };
        if b.info == "yaml fragment" {
            continue;
        }
        for obj in docs {
            if let Err(e) = validate_object(&obj) {
                panic!(
                    "{}:{}: {}: {e}",
                    b.file,
                    b.line,
                    obj["kind"].as_str().unwrap_or("?")
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} complete YAML objects in the docs"
    );
}

#[test]
fn every_gpu_slicer_command_in_the_docs_runs() {
    let mut ran = 0;
    for b in blocks().into_iter().filter(|b| b.info == "sh") {
        for line in b.text.lines().map(str::trim) {
            let Some(args) = line.strip_prefix("gpu-slicer ") else {
                continue;
            };
            let args: Vec<&str> = args.split_whitespace().collect();
            assert!(
                !args.contains(&"serve"),
                "{}:{}: `gpu-slicer serve` does not exit; show it in a console block",
                b.file,
                b.line
            );
            let out = Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
                .args(&args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}:{}: `{line}` exited {:?}: {}",
                b.file,
                b.line,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 5, "only {ran} commands found");
}

#[test]
fn relative_links_resolve() {
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let dir = page.parent().unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = rest[..end].split('#').next().unwrap_or("");
            if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
                assert!(
                    dir.join(target).exists(),
                    "{}: link to {target} does not resolve",
                    page.display()
                );
            }
        }
    }
}
