//! The `gpu-slicer` binary as a user runs it: exit codes, stdout, stderr.

mod common;

use std::process::Output;

use common::*;
use serde_json::Value;

/// The binary with an optional stdin (most calls give none).
fn gpu_slicer(args: &[&str], stdin: Option<&str>) -> Output {
    gpu_slicer_with_stdin(args, stdin.unwrap_or(""))
}

const POD_YAML: &str = "apiVersion: v1
kind: Pod
metadata:
  name: trainer
spec:
  containers:
    - name: main
      image: nvcr.io/nvidia/pytorch:24.08-py3
      resources:
        limits:
          nvidia.com/gpu: 1
";

#[test]
fn mutate_prints_the_mutated_pod_and_reports_on_stderr() {
    let out = gpu_slicer(
        &[
            "mutate",
            "--namespace",
            "ml-inference",
            "--nodepools",
            "manifests/karpenter",
        ],
        Some(POD_YAML),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pod: Value = serde_norway::from_str(&text(&out.stdout)).unwrap();
    let limits = &pod["spec"]["containers"][0]["resources"]["limits"];
    assert_eq!(
        limits["nvidia.com/mig-1g.10gb"], 1,
        "YAML numbers are kept as written"
    );
    assert!(limits.get("nvidia.com/gpu").is_none());
    assert_eq!(
        pod["spec"]["nodeSelector"]["karpenter.sh/nodepool"],
        "gpu-mig"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Warning: gpu-slicer: main: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb"),
        "{stderr}"
    );
    assert!(stderr.contains("audit: {"), "{stderr}");
}

#[test]
fn mutate_answers_an_admission_review_like_the_server() {
    let file = repo("tests/data/reviews/ml-training-finetune-create.json");
    let out = gpu_slicer(
        &[
            "mutate",
            "-n",
            "ml-training",
            "--policy",
            "tests/data/policies/contract.yaml",
            "-f",
            file.to_str().unwrap(),
            "--output",
            "review",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        review["response"]["uid"],
        common::review("ml-training-finetune-create")["request"]["uid"]
    );
    assert_eq!(review["response"]["patchType"], "JSONPatch");

    let out = gpu_slicer(
        &[
            "mutate",
            "-n",
            "ml-training",
            "--policy",
            "tests/data/policies/contract.yaml",
            "-f",
            file.to_str().unwrap(),
            "-o",
            "patch",
        ],
        None,
    );
    let patch: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"]
                == "/spec/initContainers/0/resources/limits/nvidia.com~1mig-1g.10gb")
    );
}

#[test]
fn mutate_exit_codes_say_allowed_denied_or_bad_input() {
    let out = gpu_slicer(&["mutate", "-n", "sandbox"], Some(POD_YAML));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("denied: gpu-slicer: namespace \"sandbox\" may not use GPUs"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    let out = gpu_slicer(
        &["mutate", "-n", "x"],
        Some("kind: Service\napiVersion: v1\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a Pod or an AdmissionReview"));
    let out = gpu_slicer(&["mutate", "-n", "x"], Some(": : :"));
    assert_eq!(out.status.code(), Some(2));
    let out = gpu_slicer(&["mutate", "-n", "x", "-f", "/nonexistent.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn policy_check_names_the_field_and_exits_1() {
    let out = gpu_slicer(&["policy", "check", "manifests/policy/policy.yaml"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - name: a\n    action: mig\n    mig: {profile: 1g.7gb}\n").unwrap();
    let out = gpu_slicer(&["policy", "check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("spec.rules[0].mig.profile: \"1g.7gb\" is not a MIG profile"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn certs_writes_a_ca_and_a_serving_pair_for_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = gpu_slicer(
        &[
            "certs",
            "--out",
            dir.path().to_str().unwrap(),
            "--service",
            "gpu-slicer",
            "--namespace",
            "gpu-slicer",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    let cert = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let key = std::fs::read(dir.path().join("tls.key")).unwrap();
    gpu_slicer::webhook::tls::certified_key(&cert, &key, "tls.crt").expect("the pair fits");
    assert!(text(&out.stdout).contains("gpu-slicer.gpu-slicer.svc"));
}

#[test]
fn policy_check_and_overlays_on_the_shipped_manifests() {
    let out = gpu_slicer(
        &[
            "policy",
            "check",
            "manifests/policy/policy.yaml",
            "--nodepools",
            "manifests/karpenter",
            "--gpu-operator",
            "manifests/gpu-operator",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "manifests/policy/policy.yaml: OK (7 rules)\n"
    );

    let out = gpu_slicer(
        &[
            "policy",
            "check",
            "tests/data/policies/contract.yaml",
            "--nodepools",
            "manifests/karpenter",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("spec.rules[0] (team-a-mig): nodePool \"gpu-h100-mig\" is not a NodePool in the NodePools given"), "{stderr}");
    assert!(text(&out.stdout).contains("note: device plugin configs not checked"));

    let out = gpu_slicer(
        &[
            "karpenter",
            "overlays",
            "--policy",
            "manifests/policy/policy.yaml",
            "--nodepools",
            "manifests/karpenter",
            "--gpu-operator",
            "manifests/gpu-operator",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        std::fs::read_to_string(repo("manifests/karpenter/nodeoverlays.yaml")).unwrap()
    );
}
