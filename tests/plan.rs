//! `gpu-slicer plan` on inventories with hand-computed answers, properties on generated inventories, the
//! emitted artifacts passing `policy check` together, and the HTML page in a real headless browser.

mod common;

use std::process::Command;

use gpu_slicer::catalog;
use gpu_slicer::check;
use gpu_slicer::gpu_operator::GpuOperatorConfigs;
use gpu_slicer::nodepool::NodePoolIndex;
use gpu_slicer::plan::{self, Inventory, Isolation, Layout};
use gpu_slicer::policy::Policy;
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
    let p = plan::plan(&inventory("  - {name: embedder, namespace: ml-inference, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge, gpusPerReplica: 1}}\n")).unwrap();
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
    let p = plan::plan(&inventory("  - {name: notebooks, namespace: dev, replicas: 8, gpuMemory: 4Gi, isolation: none, current: {instanceType: g6.xlarge}}\n")).unwrap();
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
    let p = plan::plan(&inventory("  - {name: llm, namespace: serving, replicas: 1, gpuMemory: 70Gi, isolation: memory, current: {instanceType: p5.48xlarge}}\n")).unwrap();
    assert_eq!(
        (p.workloads[0].instance_type, p.workloads[0].layout),
        ("p5.4xlarge", Layout::Whole(1))
    );
    assert_eq!(p.workloads[0].mode, "whole");
    assert!(close(p.after.usd_per_hour, 6.88));
    assert!(close(p.before.usd_per_hour, 55.04));
}

#[test]
fn workloads_that_pick_the_same_layout_share_nodes() {
    // b (7 replicas) and c (2 replicas) of 4Gi each pick g4dn.xlarge at timeslice-3: alone they need
    // 3 + 1 nodes, together ceil(9 / 3) = 3. a is the 56-replica MIG case.
    let p = plan::plan(&inventory(
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
    assert_eq!(
        json["after"]["nodes"][1],
        serde_json::json!({"instanceType": "p4de.24xlarge", "layout": "all-1g.10gb", "count": 1})
    );
    assert_eq!(
        json["workloads"][1],
        serde_json::json!({"name": "b", "namespace": "ml-b", "mode": "timeslice", "replicasPerGpu": 3, "instanceType": "g4dn.xlarge"})
    );
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
    let err = plan::plan(&inventory("  - {name: a, namespace: b, replicas: 1, gpuMemory: 1Gi, isolation: none, current: {instanceType: x1.large}}\n")).unwrap_err();
    assert!(
        err[0].contains("current.instanceType \"x1.large\""),
        "{err:?}"
    );
    let err = plan::plan(&inventory("  - {name: a, namespace: b, replicas: 1, gpuMemory: 900Gi, isolation: none, current: {instanceType: g6.xlarge}}\n")).unwrap_err();
    assert!(
        err[0].contains("no catalogued GPU holds gpuMemory 900Gi"),
        "{err:?}"
    );
}

#[test]
fn emitted_artifacts_pass_policy_check_together() {
    let p = plan::plan(&inventory(
        "  - {name: a, namespace: ml-a, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge}}\n  - {name: b, namespace: ml-b, replicas: 7, gpuMemory: 4Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n  - {name: llm, namespace: serving, replicas: 1, gpuMemory: 70Gi, isolation: memory, current: {instanceType: p5.48xlarge}}\n",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let emitted = plan::emit::emit(&p, dir.path()).unwrap();
    assert!(emitted.conflicts.is_empty());
    let policy = Policy::load(&dir.path().join("policy.yaml")).unwrap();
    let pools = NodePoolIndex::from_dir(&dir.path().join("karpenter")).unwrap();
    let ops = GpuOperatorConfigs::from_dir(&dir.path().join("gpu-operator")).unwrap();
    let report = check::check(&policy, "policy.yaml", Some(&pools), Some(&ops));
    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(pools.len(), 3);
    let overlays = std::fs::read_to_string(dir.path().join("karpenter/nodeoverlays.yaml")).unwrap();
    assert!(
        overlays.contains("nvidia.com/mig-1g.10gb: '56'"),
        "{overlays}"
    );
    assert!(
        overlays.contains("nvidia.com/gpu.shared: '3'"),
        "{overlays}"
    );
    // The emitted objects are valid against the CRDs and core types, like the shipped manifests.
    let v = common::validate::crd_validator("karpenter.sh_nodepools.yaml", "v1");
    for doc in gpu_slicer::yaml::documents(
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
    (1u64..120, prop::sample::select(vec!["1Gi", "3Gi", "4Gi", "8Gi", "12Gi", "20Gi", "30Gi", "40Gi", "70Gi"]), any::<bool>(), prop::sample::select(priced), 1u32..3)
        .prop_map(move |(replicas, mem, iso, current, gpr)| {
            format!(
                "  - {{name: w{i}, namespace: ns{i}, replicas: {replicas}, gpuMemory: {mem}, isolation: {}, current: {{instanceType: {current}, gpusPerReplica: {gpr}}}}}\n",
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
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plans_respect_geometry_isolation_and_never_cost_more(ws in (1usize..5).prop_flat_map(|n| (0..n).map(arb_workload).collect::<Vec<_>>())) {
        let inv = inventory(&ws.concat());
        prop_assume!(feasible_current(&inv));
        let Ok(p) = plan::plan(&inv) else { return Ok(()) };
        for (w, wp) in inv.workloads.iter().zip(&p.workloads) {
            let it = catalog::instance_type(wp.instance_type).unwrap();
            match wp.layout {
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
                Layout::Timeslice(n) => u64::from(n.min(inv.max_shared_replicas)),
                Layout::Whole(_) => 1,
            };
            prop_assert!(g.slots_per_node <= u64::from(it.gpus) * per_gpu_cap);
            prop_assert!(g.replicas <= g.count * g.slots_per_node);
            prop_assert!(g.replicas > (g.count - 1) * g.slots_per_node, "more nodes than needed");
        }
        prop_assert!(p.after.usd_per_hour <= p.before.usd_per_hour + 1e-6, "after {} > before {}", p.after.usd_per_hour, p.before.usd_per_hour);
    }
}

/// Finds a headless Chromium (Debian's `chromium`, installed by .ci/run).
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn the_html_page_renders_in_a_browser_with_the_json_totals() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inventory.yaml");
    std::fs::write(&inv, "apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n  workloads:\n  - {name: a, namespace: ml-a, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge}}\n  - {name: b, namespace: ml-b, replicas: 7, gpuMemory: 4Gi, isolation: none, current: {instanceType: g4dn.xlarge}}\n").unwrap();
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
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("<script"),
        "self-contained, no external assets"
    );

    let Some(browser) = chromium() else {
        panic!(
            "no headless Chromium found: install Debian's chromium (`apt-get install chromium`), as .ci/run does"
        );
    };
    let profile = tempfile::tempdir().unwrap();
    let rendered = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let stderr = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught"))),
        "console errors: {stderr}"
    );
    let dom = String::from_utf8_lossy(&rendered.stdout);
    let cell = |id: &str| -> String {
        let start = dom
            .find(&format!("id=\"{id}\">"))
            .unwrap_or_else(|| panic!("#{id} not rendered"))
            + id.len()
            + 6;
        dom[start..].split('<').next().unwrap().to_string()
    };
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
    use gpu_slicer::plan::cluster::workloads_from_objects;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_from_cluster_lists_workloads_with_kube() {
    use axum::routing::get;
    let deployments = serde_json::json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {"resourceVersion": "10"}, "items": [
        gpu_deployment("Deployment", "embedder", serde_json::json!({"replicas": 56, "selector": {"matchLabels": {"app": "e"}}}), serde_json::json!({"gpu-slicer.io/gpu-memory": "8Gi"}), serde_json::json!({"node.kubernetes.io/instance-type": "p4de.24xlarge"}), "1")]});
    let empty = |kind: &'static str, api: &'static str| serde_json::json!({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": "10"}, "items": []});
    let router = axum::Router::new()
        .route(
            "/apis/apps/v1/deployments",
            get(move || list_response(deployments.clone())),
        )
        .route(
            "/apis/apps/v1/statefulsets",
            get(move || list_response(empty("StatefulSetList", "apps/v1"))),
        )
        .route(
            "/apis/batch/v1/jobs",
            get(move || list_response(empty("JobList", "batch/v1"))),
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
    assert_eq!(json["workloads"][0]["name"], "deployment-embedder");
    assert_eq!(json["workloads"][0]["profile"], "1g.10gb");
    assert!(close(
        json["after"]["usdPerHour"].as_f64().unwrap(),
        27.44705
    ));
}
