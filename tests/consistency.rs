//! `policy check` and `karpenter overlays` on the shipped manifests, and on copies with one link broken.

mod common;

use std::path::Path;

use common::*;
use gpu_slicer_core::check;
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::karpenter;
use gpu_slicer_core::nodepool::{NodePool, NodePoolIndex};
use gpu_slicer_core::policy::Policy;
use serde_json::json;

fn shipped_ops() -> GpuOperatorConfigs {
    gpu_slicer::input::gpu_operator_configs(&repo("manifests/gpu-operator")).unwrap()
}

fn errors(policy: &Policy, pools: &NodePoolIndex, ops: &GpuOperatorConfigs) -> Vec<String> {
    check::check(policy, "policy.yaml", Some(pools), Some(ops)).errors
}

/// The example policy with one rule's YAML edited.
fn edited_policy(from: &str, to: &str) -> Policy {
    let text = std::fs::read_to_string(repo("manifests/policy/policy.yaml")).unwrap();
    assert!(text.contains(from), "{from}");
    Policy::parse(&text.replacen(from, to, 1), "policy.yaml").unwrap()
}

fn ops_with_device_plugin(edit: impl Fn(&str) -> String) -> GpuOperatorConfigs {
    let dir = tempfile::tempdir().unwrap();
    for f in ["mig-parted-config.yaml", "device-plugin-config.yaml"] {
        let text = std::fs::read_to_string(repo(&format!("manifests/gpu-operator/{f}"))).unwrap();
        let text = if f.starts_with("device") {
            edit(&text)
        } else {
            text
        };
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    gpu_slicer::input::gpu_operator_configs(dir.path()).unwrap()
}

#[test]
fn the_shipped_policy_nodepools_and_gpu_operator_configs_agree() {
    let report = check::check(
        &example_policy(),
        "policy.yaml",
        Some(&shipped_pools()),
        Some(&shipped_ops()),
    );
    assert_eq!(report.errors, Vec::<String>::new());
    assert!(report.notes.is_empty());
    let ops = shipped_ops();
    assert!(
        !ops.mig_is_default,
        "the custom mig-parted config is recognised by content"
    );
    assert_eq!(
        ops.device_plugin.keys().collect::<Vec<_>>(),
        vec!["default", "mig-1g.10gb-x2", "mps-4", "timeslice-4"]
    );
}

#[test]
fn a_profile_the_mig_config_does_not_make_is_named() {
    let policy = edited_policy(
        "allowedProfiles: [1g.10gb, 2g.20gb, 3g.40gb]",
        "allowedProfiles: [1g.10gb, 1g.20gb]",
    );
    let errs = errors(&policy, &shipped_pools(), &shipped_ops());
    assert!(
        errs.contains(&format!(
            "policy.yaml: spec.rules[0] (inference-mig): NodePool gpu-mig ({}): profile 1g.20gb is not in MIG config all-balanced, which makes 1g.10gb x2, 2g.20gb x1, 3g.40gb x1 per H100-80GB GPU (p5.48xlarge)",
            repo("manifests/karpenter/nodepool-gpu-mig.yaml").display()
        )),
        "{errs:#?}"
    );
    let policy = edited_policy(
        "allowedProfiles: [1g.10gb, 2g.20gb, 3g.40gb]",
        "allowedProfiles: [1g.10gb, 1g.5gb]",
    );
    let errs = errors(&policy, &shipped_pools(), &shipped_ops());
    assert!(errs.iter().any(|e| e.ends_with("MIG profile 1g.5gb does not exist on A100-80GB (p4de.24xlarge), which has 1g.10gb, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb")), "{errs:#?}");
}

#[test]
fn a_missing_nodepool_is_named() {
    let policy = edited_policy("nodePool: gpu-mps", "nodePool: gpu-mps-typo");
    let errs = errors(&policy, &shipped_pools(), &shipped_ops());
    assert_eq!(errs, vec!["policy.yaml: spec.rules[4] (batch-mps): nodePool \"gpu-mps-typo\" is not a NodePool in the NodePools given".to_string()]);
    let overlay_errs = karpenter::overlays(&policy, &shipped_pools(), &shipped_ops()).unwrap_err();
    assert_eq!(
        overlay_errs,
        vec![
            "NodePool \"gpu-mps-typo\" (named by the policy) is not among the NodePools given"
                .to_string()
        ]
    );
}

#[test]
fn an_unrenamed_shared_resource_is_named_with_the_fix() {
    let ops = ops_with_device_plugin(|t| {
        t.replacen("renameByDefault: true", "renameByDefault: false", 1)
    });
    let errs = errors(&example_policy(), &shipped_pools(), &ops);
    assert!(
        errs.iter().any(|e| e.contains("(notebooks-timeslice)")
            && e.ends_with("device plugin config timeslice-4 advertises nvidia.com/gpu x4 on g6.xlarge, not nvidia.com/gpu.shared (renameByDefault is false: set renameByDefault: true, or shared.resourceName to the unrenamed name)")),
        "{errs:#?}"
    );
}

#[test]
fn mps_on_mig_is_refused() {
    let mut pools = shipped_pools();
    let mut mig = pools.get("gpu-mig").unwrap().clone();
    mig.template_labels
        .insert("nvidia.com/device-plugin.config".into(), "mps-4".into());
    pools.insert(mig);
    let errs = errors(&example_policy(), &pools, &shipped_ops());
    assert!(
        errs.iter().any(|e| e.ends_with("MPS is not combined with MIG: nvidia.com/mig.config=all-balanced partitions p5.48xlarge while nvidia.com/device-plugin.config=mps-4 shares with MPS (the device plugin refuses MPS on MIG devices)")),
        "{errs:#?}"
    );
    // and an mps rule routed to a MIG pool
    let policy = edited_policy("nodePool: gpu-mps", "nodePool: gpu-mig");
    let mut pools = shipped_pools();
    let mut mig = pools.get("gpu-mig").unwrap().clone();
    mig.template_labels
        .insert("nvidia.com/device-plugin.config".into(), "mps-4".into());
    pools.insert(mig);
    assert!(
        errors(&policy, &pools, &shipped_ops())
            .iter()
            .any(|e| e.contains("(batch-mps)") && e.contains("MPS is not combined with MIG"))
    );
}

#[test]
fn other_broken_links_are_named() {
    let ops = shipped_ops();
    // A MIG rule on a pool of GPUs without MIG.
    let policy = edited_policy(
        "nodePool: gpu-mig\n      allowOptOut: false",
        "nodePool: gpu-timeslice\n      allowOptOut: false",
    );
    let errs = errors(&policy, &shipped_pools(), &ops);
    assert!(
        errs.iter().any(|e| e.contains("(inference-mig)")
            && e.ends_with("instance type g6.xlarge carries L4, which has no MIG")),
        "{errs:#?}"
    );
    // A default config name that the custom mig-parted config does not carry.
    let mut pools = shipped_pools();
    let mut mig = pools.get("gpu-mig").unwrap().clone();
    mig.template_labels
        .insert("nvidia.com/mig.config".into(), "all-3g.40gb".into());
    pools.insert(mig);
    let errs = errors(&example_policy(), &pools, &ops);
    assert!(
        errs.iter().any(
            |e| e.contains("nvidia.com/mig.config=all-3g.40gb is not a config in")
                && e.contains("replaces the GPU Operator's defaults")
        ),
        "{errs:#?}"
    );
    // A selector on a label only GPU feature discovery sets.
    let policy = edited_policy(
        "nodePool: gpu-exclusive",
        "nodePool: gpu-exclusive\n      nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}",
    );
    let errs = errors(&policy, &shipped_pools(), &ops);
    assert!(
        errs.iter()
            .any(|e| e.contains("nodeSelector nvidia.com/gpu.product is not a template label")),
        "{errs:#?}"
    );
    // An exclusive rule on a MIG pool.
    let policy = edited_policy("nodePool: gpu-exclusive", "nodePool: gpu-mig");
    assert!(errors(&policy, &shipped_pools(), &ops).iter().any(|e| e.contains("(training-exclusive)") && e.contains("exclusive needs whole GPUs")));
    // A time-slicing rule on an MPS pool.
    let policy = edited_policy("nodePool: gpu-timeslice", "nodePool: gpu-mps");
    assert!(
        errors(&policy, &shipped_pools(), &ops)
            .iter()
            .any(|e| e.ends_with("rule action timeslice but device plugin config mps-4 uses MPS"))
    );
}

#[test]
fn overlays_carry_the_catalog_capacity() {
    // DESIGN.md's examples: p5.48xlarge with all-1g.10gb offers 56 slices; g6.12xlarge with 4 renamed
    // time-slice replicas offers 16 shared GPUs.
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/data/apiserver/nodepools-list.json")).unwrap(),
    )
    .unwrap();
    let captured = NodePool::from_value(&fixture["items"][0]).unwrap().unwrap();
    let mut shared = shipped_pools().get("gpu-timeslice").unwrap().clone();
    shared.requirements[0].values = vec!["g6.12xlarge".into()];
    let pools = NodePoolIndex::new([captured, shared]);
    let policy = Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: a, action: mig, mig: {profile: 1g.10gb}, nodePool: gpu-h100-mig}\n  - {name: b, action: timeslice, shared: {resourceName: nvidia.com/gpu.shared}, nodePool: gpu-timeslice}\n",
        "inline",
    )
    .unwrap();
    let overlays = karpenter::overlays(&policy, &pools, &shipped_ops_with_defaults()).unwrap();
    let caps: Vec<_> = overlays
        .iter()
        .map(|o| (o["metadata"]["name"].clone(), o["spec"]["capacity"].clone()))
        .collect();
    assert_eq!(
        caps,
        vec![
            (
                json!("gpu-slicer-gpu-h100-mig-p5.48xlarge"),
                json!({"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "56"})
            ),
            (
                json!("gpu-slicer-gpu-timeslice-g6.12xlarge"),
                json!({"nvidia.com/gpu": "0", "nvidia.com/gpu.shared": "16"})
            ),
        ]
    );
    assert_eq!(
        overlays[0]["spec"]["requirements"][0],
        json!({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["gpu-h100-mig"]})
    );
}

/// The shipped device plugin configs with the GPU Operator's default MIG configs (the captured
/// NodePool uses `all-1g.10gb`, a default config).
fn shipped_ops_with_defaults() -> GpuOperatorConfigs {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("manifests/gpu-operator/device-plugin-config.yaml"),
        dir.path().join("dp.yaml"),
    )
    .unwrap();
    let ops = gpu_slicer::input::gpu_operator_configs(Path::new(dir.path())).unwrap();
    assert!(ops.mig_is_default);
    ops
}

/// `shared.replicas` and `mig.timeSlicing.replicas` against the device plugin config of the rule's
/// NodePool: a mismatch is an error naming rule, NodePool and config; no replicas on a pool whose
/// config shares is a note that each replica counts whole.
#[test]
fn rule_replicas_are_checked_against_the_device_plugin_configs() {
    let (pools, ops) = (shipped_pools(), shipped_ops());
    const TIMESLICE: &str = "        replicas: 4               # as in device plugin config timeslice-4: a pod holds 1/4 GPU\n";
    const MPS: &str = "        replicas: 4               # as in device plugin config mps-4\n";
    const MIG: &str =
        "          replicas: 2             # its replicas: each pod holds 1/2 of a 1g.10gb slice\n";
    // (edit from, to; whether the one finding is an error (else a note); what it must say)
    let cases: [(&str, &str, bool, &[&str]); 5] = [
        (
            TIMESLICE,
            "        replicas: 8\n",
            true,
            &[
                "spec.rules[3] (notebooks-timeslice)",
                "NodePool gpu-timeslice",
                "shared.replicas is 8, but device plugin config timeslice-4",
                "time-slices nvidia.com/gpu with 4 replicas",
                "set shared.replicas to 4",
            ],
        ),
        (
            MPS,
            "        replicas: 2\n",
            true,
            &[
                "(batch-mps)",
                "device plugin config mps-4",
                "shares nvidia.com/gpu with 4 replicas",
            ],
        ),
        (
            MIG,
            "          replicas: 3\n",
            true,
            &[
                "(notebooks-on-slices)",
                "NodePool gpu-mig-ts",
                "mig.timeSlicing.replicas is 3, but device plugin config mig-1g.10gb-x2",
                "time-slices nvidia.com/mig-1g.10gb with 2 replicas",
            ],
        ),
        (
            TIMESLICE,
            "",
            false,
            &[
                "(notebooks-timeslice)",
                "but the rule does not set shared.replicas: GPU-equivalents count each replica as a whole GPU (set shared.replicas to 4 to count 1/4)",
            ],
        ),
        (
            MIG,
            "",
            false,
            &[
                "(notebooks-on-slices)",
                "each replica as a whole slice (set mig.timeSlicing.replicas to 2",
            ],
        ),
    ];
    for (from, to, error, parts) in cases {
        let report = check::check(
            &edited_policy(from, to),
            "policy.yaml",
            Some(&pools),
            Some(&ops),
        );
        let (found, other) = if error {
            (&report.errors, &report.notes)
        } else {
            (&report.notes, &report.errors)
        };
        assert!(found.len() == 1 && other.is_empty(), "{to:?}: {report:#?}");
        for part in parts {
            assert!(found[0].contains(part), "{part}: {}", found[0]);
        }
    }
}
