//! Every manifest under `manifests/`: parses, core kinds are k8s-openapi types with no unknown fields,
//! custom resources validate against the real CRDs, kustomizations render, and the generated
//! NodeOverlays are current.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::validate::{self, crd_validator, errors, strict};
use common::*;
use gpu_slicer_core::{karpenter, yaml};
use serde_json::Value;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Every Kubernetes object in `manifests/` (kustomization files excluded), with its file.
fn objects() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(&repo("manifests"), &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs = yaml::documents(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for d in docs {
            out.push((f.display().to_string(), d));
        }
    }
    out
}

#[test]
fn core_objects_are_valid_k8s_openapi_types_without_unknown_fields() {
    let mut seen = 0;
    for (file, obj) in objects() {
        let Some(result) = validate::core_object(&obj) else {
            continue;
        };
        seen += 1;
        match result {
            Ok(dropped) => assert!(
                dropped.is_empty(),
                "{file}: {}: unknown fields {dropped:?}",
                obj["kind"]
            ),
            Err(e) => panic!("{file}: {}: {e}", obj["kind"]),
        }
    }
    assert!(seen >= 8, "only {seen} core objects found");
}

#[test]
fn karpenter_objects_validate_against_the_real_crds() {
    let nodepool = crd_validator("karpenter.sh_nodepools.yaml", "v1");
    let overlay = crd_validator("karpenter.sh_nodeoverlays.yaml", "v1alpha1");
    let nodeclass = crd_validator("karpenter.k8s.aws_ec2nodeclasses.yaml", "v1");
    let mut counts = [0; 3];
    for (file, obj) in objects() {
        let (validator, i) = match (
            obj["apiVersion"].as_str().unwrap_or(""),
            obj["kind"].as_str().unwrap_or(""),
        ) {
            ("karpenter.sh/v1", "NodePool") => (&nodepool, 0),
            ("karpenter.sh/v1alpha1", "NodeOverlay") => (&overlay, 1),
            ("karpenter.k8s.aws/v1", "EC2NodeClass") => (&nodeclass, 2),
            _ => continue,
        };
        counts[i] += 1;
        let errs = errors(validator, &obj);
        assert!(
            errs.is_empty(),
            "{file}: {}: {errs:?}",
            obj["metadata"]["name"]
        );
    }
    // manifests/karpenter (5), the MIG single-strategy example (2), the DRA example (2).
    assert_eq!(counts[0], 9, "NodePools");
    assert!(counts[1] >= 4, "NodeOverlays");
    assert_eq!(counts[2], 1, "EC2NodeClass");

    // The strict schema does catch a misspelled field.
    let (_, mut pool) = objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == "NodePool")
        .unwrap();
    pool["spec"]["template"]["spec"]["taint"] = serde_json::json!([]);
    assert!(!errors(&nodepool, &pool).is_empty());
}

#[test]
fn gpu_operator_values_fit_the_cluster_policy_schema() {
    let text =
        std::fs::read_to_string(repo("tests/data/crds/nvidia.com_clusterpolicies.yaml")).unwrap();
    let crd = &yaml::documents(&text).unwrap()[0];
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let values = &yaml::documents(
        &std::fs::read_to_string(repo("manifests/gpu-operator/values.yaml")).unwrap(),
    )
    .unwrap()[0];
    // Helm maps these top-level values onto ClusterPolicy.spec fields of the same name.
    for key in ["mig", "driver", "toolkit", "migManager", "devicePlugin"] {
        let mut schema = spec[key].clone();
        assert!(!schema.is_null(), "ClusterPolicy has no spec.{key}");
        strict(&mut schema);
        let v = jsonschema::validator_for(&schema).unwrap();
        let errs = errors(&v, &values[key]);
        assert!(errs.is_empty(), "values.yaml {key}: {errs:?}");
    }
    assert_eq!(values["mig"]["strategy"], "mixed");
}

#[test]
fn every_kustomization_renders() {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    yaml_files(&repo("manifests"), &mut files);
    for f in files {
        if f.file_name().and_then(|n| n.to_str()) == Some("kustomization.yaml") {
            dirs.push(f.parent().unwrap().to_path_buf());
        }
    }
    assert!(dirs.len() >= 6, "{dirs:?}");
    for dir in dirs {
        // plain-certs needs certificates made by `gpu-slicer certs`: make them, render, clean up.
        let certs = dir.join("certs");
        let made = dir.ends_with("plain-certs") && !certs.exists();
        if made {
            let bundle = gpu_slicer::webhook::tls::generate(
                &gpu_slicer::webhook::tls::service_names("gpu-slicer", "gpu-slicer"),
                "gpu-slicer",
            )
            .unwrap();
            gpu_slicer::webhook::tls::write_bundle(&certs, &bundle, false).unwrap();
        }
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .output()
            .expect("kubectl must be installed (it renders the kustomizations)");
        if made {
            std::fs::remove_dir_all(&certs).unwrap();
        }
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = yaml::documents(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(!rendered.is_empty(), "{}", dir.display());
        if dir.ends_with("plain-certs") {
            let hook = rendered
                .iter()
                .find(|o| o["kind"] == "MutatingWebhookConfiguration")
                .unwrap();
            assert!(
                hook["webhooks"][0]["clientConfig"]["caBundle"]
                    .as_str()
                    .is_some_and(|b| b.len() > 100),
                "caBundle filled"
            );
        }
    }
}

#[test]
fn the_webhook_configuration_is_what_the_design_asks_for() {
    let (_, hook) = objects()
        .into_iter()
        .find(|(_, o)| o["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    let w = &hook["webhooks"][0];
    assert_eq!(w["admissionReviewVersions"], serde_json::json!(["v1"]));
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert!(w["timeoutSeconds"].as_i64().unwrap() <= 10);
    assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
    assert_eq!(w["rules"][0]["resources"], serde_json::json!(["pods"]));
    let excluded = &w["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["operator"], "NotIn");
    for ns in ["kube-system", "gpu-slicer"] {
        assert!(
            excluded["values"]
                .as_array()
                .unwrap()
                .contains(&Value::from(ns))
        );
    }
    let cel = w["matchConditions"][0]["expression"].as_str().unwrap();
    assert!(
        cel.contains("initContainers") && cel.contains("nvidia.com/"),
        "{cel}"
    );
    // Pods that make any DRA claim are enforced too (a claim of any name may ask for GPUs).
    assert!(
        cel.contains("has(object.spec.resourceClaims) && size(object.spec.resourceClaims) > 0"),
        "{cel}"
    );
}

#[test]
fn committed_node_overlays_are_what_the_generator_makes() {
    let policy = example_policy();
    let pools = shipped_pools();
    let ops = gpu_slicer::input::gpu_operator_configs(&repo("manifests/gpu-operator")).unwrap();
    let overlays = karpenter::overlays(&policy, &pools, &ops).unwrap();
    let yaml = karpenter::overlays_yaml(
        &overlays,
        "gpu-slicer karpenter overlays --policy manifests/policy/policy.yaml --nodepools manifests/karpenter --gpu-operator manifests/gpu-operator",
    )
    .unwrap();
    let committed = std::fs::read_to_string(repo("manifests/karpenter/nodeoverlays.yaml")).unwrap();
    assert_eq!(
        committed, yaml,
        "manifests/karpenter/nodeoverlays.yaml is stale: regenerate it (command in its first line)"
    );
    let mut weights: Vec<_> = overlays
        .iter()
        .map(|o| o["spec"]["weight"].as_u64().unwrap())
        .collect();
    weights.sort();
    weights.dedup();
    assert_eq!(weights.len(), overlays.len(), "weights are distinct");
}

#[test]
fn the_network_policy_admits_only_the_webhook_port_from_listed_sources() {
    let rendered = kustomize("manifests/webhook/components/network-policy");
    let np = &rendered[0];
    assert_eq!(np["kind"], "NetworkPolicy");
    assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    // It selects exactly the webhook's pods.
    let deploy = std::fs::read_to_string(repo("manifests/webhook/base/deployment.yaml")).unwrap();
    let deploy: Value = serde_norway::from_str(&deploy).unwrap();
    let pod_labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in np["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[k], v, "{k}");
    }
    assert_eq!(
        deploy["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    // Every rule admits the webhook port only, and each from a listed source (no empty `from`).
    for rule in np["spec"]["ingress"].as_array().unwrap() {
        assert_eq!(
            rule["ports"],
            serde_json::json!([{"protocol": "TCP", "port": 8443}])
        );
        assert!(!rule["from"].as_array().unwrap().is_empty());
    }
}
