//! `gpu-slicer plan` on inventories with hand-computed answers, properties on generated inventories, the
//! emitted artifacts passing `policy check` together, and the HTML page in a real headless browser.

mod common;

use std::process::Command;

use gpu_slicer::planner::choose::{Binding, Layout};
use gpu_slicer::planner::inventory::{Inventory, Isolation};
use gpu_slicer::planner::{self, allocatable};
use gpu_slicer_core::catalog;
use gpu_slicer_core::check;
use proptest::prelude::*;

fn inventory(workloads: &str) -> Inventory {
    Inventory::parse(&format!("apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n  region: us-east-1\n  workloads:\n{workloads}"), "inline").unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn isolated_small_replicas_pack_into_one_mig_node() {
    // 56 replicas of 8Gi with memory isolation: one p4de.24xlarge at all-1g.10gb (8 GPUs x 7 slices of
    // 9728 MiB) for $27.447050/h, instead of seven p4de.24xlarge on whole GPUs ($192.13/h).
    let p = planner::assemble::plan(&inventory("  - {name: embedder, namespace: ml-inference, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge, gpusPerReplica: 1}}\n")).unwrap();
    assert_eq!(
        (p.workloads[0].instance_type, p.workloads[0].layout),
        ("p4de.24xlarge", Layout::Mig("1g.10gb"))
    );
    assert_eq!(p.after.nodes[0].count, 1);
    assert!(close(p.after.usd_per_hour, 27.44705));
    assert_eq!(p.before.nodes, 7);
    assert!(close(p.before.usd_per_hour, 192.12935));
}

#[test]
fn small_unisolated_replicas_are_time_sliced() {
    // 8 replicas of 4Gi, no isolation asked: a T4 (16384 MiB) holds floor(16384 / (4096 + 512)) = 3
    // replicas, so 3 x g4dn.xlarge = $1.578/h, cheaper than 2 x g6.xlarge at timeslice-4 ($1.6096/h) and
    // than 8 whole T4s ($4.208/h). Before: 8 x g6.xlarge = $6.4384/h.
    let p = planner::assemble::plan(&inventory("  - {name: notebooks, namespace: dev, replicas: 8, gpuMemory: 4Gi, isolation: none, current: {instanceType: g6.xlarge}}\n")).unwrap();
    assert_eq!(
        (p.workloads[0].instance_type, p.workloads[0].layout),
        ("g4dn.xlarge", Layout::Timeslice(3))
    );
    assert_eq!(p.workloads[0].replicas_per_gpu, Some(3));
    assert_eq!(p.after.nodes[0].count, 3);
    assert!(close(p.after.usd_per_hour, 1.578));
    assert!(close(p.before.usd_per_hour, 6.4384));
}

#[test]
fn whole_gpus_win_when_nothing_smaller_holds_the_model() {
    // One 70Gi replica: an H100 holds it whole, or as its 7g.80gb slice, on a p5.4xlarge for $6.88/h:
    // the same cost and node count, so the stronger isolation wins: a whole GPU.
    let p = planner::assemble::plan(&inventory("  - {name: llm, namespace: serving, replicas: 1, gpuMemory: 70Gi, isolation: memory, current: {instanceType: p5.48xlarge}}\n")).unwrap();
    assert_eq!(
        (p.workloads[0].instance_type, p.workloads[0].layout),
        ("p5.4xlarge", Layout::Whole(1))
    );
    assert_eq!(p.workloads[0].mode, "whole");
    assert!(close(p.after.usd_per_hour, 6.88));
    assert!(close(p.before.usd_per_hour, 55.04));
}

#[test]
fn replicas_are_planned_on_nodes_whose_vcpu_and_memory_hold_them() {
    // The case: 24 replicas of {3 vCPU, 10Gi, 3Gi GPU memory, no isolation}. By GPU memory alone
    // four share a T4, so 6 x g4dn.xlarge ($3.16/h), but a g4dn.xlarge offers 3420m after Karpenter's
    // kube-reserved (80m) and the 500m reserve: one replica. A g4dn.4xlarge offers 15390m (5 replicas)
    // and 57.5 GiB (5 replicas) for its 4 time-sliced slots: 6 x $1.204 = $7.224/h.
    let inv = inventory(
        "  - {name: workers, namespace: batch, replicas: 24, gpuMemory: 3Gi, cpu: 3, memory: 10Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n",
    );
    let p = planner::assemble::plan(&inv).unwrap();
    let w = &p.workloads[0];
    assert_eq!(
        (w.instance_type, w.layout),
        ("g4dn.4xlarge", Layout::Timeslice(4))
    );
    assert_eq!(w.replicas_per_node, 4);
    assert!(p.after.usd_per_hour <= 7.23, "{}", p.after.usd_per_hour);
    assert!(close(p.after.usd_per_hour, 6.0 * 1.204));
    // Never below the cheapest price per replica the instance sizes themselves allow (no overhead).
    let floor = catalog::INSTANCE_TYPES
        .iter()
        .filter_map(|t| {
            let per = (u64::from(t.vcpus) / 3).min(t.memory_mib / 10240);
            (per > 0).then_some(t.usd_per_hour? / per as f64)
        })
        .fold(f64::INFINITY, f64::min);
    assert!(
        p.after.usd_per_hour >= floor * 24.0 - 1e-9,
        "{} < {}",
        p.after.usd_per_hour,
        floor * 24.0
    );
    // Before: one replica per g4dn.xlarge, by vCPU.
    assert_eq!(p.before.nodes, 24);
    assert!(
        w.reason
            .contains("per node 4 slots by GPU memory, 5 by vCPU, 5 by memory: 4"),
        "{}",
        w.reason
    );
    assert!(
        w.reason.contains("by GPU slots alone: 6 x g4dn.xlarge timeslice-4 ($3.16/h) at 4 per node, but a g4dn.xlarge holds 1 by vCPU"),
        "{}",
        w.reason
    );
    assert!(p.warnings.is_empty());
}

#[test]
fn the_binding_resource_is_named_and_the_reserve_can_be_changed() {
    // 8 notebooks of {2 vCPU, 8Gi, 4Gi GPU memory}: by vCPU a g4dn.xlarge (3420m) holds one, so the
    // T4 time-sliced three ways no longer wins: whole T4s on g4dn.xlarge, 1 per node by vCPU,
    // 8 x $0.526 = $4.208/h... unless a bigger node holds more: g4dn.2xlarge (7410m: 3, 28612Mi: 3) at
    // timeslice-3 gives 3 per node, 3 x $0.752 = $2.256/h.
    let inv = inventory(
        "  - {name: notebooks, namespace: dev, replicas: 8, gpuMemory: 4Gi, cpu: 2, memory: 8Gi, isolation: none, current: {instanceType: g6.xlarge}}\n",
    );
    let p = planner::assemble::plan(&inv).unwrap();
    let w = &p.workloads[0];
    assert_eq!(
        (w.instance_type, w.layout),
        ("g4dn.2xlarge", Layout::Timeslice(3))
    );
    assert_eq!((w.replicas_per_node, w.binding_resource), (3, Binding::Gpu));
    assert!(close(p.after.usd_per_hour, 3.0 * 0.752));
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["workloads"][0]["cpuMillis"], 2000);
    assert_eq!(json["workloads"][0]["memoryBytes"], 8u64 << 30);
    assert_eq!(
        json["nodeReserve"],
        serde_json::json!({"cpuMillis": 500, "memoryBytes": 1u64 << 30})
    );

    // Memory binds: 4 replicas of {1 vCPU, 100Gi}, 1Gi of GPU memory, no isolation. A g6.16xlarge
    // (234021Mi - 1Gi) holds two by memory with its L4 time-sliced 4 ways: 2 x $3.3968/h.
    let inv = inventory(
        "  - {name: big-host, namespace: etl, replicas: 4, gpuMemory: 1Gi, cpu: 1, memory: 100Gi, isolation: none, current: {instanceType: g6.16xlarge}}\n",
    );
    let p = planner::assemble::plan(&inv).unwrap();
    let w = &p.workloads[0];
    assert_eq!(
        (w.instance_type, w.layout),
        ("g6.16xlarge", Layout::Timeslice(4))
    );
    assert_eq!(
        (w.replicas_per_node, w.binding_resource),
        (2, Binding::Memory),
        "{}",
        w.reason
    );
    assert!(close(p.after.usd_per_hour, 2.0 * 3.3968));
    assert!(
        w.reason.contains("but a g4dn.xlarge holds none by memory"),
        "{}",
        w.reason
    );

    // spec.nodeReserve changes what a node offers.
    let inv = Inventory::parse("apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n  nodeReserve: {cpu: 100m, memory: 256Mi}\n  workloads:\n  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, cpu: 1, memory: 1Gi, isolation: none, current: {instanceType: g6.xlarge}}\n", "inv").unwrap();
    assert_eq!(inv.node_reserve.cpu_millis, 100);
    assert_eq!(inv.node_reserve.memory, 256 << 20);
}

#[test]
fn unisolated_replicas_time_share_mig_slices_when_that_is_cheapest() {
    // 224 replicas of {1Gi GPU memory, 400m, 2Gi}, no isolation asked. A 1g.10gb slice of an A100-80GB
    // (9728 MiB) holds floor(9728 / 1536) = 6, capped at 4: 8 x 7 x 4 = 224 per p4de.24xlarge, whose
    // 95190m and 1056 GiB hold 237 and 528: one node, $27.44705/h, against 56 x g4dn.xlarge at
    // timeslice-4 ($29.46/h).
    let p = planner::assemble::plan(&inventory("  - {name: shared, namespace: ml-shared, replicas: 224, gpuMemory: 1Gi, cpu: 400m, memory: 2Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n")).unwrap();
    let w = &p.workloads[0];
    assert_eq!(
        (w.instance_type, w.layout),
        ("p4de.24xlarge", Layout::MigTimeslice("1g.10gb", 4))
    );
    assert_eq!(w.replicas_per_node, 224);
    assert!(close(p.after.usd_per_hour, 27.44705));
    assert!(
        w.reason
            .contains("4 replicas of 1Gi + context overhead time-share one 1g.10gb slice"),
        "{}",
        w.reason
    );
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["workloads"][0]["mode"], "mig-timeslice");
    assert_eq!(json["workloads"][0]["profile"], "1g.10gb");
    assert_eq!(json["workloads"][0]["replicasPerSlice"], 4);
    assert_eq!(json["after"]["nodes"][0]["layout"], "all-1g.10gb-x4");
    // Memory isolation rules it out: the slices are then the replicas' own.
    let p = planner::assemble::plan(&inventory("  - {name: shared, namespace: ml-shared, replicas: 224, gpuMemory: 1Gi, cpu: 400m, memory: 2Gi, isolation: memory, current: {instanceType: g4dn.xlarge}}\n")).unwrap();
    assert!(!matches!(
        p.workloads[0].layout,
        Layout::MigTimeslice(..) | Layout::Timeslice(_)
    ));
}

#[test]
fn workloads_that_pick_the_same_layout_share_nodes() {
    // b (7 replicas) and c (2 replicas) of 4Gi each pick g4dn.xlarge at timeslice-3: alone they need
    // 3 + 1 nodes, together ceil(9 / 3) = 3. a is the 56-replica MIG case.
    let p = planner::assemble::plan(&inventory(
        "  - {name: a, namespace: ml-a, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge}}\n  - {name: b, namespace: ml-b, replicas: 7, gpuMemory: 4Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n  - {name: c, namespace: ml-c, replicas: 2, gpuMemory: 4Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n",
    ))
    .unwrap();
    let groups: Vec<_> = p
        .after
        .nodes
        .iter()
        .map(|g| (g.instance_type, g.layout.as_str(), g.count))
        .collect();
    assert_eq!(
        groups,
        vec![
            ("g4dn.xlarge", "timeslice-3", 3),
            ("p4de.24xlarge", "all-1g.10gb", 1)
        ]
    );
    assert!(close(p.after.usd_per_hour, 27.44705 + 3.0 * 0.526));
    assert_eq!(p.before.nodes, 7 + 7 + 2);
    assert!(close(p.before.usd_per_hour, 7.0 * 27.44705 + 9.0 * 0.526));

    let json: serde_json::Value = serde_json::to_value(&p).unwrap();
    // p4de.24xlarge: Karpenter's 95690m and 1082712Mi less the default 500m and 1Gi DaemonSet reserve.
    assert_eq!(
        json["after"]["nodes"][1],
        serde_json::json!({"instanceType": "p4de.24xlarge", "layout": "all-1g.10gb", "count": 1,
            "allocatablePerNode": {"cpuMillis": 95190, "memoryBytes": (1082712u64 - 1024) << 20}})
    );
    assert_eq!(
        json["workloads"][1],
        serde_json::json!({"name": "b", "namespace": "ml-b", "mode": "timeslice", "replicasPerGpu": 3, "instanceType": "g4dn.xlarge",
            "replicasPerNode": 3, "bindingResource": "gpu", "hostResourcesChecked": false})
    );
    assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("ml-a/a: no cpu and memory per replica given"));
    assert_eq!(json["workloads"][0]["profile"], "1g.10gb");
    assert_eq!(json["before"]["nodes"], 16);
}

#[test]
fn bad_inventories_name_the_field() {
    let bad = |spec: &str| {
        Inventory::parse(
            &format!("apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n{spec}"),
            "inv.yaml",
        )
        .unwrap_err()
        .to_string()
    };
    assert!(bad("  region: eu-west-1\n  workloads: []\n").contains("spec.region"));
    assert!(bad("  workloads:\n  - {name: a, namespace: b, replicas: 1, gpuMemory: lots, isolation: none, current: {instanceType: g6.xlarge}}\n").contains("spec.workloads[0].gpuMemory"));
    assert!(bad("  workloads:\n  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, isolation: some, current: {instanceType: g6.xlarge}}\n").contains("isolation"));
    assert!(bad("  workloads:\n  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, cpu: lots, isolation: none, current: {instanceType: g6.xlarge}}\n").contains("spec.workloads[0].cpu"));
    assert!(bad("  workloads:\n  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, memory: 0, isolation: none, current: {instanceType: g6.xlarge}}\n").contains("spec.workloads[0].memory"));
    assert!(bad("  nodeReserve: {cpu: x}\n  workloads: []\n").contains("spec.nodeReserve.cpu"));
    // A replica that fits no node of its current type by the model: a warning naming the allocatable
    // (it runs there today, so the reserve or the requests are off), counted at one per GPU.
    let p = planner::assemble::plan(&inventory("  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, cpu: 4, memory: 1Gi, isolation: none, current: {instanceType: g6.xlarge}}\n")).unwrap();
    assert!(
        p.warnings[0].contains("cannot run one replica by this model: it offers 3420m vCPU"),
        "{:?}",
        p.warnings
    );
    assert_eq!(p.before.nodes, 1);
    let err = planner::assemble::plan(&inventory("  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, isolation: none, current: {instanceType: x1.large}}\n")).unwrap_err();
    assert!(
        err[0].contains("current.instanceType \"x1.large\""),
        "{err:?}"
    );
    let err = planner::assemble::plan(&inventory("  - {name: a, namespace: b, replicas: 1, gpuMemory: 900Gi, isolation: none, current: {instanceType: g6.xlarge}}\n")).unwrap_err();
    assert!(
        err[0].contains("no catalogued GPU holds gpuMemory 900Gi"),
        "{err:?}"
    );
    let err = planner::assemble::plan(&inventory("  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, cpu: 500, memory: 1Gi, isolation: none, current: {instanceType: g6.xlarge}}\n")).unwrap_err();
    assert!(
        err[0].contains("no catalogued instance type holds one replica of gpuMemory 1Gi (no isolation), cpu 500 and memory 1Gi on one node"),
        "{err:?}"
    );
}

#[test]
fn emitted_artifacts_pass_policy_check_together() {
    let p = planner::assemble::plan(&inventory(
        "  - {name: a, namespace: ml-a, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge}}\n  - {name: b, namespace: ml-b, replicas: 7, gpuMemory: 4Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n  - {name: llm, namespace: serving, replicas: 1, gpuMemory: 70Gi, isolation: memory, current: {instanceType: p5.48xlarge}}\n  - {name: shared, namespace: ml-shared, replicas: 224, gpuMemory: 1Gi, cpu: 400m, memory: 2Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n",
    ))
    .unwrap();
    assert_eq!(p.workloads[3].layout, Layout::MigTimeslice("1g.10gb", 4));
    let dir = tempfile::tempdir().unwrap();
    let emitted = planner::emit::emit(&p, dir.path()).unwrap();
    assert!(emitted.conflicts.is_empty());
    let policy = gpu_slicer::policy_source::load_file(&dir.path().join("policy.yaml")).unwrap();
    let pools = gpu_slicer::input::nodepools(&dir.path().join("karpenter")).unwrap();
    let ops = gpu_slicer::input::gpu_operator_configs(&dir.path().join("gpu-operator")).unwrap();
    let report = check::check(&policy, "policy.yaml", Some(&pools), Some(&ops));
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(pools.len(), 4);
    let overlays = std::fs::read_to_string(dir.path().join("karpenter/nodeoverlays.yaml")).unwrap();
    assert!(
        overlays.contains("nvidia.com/mig-1g.10gb: '56'"),
        "{overlays}"
    );
    assert!(
        overlays.contains("nvidia.com/gpu.shared: '3'"),
        "{overlays}"
    );
    // Time-sliced MIG: 8 GPUs x 7 1g.10gb slices x 4 replicas, under the renamed resource only.
    assert!(
        overlays.contains("nvidia.com/mig-1g.10gb.shared: '224'"),
        "{overlays}"
    );
    let policy_text = std::fs::read_to_string(dir.path().join("policy.yaml")).unwrap();
    assert!(
        policy_text.contains("timeSlicing:\n        renameByDefault: true"),
        "{policy_text}"
    );
    let plugin =
        std::fs::read_to_string(dir.path().join("gpu-operator/device-plugin-config.yaml")).unwrap();
    assert!(
        plugin.contains("mig-1g.10gb-x4: |\n    version: v1\n    flags:\n      migStrategy: mixed\n    sharing:\n      timeSlicing:\n        renameByDefault: true\n        failRequestsGreaterThanOne: true\n        resources:\n          - name: nvidia.com/mig-1g.10gb\n            replicas: 4"),
        "{plugin}"
    );
    let nodepools = std::fs::read_to_string(dir.path().join("karpenter/nodepools.yaml")).unwrap();
    assert!(
        nodepools.contains("nvidia.com/mig.config: all-1g.10gb\n        nvidia.com/device-plugin.config: mig-1g.10gb-x4"),
        "{nodepools}"
    );
    // The emitted objects are valid against the CRDs and core types, like the shipped manifests.
    let v = common::validate::crd_validator("karpenter.sh_nodepools.yaml", "v1");
    for doc in gpu_slicer_core::yaml::documents(
        &std::fs::read_to_string(dir.path().join("karpenter/nodepools.yaml")).unwrap(),
    )
    .unwrap()
    {
        assert!(common::validate::errors(&v, &doc).is_empty(), "{doc}");
    }
}

fn arb_workload(i: usize) -> impl Strategy<Value = String> {
    let priced: Vec<&'static str> = catalog::INSTANCE_TYPES
        .iter()
        .filter(|t| t.usd_per_hour.is_some())
        .map(|t| t.name)
        .collect();
    let cpu = prop::option::weighted(
        0.8,
        prop::sample::select(vec![
            "250m", "500m", "1", "1500m", "2", "3", "4", "7", "12", "30", "60",
        ]),
    );
    let memory = prop::option::weighted(
        0.8,
        prop::sample::select(vec![
            "512Mi", "2Gi", "6Gi", "10Gi", "14Gi", "24Gi", "60Gi", "200Gi", "700Gi",
        ]),
    );
    (1u64..120, prop::sample::select(vec!["1Gi", "3Gi", "4Gi", "8Gi", "12Gi", "20Gi", "30Gi", "40Gi", "70Gi"]), any::<bool>(), prop::sample::select(priced), 1u32..3, cpu, memory)
        .prop_map(move |(replicas, mem, iso, current, gpr, cpu, memory)| {
            let host = cpu.map(|c| format!(", cpu: {c}")).unwrap_or_default()
                + &memory.map(|m| format!(", memory: {m}")).unwrap_or_default();
            format!(
                "  - {{name: w{i}, namespace: ns{i}, replicas: {replicas}, gpuMemory: {mem}, isolation: {}{host}, current: {{instanceType: {current}, gpusPerReplica: {gpr}}}}}\n",
                if iso { "memory" } else { "none" }
            )
        })
}

fn feasible_current(inv: &Inventory) -> bool {
    inv.workloads.iter().all(|w| {
        catalog::instance_type(&w.current_instance_type).is_some_and(|t| {
            t.gpus >= w.gpus_per_replica
                && u128::from(t.gpu.memory_mib) * u128::from(w.gpus_per_replica) * (1 << 20)
                    >= w.gpu_memory
        })
    })
}

proptest! {
    // Most random current placements cannot hold their replicas' GPU memory and are rejected: room for them.
    #![proptest_config(ProptestConfig { cases: 200, max_global_rejects: 50_000, ..ProptestConfig::default() })]

    #[test]
    fn plans_respect_geometry_isolation_hosts_and_never_cost_more(ws in (1usize..5).prop_flat_map(|n| (0..n).map(arb_workload).collect::<Vec<_>>())) {
        let inv = inventory(&ws.concat());
        prop_assume!(feasible_current(&inv));
        let Ok(p) = planner::assemble::plan(&inv) else { return Ok(()) };
        for (w, wp) in inv.workloads.iter().zip(&p.workloads) {
            let it = catalog::instance_type(wp.instance_type).unwrap();
            match wp.layout {
                Layout::MigTimeslice(prof, n) => {
                    prop_assert_eq!(w.isolation, Isolation::None, "a memory-isolated workload was time-sliced");
                    prop_assert!(n <= inv.max_shared_replicas);
                    let m = it.gpu.mig_profile(prof).unwrap();
                    prop_assert!(u128::from(n) * (w.gpu_memory + inv.context_overhead) <= u128::from(m.memory_mib) << 20);
                }
                Layout::Timeslice(n) => {
                    prop_assert_eq!(w.isolation, Isolation::None, "a memory-isolated workload was time-sliced");
                    prop_assert!(n <= inv.max_shared_replicas);
                    prop_assert!(u128::from(n) * (w.gpu_memory + inv.context_overhead) <= u128::from(it.gpu.memory_mib) << 20);
                }
                Layout::Mig(prof) => {
                    let m = it.gpu.mig_profile(prof).unwrap();
                    prop_assert!(u128::from(m.memory_mib) << 20 >= w.gpu_memory);
                }
                Layout::Whole(per) => prop_assert!(per <= it.gpus),
            }
        }
        for g in &p.after.nodes {
            let it = catalog::instance_type(g.instance_type).unwrap();
            // No GPU holds more than its MIG geometry or the replica cap allows.
            let per_gpu_cap = match g.layout_kind {
                Layout::Mig(prof) => u64::from(it.gpu.mig_profile(prof).unwrap().max_per_gpu),
                Layout::MigTimeslice(prof, n) => u64::from(it.gpu.mig_profile(prof).unwrap().max_per_gpu) * u64::from(n.min(inv.max_shared_replicas)),
                Layout::Timeslice(n) => u64::from(n.min(inv.max_shared_replicas)),
                Layout::Whole(_) => 1,
            };
            prop_assert!(g.slots_per_node <= u64::from(it.gpus) * per_gpu_cap);
            prop_assert!(g.replicas <= g.count * g.slots_per_node);
            prop_assert_eq!(g.loads.len() as u64, g.count);
            // Every node against the catalog's sizes: the replicas placed on it, counted from the
            // workloads' own requests, fit its GPU slots, Karpenter's allocatable less the node reserve,
            // and so the instance's vCPUs and memory.
            let alloc = allocatable::allocatable(it, &inv.node_reserve);
            prop_assert!(alloc.cpu_millis <= u64::from(it.vcpus) * 1000);
            prop_assert!(alloc.memory <= u128::from(it.memory_mib) << 20);
            for n in &g.loads {
                let replicas: u64 = n.replicas.iter().map(|(_, k)| k).sum();
                let cpu: u64 = n.replicas.iter().map(|(i, k)| k * inv.workloads[*i].cpu_millis.unwrap_or(0)).sum();
                let mem: u128 = n.replicas.iter().map(|(i, k)| u128::from(*k) * inv.workloads[*i].memory.unwrap_or(0)).sum();
                prop_assert!(replicas >= 1, "an empty node");
                prop_assert!(replicas <= g.slots_per_node, "{} replicas on {} GPU slots", replicas, g.slots_per_node);
                prop_assert!(cpu <= alloc.cpu_millis, "{}: {}m requested, {}m allocatable", g.instance_type, cpu, alloc.cpu_millis);
                prop_assert!(mem <= alloc.memory, "{}: {} bytes requested, {} allocatable", g.instance_type, mem, alloc.memory);
                for (i, _) in &n.replicas {
                    prop_assert_eq!((p.workloads[*i].instance_type, p.workloads[*i].layout), (g.instance_type, g.layout_kind));
                }
            }
            // Sharing never needs more nodes than the workloads would alone.
            let alone: u64 = p.workloads.iter().filter(|w| (w.instance_type, w.layout) == (g.instance_type, g.layout_kind))
                .map(|w| w.replicas.div_ceil(w.replicas_per_node)).sum();
            prop_assert!(g.count <= alone, "{} nodes shared, {} alone", g.count, alone);
        }
        // Every replica is placed exactly once.
        for (i, w) in inv.workloads.iter().enumerate() {
            let placed: u64 = p.after.nodes.iter().flat_map(|g| &g.loads).flat_map(|n| &n.replicas).filter(|(j, _)| *j == i).map(|(_, k)| k).sum();
            prop_assert_eq!(placed, w.replicas);
            prop_assert_eq!(p.workloads[i].host_resources_checked, w.cpu_millis.is_some() && w.memory.is_some());
        }
        // Where today's placement fits the model's hosts, the plan never costs more. (Where it does not,
        // 'before' is counted by GPUs alone and the plan says so in a warning.)
        if !p.warnings.iter().any(|w| w.contains("cannot run one replica by this model")) {
            prop_assert!(p.after.usd_per_hour <= p.before.usd_per_hour + 1e-6, "after {} > before {}", p.after.usd_per_hour, p.before.usd_per_hour);
        }
    }
}

/// Finds a headless Chromium (Debian's `chromium`, installed by .ci/run).

#[test]
fn the_html_page_renders_in_a_browser_with_the_json_totals() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n  workloads:\n  - {name: a, namespace: ml-a, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge}}\n  - {name: b, namespace: ml-b, replicas: 7, gpuMemory: 4Gi, cpu: 2, memory: 8Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n  - {name: c, namespace: ml-c, replicas: 24, gpuMemory: 3Gi, cpu: 3, memory: 10Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n").unwrap();
    let html = dir.path().join("plan.html");
    let out = Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
        .args([
            "plan",
            "-f",
            inv.to_str().unwrap(),
            "--output",
            "json",
            "--html",
            html.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dom = common::browser::rendered_dom(&html);
    let cell = |id: &str| common::browser::cell(&dom, id);
    assert_eq!(
        cell("before-usd-per-hour"),
        format!("{:.2}", json["before"]["usdPerHour"].as_f64().unwrap())
    );
    assert_eq!(
        cell("after-usd-per-hour"),
        format!("{:.2}", json["after"]["usdPerHour"].as_f64().unwrap())
    );
    assert_eq!(cell("before-nodes"), json["before"]["nodes"].to_string());
    let after_nodes: u64 = json["after"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["count"].as_u64().unwrap())
        .sum();
    assert_eq!(cell("after-nodes"), after_nodes.to_string());
    // Each workload's replicas per node and the resource that limits it, as the JSON says.
    for (i, w) in json["workloads"].as_array().unwrap().iter().enumerate() {
        let label = match w["bindingResource"].as_str().unwrap() {
            "gpu" => "GPU slots",
            "cpu" => "vCPU",
            "memory" => "memory",
            other => panic!("binding {other}"),
        };
        assert_eq!(
            cell(&format!("per-node-{i}")),
            format!("{} by {label}", w["replicasPerNode"])
        );
    }
    assert!(
        dom.contains("not given: host not checked"),
        "workload a gave no requests"
    );
    assert!(
        dom.contains("no cpu and memory per replica given"),
        "its warning is listed"
    );
    assert!(dom.contains("<svg"), "charts rendered");
}

fn gpu_deployment(
    kind: &str,
    name: &str,
    extra_spec: serde_json::Value,
    annotations: serde_json::Value,
    node_selector: serde_json::Value,
    gpus: &str,
) -> serde_json::Value {
    let mut obj = serde_json::json!({
        "apiVersion": if kind == "Job" { "batch/v1" } else { "apps/v1" }, "kind": kind,
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"template": {"metadata": {"annotations": annotations}, "spec": {
            "nodeSelector": node_selector,
            "containers": [{"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}}
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        obj["spec"][k] = v.clone();
    }
    obj
}

#[test]
fn cluster_workloads_become_an_inventory_or_say_why_not() {
    use gpu_slicer::planner::cluster::workloads_from_objects;
    let objs = vec![
        gpu_deployment(
            "Deployment",
            "embedder",
            serde_json::json!({"replicas": 56}),
            serde_json::json!({"gpu-slicer.io/gpu-memory": "8Gi"}),
            serde_json::json!({"node.kubernetes.io/instance-type": "p4de.24xlarge"}),
            "1",
        ),
        gpu_deployment(
            "Job",
            "train",
            serde_json::json!({"parallelism": 2}),
            serde_json::json!({"gpu-slicer.io/gpu-memory": "70Gi", "gpu-slicer.io/isolation": "memory", "gpu-slicer.io/instance-type": "p5.48xlarge"}),
            serde_json::json!({}),
            "2",
        ),
        gpu_deployment(
            "StatefulSet",
            "nosize",
            serde_json::json!({"replicas": 3}),
            serde_json::json!({}),
            serde_json::json!({"node.kubernetes.io/instance-type": "g6.xlarge"}),
            "1",
        ),
        gpu_deployment(
            "Deployment",
            "cpu",
            serde_json::json!({"replicas": 3}),
            serde_json::json!({}),
            serde_json::json!({}),
            "0",
        ),
    ];
    let (workloads, skipped) = workloads_from_objects(&objs);
    let got: Vec<_> = workloads
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.replicas,
                w.gpus_per_replica,
                w.current_instance_type.as_str(),
                w.isolation,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "deployment-embedder",
                56,
                1,
                "p4de.24xlarge",
                Isolation::Memory
            ),
            ("job-train", 2, 2, "p5.48xlarge", Isolation::Memory)
        ]
    );
    assert_eq!(skipped, vec!["StatefulSet ml/nosize: no gpu-slicer.io/gpu-memory annotation on its pod template (the planner sizes by it)".to_string()]);
}

/// A list response as the API server sends it.
async fn list_response(list: serde_json::Value) -> axum::response::Response {
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from(list.to_string()))
        .unwrap()
}

/// A GPU workload whose pod template sets `containers`, `initContainers` and `overhead` as given.
fn workload_with_pods(
    kind: &str,
    name: &str,
    extra_spec: serde_json::Value,
    pod: serde_json::Value,
) -> serde_json::Value {
    let mut obj = gpu_deployment(
        kind,
        name,
        extra_spec,
        serde_json::json!({"gpu-slicer.io/gpu-memory": "3Gi", "gpu-slicer.io/isolation": "none", "gpu-slicer.io/instance-type": "g4dn.2xlarge"}),
        serde_json::json!({}),
        "1",
    );
    for (k, v) in pod.as_object().unwrap() {
        obj["spec"]["template"]["spec"][k] = v.clone();
    }
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_from_cluster_lists_workloads_with_kube() {
    use axum::routing::get;
    let gpu = serde_json::json!({"nvidia.com/gpu": "1"});
    let res = |requests: serde_json::Value| {
        let mut limits = gpu.clone();
        if let Some(l) = requests.get("limits") {
            limits = l.clone();
        }
        serde_json::json!({"requests": requests.get("requests").cloned().unwrap_or(serde_json::json!({})), "limits": limits})
    };
    // Deployment: containers 2 + 500m vCPU and 8Gi + 512Mi; a 4-vCPU init container is larger for CPU;
    // a RuntimeClass overhead of 250m and 120Mi on top: 4250m and 8824Mi.
    let serving = workload_with_pods(
        "Deployment",
        "serving",
        serde_json::json!({"replicas": 4, "selector": {"matchLabels": {"app": "s"}}}),
        serde_json::json!({
        "containers": [
            {"name": "main", "image": "x", "resources": res(serde_json::json!({"requests": {"cpu": "2", "memory": "8Gi"}}))},
            {"name": "proxy", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}],
        "initContainers": [{"name": "warm", "image": "x", "resources": {"requests": {"cpu": 4, "memory": "1Gi"}}}],
        "overhead": {"cpu": "250m", "memory": "120Mi"}}),
    );
    // StatefulSet: a sidecar (restartPolicy Always, 1 vCPU, 1Gi) counts with the containers (1 vCPU,
    // 2Gi): 2 vCPU, 3Gi; the init container after it runs beside it: 1500m + 1 = 2500m, 512Mi + 1Gi.
    let index = workload_with_pods(
        "StatefulSet",
        "index",
        serde_json::json!({"replicas": 3, "selector": {"matchLabels": {"app": "i"}}, "serviceName": "i"}),
        serde_json::json!({
        "containers": [{"name": "main", "image": "x", "resources": res(serde_json::json!({"requests": {"cpu": "1", "memory": "2Gi"}}))}],
        "initContainers": [
            {"name": "log", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "load", "image": "x", "resources": {"requests": {"cpu": "1500m", "memory": "512Mi"}}}]}),
    );
    // Job: limits only, which the API server copies into requests: 3 vCPU and 10Gi.
    let batch = workload_with_pods(
        "Job",
        "batch",
        serde_json::json!({"parallelism": 2}),
        serde_json::json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "3", "memory": "10Gi"}}}]}),
    );
    let deployments = serde_json::json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "10"}, "items": [
        gpu_deployment("Deployment", "embedder", serde_json::json!({"replicas": 56, "selector": {"matchLabels": {"app": "e"}}}), serde_json::json!({"gpu-slicer.io/gpu-memory": "8Gi"}), serde_json::json!({"node.kubernetes.io/instance-type": "p4de.24xlarge"}), "1"),
        serving]});
    let statefulsets = serde_json::json!({"kind": "StatefulSetList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "10"}, "items": [index]});
    let jobs = serde_json::json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {"resourceVersion": "10"}, "items": [batch]});
    let router = axum::Router::new()
        .route(
            "/apis/apps/v1/deployments",
            get(move || list_response(deployments.clone())),
        )
        .route(
            "/apis/apps/v1/statefulsets",
            get(move || list_response(statefulsets.clone())),
        )
        .route(
            "/apis/batch/v1/jobs",
            get(move || list_response(jobs.clone())),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, format!("apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"http://{addr}\"}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u}}\ncurrent-context: c\n")).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
            .args([
                "plan",
                "--from-cluster",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "-o",
                "json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| {
        json["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == n)
            .unwrap_or_else(|| panic!("{n} not planned: {json}"))
            .clone()
    };
    let embedder = by_name("deployment-embedder");
    assert_eq!(embedder["profile"], "1g.10gb");
    assert_eq!(embedder["hostResourcesChecked"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ml/deployment-embedder: no cpu and memory per replica given"),
        "{stderr}"
    );
    let requests = |w: &serde_json::Value| (w["cpuMillis"].as_u64(), w["memoryBytes"].as_u64());
    assert_eq!(
        requests(&by_name("deployment-serving")),
        (Some(4250), Some(8824 << 20))
    );
    assert_eq!(
        requests(&by_name("statefulset-index")),
        (Some(2500), Some(3 << 30))
    );
    assert_eq!(
        requests(&by_name("job-batch")),
        (Some(3000), Some(10 << 30))
    );
    assert_eq!(by_name("job-batch")["hostResourcesChecked"], true);
}
