//! The DRA backend: whole-GPU requests become ResourceClaims from gpu-slicer's templates, through the
//! engine and `mutate`; the printed templates and DeviceClasses and the mutated pods validate as
//! Kubernetes 1.36 objects; `policy check` and `karpenter overlays` know DRA pools.

mod common;

use common::validate::roundtrip;
use common::*;
use gpu_slicer_core::audit::Outcome;
use gpu_slicer_core::check;
use gpu_slicer_core::dra;
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::karpenter;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};

const DIR: &str = "manifests/examples/dra";

fn dra_policy() -> Policy {
    gpu_slicer::policy_source::load_file(&repo(&format!("{DIR}/policy.yaml"))).unwrap()
}

fn dra_pools() -> NodePoolIndex {
    gpu_slicer::input::nodepools(&repo(DIR)).unwrap()
}

/// The engine on `pod` in namespace `ns` under the DRA example's policy and NodePools.
fn in_dra(pod: &Value, ns: &str) -> (gpu_slicer_core::engine::Decision, Value) {
    run(pod, ns, &labels(&[]), &dra_policy(), &dra_pools())
}

/// The engine under the shipped (device-plugin) policy and NodePools.
fn in_shipped(pod: &Value, ns: &str) -> (gpu_slicer_core::engine::Decision, Value) {
    run(pod, ns, &labels(&[]), &example_policy(), &shipped_pools())
}

/// A Pod validated as k8s-openapi's v1.36 type: no field it does not know.
fn assert_valid_pod(pod: &Value) {
    let dropped = roundtrip::<k8s_openapi::api::core::v1::Pod>(pod).expect("a v1.36 Pod");
    assert!(dropped.is_empty(), "unknown fields {dropped:?}");
}

#[test]
fn whole_gpu_requests_become_claims_from_the_rules_template() {
    let rev = review("ml-inference-llm-server-84f7f4dd45-create");
    let pod = &rev["request"]["object"];
    let (d, out) = in_dra(pod, "ml-inference-dra");
    assert!(d.allowed(), "{:?}", d.denied);
    let vllm = &out["spec"]["containers"][0];
    assert!(vllm["resources"]["limits"].get("nvidia.com/gpu").is_none());
    assert!(
        vllm["resources"]["requests"]
            .get("nvidia.com/gpu")
            .is_none()
    );
    assert_eq!(
        vllm["resources"]["claims"],
        json!([{"name": "gpu-slicer-0"}])
    );
    assert_eq!(
        out["spec"]["resourceClaims"],
        json!([{"name": "gpu-slicer-0", "resourceClaimTemplateName": "gpu-slicer-mig-1g.10gb"}])
    );
    assert_eq!(
        out["spec"]["nodeSelector"]["karpenter.sh/nodepool"],
        "gpu-dra-mig"
    );
    // The sidecar, without GPUs, is untouched.
    assert_eq!(out["spec"]["containers"][1], pod["spec"]["containers"][1]);
    let audit = d.audit.unwrap();
    assert_eq!(audit.outcome, Outcome::Rewritten);
    assert_eq!(
        audit.changes[0].to,
        "claim gpu-slicer-mig-1g.10gb (mig 1g.10gb, else 2g.20gb, DRA)"
    );
    assert!(
        d.warnings.iter().any(|w| w
            .contains("vllm: nvidia.com/gpu 1 -> claim gpu-slicer-mig-1g.10gb (mig 1g.10gb, else 2g.20gb, DRA)")),
        "{:?}",
        d.warnings
    );
    assert_valid_pod(&out);

    // Reinvocation with our own output: nothing more to do.
    let (again, same) = in_dra(&out, "ml-inference-dra");
    assert!(again.allowed(), "{:?}", again.denied);
    assert!(again.patch.is_empty(), "{}", ops(&again));
    assert_eq!(same, out);
    assert_eq!(again.audit.unwrap().outcome, Outcome::Unchanged);
}

#[test]
fn sizing_annotations_pick_the_template_and_counts_name_it() {
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["metadata"]["annotations"] = json!({"gpu-slicer.io/gpu-memory": "18Gi"});
    let (d, out) = in_dra(&p, "ml-inference-dra");
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(
        out["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
        "gpu-slicer-mig-2g.20gb"
    );
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "3")], true)]);
    let (d, out) = in_dra(&p, "ml-training-dra");
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(
        out["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
        "gpu-slicer-gpu-x3"
    );
    assert!(
        out["spec"]["containers"][0]["resources"]["limits"]
            .get("nvidia.com/gpu")
            .is_none()
    );
    assert_valid_pod(&out);
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "5")], true)]);
    let (d, _) = in_dra(&p, "ml-training-dra");
    assert!(d.denied.unwrap().contains("allows at most 4 per container"));
}

#[test]
fn init_containers_reuse_the_app_containers_claim_of_the_same_template() {
    let mut p = pod(vec![
        container("a", &[("nvidia.com/gpu", "1")], false),
        container("b", &[("nvidia.com/gpu", "1")], false),
    ]);
    p["spec"]["initContainers"] = json!([
        container("warmup", &[("nvidia.com/gpu", "1")], false),
        container("big", &[("nvidia.com/gpu", "2")], true),
    ]);
    let (d, out) = in_dra(&p, "ml-training-dra");
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(
        out["spec"]["resourceClaims"],
        json!([
            {"name": "gpu-slicer-0", "resourceClaimTemplateName": "gpu-slicer-gpu"},
            {"name": "gpu-slicer-1", "resourceClaimTemplateName": "gpu-slicer-gpu"},
            {"name": "gpu-slicer-init-1", "resourceClaimTemplateName": "gpu-slicer-gpu-x2"},
        ])
    );
    assert_eq!(
        out["spec"]["initContainers"][0]["resources"]["claims"],
        json!([{"name": "gpu-slicer-0"}])
    );
    assert_eq!(
        out["spec"]["initContainers"][1]["resources"]["claims"],
        json!([{"name": "gpu-slicer-init-1"}])
    );
    assert_eq!(
        out["spec"]["containers"][1]["resources"]["claims"],
        json!([{"name": "gpu-slicer-1"}])
    );
    assert_eq!(resource_keys(&out), vec!["cpu", "memory"]);
    assert_valid_pod(&out);
    let (again, _) = in_dra(&out, "ml-training-dra");
    assert!(again.patch.is_empty());
}

#[test]
fn own_claims_are_enforced_never_rewritten() {
    // A pod that names one of the rule's templates itself: allowed, routed, nothing renamed.
    let mut p = pod(vec![
        json!({"name": "main", "image": "x", "resources": {"claims": [{"name": "g"}]}}),
    ]);
    p["spec"]["resourceClaims"] =
        json!([{"name": "g", "resourceClaimTemplateName": "gpu-slicer-mig-3g.40gb"}]);
    let (d, out) = in_dra(&p, "ml-inference-dra");
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(out["spec"]["resourceClaims"], p["spec"]["resourceClaims"]);
    assert_eq!(d.audit.unwrap().outcome, Outcome::Routed);
    // A template the rule does not offer: denied, saying what is offered.
    p["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] = json!("gpu-slicer-mig-7g.80gb");
    let (d, _) = in_dra(&p, "ml-inference-dra");
    let msg = d.denied.unwrap();
    assert!(
        msg.contains("claim template gpu-slicer-mig-7g.80gb is not offered"),
        "{msg}"
    );
    assert!(
        msg.contains("gpu-slicer-mig-1g.10gb, gpu-slicer-mig-2g.20gb, gpu-slicer-mig-3g.40gb"),
        "{msg}"
    );
    // The same in a device-plugin namespace.
    p["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] = json!("gpu-slicer-mig-1g.10gb");
    let (d, _) = in_shipped(&p, "ml-inference");
    assert!(d.denied.unwrap().contains("it uses the device plugin"));
    // A claim of the pod's own next to nvidia.com/gpu: a conflict that says what to change (a
    // claim known to ask for no GPU); unread (offline), it is refused as unchecked first.
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["spec"]["resourceClaims"] =
        json!([{"name": "efa", "resourceClaimTemplateName": "efa-template"}]);
    let (d, _) = in_dra(&p, "ml-inference-dra");
    assert!(d.denied.unwrap().contains("could not be checked for GPUs"));
    let mut facts = gpu_slicer_core::dra::claims::ClaimFacts::default();
    facts.insert("efa", gpu_slicer_core::dra::claims::ClaimVerdict::NotGpu);
    let typed: gpu_slicer_core::pod::Pod = serde_json::from_value(p.clone()).unwrap();
    let d = gpu_slicer_core::engine::decide_with_claims(
        &typed,
        gpu_slicer_core::engine::Namespace {
            name: "ml-inference-dra",
            labels: &labels(&[]),
        },
        &facts,
        &dra_policy(),
        &dra_pools(),
    );
    let msg = d.denied.unwrap();
    assert!(
        msg.contains("the pod has its own ResourceClaim \"efa\" and also asks for nvidia.com/gpu"),
        "{msg}"
    );
    // Our claim name already on the pod next to nvidia.com/gpu: a denial, not a duplicate name.
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["spec"]["resourceClaims"] =
        json!([{"name": "gpu-slicer-0", "resourceClaimTemplateName": "gpu-slicer-mig-1g.10gb"}]);
    let (d, _) = in_dra(&p, "ml-inference-dra");
    assert!(
        d.denied
            .unwrap_or_default()
            .contains("the pod already has a claim named \"gpu-slicer-0\""),
    );
    // Asking for a MIG resource directly in a DRA namespace: no device plugin advertises it there.
    let p = pod(vec![container(
        "main",
        &[("nvidia.com/mig-1g.10gb", "1")],
        false,
    )]);
    let (d, _) = in_dra(&p, "ml-inference-dra");
    assert!(
        d.denied
            .unwrap()
            .contains("claims from templates gpu-slicer-mig-1g.10gb")
    );
}

#[test]
fn time_slicing_is_a_consumable_share_and_mps_or_time_sliced_mig_are_denied() {
    let policy = Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  defaultBackend: dra\n  dra: {consumableShares: \"4\"}\n  rules:\n  - {name: ts, namespaces: [ts], action: timeslice}\n  - {name: mps, namespaces: [mps], action: mps}\n  - {name: tsmig, namespaces: [tsmig], action: mig, mig: {profile: 1g.10gb, timeSlicing: {renameByDefault: true}}}\n  - {name: plain, namespaces: [plain], action: mig, backend: devicePlugin, mig: {profile: 1g.10gb}}\n",
        "p.yaml",
    )
    .unwrap();
    // Time-slicing across pods: each pod's claim takes one consumable share of a GPU.
    let (d, out) = run(
        &one_gpu(),
        "ts",
        &labels(&[]),
        &policy,
        &NodePoolIndex::default(),
    );
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(
        out["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
        "gpu-slicer-gpu-shared"
    );
    assert_valid_pod(&out);
    let t = &dra::templates(&policy.rules[0])[0].object("ts", "ts");
    assert_eq!(
        t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["capacity"]["requests"]["shares"],
        "1"
    );
    roundtrip::<k8s_openapi::api::resource::v1::ResourceClaimTemplate>(t).unwrap();
    let p = pod(vec![container("main", &[("nvidia.com/gpu", "2")], false)]);
    let (d, _) = run(&p, "ts", &labels(&[]), &policy, &NodePoolIndex::default());
    assert!(d.denied.unwrap().contains("at most 1 per container"));
    for (ns, why) in [
        (
            "mps",
            "MPS across pods needs one ResourceClaim that all of them reference",
        ),
        ("tsmig", "time-slicing on MIG devices as having no effect"),
    ] {
        let (d, _) = run(
            &one_gpu(),
            ns,
            &labels(&[]),
            &policy,
            &NodePoolIndex::default(),
        );
        let msg = d.denied.unwrap_or_default();
        assert!(msg.contains(why), "{ns}: {msg}");
        assert!(msg.contains("use backend devicePlugin"), "{ns}: {msg}");
    }
    // spec.defaultBackend applies; a rule's backend overrides it.
    let (d, out) = run(
        &one_gpu(),
        "plain",
        &labels(&[]),
        &policy,
        &NodePoolIndex::default(),
    );
    assert!(d.allowed());
    assert_eq!(
        resource_keys(&out),
        vec!["cpu", "memory", "nvidia.com/mig-1g.10gb"]
    );
    let e = Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: a, action: mig, backend: dra, mig: {profile: 1g.10gb, strategy: single}}\n",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("spec.rules[0].mig.strategy"), "{e}");
    // A device-plugin timeslice rule still needs its resource name.
    let e = Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: a, action: timeslice}\n",
        "p.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs shared.resourceName"), "{e}");
}

fn one_gpu() -> Value {
    pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)])
}

#[test]
fn printed_templates_and_device_classes_are_valid_v1_36_objects() {
    let out = gpu_slicer_cli(&[
        "dra",
        "templates",
        "--policy",
        "manifests/examples/dra/policy.yaml",
        "--namespace",
        "ml-training-dra",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = gpu_slicer_core::yaml::documents(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(docs.len(), 4, "counts 1..=maxPerContainer");
    for d in &docs {
        let dropped =
            roundtrip::<k8s_openapi::api::resource::v1::ResourceClaimTemplate>(d).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(d["metadata"]["namespace"], "ml-training-dra");
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "gpu-slicer"
        );
    }
    assert_eq!(
        docs[3]["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"],
        4
    );
    assert_eq!(
        docs[0]["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"],
        "gpu.nvidia.com"
    );

    // Every template the engine names is one `dra templates` prints.
    let rule = &dra_policy().rules[0];
    let names: Vec<_> = dra::templates(rule).into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        vec![
            "gpu-slicer-mig-1g.10gb",
            "gpu-slicer-mig-2g.20gb",
            "gpu-slicer-mig-3g.40gb"
        ]
    );
    let out = gpu_slicer_cli(&[
        "dra",
        "templates",
        "--policy",
        "manifests/examples/dra/policy.yaml",
        "--namespace",
        "elsewhere",
    ]);
    assert_eq!(out.status.code(), Some(1));

    let out = gpu_slicer_cli(&[
        "dra",
        "device-classes",
        "--policy",
        "manifests/policy/policy.yaml",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classes = gpu_slicer_core::yaml::documents(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let mapped: Vec<_> = classes
        .iter()
        .map(|c| {
            c["spec"]["extendedResourceName"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        mapped,
        vec![
            "nvidia.com/mig-1g.10gb",
            "nvidia.com/mig-2g.20gb",
            "nvidia.com/mig-3g.40gb"
        ]
    );
    for c in &classes {
        let dropped = roundtrip::<k8s_openapi::api::resource::v1::DeviceClass>(c).unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
    }
    // The shared resources are named as not mapped, with the reason.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not mapped: nvidia.com/mig-1g.10gb.shared"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not mapped: nvidia.com/gpu.shared"),
        "{stderr}"
    );
}

#[test]
fn mutate_shows_the_claim() {
    let out = gpu_slicer_cli(&[
        "mutate",
        "--namespace",
        "ml-inference-dra",
        "--policy",
        "manifests/examples/dra/policy.yaml",
        "--nodepools",
        DIR,
        "-f",
        "docs/examples/inference-pod.yaml",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: Value = serde_norway::from_slice(&out.stdout).unwrap();
    assert_eq!(
        pod["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
        "gpu-slicer-mig-1g.10gb"
    );
    assert_valid_pod(&pod);
    assert!(String::from_utf8_lossy(&out.stderr).contains("(mig 1g.10gb, else 2g.20gb, DRA)"));
}

#[test]
fn policy_check_knows_dra_pools_and_overlays_skip_them() {
    let classes = ["gpu.nvidia.com", "mig.nvidia.com"]
        .map(String::from)
        .into_iter()
        .collect();
    let report = check::check_with_device_classes(
        &dra_policy(),
        "policy.yaml",
        Some(&dra_pools()),
        Some(&GpuOperatorConfigs::default()),
        Some(&classes),
    );
    assert_eq!(report.errors, Vec::<String>::new());
    // No NodeOverlay for DRA pools: Karpenter reads the driver's devices from its own metadata.
    assert!(
        karpenter::overlays(&dra_policy(), &dra_pools(), &GpuOperatorConfigs::default())
            .unwrap()
            .is_empty()
    );

    // The driver's classes missing; the device plugin left on; a device-plugin rule on the same pool.
    let only_gpu = ["gpu.nvidia.com"].map(String::from).into_iter().collect();
    let text = std::fs::read_to_string(repo(&format!("{DIR}/policy.yaml"))).unwrap()
        + "    - {name: also-plugin, namespaces: [x], action: mig, mig: {profile: 1g.10gb}, nodePool: gpu-dra-mig}\n";
    let policy = Policy::parse(&text, "policy.yaml").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pools = std::fs::read_to_string(repo(&format!("{DIR}/nodepools.yaml")))
        .unwrap()
        .replacen(
            "        nvidia.com/gpu.deploy.device-plugin: \"false\"\n        nvidia.com/mig.config",
            "        nvidia.com/mig.config",
            1,
        );
    std::fs::write(tmp.path().join("np.yaml"), pools).unwrap();
    let pools = gpu_slicer::input::nodepools(tmp.path()).unwrap();
    let errs = check::check_with_device_classes(
        &policy,
        "policy.yaml",
        Some(&pools),
        None,
        Some(&only_gpu),
    )
    .errors;
    let has = |s: &str| errs.iter().any(|e| e.contains(s));
    assert!(
        has("DeviceClass mig.nvidia.com is not among the DeviceClasses given"),
        "{errs:?}"
    );
    assert!(
        has("set the template label nvidia.com/gpu.deploy.device-plugin: \"false\""),
        "{errs:?}"
    );
    assert!(
        has("is also the pool of device-plugin rule spec.rules[2] (also-plugin)"),
        "{errs:?}"
    );
    let out = gpu_slicer_cli(&[
        "policy",
        "check",
        "manifests/examples/dra/policy.yaml",
        "--nodepools",
        DIR,
        "--device-classes",
        DIR,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
