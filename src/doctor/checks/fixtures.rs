//! Test fixtures shared by the checks' tests: a healthy cluster built from the shipped manifests
//! ([`healthy`]), and the nodes, pods and NodeClaims the tests break it with.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::Options;
use super::webhook_manifest::SHIPPED_WEBHOOK;
use crate::doctor::snapshot::{
    ClusterSnapshot, GpuOperator, NodeClaimInfo, NodeInfo, OverlayInfo, PodInfo, Read,
};
use crate::doctor::{Finding, Severity};
use crate::policy_source::LoadedPolicy;

pub(super) fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub(super) const NOW: &str = "2026-12-04T03:00:00Z";

pub(super) fn options() -> Options {
    Options {
        now: NOW.parse().unwrap(),
        stuck_after: Options::DEFAULT_STUCK_AFTER,
    }
}

/// `minutes` before [`NOW`].
pub(super) fn ago(minutes: i64) -> String {
    let now: Timestamp = NOW.parse().unwrap();
    Timestamp::from_second(now.as_second() - minutes * 60)
        .unwrap()
        .to_string()
}

/// An initialized gpu-mig node on p5.48xlarge with the all-balanced layout applied.
pub(super) fn mig_node(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "creationTimestamp": ago(120), "labels": {
            "karpenter.sh/nodepool": "gpu-mig", "karpenter.sh/initialized": "true",
            "node.kubernetes.io/instance-type": "p5.48xlarge",
            "nvidia.com/mig.config": "all-balanced", "nvidia.com/mig.config.state": "success"}},
        "status": {"allocatable": {"cpu": "191450m", "memory": "2002Gi", "nvidia.com/gpu": "0",
            "nvidia.com/mig-1g.10gb": "16", "nvidia.com/mig-2g.20gb": "8", "nvidia.com/mig-3g.40gb": "8"}}
    })
}

pub(super) fn node(v: Value) -> NodeInfo {
    NodeInfo::from_node(serde_json::from_value::<Node>(v).unwrap())
}

pub(super) fn pod(v: Value) -> PodInfo {
    PodInfo::from_pod(serde_json::from_value::<Pod>(v).unwrap())
}

/// A pod of a Deployment's ReplicaSet asking for `resources`.
pub(super) fn gpu_pod(ns: &str, name: &str, phase: &str, resources: Value, extra: Value) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": ns,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llm-7d9c8b6f5", "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "main", "resources": {"limits": resources.clone(), "requests": resources}}]},
        "status": {"phase": phase}
    });
    for (k, v) in extra.as_object().unwrap() {
        if k == "annotations" {
            p["metadata"]["annotations"] = v.clone();
        } else {
            p["spec"][k] = v.clone();
        }
    }
    p
}

pub(super) fn routed() -> Value {
    json!({"nodeSelector": {"karpenter.sh/nodepool": "gpu-mig", "nvidia.com/mig.config": "all-balanced"},
           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
           "annotations": {"gpu-slicer.io/rewritten": "main: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb 1 (rule inference-mig)"}})
}

pub(super) fn claim(name: &str, node: &str, initialized: Value) -> NodeClaimInfo {
    NodeClaimInfo::from_value(&json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": name, "creationTimestamp": ago(60), "labels": {
            "karpenter.sh/nodepool": "gpu-mig", "node.kubernetes.io/instance-type": "p5.48xlarge"}},
        "status": {"nodeName": node, "conditions": [
            {"type": "Launched", "status": "True", "reason": "Launched", "message": "", "lastTransitionTime": ago(60)},
            {"type": "Registered", "status": "True", "reason": "Registered", "message": "", "lastTransitionTime": ago(58)},
            initialized]}
    }))
}

pub(super) fn initialized() -> Value {
    json!({"type": "Initialized", "status": "True", "reason": "Initialized", "message": "", "lastTransitionTime": ago(55)})
}

pub(super) fn not_registered(resource: &str, minutes: i64) -> Value {
    json!({"type": "Initialized", "status": "Unknown", "reason": "ResourceNotRegistered",
           "message": format!("Resource \"{resource}\" was requested but not registered"),
           "lastTransitionTime": ago(minutes)})
}

pub(super) fn shipped_overlays() -> Vec<OverlayInfo> {
    let text = std::fs::read_to_string(repo("manifests/karpenter/nodeoverlays.yaml")).unwrap();
    gpu_slicer_core::yaml::documents(&text)
        .unwrap()
        .iter()
        .map(OverlayInfo::from_value)
        .collect()
}

pub(super) fn shipped_webhook_config()
-> k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration {
    let v: Value = serde_norway::from_str(SHIPPED_WEBHOOK).unwrap();
    serde_json::from_value(v).unwrap()
}

/// A healthy cluster: the shipped NodePools, overlays, GPU Operator configs, webhook and policy,
/// one initialized MIG node, a running sliced pod and a pending one the node can take.
pub(super) fn healthy() -> ClusterSnapshot {
    let pools = crate::input::nodepools(&repo("manifests/karpenter")).unwrap();
    ClusterSnapshot {
        nodes: vec![node(mig_node("ip-10-0-1-5.ec2.internal"))],
        pods: vec![
            pod(gpu_pod(
                "ml-inference",
                "llm-7d9c8b6f5-abcde",
                "Running",
                json!({"nvidia.com/mig-1g.10gb": "1"}),
                routed(),
            )),
            pod(gpu_pod(
                "ml-inference",
                "llm-7d9c8b6f5-fghij",
                "Pending",
                json!({"nvidia.com/mig-1g.10gb": "1"}),
                routed(),
            )),
        ],
        namespaces: [("ml-inference", json!({})), ("sandbox", json!({}))]
            .into_iter()
            .map(|(n, _)| {
                (
                    n.to_string(),
                    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), n.to_string())]),
                )
            })
            .collect(),
        node_pools: Read::Found(pools.iter().cloned().collect()),
        node_claims: Read::Found(vec![claim(
            "gpu-mig-x7k2p",
            "ip-10-0-1-5.ec2.internal",
            initialized(),
        )]),
        node_overlays: Read::Found(shipped_overlays()),
        webhooks: Read::Found(vec![shipped_webhook_config()]),
        policy: Ok(LoadedPolicy {
            policy: crate::policy_source::example(),
            source: "ConfigMap gpu-slicer/gpu-slicer-policy (key policy.yaml)".into(),
            object: "ConfigMap/gpu-slicer/gpu-slicer-policy".into(),
        }),
        gpu_operator: Read::Found(GpuOperator {
            cluster_policy: "cluster-policy".into(),
            configs: crate::input::gpu_operator_configs(&repo("manifests/gpu-operator")).unwrap(),
            device_plugin_known: true,
        }),
        device_classes: Read::Found(vec!["gpu.nvidia.com".into(), "mig.nvidia.com".into()]),
        resource_slices: Read::Found(Vec::new()),
        claim_templates: Read::Found(Vec::new()),
    }
}

pub(super) fn problems(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
        .collect()
}

pub(super) fn only<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    let p = problems(findings);
    assert_eq!(p.len(), 1, "{findings:#?}");
    assert_eq!(p[0].check, check);
    p[0]
}
