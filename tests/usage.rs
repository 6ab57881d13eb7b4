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

async fn api() -> FakeApi {
    let api = FakeApi::start().await;
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    api.serve(
        "/api/v1/namespaces",
        "v1",
        "NamespaceList",
        vec![ns("ml"), ns("notebooks"), ns("dra"), ns("a\u{1b}[2Jb")],
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
            pod("a\u{1b}[2Jb", "old", json!({"nvidia.com/gpu": "1"}), None),
            pod("ml", "cpu", json!({"cpu": "1"}), None),
        ],
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
