//! Engine tests on captured and hand-built pods: exact patches, the patched objects, denials.

mod common;

use common::*;
use gpu_slicer_core::audit::Outcome;
use gpu_slicer_core::nodepool::NodePoolIndex;
use serde_json::json;

fn none() -> NodePoolIndex {
    NodePoolIndex::default()
}

#[test]
fn deployment_pod_gets_a_mig_slice_routing_and_an_annotation_exact_patch() {
    let rev = review("ml-inference-llm-server-84f7f4dd45-create");
    let pod = &rev["request"]["object"];
    let (d, out) = run(
        pod,
        "ml-inference",
        &labels(&[]),
        &example_policy(),
        &shipped_pools(),
    );
    assert!(d.allowed());
    let summary = "rule=inference-mig action=mig; vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb; nodePool=gpu-mig";
    assert_eq!(
        ops(&d),
        json!([
            {"op": "remove", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu"},
            {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1mig-1g.10gb", "value": "1"},
            {"op": "remove", "path": "/spec/containers/0/resources/requests/nvidia.com~1gpu"},
            {"op": "add", "path": "/spec/containers/0/resources/requests/nvidia.com~1mig-1g.10gb", "value": "1"},
            {"op": "add", "path": "/spec/nodeSelector", "value": {"karpenter.sh/nodepool": "gpu-mig", "nvidia.com/mig.config": "all-balanced"}},
            {"op": "add", "path": "/spec/tolerations/-", "value": {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}},
            {"op": "add", "path": "/metadata/annotations", "value": {"gpu-slicer.io/rewritten": summary, "gpu-slicer.io/gpu-equivalents": "0.142857", "gpu-slicer.io/requested-gpus": "1"}}
        ])
    );
    // The sidecar is untouched; the rest of the pod too.
    assert_eq!(out["spec"]["containers"][1], pod["spec"]["containers"][1]);
    assert_eq!(out["spec"]["volumes"], pod["spec"]["volumes"]);
    assert_eq!(out["spec"]["tolerations"].as_array().unwrap().len(), 3);
    let audit = d.audit.unwrap();
    assert_eq!(audit.outcome, Outcome::Rewritten);
    assert_eq!(audit.summary(), summary);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb"))
    );
    assert!(d.warnings.iter().all(|w| w.len() <= 120));
}

#[test]
fn limits_only_pods_keep_limits_only() {
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], true)]);
    let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    let res = &out["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"]["nvidia.com/mig-1g.10gb"], "1");
    assert!(res["requests"].get("nvidia.com/mig-1g.10gb").is_none());
    assert_eq!(
        resource_keys(&out),
        vec!["cpu", "memory", "nvidia.com/mig-1g.10gb"]
    );
}

#[test]
fn init_containers_are_rewritten_at_their_own_paths() {
    let rev = review("ml-training-finetune-create");
    let (d, out) = run(
        &rev["request"]["object"],
        "ml-training",
        &labels(&[]),
        &contract_policy(),
        &none(),
    );
    assert!(d.allowed());
    let paths: Vec<String> = ops(&d)
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_string())
        .collect();
    assert!(
        paths.contains(
            &"/spec/initContainers/0/resources/limits/nvidia.com~1mig-1g.10gb".to_string()
        )
    );
    assert!(
        paths.contains(&"/spec/containers/0/resources/limits/nvidia.com~1mig-1g.10gb".to_string())
    );
    assert!(!resource_keys(&out).contains(&"nvidia.com/gpu".to_string()));
    let changes: Vec<_> = d
        .audit
        .unwrap()
        .changes
        .into_iter()
        .map(|c| c.container)
        .collect();
    assert_eq!(changes, vec!["init:fetch-weights", "trainer"]);
}

#[test]
fn gpu_memory_picks_the_smallest_allowed_profile_that_holds_it() {
    // 20Gi does not fit 2g.20gb (19968 MiB on A100-80GB), so 3g.40gb; and the existing toleration stays single.
    let rev = review("ml-notebooks-notebook-0-create");
    let (d, out) = run(
        &rev["request"]["object"],
        "ml-notebooks",
        &labels(&[]),
        &contract_policy(),
        &none(),
    );
    assert!(d.allowed());
    assert!(resource_keys(&out).contains(&"nvidia.com/mig-3g.40gb".to_string()));
    let gpu_tolerations = out["spec"]["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] == "nvidia.com/gpu")
        .count();
    assert_eq!(gpu_tolerations, 1);
    // The pod already had annotations: the record is added into them.
    assert!(out["metadata"]["annotations"]["gpu-slicer.io/gpu-memory"] == "20Gi");
    assert!(
        out["metadata"]["annotations"]["gpu-slicer.io/rewritten"]
            .as_str()
            .unwrap()
            .contains("mig-3g.40gb")
    );

    for (ask, want) in [
        ("4Gi", "1g.10gb"),
        ("9Gi", "1g.10gb"),
        ("15Gi", "2g.20gb"),
        ("30Gi", "3g.40gb"),
    ] {
        let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
        p["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": ask});
        let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
        assert!(d.allowed(), "{ask}");
        assert!(
            resource_keys(&out).contains(&format!("nvidia.com/mig-{want}")),
            "{ask} -> {want}"
        );
    }
    for bad in ["60Gi", "lots"] {
        let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
        p["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": bad});
        let (d, _) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
        assert!(
            d.denied
                .as_deref()
                .unwrap()
                .contains("gpu-slicer.io/gpu-memory"),
            "{bad}: {:?}",
            d.denied
        );
    }
}

#[test]
fn profile_annotation_must_be_allowed() {
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["metadata"]["annotations"] = json!({"gpu-slicer.io/profile": "3g.40gb"});
    let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    assert!(resource_keys(&out).contains(&"nvidia.com/mig-3g.40gb".to_string()));

    p["metadata"]["annotations"] = json!({"gpu-slicer.io/profile": "7g.80gb"});
    let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    assert_eq!(
        d.denied.as_deref(),
        Some(
            "gpu-slicer: gpu-slicer.io/profile \"7g.80gb\" is not allowed in namespace \"team-a\"; rule team-a-mig allows 1g.10gb, 2g.20gb, 3g.40gb"
        )
    );
    assert!(d.patch.is_empty());
    assert_eq!(out, p);
    assert_eq!(d.audit.unwrap().outcome, Outcome::Denied);
}

#[test]
fn counts_above_the_limit_are_denied_with_a_hint() {
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "2")], false)]);
    let (d, _) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    let msg = d.denied.unwrap();
    assert!(
        msg.contains("asks for 2 nvidia.com/gpu; rule team-a-mig allows at most 1 per container"),
        "{msg}"
    );
    assert!(msg.contains("gpu-slicer.io/profile"), "{msg}");

    let (d, _) = run(&p, "notebooks", &labels(&[]), &contract_policy(), &none());
    assert!(
        d.denied
            .unwrap()
            .contains("device plugin rejects more than one")
    );

    // exclusive keeps up to its maxPerContainer
    let p4 = pod(vec![container("train", &[("nvidia.com/gpu", "4")], false)]);
    let (d, out) = run(&p4, "training", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    assert_eq!(
        out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        "4"
    );
    assert_eq!(
        out["spec"]["nodeSelector"]["karpenter.sh/nodepool"],
        "gpu-p5-whole"
    );
    assert_eq!(d.audit.unwrap().outcome, Outcome::Routed);
    let p9 = pod(vec![container("train", &[("nvidia.com/gpu", "9")], false)]);
    assert!(
        run(&p9, "training", &labels(&[]), &contract_policy(), &none())
            .0
            .denied
            .is_some()
    );
}

#[test]
fn several_mig_devices_are_allowed_where_the_limit_says_with_a_warning() {
    let policy = gpu_slicer_core::policy::Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - name: big\n    action: mig\n    mig: {profile: 1g.10gb}\n    maxPerContainer: 2\n",
        "inline",
    )
    .unwrap();
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "2")], false)]);
    let (d, out) = run(&p, "any", &labels(&[]), &policy, &none());
    assert!(d.allowed());
    assert_eq!(
        out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"],
        "2"
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("a CUDA process uses only one")),
        "{:?}",
        d.warnings
    );
}

#[test]
fn shared_actions_rename_to_the_rules_resource() {
    for (ns, pool) in [("notebooks", "gpu-l4-shared"), ("serving", "gpu-l40s-mps")] {
        let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
        let (d, out) = run(&p, ns, &labels(&[]), &contract_policy(), &none());
        assert!(d.allowed());
        assert_eq!(
            resource_keys(&out),
            vec!["cpu", "memory", "nvidia.com/gpu.shared"]
        );
        assert_eq!(
            out["spec"]["nodeSelector"],
            json!({"karpenter.sh/nodepool": pool})
        );
    }
}

#[test]
fn slices_asked_for_directly_are_checked_against_the_rule() {
    let ok = pod(vec![container(
        "main",
        &[("nvidia.com/mig-2g.20gb", "1")],
        false,
    )]);
    let (d, out) = run(&ok, "team-a", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    assert_eq!(d.audit.as_ref().unwrap().outcome, Outcome::Routed);
    assert_eq!(
        out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-2g.20gb"],
        "1"
    );

    let bad = pod(vec![container(
        "main",
        &[("nvidia.com/mig-7g.80gb", "1")],
        false,
    )]);
    let msg = run(&bad, "team-a", &labels(&[]), &contract_policy(), &none())
        .0
        .denied
        .unwrap();
    assert!(
        msg.contains("asks for nvidia.com/mig-7g.80gb, which rule team-a-mig does not offer"),
        "{msg}"
    );

    let shared_in_mig = pod(vec![container(
        "main",
        &[("nvidia.com/gpu.shared", "1")],
        false,
    )]);
    assert!(
        run(
            &shared_in_mig,
            "team-a",
            &labels(&[]),
            &contract_policy(),
            &none()
        )
        .0
        .denied
        .is_some()
    );
    let mig_in_timeslice = pod(vec![container(
        "main",
        &[("nvidia.com/mig-1g.10gb", "1")],
        false,
    )]);
    assert!(
        run(
            &mig_in_timeslice,
            "notebooks",
            &labels(&[]),
            &contract_policy(),
            &none()
        )
        .0
        .denied
        .is_some()
    );
    let both = pod(vec![container(
        "main",
        &[("nvidia.com/gpu", "1"), ("nvidia.com/mig-1g.10gb", "1")],
        false,
    )]);
    let msg = run(&both, "team-a", &labels(&[]), &contract_policy(), &none())
        .0
        .denied
        .unwrap();
    assert!(
        msg.contains("asks for both nvidia.com/gpu and nvidia.com/mig-1g.10gb"),
        "{msg}"
    );
}

#[test]
fn selectors_conflict_or_merge_never_overwrite() {
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["spec"]["nodeSelector"] = json!({"karpenter.sh/nodepool": "other"});
    let msg = run(&p, "team-a", &labels(&[]), &contract_policy(), &none())
        .0
        .denied
        .unwrap();
    assert!(
        msg.contains("nodeSelector karpenter.sh/nodepool=other conflicts with rule team-a-mig"),
        "{msg}"
    );

    p["spec"]["nodeSelector"] = json!({"topology.kubernetes.io/zone": "us-east-1a", "karpenter.sh/nodepool": "gpu-h100-mig"});
    let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    assert_eq!(
        out["spec"]["nodeSelector"],
        json!({"topology.kubernetes.io/zone": "us-east-1a", "karpenter.sh/nodepool": "gpu-h100-mig", "nvidia.com/mig.config": "all-1g.10gb"})
    );
    let selector_ops: Vec<_> = ops(&d)
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| {
            o["path"]
                .as_str()
                .unwrap()
                .starts_with("/spec/nodeSelector")
        })
        .cloned()
        .collect();
    assert_eq!(
        selector_ops,
        vec![
            json!({"op": "add", "path": "/spec/nodeSelector/nvidia.com~1mig.config", "value": "all-1g.10gb"})
        ]
    );
}

#[test]
fn nodepool_taints_become_tolerations_and_labels_become_selectors() {
    let pools = shipped_pools();
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let (d, out) = run(&p, "ml-notebooks", &labels(&[]), &example_policy(), &pools);
    assert!(d.allowed());
    assert_eq!(
        out["spec"]["nodeSelector"],
        json!({"karpenter.sh/nodepool": "gpu-timeslice", "nvidia.com/device-plugin.config": "timeslice-4"})
    );
    // A pod without tolerations gets the list created.
    assert_eq!(
        ops(&d)
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["path"] == "/spec/tolerations")
            .count(),
        1
    );
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    );

    // A taint with a value needs an Equal toleration.
    let mut pool = pools.get("gpu-timeslice").unwrap().clone();
    pool.taints = vec![gpu_slicer_core::nodepool::Taint {
        key: "team".into(),
        value: Some("ml".into()),
        effect: "NoSchedule".into(),
    }];
    let pools = NodePoolIndex::new([pool]);
    let (_, out) = run(&p, "ml-notebooks", &labels(&[]), &example_policy(), &pools);
    assert_eq!(
        out["spec"]["tolerations"],
        json!([{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}])
    );
}

#[test]
fn a_rule_selector_contradicting_its_nodepool_is_a_clear_denial() {
    let policy = gpu_slicer_core::policy::Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - name: r\n    action: mig\n    mig: {profile: 1g.10gb}\n    nodePool: gpu-mig\n    nodeSelector: {nvidia.com/mig.config: all-1g.10gb}\n",
        "inline",
    )
    .unwrap();
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let msg = run(&p, "x", &labels(&[]), &policy, &shipped_pools())
        .0
        .denied
        .unwrap();
    assert!(msg.contains("policy inconsistency"), "{msg}");
    // Both sides are named: the NodePool's template label first, then the rule's selector.
    assert!(
        msg.contains("NodePool gpu-mig template label says nvidia.com/mig.config=")
            && msg.contains("but rule r nodeSelector says nvidia.com/mig.config=all-1g.10gb"),
        "{msg}"
    );
}

#[test]
fn opting_out_is_honoured_only_where_allowed() {
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["metadata"]["annotations"] = json!({"gpu-slicer.io/exclusive": "true"});
    let (d, out) = run(&p, "team-b", &labels(&[]), &contract_policy(), &none());
    // The pod keeps its whole GPU; only what it holds is recorded on it.
    assert!(d.allowed());
    let mut expected = p.clone();
    expected["metadata"]["annotations"]["gpu-slicer.io/gpu-equivalents"] = json!("1");
    expected["metadata"]["annotations"]["gpu-slicer.io/requested-gpus"] = json!("1");
    assert_eq!(out, expected);
    assert_eq!(d.audit.unwrap().outcome, Outcome::OptedOut);
    assert_eq!(d.warnings, vec!["gpu-slicer: whole GPUs kept (opt-out, rule team-b-optout); not routed to slice NodePool gpu-h100-mig".to_string()]);

    let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    assert!(resource_keys(&out).contains(&"nvidia.com/mig-1g.10gb".to_string()));
    assert!(
        d.warnings
            .iter()
            .any(|w| w.contains("gpu-slicer.io/exclusive ignored"))
    );
}

#[test]
fn deny_rules_ban_gpus_not_pods() {
    let gpu = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let msg = run(&gpu, "sandbox", &labels(&[]), &contract_policy(), &none())
        .0
        .denied
        .unwrap();
    assert!(
        msg.contains("namespace \"sandbox\" may not use GPUs (policy rule \"sandbox\")"),
        "{msg}"
    );
    let cpu = pod(vec![container("web", &[], false)]);
    let (d, _) = run(&cpu, "sandbox", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed() && d.patch.is_empty() && d.audit.is_none());
    // a zero count asks for nothing
    let zero = pod(vec![container("web", &[("nvidia.com/gpu", "0")], false)]);
    assert!(
        run(&zero, "sandbox", &labels(&[]), &contract_policy(), &none())
            .0
            .allowed()
    );
}

#[test]
fn default_action_applies_to_unmatched_namespaces() {
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let (d, _) = run(&p, "default", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed() && d.patch.is_empty());
    assert_eq!(d.audit.unwrap().outcome, Outcome::Unchanged);

    let strict = gpu_slicer_core::policy::Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  defaultAction: deny\n  rules: []\n",
        "inline",
    )
    .unwrap();
    let msg = run(&p, "default", &labels(&[]), &strict, &none())
        .0
        .denied
        .unwrap();
    assert!(msg.contains("defaultAction is deny"), "{msg}");
}

#[test]
fn namespace_labels_select_rules() {
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let (d, out) = run(
        &p,
        "research",
        &labels(&[("gpu-sharing", "mig")]),
        &example_policy(),
        &none(),
    );
    assert_eq!(d.audit.unwrap().rule.as_deref(), Some("labelled-mig"));
    assert!(resource_keys(&out).contains(&"nvidia.com/mig-1g.10gb".to_string()));
    let (d, _) = run(&p, "research", &labels(&[]), &example_policy(), &none());
    assert_eq!(d.audit.unwrap().rule, None);
}

#[test]
fn non_integer_counts_are_denied_not_guessed() {
    let p = pod(vec![container(
        "main",
        &[("nvidia.com/gpu", "500m")],
        false,
    )]);
    let msg = run(&p, "team-a", &labels(&[]), &contract_policy(), &none())
        .0
        .denied
        .unwrap();
    assert!(msg.contains("not a whole number"), "{msg}");
}

#[test]
fn every_captured_review_is_idempotent_under_every_policy() {
    let fixtures = [
        ("ml-inference-llm-server-84f7f4dd45-create", "ml-inference"),
        ("ml-inference-embedder-0-create", "ml-inference"),
        ("ml-inference-cpu-only-create", "ml-inference"),
        ("ml-notebooks-notebook-0-create", "ml-notebooks"),
        ("ml-training-finetune-create", "ml-training"),
    ];
    for (policy, pools) in [
        (contract_policy(), none()),
        (example_policy(), shipped_pools()),
        (example_policy(), none()),
    ] {
        for (name, ns) in fixtures {
            let rev = review(name);
            let (d, out) = run(&rev["request"]["object"], ns, &labels(&[]), &policy, &pools);
            assert!(d.allowed(), "{name}: {:?}", d.denied);
            let (again, out2) = run(&out, ns, &labels(&[]), &policy, &pools);
            assert!(
                again.allowed(),
                "{name}: second pass denied: {:?}",
                again.denied
            );
            assert!(
                again.patch.is_empty(),
                "{name}: second pass patched: {:?}",
                ops(&again)
            );
            assert_eq!(out, out2);
        }
    }
}

#[test]
fn unrenamed_shared_replicas_and_exclusive_sizing_say_what_they_are() {
    let policy = gpu_slicer_core::policy::Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: ts, namespaces: [ts], action: timeslice, shared: {resourceName: nvidia.com/gpu}, nodePool: p}\n  - {name: ex, namespaces: [ex], action: exclusive, nodePool: p}\n",
        "inline",
    )
    .unwrap();
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let (d, _) = run(&p, "ts", &labels(&[]), &policy, &none());
    assert!(
        d.warnings.contains(
            &"gpu-slicer: main: nvidia.com/gpu 1 is a time-sliced replica (rule ts)".to_string()
        ),
        "{:?}",
        d.warnings
    );
    let mut sized = p.clone();
    sized["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": "20Gi"});
    let (d, _) = run(&sized, "ex", &labels(&[]), &policy, &none());
    assert!(
        d.warnings.contains(
            &"gpu-slicer: gpu-slicer.io/gpu-memory ignored: the rule gives whole GPUs (rule ex)"
                .to_string()
        ),
        "{:?}",
        d.warnings
    );
}

#[test]
fn labels_are_needed_only_where_the_first_name_matching_rule_selects_on_them() {
    let policy = example_policy();
    // inference-mig (names only) comes first for ml-inference: its labels cannot change the outcome.
    assert!(!policy.needs_labels("ml-inference"));
    // research matches no name rule before labelled-mig (labels only).
    assert!(policy.needs_labels("research"));
}

#[test]
fn a_pod_without_metadata_gets_it_created() {
    // Found by fuzzing: `add /metadata/annotations` needs /metadata to exist.
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p.as_object_mut().unwrap().remove("metadata");
    let (d, out) = run(&p, "team-a", &labels(&[]), &contract_policy(), &none());
    assert!(d.allowed());
    assert!(out["metadata"]["annotations"]["gpu-slicer.io/rewritten"].is_string());
}
