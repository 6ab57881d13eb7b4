//! Every manifest under `manifests/`: parses, core kinds are k8s-openapi types with no unknown fields,
//! custom resources validate against the real CRDs, kustomizations render, and the generated
//! NodeOverlays are current.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use gpu_slicer::gpu_operator::GpuOperatorConfigs;
use gpu_slicer::{karpenter, yaml};
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

/// Keys of `original` that did not survive a typed round trip: fields the type does not know.
fn dropped_fields(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => dropped_fields(v, w, &format!("{path}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Vec<String>, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut dropped = Vec::new();
    dropped_fields(v, &back, "", &mut dropped);
    Ok(dropped)
}

#[test]
fn core_objects_are_valid_k8s_openapi_types_without_unknown_fields() {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, apps::v1 as apps, core::v1 as core, policy::v1 as policy,
        rbac::v1 as rbac,
    };
    let mut seen = 0;
    for (file, obj) in objects() {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let result = match (obj["apiVersion"].as_str().unwrap_or_default(), kind) {
            ("v1", "Namespace") => roundtrip::<core::Namespace>(&obj),
            ("v1", "ServiceAccount") => roundtrip::<core::ServiceAccount>(&obj),
            ("v1", "Service") => roundtrip::<core::Service>(&obj),
            ("v1", "ConfigMap") => roundtrip::<core::ConfigMap>(&obj),
            ("v1", "Secret") => roundtrip::<core::Secret>(&obj),
            ("apps/v1", "Deployment") => roundtrip::<apps::Deployment>(&obj),
            ("policy/v1", "PodDisruptionBudget") => roundtrip::<policy::PodDisruptionBudget>(&obj),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip::<rbac::ClusterRole>(&obj),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                roundtrip::<rbac::ClusterRoleBinding>(&obj)
            }
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                roundtrip::<adm::MutatingWebhookConfiguration>(&obj)
            }
            _ => continue,
        };
        seen += 1;
        match result {
            Ok(dropped) => assert!(
                dropped.is_empty(),
                "{file}: {kind}: unknown fields {dropped:?}"
            ),
            Err(e) => panic!("{file}: {kind}: {e}"),
        }
    }
    assert!(seen >= 8, "only {seen} core objects found");
}

/// A CRD's schema as JSON Schema: Kubernetes prunes unknown fields silently, so to catch misspellings
/// every object with `properties` (and no escape hatch) refuses others.
fn strict(schema: &mut Value) {
    if let Value::Object(map) = schema {
        if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            && !map.contains_key("anyOf")
        {
            map.insert(
                "anyOf".into(),
                serde_json::json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        let open = map.contains_key("additionalProperties")
            || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if map.contains_key("properties") && !open {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for v in map.values_mut() {
            strict(v);
        }
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(strict);
    }
}

fn crd_validator(file: &str, version: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo(&format!("tests/data/crds/{file}"))).unwrap();
    let crd = &yaml::documents(&text).unwrap()[0];
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap();
    let mut schema = v["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    // metadata is the API server's to validate.
    schema["properties"]["metadata"] = serde_json::json!({"type": "object"});
    jsonschema::validator_for(&schema).unwrap()
}

fn errors(v: &jsonschema::Validator, obj: &Value) -> Vec<String> {
    v.iter_errors(obj)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
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
    assert_eq!(counts[0], 4, "NodePools");
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
            let bundle = gpu_slicer::tls::generate(
                &gpu_slicer::tls::service_names("gpu-slicer", "gpu-slicer"),
                "gpu-slicer",
            )
            .unwrap();
            gpu_slicer::tls::write_bundle(&certs, &bundle, false).unwrap();
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
}

#[test]
fn committed_node_overlays_are_what_the_generator_makes() {
    let policy = example_policy();
    let pools = shipped_pools();
    let ops = GpuOperatorConfigs::from_dir(&repo("manifests/gpu-operator")).unwrap();
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
