//! `policy check`'s DRA cross-checks, through the binary: the shipped DRA example passes with the
//! driver's values, DeviceClasses and pools; the guide's wrong examples (`tests/data/dra-wrong`) fail,
//! each finding naming the object to fix.

mod common;

use common::*;

const WRONG: &str = "tests/data/dra-wrong";

fn check(args: &[&str]) -> (i32, String) {
    let mut all = vec!["policy", "check"];
    all.extend_from_slice(args);
    let out = gpu_slicer_cli(&all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_shipped_dra_example_passes_every_cross_check() {
    let (code, text) = check(&[
        "manifests/examples/dra/policy.yaml",
        "--nodepools",
        "manifests/examples/dra",
        "--device-classes",
        "manifests/examples/dra",
        "--dra-values",
        "manifests/examples/dra/driver/values.yaml",
    ]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn the_guides_wrong_examples_fail_naming_what_to_fix() {
    let policy = format!("{WRONG}/policy.yaml");
    let pools = format!("{WRONG}/pools");
    let classes = format!("{WRONG}/classes");
    let values = format!("{WRONG}/values.yaml");
    let (code, text) = check(&[
        &policy,
        "--nodepools",
        &pools,
        "--device-classes",
        &classes,
        "--dra-values",
        &values,
    ]);
    assert_eq!(code, 1, "{text}");
    for want in [
        // An unrouted DRA rule.
        "spec.rules[0] (unrouted): a backend dra rule must route (nodePool or nodeSelector)",
        // A MIG rule on a pool Karpenter would have to launch nodes for.
        "spec.rules[1] (mig-dynamic): NodePool gpu-dra-dynamic (tests/data/dra-wrong/pools/pools.yaml) is dynamic",
        // The driver's node selection misses the DRA pool ...
        "NodePool gpu-dra-dynamic (tests/data/dra-wrong/pools/pools.yaml): the driver's kubeletPlugin.nodeSelector",
        // ... and selects a device-plugin pool.
        "NodePool gpu-plugin (tests/data/dra-wrong/pools/pools.yaml), the pool of device-plugin rule plugin-whole: the DRA driver's kubeletPlugin.nodeSelector",
        // Karpenter's view of the mode disagrees with the policy's.
        "EC2NodeClass gpu-dra (tests/data/dra-wrong/pools/pools.yaml) annotation karpenter.k8s.aws/nvidia-consumable-capacity is 8 but the rule's driver mode is 4",
        // The chart's class maps nvidia.com/gpu, which a device-plugin rule hands out.
        "DeviceClass gpu.nvidia.com (tests/data/dra-wrong/classes/deviceclasses.yaml): spec.extendedResourceName nvidia.com/gpu is also served by the device plugin for rule plugin-whole",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn driver_values_that_share_differently_or_run_everywhere_are_errors() {
    let policy = format!("{WRONG}/policy.yaml");
    let values = format!("{WRONG}/values-no-selector.yaml");
    let (code, text) = check(&[&policy, "--dra-values", &values]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("the policy says consumableShares 4 (spec.dra.consumableShares) but the driver's values tests/data/dra-wrong/values-no-selector.yaml say 8"),
        "{text}"
    );
    assert!(
        text.contains("values-no-selector.yaml: kubeletPlugin.nodeSelector is not set"),
        "{text}"
    );
}

#[test]
fn driver_values_are_read_as_the_driver_reads_them() {
    use gpu_slicer_core::check::dra_driver::DriverValues;
    use gpu_slicer_core::policy::dra_sharing::ConsumableShares;
    let read = |yaml: &str| {
        let doc: serde_json::Value = serde_norway::from_str(yaml).unwrap();
        DriverValues::from_value(&doc, "v.yaml".into())
    };
    // consumable_shares.go: without the feature gate the driver shares nothing.
    assert_eq!(
        read("consumableShares: 4").unwrap().shares,
        ConsumableShares::Disabled
    );
    assert_eq!(
        read("featureGates: {ConsumableShares: true}\nconsumableShares: memory")
            .unwrap()
            .shares,
        ConsumableShares::Memory
    );
    assert!(read("featureGates: {ConsumableShares: true}\nconsumableShares: lots").is_err());
}
