//! Every action x consumable-shares mode cell of the DRA backend (docs/dra-backend.md, "Action x
//! mode"), held against ResourceSlices shaped as the NVIDIA DRA driver publishes them in that mode and
//! the scheduler's allocation rules (KEP-5075), modelled in `common::dra_allocator`: which devices a
//! template's claim can get, what it consumes, whether another claim can still get the device, and
//! `firstAvailable` order. Then each policy error of the table.

mod common;

use common::dra_allocator::*;
use common::*;
use gpu_slicer_core::dra::{self, Template};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::dra_sharing::ConsumableShares::{self, *};
use gpu_slicer_core::policy::{Policy, Rule};
use serde_json::{Value, json};

const MODES: [ConsumableShares; 4] = [Disabled, Shares(4), Memory, Unlimited];

fn policy(mode: ConsumableShares, rule: &str) -> Result<Policy, String> {
    let text = format!(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  dra: {{consumableShares: \"{mode}\"}}\n  rules:\n  - {rule}\n"
    );
    Policy::parse(&text, "p.yaml").map_err(|e| e.to_string())
}

fn rule(mode: ConsumableShares, rule_yaml: &str) -> Rule {
    policy(mode, rule_yaml)
        .unwrap_or_else(|e| panic!("{mode}: {e}"))
        .rules
        .remove(0)
}

const EXCLUSIVE: &str =
    "{name: r, namespaces: [ns], action: exclusive, backend: dra, maxPerContainer: 2, nodePool: p}";
const MIG: &str = "{name: r, namespaces: [ns], action: mig, backend: dra, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb, 3g.40gb]}, nodePool: p}";

/// The template a time-sliced pod gets under a `timeslice` DRA rule in `mode`.
fn timeslice_template(mode: ConsumableShares) -> Value {
    let r = rule(
        mode,
        "{name: r, action: timeslice, backend: dra, nodePool: p}",
    );
    object(&dra::template_for(&r, None, 1, None).unwrap())
}

fn object(t: &Template) -> Value {
    t.object("ns", "r")
}

/// A claim that says nothing but its class: what a hand-written claim, or the claim the scheduler
/// makes for a pod asking `nvidia.com/gpu` through a DeviceClass' extendedResourceName, looks like.
fn plain(class: &str) -> Value {
    json!({"spec": {"spec": {"devices": {"requests": [
        {"name": "gpu", "exactly": {"deviceClassName": class, "allocationMode": "ExactCount", "count": 1}}
    ]}}}})
}

#[test]
fn exclusive_claims_hold_whole_gpus_alone_in_every_mode_that_serves_them() {
    for mode in [Disabled, Shares(4), Memory] {
        let r = rule(mode, EXCLUSIVE);
        let one = object(&dra::template_for(&r, None, 1, None).unwrap());
        let mut node = Allocator::new(two_gpus(mode));
        let got = node.allocate(&one).expect("a free GPU");
        assert_eq!(got[0].device, "gpu-0");
        // KEP-5075: another claim fits a multi-allocatable device only while every capacity's sum
        // stays within its value. The exclusive claim consumed all N shares (integer mode) or the
        // memory default, the whole memory (memory mode): nothing is left for a plain claim (default
        // 1 share / whole memory), nor for another exclusive one.
        assert!(
            node.allocate(&plain("gpu.nvidia.com")).is_some(),
            "{mode}: gpu-1 is free"
        );
        assert_eq!(node.holders("gpu-0"), 1, "{mode}: gpu-0 shared");
        assert!(node.allocate(&one).is_none(), "{mode}: both GPUs are held");
        // A two-GPU claim takes two devices, each alone.
        let two = object(&dra::template_for(&r, None, 2, None).unwrap());
        let mut node = Allocator::new(two_gpus(mode));
        assert_eq!(node.allocate(&two).unwrap().len(), 2);
        assert!(node.allocate(&plain("gpu.nvidia.com")).is_none(), "{mode}");
    }
}

#[test]
fn an_exclusive_claim_never_lands_on_a_gpu_that_time_sliced_claims_use() {
    // The issue's reproduction: integer mode, 4 shares, three notebooks on gpu-0. A claim that
    // requests no capacity consumes requestPolicy.default (1 share) and would fit; gpu-slicer's
    // exclusive claim asks for all 4 shares, so it goes to gpu-1 and then finds nothing.
    let mode = Shares(4);
    let shared = timeslice_template(mode);
    let exclusive = object(&dra::template_for(&rule(mode, EXCLUSIVE), None, 1, None).unwrap());
    let mut node = Allocator::new(vec![apply_mode(full_gpu("gpu-0", 81559), mode)]);
    for _ in 0..3 {
        let got = node.allocate(&shared).unwrap();
        assert_eq!(got[0].consumed["shares"], 1);
    }
    let mut before = node.clone();
    assert!(
        before.allocate(&plain("gpu.nvidia.com")).is_some(),
        "a plain claim does take the 4th share: the hazard is real"
    );
    assert!(
        node.allocate(&exclusive).is_none(),
        "exclusive waits for a free GPU"
    );
    // And with the GPU free it takes all four shares, leaving none.
    let mut node = Allocator::new(vec![apply_mode(full_gpu("gpu-0", 81559), mode)]);
    assert_eq!(node.allocate(&exclusive).unwrap()[0].consumed["shares"], 4);
    assert!(node.allocate(&shared).is_none());
}

#[test]
fn exclusive_claims_wait_rather_than_share_when_the_driver_is_not_in_the_policys_mode() {
    // Policy says disabled, driver shares: `!device.allowMultipleAllocations` matches no device.
    let t = object(&dra::template_for(&rule(Disabled, EXCLUSIVE), None, 1, None).unwrap());
    assert!(Allocator::new(two_gpus(Shares(4))).allocate(&t).is_none());
    assert!(Allocator::new(two_gpus(Memory)).allocate(&t).is_none());
    // Policy says 4 shares, the driver publishes 8: the CEL guard wants exactly 4.
    let t = object(&dra::template_for(&rule(Shares(4), EXCLUSIVE), None, 1, None).unwrap());
    assert!(Allocator::new(two_gpus(Shares(8))).allocate(&t).is_none());
    assert!(Allocator::new(two_gpus(Disabled)).allocate(&t).is_none());
}

fn mig_node(mode: ConsumableShares, bare: bool) -> Vec<Device> {
    // An H100 in all-balanced-like layout: two 1g.10gb, one 2g.20gb, one 3g.40gb.
    let slices = [
        ("gpu-0-mig-1g.10gb-0", "1g.10gb", 9984, 16),
        ("gpu-0-mig-1g.10gb-1", "1g.10gb", 9984, 16),
        ("gpu-0-mig-2g.20gb-0", "2g.20gb", 19968, 32),
        ("gpu-0-mig-3g.40gb-0", "3g.40gb", 40192, 60),
    ];
    slices
        .iter()
        .map(|(n, p, m, sm)| {
            let d = if bare {
                bare_mig_slice(n, p, *m)
            } else {
                mig_slice(n, p, *m, *sm)
            };
            apply_mode(d, mode)
        })
        .collect()
}

#[test]
fn mig_claims_hold_their_slice_alone_even_where_it_publishes_only_memory_and_shares() {
    for mode in [Disabled, Shares(4), Memory] {
        for bare in [false, true] {
            let r = rule(mode, MIG);
            let t = object(&dra::template_for(&r, Some("1g.10gb"), 1, None).unwrap());
            let mut node = Allocator::new(mig_node(mode, bare));
            let a = node.allocate(&t).unwrap();
            let b = node.allocate(&t).unwrap();
            assert_ne!(
                a[0].device, b[0].device,
                "{mode} bare={bare}: two claims, one slice"
            );
            assert!(
                node.allocate(&t).is_none(),
                "{mode} bare={bare}: 1g.10gb slices are held"
            );
            // Nor does a plain MIG claim get a held slice: only the 2g and 3g are left.
            let got = node.allocate(&plain("mig.nvidia.com")).unwrap();
            assert!(!got[0].device.contains("1g.10gb"), "{mode} bare={bare}");
        }
    }
    // What the issue saw: with only memory and shares published, two plain claims share a slice.
    let mut node = Allocator::new(mig_node(Shares(4), true).into_iter().take(1).collect());
    assert!(node.allocate(&plain("mig.nvidia.com")).is_some());
    assert!(node.allocate(&plain("mig.nvidia.com")).is_some());
    assert_eq!(node.holders("gpu-0-mig-1g.10gb-0"), 2);
}

#[test]
fn mig_fallbacks_are_taken_in_order_and_each_alone() {
    let r = rule(
        Shares(4),
        "{name: r, action: mig, backend: dra, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb, 3g.40gb], fallback: [2g.20gb, 3g.40gb]}, nodePool: p}",
    );
    let t = dra::template_for(&r, Some("1g.10gb"), 1, None).unwrap();
    assert_eq!(t.name, "gpu-slicer-mig-1g.10gb");
    assert_eq!(t.describe(), "mig 1g.10gb, else 2g.20gb, else 3g.40gb");
    let obj = object(&t);
    let mut node = Allocator::new(mig_node(Shares(4), false));
    let order: Vec<String> = std::iter::from_fn(|| node.allocate(&obj))
        .map(|a| a[0].subrequest.clone().unwrap())
        .collect();
    // KEP-4816: the first satisfiable subrequest wins, so both 1g.10gb first, then the larger ones.
    assert_eq!(
        order,
        ["mig-1g-10gb", "mig-1g-10gb", "mig-2g-20gb", "mig-3g-40gb"]
    );
    // A 2g.20gb pod's template falls back to 3g.40gb only (fallbacks larger than what it asked).
    let t = dra::template_for(&r, Some("2g.20gb"), 1, None).unwrap();
    assert_eq!(t.describe(), "mig 2g.20gb, else 3g.40gb");
    let t = dra::template_for(&r, Some("3g.40gb"), 1, None).unwrap();
    assert!(object(&t)["spec"]["spec"]["devices"]["requests"][0]["exactly"].is_object());
    common::validate::roundtrip::<k8s_openapi::api::resource::v1::ResourceClaimTemplate>(&obj)
        .unwrap();
}

#[test]
fn time_slicing_is_bounded_as_the_mode_says() {
    // Integer mode: one share per claim, N claims per GPU.
    let ts = "{name: r, action: timeslice, backend: dra, nodePool: p}";
    let t = object(&dra::template_for(&rule(Shares(4), ts), None, 1, None).unwrap());
    let mut node = Allocator::new(two_gpus(Shares(4)));
    let placed: Vec<String> = (0..9)
        .filter_map(|_| node.allocate(&t))
        .map(|a| a[0].device.clone())
        .collect();
    assert_eq!(placed.len(), 8, "4 shares x 2 GPUs");
    assert_eq!(node.holders("gpu-0"), 4);

    // Memory mode: the pod's gpu-memory wins over dra.memory, rounded up to a template size.
    let r = rule(
        Memory,
        "{name: r, action: timeslice, backend: dra, dra: {memory: 8Gi}, nodePool: p}",
    );
    let default = dra::template_for(&r, None, 1, None).unwrap();
    assert_eq!(default.name, "gpu-slicer-gpu-shared-8gi");
    let sized = dra::template_for(&r, None, 1, Some("18Gi")).unwrap();
    assert_eq!(sized.name, "gpu-slicer-gpu-shared-20gi");
    assert!(
        dra::templates(&r).contains(&sized),
        "the controller keeps it"
    );
    let mut node = Allocator::new(two_gpus(Memory));
    let t20 = object(&sized);
    let on_gpu0 = (0..4)
        .filter_map(|_| node.allocate(&t20))
        .filter(|a| a[0].device == "gpu-0")
        .count();
    // 81559Mi holds three 20Gi claims; the fourth goes to gpu-1.
    assert_eq!(on_gpu0, 3);
    assert_eq!(node.holders("gpu-1"), 1);
    assert!(
        dra::template_for(&r, None, 1, Some("200Gi"))
            .unwrap_err()
            .contains("more than the largest")
    );

    // Unlimited: claims consume the memory default, 0; nothing bounds them (documented, warned).
    let r = rule(Unlimited, ts);
    let t = dra::template_for(&r, None, 1, None).unwrap();
    assert!(t.describe().contains("unbounded"));
    let mut node = Allocator::new(two_gpus(Unlimited));
    let obj = object(&t);
    assert!((0..100).all(|_| node.allocate(&obj).is_some()));
    assert_eq!(node.holders("gpu-0"), 100);
    // ... but never on a GPU an exclusive-mode driver serves alone.
    assert!(Allocator::new(two_gpus(Disabled)).allocate(&obj).is_none());
}

#[test]
fn with_the_consumable_capacity_gate_off_every_claim_holds_its_device_alone() {
    // The API server drops allowMultipleAllocations, request policies and capacity requests: each
    // device goes to one claim. Exclusive and MIG stay exclusive; a time-sliced claim holds a whole
    // GPU (no sharing, and no oversubscription either).
    let mode = Shares(4);
    let shared = timeslice_template(mode);
    let mut node = Allocator::gate_off(two_gpus(mode));
    assert!(node.allocate(&shared).is_some());
    assert!(node.allocate(&shared).is_some());
    assert!(node.allocate(&shared).is_none(), "one claim per GPU");
    let exclusive = object(&dra::template_for(&rule(Disabled, EXCLUSIVE), None, 1, None).unwrap());
    let mut node = Allocator::gate_off(two_gpus(Memory));
    assert!(node.allocate(&exclusive).is_some());
    assert!(node.allocate(&plain("gpu.nvidia.com")).is_some());
    assert!(node.allocate(&plain("gpu.nvidia.com")).is_none());
}

#[test]
fn pods_in_a_memory_mode_namespace_get_the_claim_their_gpu_memory_asks_for() {
    let policy = policy(
        Memory,
        "{name: r, namespaces: [ns], action: timeslice, backend: dra, dra: {memory: 8Gi}, nodePool: p}",
    )
    .unwrap();
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": "10Gi"});
    let (d, out) = run(&p, "ns", &labels(&[]), &policy, &NodePoolIndex::default());
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(
        out["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
        "gpu-slicer-gpu-shared-12gi"
    );
    assert!(
        !d.warnings.iter().any(|w| w.contains("ignored")),
        "{:?}",
        d.warnings
    );
    p["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": "lots"});
    let (d, _) = run(&p, "ns", &labels(&[]), &policy, &NodePoolIndex::default());
    assert!(d.denied.unwrap().contains("is not a Kubernetes quantity"));
}

#[test]
fn cells_a_mode_cannot_serve_and_misused_fields_are_policy_errors() {
    let cases: &[(ConsumableShares, &str, &str)] = &[
        (
            Unlimited,
            EXCLUSIVE,
            "exclusive claims cannot hold a device alone under consumableShares unlimited",
        ),
        (Unlimited, MIG, "mig claims cannot hold a device alone"),
        (
            Disabled,
            "{name: r, action: timeslice, backend: dra}",
            "timeslice needs the driver's ConsumableShares",
        ),
        (
            Memory,
            "{name: r, action: timeslice, backend: dra}",
            "spec.rules[0].dra.memory: is needed under consumableShares memory",
        ),
        (
            Memory,
            "{name: r, action: exclusive, backend: dra, dra: {memory: 8Gi}}",
            "only applies to timeslice rules",
        ),
        (
            Shares(4),
            "{name: r, action: timeslice, backend: dra, dra: {memory: 8Gi}}",
            "only applies under consumableShares memory",
        ),
        (
            Memory,
            "{name: r, action: timeslice, backend: dra, dra: {memory: lots}}",
            "not a positive Kubernetes quantity",
        ),
        (
            Disabled,
            "{name: r, action: exclusive, dra: {consumableShares: \"4\"}}",
            "spec.rules[0].dra: only applies to backend dra",
        ),
        (
            Disabled,
            "{name: r, action: deny, dra: {consumableShares: \"4\"}}",
            "spec.rules[0].dra: has no effect with action deny",
        ),
        (
            Disabled,
            "{name: r, action: mig, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb], fallback: [2g.20gb]}}",
            "mig.fallback: needs backend dra",
        ),
        (
            Disabled,
            "{name: r, action: mig, backend: dra, mig: {profile: 1g.10gb, fallback: [2g.20gb]}}",
            "mig.fallback[0]: \"2g.20gb\" must be one of mig.allowedProfiles",
        ),
        (
            Disabled,
            "{name: r, action: mig, backend: dra, mig: {profile: 2g.20gb, allowedProfiles: [1g.10gb, 2g.20gb], fallback: [1g.10gb]}}",
            "must be larger than mig.profile",
        ),
        (
            Disabled,
            "{name: r, action: mig, backend: dra, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb], fallback: [2g.20gb, 2g.20gb]}}",
            "listed twice",
        ),
    ];
    for (mode, yaml, want) in cases {
        let e = policy(*mode, yaml).expect_err(yaml);
        assert!(e.contains(want), "{yaml}: {e}");
    }
    // A rule's mode overrides the policy's.
    assert!(
        policy(
            Unlimited,
            "{name: r, action: exclusive, backend: dra, dra: {consumableShares: \"4\"}}"
        )
        .is_ok()
    );
    let e = Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  dra: {consumableShares: \"0\"}\n",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a consumableShares mode"), "{e}");
    // Integers written bare in YAML are read as the driver reads them.
    assert!(Policy::parse("apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  dra: {consumableShares: 4}\n", "p.yaml").is_ok());
}

#[test]
fn every_served_cells_templates_are_valid_kubernetes_objects() {
    for mode in MODES {
        for yaml in [
            EXCLUSIVE,
            MIG,
            "{name: r, action: timeslice, backend: dra, dra: {memory: 4Gi}}",
        ] {
            let yaml = if mode == Memory {
                yaml.to_string()
            } else {
                yaml.replace(", dra: {memory: 4Gi}", "")
            };
            let Ok(p) = policy(mode, &yaml) else { continue };
            for t in dra::templates(&p.rules[0]) {
                let dropped = common::validate::roundtrip::<
                    k8s_openapi::api::resource::v1::ResourceClaimTemplate,
                >(&object(&t))
                .unwrap();
                assert!(dropped.is_empty(), "{mode} {}: {dropped:?}", t.name);
            }
        }
    }
}
