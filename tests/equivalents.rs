//! GPU-equivalents: one test per row of the unit's table in docs/proving-savings.md ("The unit"),
//! through the engine (what the pod holds after the rewrite, and the annotations it gets) and, for pods
//! stored before gpu-slicer ran, from their resources.

mod common;

use common::*;
use gpu_slicer_core::engine::{self, Namespace};
use gpu_slicer_core::equivalents::{self, Units};
use gpu_slicer_core::gpus::Gpus;
use gpu_slicer_core::nodepool::{NodePool, NodePoolIndex};
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};

const POLICY: &str = r#"
apiVersion: gpu-slicer.io/v1alpha1
kind: SlicingPolicy
spec:
  rules:
  - {name: whole, namespaces: [whole], action: exclusive, nodePool: p5}
  - name: h100-mig
    namespaces: [h100-mig]
    action: mig
    mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 3g.40gb]}
    nodePool: p5
  - name: a30-mig
    namespaces: [a30-mig]
    action: mig
    mig: {profile: 1g.6gb, allowedProfiles: [1g.6gb, 2g.12gb]}
  - name: ts
    namespaces: [ts]
    action: timeslice
    shared: {resourceName: nvidia.com/gpu.shared, replicas: 4}
    nodePool: g6
  - name: ts-unsaid
    namespaces: [ts-unsaid]
    action: timeslice
    shared: {resourceName: nvidia.com/gpu.unsaid}
  - name: mps
    namespaces: [mps]
    action: mps
    shared: {resourceName: nvidia.com/gpu.mps, replicas: 2}
  - name: mig-ts
    namespaces: [mig-ts]
    action: mig
    mig: {profile: 1g.10gb, timeSlicing: {renameByDefault: true, replicas: 2}}
    nodePool: p5
  - name: single
    namespaces: [single]
    action: mig
    mig: {profile: 1g.5gb, strategy: single}
  - {name: dra-whole, namespaces: [dra-whole], action: exclusive, backend: dra, nodePool: p5, maxPerContainer: 2}
  - name: dra-mig
    namespaces: [dra-mig]
    action: mig
    backend: dra
    mig: {profile: 1g.10gb}
    nodePool: p5
  - name: dra-shares
    namespaces: [dra-shares]
    action: timeslice
    backend: dra
    dra: {consumableShares: "4"}
    nodePool: p5
  - name: dra-memory
    namespaces: [dra-memory]
    action: timeslice
    backend: dra
    dra: {consumableShares: memory, memory: 8Gi}
    nodePool: p5
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "equivalents.yaml").unwrap()
}

fn pools() -> NodePoolIndex {
    let pool = |name: &str, types: &[&str]| {
        NodePool::from_object(&json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": name},
            "spec": {"template": {"spec": {"requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": types}]}}}
        }))
        .unwrap()
    };
    NodePoolIndex::new([pool("p5", &["p5.48xlarge"]), pool("g6", &["g6.xlarge"])])
}

/// The engine's decision on `pod` in `ns`: what the pod holds after the rewrite, the annotations of
/// the patched pod, and that the patched pod counted from its resources holds the same.
fn held(pod: &Value, ns: &str) -> (String, u64) {
    let (policy, pools) = (policy(), pools());
    let (d, out) = run(pod, ns, &labels(&[]), &policy, &pools);
    assert!(d.allowed(), "{ns}: {:?}", d.denied);
    let usage = d.usage.expect("a GPU pod under a rule has a usage");
    let ann = &out["metadata"]["annotations"];
    assert_eq!(
        ann["gpu-slicer.io/gpu-equivalents"],
        json!(usage.held.to_string())
    );
    assert_eq!(
        ann["gpu-slicer.io/requested-gpus"],
        json!(usage.requested.to_string())
    );
    // Stored, then watched: counted from its resources, the same.
    let stored: Pod = serde_json::from_value(out.clone()).unwrap();
    let units = Units {
        rule: policy.rule_for(ns, &labels(&[])),
        policy: &policy,
        pools: &pools,
    };
    assert_eq!(equivalents::of_pod(&stored, &units), usage, "{ns}");
    // Reinvoked on its own output: nothing to add.
    let (again, _) = run(&out, ns, &labels(&[]), &policy, &pools);
    assert!(again.patch.is_empty(), "{ns}: {:?}", ops(&again));
    (usage.held.to_string(), usage.requested)
}

fn gpus(n: &str) -> Value {
    pod(vec![container("main", &[("nvidia.com/gpu", n)], false)])
}

fn asks(resource: &str) -> Value {
    pod(vec![container("main", &[(resource, "1")], false)])
}

#[test]
fn row_whole_gpu_is_one() {
    assert_eq!(held(&gpus("1"), "whole"), ("1".into(), 1));
    assert_eq!(held(&gpus("4"), "whole"), ("4".into(), 4));
}

#[test]
fn row_mig_slice_on_h100_is_its_compute_over_seven() {
    assert_eq!(held(&gpus("1"), "h100-mig"), ("0.142857".into(), 1));
    assert_eq!(
        held(&asks("nvidia.com/mig-3g.40gb"), "h100-mig"),
        ("0.428571".into(), 1)
    );
}

#[test]
fn row_mig_slice_on_a30_is_its_compute_over_four() {
    assert_eq!(held(&gpus("1"), "a30-mig"), ("0.25".into(), 1));
    assert_eq!(
        held(&asks("nvidia.com/mig-2g.12gb"), "a30-mig"),
        ("0.5".into(), 1)
    );
}

#[test]
fn row_time_sliced_replica_is_one_over_replicas() {
    assert_eq!(held(&gpus("1"), "ts"), ("0.25".into(), 1));
}

#[test]
fn row_shared_replica_without_replicas_counts_whole() {
    assert_eq!(held(&gpus("1"), "ts-unsaid"), ("1".into(), 1));
}

#[test]
fn row_mps_replica_is_one_over_replicas() {
    assert_eq!(held(&gpus("1"), "mps"), ("0.5".into(), 1));
}

#[test]
fn row_time_sliced_mig_is_the_slice_over_replicas() {
    assert_eq!(held(&gpus("1"), "mig-ts"), ("0.071429".into(), 1));
}

#[test]
fn row_single_strategy_gpu_is_the_rules_slice() {
    assert_eq!(held(&gpus("1"), "single"), ("0.142857".into(), 1));
}

#[test]
fn row_dra_whole_gpu_claims_count_their_devices() {
    assert_eq!(held(&gpus("1"), "dra-whole"), ("1".into(), 1));
    assert_eq!(held(&gpus("2"), "dra-whole"), ("2".into(), 2));
}

#[test]
fn row_dra_mig_claim_is_the_profiles_fraction() {
    assert_eq!(held(&gpus("1"), "dra-mig"), ("0.142857".into(), 1));
}

#[test]
fn row_dra_consumable_share_is_one_over_shares() {
    assert_eq!(held(&gpus("1"), "dra-shares"), ("0.25".into(), 1));
}

#[test]
fn row_dra_memory_share_is_its_fraction_of_the_device() {
    // 8 GiB of an H100's 80 GiB.
    assert_eq!(held(&gpus("1"), "dra-memory"), ("0.1".into(), 1));
}

#[test]
fn row_init_container_larger_than_the_app_containers_sets_the_pod() {
    let mut p = gpus("1");
    p["spec"]["initContainers"] = json!([container("warm", &[("nvidia.com/gpu", "2")], false)]);
    assert_eq!(held(&p, "whole"), ("2".into(), 2));
    // Two app containers add up, and beat a one-GPU init container.
    let mut p = pod(vec![
        container("a", &[("nvidia.com/gpu", "1")], false),
        container("b", &[("nvidia.com/gpu", "1")], false),
    ]);
    p["spec"]["initContainers"] = json!([container("warm", &[("nvidia.com/gpu", "1")], false)]);
    assert_eq!(held(&p, "whole"), ("2".into(), 2));
}

#[test]
fn row_sidecar_adds_to_the_app_containers() {
    let mut sidecar = container("proxy", &[("nvidia.com/gpu", "1")], false);
    sidecar["restartPolicy"] = json!("Always");
    let mut p = gpus("1");
    p["spec"]["initContainers"] = json!([sidecar]);
    assert_eq!(held(&p, "whole"), ("2".into(), 2));
}

#[test]
fn row_pod_admitted_before_gpu_slicer_is_counted_from_its_resources() {
    let (policy, pools) = (policy(), pools());
    let units = |ns: &str| Units {
        rule: policy.rule_for(ns, &labels(&[])),
        policy: &policy,
        pools: &pools,
    };
    let of = |p: &Value, ns: &str| {
        let pod: Pod = serde_json::from_value(p.clone()).unwrap();
        equivalents::of_pod(&pod, &units(ns))
    };
    // No annotations at all: the resources say it.
    let u = of(&asks("nvidia.com/mig-1g.10gb"), "h100-mig");
    assert_eq!((u.held.to_string(), u.requested), ("0.142857".into(), 1));
    let u = of(&asks("nvidia.com/gpu.shared"), "ts");
    assert_eq!(u.held, Gpus::ratio(1, 4));
    // A claim from a template no rule in force offers still counts its devices.
    let mut p = pod(vec![container("main", &[], false)]);
    p["spec"]["resourceClaims"] =
        json!([{"name": "g", "resourceClaimTemplateName": "gpu-slicer-gpu-x2"}]);
    assert_eq!(of(&p, "whole").held, Gpus::whole(2));
    // No GPUs: nothing.
    assert!(!of(&pod(vec![container("cpu", &[], false)]), "whole").is_gpu());
}

#[test]
fn pods_left_alone_get_no_annotation() {
    let p = gpus("1");
    let pod: Pod = serde_json::from_value(p).unwrap();
    let policy = policy();
    let d = engine::decide(
        &pod,
        Namespace {
            name: "nobody",
            labels: &labels(&[]),
        },
        &policy,
        &pools(),
    );
    assert!(d.patch.is_empty() && d.usage.is_none());
}
