//! `gpu-slicer usage --from-cluster` against the fake API server, in every output form: a device-plugin
//! MIG namespace, a time-sliced one, a DRA one and a pod admitted before gpu-slicer ran.

mod common;

use std::process::Output;

use common::fakeapi::FakeApi;
use serde_json::{Value, json};

const RULES: &str = r#"
  - name: ml
    namespaces: [ml]
    action: mig
    mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 3g.40gb]}
    nodePool: p5
    budget: {gpuEquivalents: "2"}
  - name: notebooks
    namespaces: [notebooks]
    action: timeslice
    shared: {resourceName: nvidia.com/gpu.shared, replicas: 4}
    nodePool: p5
  - name: dra
    namespaces: [dra]
    action: exclusive
    backend: dra
    nodePool: p5
"#;

fn pod(ns: &str, name: &str, resources: Value, claims: Option<Value>) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": name},
        "spec": {"containers": [{"name": "main", "image": "x", "resources": {"limits": resources.clone(), "requests": resources}}]},
        "status": {"phase": "Running"}});
    if let Some(c) = claims {
        p["spec"]["resourceClaims"] = c;
    }
    p
}

/// The test cluster: a MIG namespace with a budget (and a finished pod), a time-sliced one, a DRA one,
/// and with `legacy` a namespace no rule matches, named with an escape sequence, holding a pod admitted
/// before gpu-slicer ran. docs/proving-savings.md shows `usage` on it without `legacy`.
async fn api_with(legacy: bool) -> FakeApi {
    let api = FakeApi::start().await;
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    api.serve(
        "/api/v1/namespaces",
        "v1",
        "NamespaceList",
        [ns("ml"), ns("notebooks"), ns("dra")]
            .into_iter()
            .chain(legacy.then(|| ns("a\u{1b}[2Jb")))
            .collect(),
    );
    let mut done = pod("ml", "done", json!({"nvidia.com/mig-1g.10gb": "1"}), None);
    done["status"]["phase"] = json!("Succeeded");
    api.serve(
        "/api/v1/pods",
        "v1",
        "PodList",
        vec![
            pod("ml", "a", json!({"nvidia.com/mig-1g.10gb": "1"}), None),
            pod("ml", "b", json!({"nvidia.com/mig-3g.40gb": "1"}), None),
            done,
            pod("notebooks", "n1", json!({"nvidia.com/gpu.shared": "1"}), None),
            pod("notebooks", "n2", json!({"nvidia.com/gpu.shared": "1"}), None),
            pod(
                "dra",
                "d",
                json!({}),
                Some(json!([{"name": "gpu-slicer-0", "resourceClaimTemplateName": "gpu-slicer-gpu"}])),
            ),
            pod("ml", "cpu", json!({"cpu": "1"}), None),
        ]
        .into_iter()
        .chain(legacy.then(|| pod("a\u{1b}[2Jb", "old", json!({"nvidia.com/gpu": "1"}), None)))
        .collect(),
    );
    api.serve(
        "/apis/karpenter.sh/v1/nodepools",
        "karpenter.sh/v1",
        "NodePoolList",
        vec![json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p5"},
            "spec": {"template": {"spec": {"requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5.48xlarge"]}]}}}})],
    );
    api
}

async fn api() -> FakeApi {
    api_with(true).await
}

async fn usage(api: &FakeApi, output: &str) -> Output {
    common::gpu_slicer_against(
        api,
        &[
            "usage",
            "--from-cluster",
            "--policy",
            "{policy.yaml}",
            "--output",
            output,
        ],
        &[("policy.yaml", &common::policy_yaml(RULES))],
    )
    .await
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_has_the_contracts_fields_per_namespace_and_totals() {
    let api = api().await;
    let v: Value = serde_json::from_str(&stdout(&usage(&api, "json").await)).unwrap();
    let ns: Vec<&Value> = v["namespaces"].as_array().unwrap().iter().collect();
    let by = |n: &str| *ns.iter().find(|r| r["namespace"] == n).unwrap();
    // p5.48xlarge: $6.88 per GPU-hour. 1/7 + 3/7 of an H100.
    assert_eq!(
        by("ml"),
        &json!({"namespace": "ml", "rule": "ml", "pods": 2, "gpuEquivalents": "0.571429",
            "requestedGpus": 2, "usdPerHour": 3.9314, "usdPerHourWithoutSlicing": 13.76,
            "budgetGpuEquivalents": "2"})
    );
    assert_eq!(by("notebooks")["gpuEquivalents"], json!("0.5"));
    assert_eq!(by("dra")["gpuEquivalents"], json!("1"));
    // Admitted before gpu-slicer, in no rule's namespace: counted from its resources, unpriced.
    let old = by("a\u{1b}[2Jb");
    assert_eq!(
        (old["gpuEquivalents"].clone(), old["usdPerHour"].clone()),
        (json!("1"), Value::Null)
    );
    assert_eq!(v["totals"]["pods"], json!(6));
    assert_eq!(v["totals"]["requestedGpus"], json!(6));
    assert_eq!(v["totals"]["gpuEquivalents"], json!("3.071429"));
    let keys: Vec<&String> = by("ml").as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 8, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_csv_and_html() {
    let api = api().await;
    let table = stdout(&usage(&api, "table").await);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(table.contains("0.571429 / 2 (29%)"), "{table}");
    assert!(
        table.contains("a\\x1b[2Jb") && !table.contains('\u{1b}'),
        "{table}"
    );
    assert!(
        table.lines().last().unwrap().starts_with("TOTAL"),
        "{table}"
    );

    let csv = stdout(&usage(&api, "csv").await);
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("namespace,rule,pods,gpuEquivalents")
    );
    assert!(
        csv.contains("ml,ml,2,0.571429,2,3.9314,13.7600,9.8286,2\n"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .last()
            .unwrap()
            .starts_with("TOTAL,,6,3.071429,6"),
        "{csv}"
    );

    let html = stdout(&usage(&api, "html").await);
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<svg"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "self-contained"
    );
    assert!(
        html.contains("<span id=\"gpu-equivalents\">3.071429</span>"),
        "{html}"
    );
}

/// The HTML page as the finance review sees it: rendered by headless Chromium, self-contained, no
/// console error, its totals the JSON's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_page_renders_in_a_browser_with_the_json_totals() {
    let api = api().await;
    let json: Value = serde_json::from_str(&stdout(&usage(&api, "json").await)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("usage.html");
    std::fs::write(&html, stdout(&usage(&api, "html").await)).unwrap();
    let dom = common::browser::rendered_dom(&html);
    let cell = |id: &str| common::browser::cell(&dom, id);
    let totals = &json["totals"];
    assert_eq!(
        cell("gpu-equivalents"),
        totals["gpuEquivalents"].as_str().unwrap()
    );
    let money = |v: &Value| format!("{:.2}", v.as_f64().unwrap());
    assert_eq!(cell("usd-per-hour"), money(&totals["usdPerHour"]));
    assert_eq!(
        cell("usd-per-hour-without-slicing"),
        money(&totals["usdPerHourWithoutSlicing"])
    );
    assert!(dom.contains("<svg"), "chart rendered");
    // Every namespace has its row, the one named with an escape sequence as text.
    for ns in ["dra", "ml", "notebooks", "[2Jb"] {
        assert!(dom.contains(&format!("{ns}</td>")), "{ns}");
    }
}

/// docs/proving-savings.md shows `gpu-slicer usage --from-cluster` on the test cluster: it must be what
/// the command prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_shows_what_usage_prints() {
    let page = std::fs::read_to_string(common::repo("docs/proving-savings.md")).unwrap();
    let command = "$ gpu-slicer usage --from-cluster\n";
    let start = page.find(command).expect("the command is in the guide") + command.len();
    let shown = &page[start..start + page[start..].find("```").unwrap()];
    let api = api_with(false).await;
    assert_eq!(shown, stdout(&usage(&api, "table").await));
}
