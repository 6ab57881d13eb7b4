//! `gpu-slicer policy report`: offline on a directory of manifests (every workload kind), JSON, the
//! HTML page in headless Chromium, `--fail-on deny`, stdin, and the pure builder.

mod common;

use std::process::Command;

use common::*;
use gpu_slicer::report::{self, RowOutcome};
use serde_json::{Value, json};

const DIR: &str = "docs/examples/workloads";

/// `(namespace, workload, replicas, rule, outcome)` of every row.
fn rows(json: &Value) -> Vec<(String, String, Value, String, String)> {
    json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["namespace"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    r["kind"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                ),
                r["replicas"].clone(),
                r["rule"].as_str().unwrap_or("(defaultAction)").to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_directory_of_manifests_gives_one_row_per_gpu_workload_of_every_kind() {
    let out = gpu_slicer_with_stdin(
        &[
            "policy",
            "report",
            "-f",
            DIR,
            "--nodepools",
            "manifests/karpenter",
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |v: &str| v.to_string();
    assert_eq!(
        rows(&json),
        vec![
            (
                s("ml-inference"),
                s("Deployment/vllm"),
                json!(3),
                s("inference-mig"),
                s("rewrite")
            ),
            (
                s("ml-inference"),
                s("StatefulSet/embedder"),
                json!(2),
                s("inference-mig"),
                s("rewrite")
            ),
            (
                s("ml-notebooks"),
                s("Pod/jupyter-ana"),
                json!(1),
                s("notebooks-timeslice"),
                s("rewrite")
            ),
            (
                s("ml-training"),
                s("DaemonSet/dcgm-probe"),
                Value::Null,
                s("training-exclusive"),
                s("rewrite")
            ),
            (
                s("ml-training"),
                s("Job/finetune"),
                json!(2),
                s("training-exclusive"),
                s("rewrite")
            ),
            (
                s("sandbox"),
                s("CronJob/nightly-eval"),
                json!(1),
                s("sandbox-deny"),
                s("deny")
            ),
            (
                s("team-vision"),
                s("ReplicaSet/legacy-ocr"),
                json!(2),
                s("(defaultAction)"),
                s("passthrough")
            ),
        ]
    );
    let vllm = &json["rows"][0];
    assert_eq!(
        vllm["changes"],
        json!(["vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb"])
    );
    assert_eq!(vllm["nodePool"], "gpu-mig");
    assert_eq!(vllm["mode"], "enforce");
    assert_eq!(vllm["origin"], "docs/examples/workloads/inference.yaml");
    // The gpu-memory annotation on the StatefulSet's template sizes its slice.
    assert_eq!(
        json["rows"][1]["changes"],
        json!(["embed: nvidia.com/gpu 1 -> nvidia.com/mig-2g.20gb"])
    );
    assert_eq!(
        json["rows"][4]["changes"],
        json!(["trainer: nvidia.com/gpu 8 kept"])
    );
    let denied = &json["rows"][5];
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("namespace \"sandbox\" may not use GPUs"),
        "{denied}"
    );

    assert_eq!(
        json["totals"],
        json!({"rewrite": 5, "deny": 1, "unchanged": 0, "passthrough": 1})
    );
    assert_eq!(json["byRule"]["inference-mig"]["rewrite"], 2);
    assert_eq!(json["byRule"]["(defaultAction)"]["passthrough"], 1);
    assert_eq!(json["withoutGpus"], 1, "the frontend asks for no GPU");
    // 3 + 2 + 1 + 1 (the DaemonSet, per node) + 2 x 8 whole GPUs today; the training ones stay whole.
    assert_eq!(
        json["gpus"],
        json!({
            "wholeBefore": 23,
            "wholeAfter": 17,
            "slicesAfter": {"nvidia.com/gpu.shared": 1, "nvidia.com/mig-1g.10gb": 3, "nvidia.com/mig-2g.20gb": 2}
        })
    );

    // The table says the same.
    let out = gpu_slicer_with_stdin(
        &[
            "policy",
            "report",
            "-f",
            DIR,
            "--nodepools",
            "manifests/karpenter",
        ],
        "",
    );
    let table = text(&out.stdout);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("7 workloads with GPUs: 5 rewrite, 1 deny, 0 unchanged, 1 passthrough"),
        "{table}"
    );
    assert!(table.contains("DaemonSet/dcgm-probe   per node"), "{table}");
}

#[test]
fn fail_on_deny_exits_1_only_when_a_workload_would_be_denied() {
    let out = gpu_slicer_with_stdin(&["policy", "report", "-f", DIR, "--fail-on", "deny"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("1 workload(s) would be denied"));
    assert!(
        text(&out.stdout).contains("CronJob/nightly-eval"),
        "the report is still printed"
    );

    let out = gpu_slicer_with_stdin(
        &[
            "policy",
            "report",
            "-f",
            &format!("{DIR}/inference.yaml"),
            "--fail-on",
            "deny",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Unreadable input is 2, told apart from a denial.
    let out = gpu_slicer_with_stdin(
        &["policy", "report", "-f", "no/such/dir", "--fail-on", "deny"],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = gpu_slicer_with_stdin(&["policy", "report", "-f", DIR, "-o", "xml"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--output \"xml\""),
        "{}",
        text(&out.stderr)
    );
}

/// `kustomize build | gpu-slicer policy report -f -`, with `kubectl get -o yaml`'s List too, labels
/// from `--namespace-label` and Namespace objects, and the rule's mode in its column.
#[test]
fn stdin_lists_namespace_labels_and_modes() {
    let policy = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  mode: audit\n  rules:\n  - {name: by-label, namespaceSelector: {matchLabels: {gpu-sharing: mig}}, action: mig, mig: {profile: 1g.10gb}}\n  - {name: rest, action: deny, mode: enforce}\n";
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.yaml");
    std::fs::write(&policy_file, policy).unwrap();
    let manifests = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {gpu-sharing: mig}}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: a, namespace: team-a}\n  spec: {template: {spec: {containers: [{name: c, resources: {limits: {nvidia.com/gpu: 1}}}]}}}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: b}\n  spec: {template: {spec: {containers: [{name: c, resources: {limits: {nvidia.com/gpu: 1}}}]}}}\n";
    let p = policy_file.to_str().unwrap();
    let out = gpu_slicer_with_stdin(
        &[
            "policy", "report", "-f", "-", "--policy", p, "-n", "team-b", "-o", "json",
        ],
        manifests,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<_> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["namespace"].clone(),
                r["rule"].clone(),
                r["mode"].clone(),
                r["outcome"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                json!("team-a"),
                json!("by-label"),
                json!("audit"),
                json!("rewrite")
            ),
            (
                json!("team-b"),
                json!("rest"),
                json!("enforce"),
                json!("deny")
            ),
        ]
    );
    // --namespace-label gives every namespace the label.
    let out = gpu_slicer_with_stdin(
        &[
            "policy",
            "report",
            "-f",
            "-",
            "--policy",
            p,
            "-n",
            "team-b",
            "--namespace-label",
            "gpu-sharing=mig",
            "-o",
            "json",
        ],
        manifests,
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["totals"]["rewrite"], 2);
}

#[test]
fn the_builder_is_pure_and_reads_what_it_is_given() {
    let objects = vec![(
        "mem".to_string(),
        json!({"kind": "Job", "metadata": {"name": "j", "namespace": "ml-inference"},
               "spec": {"parallelism": 4, "template": {"spec": {"containers": [
                   {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
                   {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}),
    )];
    let read = report::read::from_objects(objects, "default");
    let r = report::build(read, &example_policy(), &shipped_pools(), &[]);
    assert_eq!(r.rows.len(), 1);
    let row = &r.rows[0];
    assert_eq!(row.outcome, RowOutcome::Rewrite);
    assert_eq!(row.gpus_before, 2);
    assert_eq!(r.gpus.whole_before, 8);
    assert_eq!(r.gpus.slices_after["nvidia.com/mig-1g.10gb"], 8);
}

/// Finds a headless Chromium (Debian's `chromium`, installed by .ci/run).

#[test]
fn the_html_page_renders_in_a_browser_with_the_json_totals() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let out = gpu_slicer_with_stdin(
        &[
            "policy",
            "report",
            "-f",
            DIR,
            "--nodepools",
            "manifests/karpenter",
            "-o",
            "json",
            "-o",
            "html",
            html.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dom = common::browser::rendered_dom(&html);
    let cell = |id: &str| common::browser::cell(&dom, id);
    for outcome in ["rewrite", "deny", "unchanged", "passthrough"] {
        assert_eq!(
            cell(&format!("total-{outcome}")),
            json["totals"][outcome].to_string(),
            "{outcome}"
        );
    }
    assert_eq!(
        cell("gpus-whole-before"),
        json["gpus"]["wholeBefore"].to_string()
    );
    assert_eq!(
        cell("gpus-whole-after"),
        json["gpus"]["wholeAfter"].to_string()
    );
    assert!(dom.contains("<svg"), "chart rendered");
    assert!(dom.contains("CronJob/nightly-eval") && dom.contains("may not use GPUs"));
}

// ---- --from-cluster ----

/// A workload object as the API server lists it: one container asking for `gpus` whole GPUs.
fn listed(
    kind: &str,
    api_version: &str,
    ns: &str,
    name: &str,
    spec: Value,
    owner: Option<&str>,
) -> Value {
    let template = json!({"metadata": {"labels": {"app": name}}, "spec": {"containers": [
        {"name": "main", "image": "nvcr.io/nvidia/pytorch:24.08-py3",
         "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}]}});
    let mut obj = json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "7"},
        "spec": spec});
    match kind {
        "CronJob" => obj["spec"]["jobTemplate"] = json!({"spec": {"template": template}}),
        "Pod" => obj["spec"] = template["spec"].clone(),
        _ => obj["spec"]["template"] = template,
    }
    if let Some(owner) = owner {
        let (kind, name) = owner.split_once('/').unwrap();
        obj["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind, "name": name,
            "uid": format!("uid-{name}"), "controller": true}]);
    }
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_cluster_reads_every_workload_kind_with_live_labels_and_nodepools() {
    use common::fakeapi::FakeApi;
    use common::gpu_cluster;

    // The shipped NodePools and policy ConfigMap, and 600 CPU pods so the pod list spans two pages.
    let mut cluster = gpu_cluster::healthy(600);
    cluster.namespaces.push(gpu_cluster::namespace(
        "team-a",
        json!({"gpu-sharing": "mig"}),
    ));
    cluster.pods.push(listed(
        "Pod",
        "v1",
        "ml-notebooks",
        "jupyter",
        json!({}),
        None,
    ));
    cluster.pods.push(listed(
        "Pod",
        "v1",
        "sandbox",
        "nightly-eval-28811520-x2k9p",
        json!({}),
        Some("Job/nightly-eval-28811520"),
    ));
    let api = FakeApi::start().await;
    cluster.install(&api);
    let apps = |plural: &str, kind: &str, items: Vec<Value>| {
        api.serve_namespaced(
            "/apis/apps/v1",
            plural,
            "apps/v1",
            &format!("{kind}List"),
            items,
        )
    };
    apps(
        "deployments",
        "Deployment",
        vec![listed(
            "Deployment",
            "apps/v1",
            "team-a",
            "ranker",
            json!({"replicas": 4}),
            None,
        )],
    );
    apps(
        "statefulsets",
        "StatefulSet",
        vec![listed(
            "StatefulSet",
            "apps/v1",
            "ml-inference",
            "embedder",
            json!({"replicas": 2}),
            None,
        )],
    );
    apps(
        "daemonsets",
        "DaemonSet",
        vec![listed(
            "DaemonSet",
            "apps/v1",
            "ml-training",
            "probe",
            json!({}),
            None,
        )],
    );
    apps(
        "replicasets",
        "ReplicaSet",
        vec![
            listed(
                "ReplicaSet",
                "apps/v1",
                "team-a",
                "ranker-7d9c8b6f5",
                json!({"replicas": 4}),
                Some("Deployment/ranker"),
            ),
            listed(
                "ReplicaSet",
                "apps/v1",
                "ml-inference",
                "legacy",
                json!({"replicas": 1}),
                None,
            ),
        ],
    );
    let batch = |plural: &str, kind: &str, items: Vec<Value>| {
        api.serve_namespaced(
            "/apis/batch/v1",
            plural,
            "batch/v1",
            &format!("{kind}List"),
            items,
        )
    };
    batch(
        "jobs",
        "Job",
        vec![
            listed(
                "Job",
                "batch/v1",
                "ml-training",
                "finetune",
                json!({"parallelism": 3}),
                None,
            ),
            listed(
                "Job",
                "batch/v1",
                "sandbox",
                "nightly-eval-28811520",
                json!({}),
                Some("CronJob/nightly-eval"),
            ),
        ],
    );
    batch(
        "cronjobs",
        "CronJob",
        vec![listed(
            "CronJob",
            "batch/v1",
            "sandbox",
            "nightly-eval",
            json!({"schedule": "0 2 * * *"}),
            None,
        )],
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
            .args(["policy", "report", "--from-cluster", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["-o", "json", "--fail-on", "deny"])
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the CronJob would be denied: {}",
        text(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |v: &str| v.to_string();
    assert_eq!(
        rows(&json),
        vec![
            (
                s("ml-inference"),
                s("ReplicaSet/legacy"),
                json!(1),
                s("inference-mig"),
                s("rewrite")
            ),
            (
                s("ml-inference"),
                s("StatefulSet/embedder"),
                json!(2),
                s("inference-mig"),
                s("rewrite")
            ),
            (
                s("ml-notebooks"),
                s("Pod/jupyter"),
                json!(1),
                s("notebooks-timeslice"),
                s("rewrite")
            ),
            (
                s("ml-training"),
                s("DaemonSet/probe"),
                Value::Null,
                s("training-exclusive"),
                s("rewrite")
            ),
            (
                s("ml-training"),
                s("Job/finetune"),
                json!(3),
                s("training-exclusive"),
                s("rewrite")
            ),
            (
                s("sandbox"),
                s("CronJob/nightly-eval"),
                json!(1),
                s("sandbox-deny"),
                s("deny")
            ),
            // Chosen by the live namespace label gpu-sharing=mig.
            (
                s("team-a"),
                s("Deployment/ranker"),
                json!(4),
                s("labelled-mig"),
                s("rewrite")
            ),
        ]
    );
    // Routed with the live NodePools: the shipped gpu-mig pool's template labels.
    assert_eq!(json["rows"][0]["nodePool"], "gpu-mig");
    assert_eq!(json["rows"][0]["origin"], "cluster");

    // Read-only, and every list paginated.
    let requests = api.requests();
    assert!(
        requests.iter().all(|(m, _)| m == axum::http::Method::GET),
        "{requests:?}"
    );
    let lists: Vec<&String> = requests
        .iter()
        .map(|(_, p)| p)
        .filter(|p| !p.contains("/configmaps/"))
        .collect();
    assert!(lists.iter().all(|p| p.contains("limit=500")), "{lists:?}");
    assert!(
        lists
            .iter()
            .any(|p| p.starts_with("/api/v1/pods") && p.contains("continue=")),
        "{lists:?}"
    );
}

/// docs/deploying.md shows the report's output for the example workloads: it must be what the report
/// prints.
#[test]
fn the_deploying_guide_shows_what_the_report_prints() {
    let page = std::fs::read_to_string(repo("docs/deploying.md")).unwrap();
    let command = "gpu-slicer policy report -f docs/examples/workloads --policy manifests/policy/policy.yaml --nodepools manifests/karpenter";
    let after = &page[page.find(command).expect("the command is in the guide")..];
    let start = after.find("```text\n").expect("its output follows") + 8;
    let shown = &after[start..start + after[start..].find("```").unwrap()];
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = gpu_slicer_with_stdin(&args, "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(shown, text(&out.stdout));
}

/// Each workload's GPU-equivalents, and where its rule has a budget, whether its replicas fit as an
/// empty namespace would fill (workload by workload in the report's order); in every output form.
#[test]
fn each_workload_shows_its_gpu_equivalents_and_budget_outcome() {
    let policy_text = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  defaultAction: passthrough\n  rules:\n  - name: capped\n    namespaces: [ml-inference]\n    action: mig\n    mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb]}\n    budget: {gpuEquivalents: \"0.75\"}\n  - name: free\n    namespaces: [ml-training]\n    action: exclusive\n";
    let policy = gpu_slicer_core::policy::Policy::parse(policy_text, "p.yaml").unwrap();
    let workload = |kind: &str, name: &str, ns: &str, replicas: u64, profile: &str| {
        let annotations = if profile.is_empty() {
            json!({})
        } else {
            json!({"gpu-slicer.io/profile": profile})
        };
        json!({"kind": kind, "metadata": {"name": name, "namespace": ns},
               "spec": {"replicas": replicas, "template": {"metadata": {"annotations": annotations},
                   "spec": {"containers": [
                   {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}})
    };
    let objects = vec![
        // Sorted: Deployment/a (3 x 1/7) then StatefulSet/b (2 x 2/7): 3/7 + 2/7 = 5/7 <= 0.75, the
        // second 2g.20gb would make 1.
        (
            "m".to_string(),
            workload("Deployment", "a", "ml-inference", 3, "1g.10gb"),
        ),
        (
            "m".to_string(),
            workload("StatefulSet", "b", "ml-inference", 2, "2g.20gb"),
        ),
        (
            "m".to_string(),
            workload("Deployment", "t", "ml-training", 4, ""),
        ),
    ];
    let read = report::read::from_objects(objects, "default");
    let r = report::build(read, &policy, &shipped_pools(), &[]);
    let by_name = |n: &str| r.rows.iter().find(|row| row.name == n).unwrap();
    let (a, b, t) = (by_name("a"), by_name("b"), by_name("t"));
    assert_eq!(a.gpu_equivalents.unwrap().to_string(), "0.428571");
    assert_eq!(a.budget.outcome, report::BudgetOutcome::Within);
    assert_eq!(a.budget.cell(3), "within (0.428571/0.75)");
    assert_eq!(b.gpu_equivalents_per_pod.unwrap().to_string(), "0.285714");
    assert_eq!(b.budget.outcome, report::BudgetOutcome::Over);
    assert_eq!(b.budget.pods_fit, 1);
    assert_eq!(b.budget.cell(2), "over: 1 of 2 pods fit (0.714286/0.75)");
    assert_eq!(t.gpu_equivalents.unwrap().to_string(), "4");
    assert_eq!(t.budget.outcome, report::BudgetOutcome::NoBudget);
    assert_eq!(r.over_budget, 1);

    // JSON, table and HTML carry it.
    let json = serde_json::to_value(&r).unwrap();
    let row_b = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "b")
        .unwrap();
    assert_eq!(row_b["gpuEquivalents"], "0.571429");
    assert_eq!(
        row_b["budget"],
        json!({"outcome": "over", "budgetGpuEquivalents": "0.75", "podsFit": 1,
               "namespaceGpuEquivalents": "0.714286"})
    );
    assert_eq!(json["overBudget"], 1);
    let table = report::table(&r);
    assert!(table.contains("GPU-EQ"), "{table}");
    assert!(
        table.contains("over: 1 of 2 pods fit (0.714286/0.75)"),
        "{table}"
    );
    assert!(
        table.contains("1 workload(s) over their namespace's GPU budget"),
        "{table}"
    );
    let html = report::html::render(&r, "t");
    assert!(html.contains(r#"<td id="total-over-budget">1</td>"#));
    assert!(html.contains(r#"<td class="b over">over: 1 of 2 pods fit (0.714286/0.75)</td>"#));
}
