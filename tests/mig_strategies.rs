//! The MIG `single` strategy and time-slicing on MIG (mixed and single): the resource each setup's
//! device plugin advertises, through the engine, `mutate`, `policy check` and `karpenter overlays`.

mod common;

use std::path::Path;

use common::*;
use gpu_slicer_core::audit::Outcome;
use gpu_slicer_core::check;
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::karpenter;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};

const SINGLE_DIR: &str = "manifests/examples/mig-single";

/// One rule per row of the table, in namespaces `row-1` .. `row-6`.
fn table_policy() -> Policy {
    let rows = [
        "{}",
        "{timeSlicing: {renameByDefault: true}}",
        "{timeSlicing: {renameByDefault: false}}",
        "{strategy: single}",
        "{strategy: single, timeSlicing: {renameByDefault: true}}",
        "{strategy: single, timeSlicing: {renameByDefault: false}}",
    ];
    let mut yaml =
        String::from("apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n");
    for (i, extra) in rows.iter().enumerate() {
        let mig: Value = serde_norway::from_str(extra).unwrap();
        let mut mig = mig.as_object().cloned().unwrap_or_default();
        mig.insert("profile".into(), json!("1g.10gb"));
        yaml.push_str(&format!(
            "  - name: row-{n}\n    namespaces: [row-{n}]\n    action: mig\n    mig: {}\n",
            Value::Object(mig),
            n = i + 1
        ));
    }
    Policy::parse(&yaml, "table.yaml").unwrap()
}

fn one_gpu_pod() -> Value {
    pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)])
}

/// The engine on `pod` in namespace `ns` under the shipped policy and NodePools.
fn in_shipped(pod: &Value, ns: &str) -> (gpu_slicer_core::engine::Decision, Value) {
    run(pod, ns, &labels(&[]), &example_policy(), &shipped_pools())
}

/// The engine under the single-strategy example's policy and NodePools.
fn in_single(pod: &Value, ns: &str) -> (gpu_slicer_core::engine::Decision, Value) {
    run(pod, ns, &labels(&[]), &single_policy(), &single_pools())
}

fn single_pools() -> NodePoolIndex {
    gpu_slicer::input::nodepools(&repo(SINGLE_DIR)).unwrap()
}

fn single_policy() -> Policy {
    gpu_slicer::policy_source::load_file(&repo(&format!("{SINGLE_DIR}/policy.yaml"))).unwrap()
}

#[test]
fn each_strategy_and_time_slicing_row_asks_for_what_the_device_plugin_advertises() {
    let policy = table_policy();
    let want = [
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/mig-1g.10gb.shared",
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/gpu",
        "nvidia.com/gpu.shared",
        "nvidia.com/gpu",
    ];
    for (i, resource) in want.iter().enumerate() {
        let ns = format!("row-{}", i + 1);
        let (d, out) = run(
            &one_gpu_pod(),
            &ns,
            &labels(&[]),
            &policy,
            &NodePoolIndex::default(),
        );
        assert!(d.allowed(), "{ns}: {:?}", d.denied);
        assert_eq!(resource_keys(&out), vec!["cpu", "memory", resource], "{ns}");
        let res = &out["spec"]["containers"][0]["resources"];
        assert_eq!(res["limits"][resource], "1", "{ns}: requests == limits");
        assert_eq!(res["requests"][resource], "1", "{ns}");
        let audit = d.audit.as_ref().unwrap();
        assert_eq!(audit.profile.as_deref(), Some("1g.10gb"), "{ns}");
        // Renamed rows are rewritten. Rows that keep nvidia.com/gpu change nothing here (these rules
        // route nowhere), so they say nothing either: that is also what a reinvocation sees.
        let renamed = *resource != "nvidia.com/gpu";
        assert_eq!(
            audit.outcome,
            if renamed {
                Outcome::Rewritten
            } else {
                Outcome::Unchanged
            },
            "{ns}"
        );
        let time_sliced = matches!(i, 1 | 2 | 4 | 5);
        assert_eq!(
            d.warnings.iter().any(|w| w.contains("with no isolation")),
            time_sliced && renamed,
            "{ns}: {:?}",
            d.warnings
        );
        assert!(
            d.warnings.iter().all(|w| w.len() <= 120),
            "{:?}",
            d.warnings
        );
        // The output decides to "no operations" (reinvocationPolicy: IfNeeded).
        let (again, same) = run(&out, &ns, &labels(&[]), &policy, &NodePoolIndex::default());
        assert!(again.allowed(), "{ns}: {:?}", again.denied);
        assert!(again.patch.is_empty(), "{ns}: {:?}", ops(&again));
        assert_eq!(same, out);
    }
}

#[test]
fn single_strategy_keeps_the_name_routes_and_says_which_slice() {
    let (d, out) = in_single(&one_gpu_pod(), "ml-seed");
    assert!(d.allowed());
    let summary = "rule=seed-single action=mig; main: nvidia.com/gpu 1 as MIG 1g.5gb; nodePool=gpu-a100-single";
    assert_eq!(
        ops(&d),
        json!([
            {"op": "add", "path": "/spec/nodeSelector", "value": {"karpenter.sh/nodepool": "gpu-a100-single", "nvidia.com/mig.config": "all-1g.5gb"}},
            {"op": "add", "path": "/spec/tolerations", "value": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
            {"op": "add", "path": "/metadata/annotations", "value": {"gpu-slicer.io/rewritten": summary, "gpu-slicer.io/gpu-equivalents": "0.142857", "gpu-slicer.io/requested-gpus": "1"}}
        ])
    );
    assert_eq!(
        out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(d.audit.unwrap().summary(), summary);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("main: nvidia.com/gpu 1 is a 1g.5gb MIG slice (rule seed-single)")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn single_strategy_denials_say_which_profile_the_namespace_has() {
    let deny = |annotations: Value, gpus: &str| {
        let mut p = pod(vec![container("main", &[("nvidia.com/gpu", gpus)], false)]);
        p["metadata"]["annotations"] = annotations;
        let (d, _) = in_single(&p, "ml-seed");
        assert!(d.patch.is_empty());
        d.denied.expect("denied")
    };
    let msg = deny(json!({"gpu-slicer.io/profile": "3g.20gb"}), "1");
    assert!(
        msg.contains("the GPUs of namespace \"ml-seed\" are 1g.5gb MIG slices"),
        "{msg}"
    );
    // 1g.5gb is 4.75 GiB on A100-40GB; 8Gi fits 1g.10gb (9.62 GiB), the smallest that holds it.
    let msg = deny(json!({"gpu-slicer.io/gpu-memory": "8Gi"}), "1");
    assert!(msg.contains("is more than a 1g.5gb slice holds"), "{msg}");
    assert!(
        msg.contains("the smallest MIG profile that holds it is 1g.10gb"),
        "{msg}"
    );
    let msg = deny(json!({"gpu-slicer.io/gpu-memory": "60Gi"}), "1");
    assert!(
        msg.contains("no MIG profile of these GPUs holds it"),
        "{msg}"
    );
    let msg = deny(json!({}), "2");
    assert!(msg.contains("its GPUs are 1g.5gb MIG slices"), "{msg}");
    // A gpu-memory that fits is fine.
    let mut p = one_gpu_pod();
    p["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": "4Gi"});
    let (d, _) = in_single(&p, "ml-seed");
    assert!(d.allowed(), "{:?}", d.denied);
}

#[test]
fn time_sliced_slices_are_one_per_container_and_unrenamed_names_are_refused() {
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "2")], false)]);
    let (d, _) = in_shipped(&p, "ml-notebooks-mig");
    let msg = d.denied.unwrap();
    assert!(
        msg.contains("the device plugin rejects more than one per container"),
        "{msg}"
    );
    // The pool advertises only the renamed resource: asking for the plain slice is refused.
    let p = pod(vec![container(
        "main",
        &[("nvidia.com/mig-1g.10gb", "1")],
        false,
    )]);
    let (d, _) = in_shipped(&p, "ml-notebooks-mig");
    let msg = d.denied.unwrap();
    assert!(
        msg.contains("time-sliced MIG slices 1g.10gb as nvidia.com/mig-1g.10gb.shared"),
        "{msg}"
    );
    // Asking for the renamed slice directly is enforced and routed, not renamed again.
    let p = pod(vec![container(
        "main",
        &[("nvidia.com/mig-1g.10gb.shared", "1")],
        false,
    )]);
    let (d, out) = in_shipped(&p, "ml-notebooks-mig");
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(d.audit.unwrap().outcome, Outcome::Routed);
    assert_eq!(
        out["spec"]["nodeSelector"]["nvidia.com/device-plugin.config"],
        "mig-1g.10gb-x2"
    );
}

#[test]
fn the_policy_refuses_what_the_device_plugin_cannot_do() {
    let parse = |mig: &str, extra: &str| {
        Policy::parse(
            &format!(
                "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - name: a\n    action: mig\n    mig: {mig}\n{extra}"
            ),
            "p.yaml",
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let e = parse(
        "{profile: 1g.10gb, strategy: single, allowedProfiles: [1g.10gb, 2g.20gb]}",
        "",
    )
    .unwrap_err();
    assert!(
        e.contains("spec.rules[0].mig.allowedProfiles: \"2g.20gb\": under strategy single"),
        "{e}"
    );
    let e = parse(
        "{profile: 1g.10gb, timeSlicing: {renameByDefault: true}}",
        "    maxPerContainer: 2\n",
    )
    .unwrap_err();
    assert!(
        e.contains("spec.rules[0].maxPerContainer: must be 1 with mig.timeSlicing"),
        "{e}"
    );
    let e = parse("{profile: 1g.10gb, strategy: Single}", "").unwrap_err();
    assert!(e.contains("Single"), "{e}");
    let e = parse("{profile: 1g.10gb, timeSlicing: {rename: true}}", "").unwrap_err();
    assert!(e.contains("unknown field `rename`"), "{e}");
    assert!(
        parse(
            "{profile: 1g.10gb, strategy: single, allowedProfiles: [1g.10gb]}",
            ""
        )
        .is_ok()
    );
}

#[test]
fn mutate_shows_each_setup() {
    let dir = tempfile::tempdir().unwrap();
    let pod_file = dir.path().join("pod.json");
    std::fs::write(&pod_file, one_gpu_pod().to_string()).unwrap();
    let pod_arg = pod_file.to_str().unwrap();
    let out = gpu_slicer_cli(&[
        "mutate",
        "--namespace",
        "ml-seed-dev",
        "--policy",
        "manifests/examples/mig-single/policy.yaml",
        "--nodepools",
        SINGLE_DIR,
        "-f",
        pod_arg,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let mutated: Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(
        mutated["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "1"
    );
    assert_eq!(
        mutated["spec"]["nodeSelector"]["nvidia.com/device-plugin.config"],
        "mig-ts-10"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a time-sliced share of a 1g.5gb MIG slice"),
        "{stderr}"
    );
    assert!(stderr.contains("\"profile\":\"1g.5gb\""), "{stderr}");

    let out = gpu_slicer_cli(&[
        "mutate",
        "--namespace",
        "ml-notebooks-mig",
        "--nodepools",
        "manifests/karpenter",
        "-f",
        pod_arg,
    ]);
    assert_eq!(out.status.code(), Some(0));
    let mutated: Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(
        mutated["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/mig-1g.10gb.shared"],
        "1"
    );

    let mut big = one_gpu_pod();
    big["metadata"]["annotations"] = json!({"gpu-slicer.io/profile": "2g.10gb"});
    std::fs::write(&pod_file, big.to_string()).unwrap();
    let out = gpu_slicer_cli(&[
        "mutate",
        "--namespace",
        "ml-seed",
        "--policy",
        "manifests/examples/mig-single/policy.yaml",
        "--nodepools",
        SINGLE_DIR,
        "-f",
        pod_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("are 1g.5gb MIG slices"));
}

// ---- policy check ----

fn single_ops() -> GpuOperatorConfigs {
    gpu_slicer::input::gpu_operator_configs(&repo(SINGLE_DIR)).unwrap()
}

fn check_errors(policy: &Policy, pools: &NodePoolIndex, ops: &GpuOperatorConfigs) -> Vec<String> {
    check::check(policy, "policy.yaml", Some(pools), Some(ops)).errors
}

/// A copy of `dir` with `file` edited, read back as GPU Operator configs.
fn edited_ops(dir: &str, file: &str, from: &str, to: &str) -> GpuOperatorConfigs {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo(dir)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut text = std::fs::read_to_string(&path).unwrap();
        if name == file {
            assert!(text.contains(from), "{from}");
            text = text.replacen(from, to, 1);
        }
        std::fs::write(tmp.path().join(name), text).unwrap();
    }
    gpu_slicer::input::gpu_operator_configs(Path::new(tmp.path())).unwrap()
}

fn edited_single_pools(from: &str, to: &str) -> NodePoolIndex {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo(&format!("{SINGLE_DIR}/nodepools.yaml"))).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(tmp.path().join("np.yaml"), text.replacen(from, to, 1)).unwrap();
    gpu_slicer::input::nodepools(tmp.path()).unwrap()
}

#[test]
fn policy_check_passes_on_each_shipped_setup() {
    assert_eq!(
        check_errors(&single_policy(), &single_pools(), &single_ops()),
        Vec::<String>::new()
    );
    let ops = gpu_slicer::input::gpu_operator_configs(&repo("manifests/gpu-operator")).unwrap();
    assert_eq!(
        check_errors(&example_policy(), &shipped_pools(), &ops),
        Vec::<String>::new()
    );
    let strategy = single_ops().mig_strategy(Some("mig-ts-10")).unwrap();
    assert_eq!(strategy.strategy.as_str(), "single");
    assert!(
        strategy.source.contains("Helm values mig.strategy"),
        "{}",
        strategy.source
    );
}

#[test]
fn a_rule_whose_strategy_differs_from_the_pools_is_named() {
    // The operator's mig.strategy outranks the config file's flags.migStrategy.
    let ops = edited_ops(
        SINGLE_DIR,
        "values.yaml",
        "strategy: single",
        "strategy: mixed",
    );
    let errs = check_errors(&single_policy(), &single_pools(), &ops);
    assert!(
        errs.iter().any(|e| e.contains("spec.rules[0] (seed-single): NodePool gpu-a100-single")
            && e.contains("rule has mig.strategy single but the device plugin of these nodes runs MIG strategy mixed")
            && e.contains("Helm values mig.strategy in")),
        "{errs:?}"
    );
    // Without operator settings, the config's flags.migStrategy decides.
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo(&format!("{SINGLE_DIR}/device-plugin-config.yaml")))
        .unwrap()
        .replace("migStrategy: single", "migStrategy: mixed");
    std::fs::write(tmp.path().join("dp.yaml"), text).unwrap();
    let ops = gpu_slicer::input::gpu_operator_configs(tmp.path()).unwrap();
    let errs = check_errors(&single_policy(), &single_pools(), &ops);
    assert!(
        errs.iter()
            .any(|e| e.contains("flags.migStrategy of device plugin config default")),
        "{errs:?}"
    );
    // A mixed rule on the single cluster.
    let mixed = Policy::parse(
        &std::fs::read_to_string(repo(&format!("{SINGLE_DIR}/policy.yaml")))
            .unwrap()
            .replacen("        strategy: single\n", "", 1),
        "policy.yaml",
    )
    .unwrap();
    let errs = check_errors(&mixed, &single_pools(), &single_ops());
    assert!(
        errs.iter().any(|e| e.contains("rule has mig.strategy mixed but the device plugin of these nodes runs MIG strategy single")),
        "{errs:?}"
    );
}

#[test]
fn a_single_pool_with_several_profiles_per_gpu_is_named() {
    let pools = edited_single_pools(
        "nvidia.com/mig.config: all-1g.5gb\n    spec:",
        "nvidia.com/mig.config: all-balanced\n    spec:",
    );
    let errs = check_errors(&single_policy(), &pools, &single_ops());
    assert!(
        errs.iter().any(|e| e.contains("NodePool gpu-a100-single")
            && e.contains(
                "MIG config all-balanced makes 1g.5gb x2, 2g.10gb x1, 3g.20gb x1 per A100-40GB GPU"
            )
            && e.contains("all-balanced is not valid")),
        "{errs:?}"
    );
    // And `karpenter overlays` refuses to invent a capacity for it.
    let errs = karpenter::overlays(&single_policy(), &pools, &single_ops()).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.contains("needs one profile per node")),
        "{errs:?}"
    );
}

#[test]
fn a_time_slicing_rule_whose_pool_does_not_time_slice_or_renames_otherwise_is_named() {
    // The pool's config does not time-slice the slices at all.
    let pools = edited_single_pools(
        "nvidia.com/device-plugin.config: mig-ts-10",
        "nvidia.com/device-plugin.config: default",
    );
    let errs = check_errors(&single_policy(), &pools, &single_ops());
    assert!(
        errs.iter().any(|e| e.contains("spec.rules[1] (seed-single-shared)")
            && e.contains("rule sets mig.timeSlicing but device plugin config default does not time-slice nvidia.com/gpu")),
        "{errs:?}"
    );
    // The config renames, the rule does not expect it.
    let ops = edited_ops(
        SINGLE_DIR,
        "device-plugin-config.yaml",
        "        renameByDefault: false\n",
        "        renameByDefault: true\n",
    );
    let errs = check_errors(&single_policy(), &single_pools(), &ops);
    assert!(
        errs.iter().any(|e| e
            .contains("advertises nvidia.com/gpu time-sliced as nvidia.com/gpu.shared")
            && e.contains("expects nvidia.com/gpu")),
        "{errs:?}"
    );
    // The pool time-slices, the rule does not say so.
    let plain = Policy::parse(
        &std::fs::read_to_string(repo("manifests/policy/policy.yaml"))
            .unwrap()
            .replacen(
                "        timeSlicing:\n          renameByDefault: true   # as in device plugin config mig-1g.10gb-x2\n          replicas: 2             # its replicas: each pod holds 1/2 of a 1g.10gb slice\n",
                "",
                1,
            ),
        "policy.yaml",
    )
    .unwrap();
    let ops = gpu_slicer::input::gpu_operator_configs(&repo("manifests/gpu-operator")).unwrap();
    let errs = check_errors(&plain, &shipped_pools(), &ops);
    assert!(
        errs.iter().any(|e| e.contains("(notebooks-on-slices)")
            && e.contains("time-slices nvidia.com/mig-1g.10gb (2 replicas, advertised as nvidia.com/mig-1g.10gb.shared): add mig.timeSlicing {renameByDefault: true}")),
        "{errs:?}"
    );
}

#[test]
fn mps_on_mig_slices_is_refused_under_either_strategy() {
    let ops = edited_ops(
        SINGLE_DIR,
        "device-plugin-config.yaml",
        "timeSlicing:",
        "mps:",
    );
    let errs = check_errors(&single_policy(), &single_pools(), &ops);
    assert!(
        errs.iter()
            .any(|e| e.contains("MPS is not combined with MIG")),
        "{errs:?}"
    );
}

#[test]
fn misspellings_from_public_copies_are_errors_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "dp.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dp}\ndata:\n  a: |-\n    version: v1\n    flages:\n      migStrategy: single\n    sharing:\n      timeSlicing:\n        resources: [{name: nvidia.com/gpu, replicas: 2}]\n",
    );
    let e = gpu_slicer::input::gpu_operator_configs(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `flages`"), "{e}");
    write(
        "dp.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dp}\ndata:\n  a: |-\n    version: v1\n    sharing:\n      timeSlicing:\n        failRequestGreaterThanOne: true\n        resources: [{name: nvidia.com/gpu, replicas: 2}]\n",
    );
    let e = gpu_slicer::input::gpu_operator_configs(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `failRequestGreaterThanOne`"),
        "{e}"
    );
    write(
        "dp.yaml",
        "driver: {enabled: false}\nmixed:\n  strategy: mixed\n",
    );
    let e = gpu_slicer::input::gpu_operator_configs(dir.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("the key is mig.strategy"), "{e}");
}

// ---- karpenter overlays ----

fn capacities(overlays: &[Value]) -> Vec<(String, Value)> {
    overlays
        .iter()
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_string(),
                o["spec"]["capacity"].clone(),
            )
        })
        .collect()
}

#[test]
fn overlays_give_each_setup_the_capacity_its_device_plugin_advertises() {
    let single = karpenter::overlays(&single_policy(), &single_pools(), &single_ops()).unwrap();
    assert_eq!(
        capacities(&single),
        vec![
            (
                "gpu-slicer-gpu-a100-single-p4d.24xlarge".to_string(),
                json!({"nvidia.com/gpu": "56"})
            ),
            (
                "gpu-slicer-gpu-a100-single-ts-p4d.24xlarge".to_string(),
                json!({"nvidia.com/gpu": "560"})
            ),
        ]
    );
    let weights: Vec<_> = single.iter().map(|o| o["spec"]["weight"].clone()).collect();
    assert_ne!(weights[0], weights[1]);

    let ops = gpu_slicer::input::gpu_operator_configs(&repo("manifests/gpu-operator")).unwrap();
    let shipped = karpenter::overlays(&example_policy(), &shipped_pools(), &ops).unwrap();
    let ts = capacities(&shipped)
        .into_iter()
        .find(|(name, _)| name == "gpu-slicer-gpu-mig-ts-p4de.24xlarge")
        .unwrap();
    assert_eq!(
        ts.1,
        json!({"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "0", "nvidia.com/mig-1g.10gb.shared": "112"})
    );
}

#[test]
fn the_committed_single_strategy_overlays_are_current() {
    let overlays = karpenter::overlays(&single_policy(), &single_pools(), &single_ops()).unwrap();
    let yaml = karpenter::overlays_yaml(
        &overlays,
        "gpu-slicer karpenter overlays --policy manifests/examples/mig-single/policy.yaml --nodepools manifests/examples/mig-single --gpu-operator manifests/examples/mig-single",
    )
    .unwrap();
    let committed =
        std::fs::read_to_string(repo(&format!("{SINGLE_DIR}/nodeoverlays.yaml"))).unwrap();
    assert_eq!(
        yaml, committed,
        "{SINGLE_DIR}/nodeoverlays.yaml is stale: regenerate it (command in its first line)"
    );
}
