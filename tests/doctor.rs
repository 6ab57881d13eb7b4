//! `gpu-slicer doctor` against a local fake API server that speaks the list wire format (paginated with
//! `limit` / `continue`, 404 for a CRD that is not installed), serving real-shaped objects: the shipped
//! manifests, Nodes and Pods as the API server stores them, NodeClaims as Karpenter v1 writes them
//! (validated against Karpenter's CRD here). The shared read layer ([`gpu_slicer::cluster::kubeapi`]) is tested on
//! the same server.

mod common;

use std::process::{Command, Output};

use common::fakeapi::FakeApi;
use common::gpu_cluster::{self, Cluster};
use common::validate::{crd_validator, errors};
use gpu_slicer::cluster::kubeapi::{self, Listed};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// Runs the real binary against `api` (off the async runtime: the server keeps serving).
async fn doctor(api: &FakeApi, args: &[&str]) -> Output {
    let all: Vec<&str> = std::iter::once("doctor")
        .chain(args.iter().copied())
        .collect();
    common::gpu_slicer_against(api, &all, &[]).await
}

async fn serve(cluster: &Cluster) -> FakeApi {
    let api = FakeApi::start().await;
    cluster.install(&api);
    api
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn findings<'a>(report: &'a Value, check: &str) -> Vec<&'a Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .collect()
}

fn stdout_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_nodeclaims_served_are_what_karpenter_v1_writes() {
    let v = crd_validator("karpenter.sh_nodeclaims.yaml", "v1");
    for claim in [
        gpu_cluster::nodeclaim("a", "n", gpu_cluster::initialized()),
        gpu_cluster::nodeclaim(
            "b",
            "n",
            gpu_cluster::not_registered("nvidia.com/mig-1g.10gb", 30),
        ),
    ] {
        assert!(errors(&v, &claim).is_empty(), "{:?}", errors(&v, &claim));
    }
    let v = crd_validator("karpenter.sh_nodeoverlays.yaml", "v1alpha1");
    for o in gpu_cluster::shipped_overlays() {
        assert!(errors(&v, &o).is_empty(), "{:?}", errors(&v, &o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_exits_0_and_every_list_is_paginated_and_read_only() {
    let api = serve(&gpu_cluster::healthy(1200)).await;
    let out = doctor(&api, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout_text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = stdout_text(&out);
    assert!(table.starts_with("INFO ("), "{table}");
    let rules = gpu_slicer::policy_source::example().rules.len();
    assert!(
        table.contains(&format!(
            "policy read from ConfigMap gpu-slicer/gpu-slicer-policy (key policy.yaml) ({rules} rules)"
        )),
        "{table}"
    );
    assert!(table.ends_with("0 errors, 0 warnings, 1 info\n"), "{table}");

    let requests = api.requests();
    assert!(requests.iter().all(|(m, _)| m == "GET"), "{requests:?}");
    let pods: Vec<&String> = requests
        .iter()
        .map(|(_, u)| u)
        .filter(|u| u.starts_with("/api/v1/pods?"))
        .collect();
    // 1,201 pods in pages of 500: three requests, the later ones with the continue token.
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(pods.iter().all(|u| u.contains("limit=500")), "{pods:?}");
    assert!(
        pods[1].contains("continue=fake-500") && pods[2].contains("continue=fake-1000"),
        "{pods:?}"
    );

    let out = doctor(&api, &["--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let report = json_of(&out);
    assert_eq!(
        report["summary"],
        json!({"error": 0, "warning": 0, "info": 1})
    );
    assert_eq!(
        report.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["findings", "summary"]
    );
    assert_eq!(
        report["findings"][0],
        json!({"check": "policy-cluster-mismatch", "severity": "info",
               "object": "ConfigMap/gpu-slicer/gpu-slicer-policy",
               "message": format!("policy read from ConfigMap gpu-slicer/gpu-slicer-policy (key policy.yaml) ({rules} rules)"), "fix": ""})
    );
}

/// The failures of the troubleshooting guide, planted at once.
fn broken() -> Cluster {
    let mut c = gpu_cluster::healthy(0);
    // A node whose MIG layout failed: its NodeClaim waits for a slice that never comes.
    let mut n = gpu_cluster::mig_node("ip-10-0-1-9.ec2.internal");
    n["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("failed");
    n["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
    n["status"]["allocatable"] = json!({"cpu": "191450m", "nvidia.com/gpu": "8"});
    c.nodes.push(n);
    c.nodeclaims.as_mut().unwrap().push(gpu_cluster::nodeclaim(
        "gpu-mig-q8w4z",
        "ip-10-0-1-9.ec2.internal",
        gpu_cluster::not_registered("nvidia.com/mig-1g.10gb", 47),
    ));
    // A hand-written overlay for a misspelt NodePool.
    let mut o = gpu_cluster::shipped_overlays()[0].clone();
    o["metadata"]["name"] = json!("mig-p4de-extra");
    o["spec"]["requirements"][0]["values"] = json!(["gpu-mgi"]);
    o["spec"]["weight"] = json!(10);
    c.nodeoverlays.as_mut().unwrap().push(o);
    // A GPU pod admitted while the webhook was down.
    c.pods.push(gpu_cluster::pod(
        "ml-inference",
        "embedder",
        "q2w3e",
        "Running",
        json!({"nvidia.com/gpu": "1"}),
        json!({"nodeName": "ip-10-0-3-3.ec2.internal"}),
    ));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_cluster_exits_1_with_each_finding_its_object_and_fix() {
    let api = serve(&broken()).await;
    let out = doctor(&api, &["-o", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);

    let stuck = findings(&report, "nodeclaim-resource-not-registered");
    assert_eq!(stuck.len(), 1, "{report:#}");
    assert_eq!(stuck[0]["severity"], "error");
    assert_eq!(stuck[0]["object"], "NodeClaim/gpu-mig-q8w4z");
    let msg = stuck[0]["message"].as_str().unwrap();
    for want in [
        "Initialized=Unknown (ResourceNotRegistered) for 47m",
        "nvidia.com/mig-1g.10gb was requested but never registered on node ip-10-0-1-9.ec2.internal (NodePool gpu-mig)",
        "nvidia.com/mig.config.state=failed",
    ] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    assert!(
        stuck[0]["fix"]
            .as_str()
            .unwrap()
            .contains("kubectl delete nodeclaim gpu-mig-q8w4z")
    );

    let mig = findings(&report, "mig-config-failed");
    assert_eq!(mig.len(), 1, "{report:#}");
    assert_eq!(mig[0]["object"], "Node/ip-10-0-1-9.ec2.internal");

    let nothing = findings(&report, "overlay-matches-nothing");
    assert_eq!(nothing.len(), 1);
    assert_eq!(nothing[0]["severity"], "warning");
    assert_eq!(nothing[0]["object"], "NodeOverlay/mig-p4de-extra");
    assert!(nothing[0]["fix"].as_str().unwrap().contains("gpu-mig"));

    let bypassed = findings(&report, "pod-not-rewritten");
    assert_eq!(bypassed.len(), 1);
    assert_eq!(
        bypassed[0]["object"],
        "Pod/ml-inference/embedder-7d9c8b6f5-q2w3e"
    );

    assert_eq!(
        report["summary"],
        json!({"error": 2, "warning": 2, "info": 1}),
        "{report:#}"
    );

    // The table: worst first, the same findings, the summary last.
    let out = doctor(&api, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let table = stdout_text(&out);
    let (e, w, i) = (
        table.find("ERROR (2)").unwrap(),
        table.find("WARNING (2)").unwrap(),
        table.find("INFO (1)").unwrap(),
    );
    assert!(e < w && w < i, "{table}");
    assert!(
        table.contains("  nodeclaim-resource-not-registered  NodeClaim/gpu-mig-q8w4z\n"),
        "{table}"
    );
    assert!(table.ends_with("2 errors, 2 warnings, 1 info\n"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_karpenter_and_the_gpu_operator_the_checks_say_why_they_were_skipped() {
    let api = serve(
        &gpu_cluster::healthy(0)
            .without_karpenter()
            .without_gpu_operator(),
    )
    .await;
    let out = doctor(&api, &["-o", "json"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    for check in [
        "nodeclaim-resource-not-registered",
        "overlay-capacity-drift",
        "overlay-matches-nothing",
        "overlay-weight-conflict",
    ] {
        let f = findings(&report, check);
        assert_eq!(f.len(), 1, "{check}: {report:#}");
        assert_eq!(f[0]["severity"], "info");
        let msg = f[0]["message"].as_str().unwrap();
        assert!(
            msg.starts_with("skipped: ") && msg.contains("Karpenter is not installed")
                || msg.contains("NodeOverlay CRD"),
            "{check}: {msg}"
        );
    }
    let policy = findings(&report, "policy-cluster-mismatch");
    assert!(
        policy.iter().any(|f| f["message"]
            .as_str()
            .unwrap()
            .contains("the GPU Operator is not installed")),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_is_used_instead_of_the_configmap_and_said_so() {
    let mut c = gpu_cluster::healthy(0);
    c.configmaps
        .retain(|cm| cm["metadata"]["name"] != "gpu-slicer-policy");
    let api = serve(&c).await;
    // Without the ConfigMap and without --policy: the policy checks say why they were skipped.
    let report = json_of(&doctor(&api, &["-o", "json"]).await);
    let f = findings(&report, "pod-not-rewritten");
    assert!(
        f[0]["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap gpu-slicer/gpu-slicer-policy (where manifests/webhook puts it) does not exist; give --policy FILE"),
        "{report:#}"
    );
    let policy = common::repo("tests/data/policies/contract.yaml");
    let out = doctor(&api, &["-o", "json", "--policy", policy.to_str().unwrap()]).await;
    let report = json_of(&out);
    let info: Vec<_> = findings(&report, "policy-cluster-mismatch")
        .into_iter()
        .filter(|f| f["severity"] == "info")
        .collect();
    assert_eq!(info[0]["object"], "SlicingPolicy/contract.yaml");
    assert!(
        info[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("policy read from --policy "),
        "{report:#}"
    );
    // The contract policy routes to gpu-h100-mig, which this cluster does not have.
    assert_eq!(out.status.code(), Some(1));
    let bad = doctor(&api, &["--policy", "/nonexistent/policy.yaml"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--policy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_forbidding_cluster_exits_2() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = common::fakeapi::kubeconfig_for(&format!("http://{addr}"), dir.path());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
            .args(["doctor", "--kubeconfig", kubeconfig.to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot read the cluster: "), "{err}");
    assert!(out.stdout.is_empty());

    // Reached, but Pods may not be listed: no report is better than a wrong one.
    let api = serve(&gpu_cluster::healthy(0)).await;
    api.forbid("/api/v1/pods");
    let out = doctor(&api, &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listing pods"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_optional_read_skips_only_its_checks() {
    let api = serve(&gpu_cluster::healthy(0)).await;
    api.forbid("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations");
    let out = doctor(&api, &["-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let report = json_of(&out);
    let f = findings(&report, "webhook-not-configured");
    assert_eq!(f.len(), 1);
    assert_eq!(f[0]["severity"], "info");
    assert!(
        f[0]["message"].as_str().unwrap().contains("403"),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeapi_lists_page_by_page_restarts_on_an_expired_token_and_reports_a_missing_crd() {
    let api = serve(&gpu_cluster::healthy(1100)).await;
    let client = api.client();
    let Listed::Found(pods) = kubeapi::list_all::<Pod>(&client).await.unwrap() else {
        panic!("pods missing")
    };
    assert_eq!(pods.len(), 1101);
    let before = api.requests().len();
    // The second page's token has expired: the list starts again, once.
    api.expire_continue_tokens(1);
    let again = kubeapi::list_all::<Pod>(&client).await.unwrap();
    assert_eq!(again.unwrap_or_default().len(), 1101);
    let pages: Vec<String> = api.requests()[before..]
        .iter()
        .map(|(_, u)| u.clone())
        .collect();
    assert_eq!(pages.len(), 5, "{pages:?}"); // page 1, 410, then pages 1..3
    api.expire_continue_tokens(2);
    let err = kubeapi::list_all::<Pod>(&client).await.unwrap_err();
    assert_eq!(err.status_code(), Some(410));
    assert!(err.to_string().starts_with("listing pods: "), "{err}");

    api.remove("/apis/karpenter.sh/v1/nodeclaims");
    assert_eq!(
        kubeapi::list_dynamic(&client, &kubeapi::nodeclaims())
            .await
            .unwrap(),
        Listed::Missing
    );
    assert!(
        !kubeapi::served(&client, &kubeapi::nodeclaims())
            .await
            .unwrap()
    );
    assert!(
        kubeapi::served(&client, &kubeapi::nodepools())
            .await
            .unwrap()
    );
}

/// The failures docs/troubleshooting.md describes, planted in one cluster (see [`guide_outputs`]).
fn guide_cluster() -> Cluster {
    let mut c = broken();
    // A MIG node whose device plugin runs the single strategy: whole-GPU-named slices.
    let mut n = gpu_cluster::mig_node("ip-10-0-1-12.ec2.internal");
    n["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
    n["status"]["allocatable"] = json!({"cpu": "191450m", "nvidia.com/gpu": "56"});
    c.nodes.push(n);
    c.nodeclaims.as_mut().unwrap().push(gpu_cluster::nodeclaim(
        "gpu-mig-r2d2x",
        "ip-10-0-1-12.ec2.internal",
        gpu_cluster::not_registered("nvidia.com/mig-1g.10gb", 25),
    ));
    // A hand-written overlay with the weight of a generated one, on the same resource.
    let mut o = gpu_cluster::shipped_overlays()[1].clone();
    o["metadata"]["name"] = json!("team-a-p5-slices");
    o["spec"]["capacity"] = json!({"nvidia.com/mig-1g.10gb": "56"});
    c.nodeoverlays.as_mut().unwrap().push(o);
    // The time-slicing pool's overlays were never applied: its pending pods wait for nothing.
    c.nodeoverlays.as_mut().unwrap().retain(|o| {
        !o["metadata"]["name"]
            .as_str()
            .unwrap()
            .contains("gpu-timeslice")
    });
    c.pods.push(gpu_cluster::pod(
        "ml-notebooks",
        "notebook",
        "k8s9x",
        "Pending",
        json!({"nvidia.com/gpu.shared": "1"}),
        json!({"nodeSelector": {"karpenter.sh/nodepool": "gpu-timeslice", "nvidia.com/device-plugin.config": "timeslice-4"},
               "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
               "annotations": {"gpu-slicer.io/rewritten": "main: nvidia.com/gpu 1 -> nvidia.com/gpu.shared 1 (rule notebooks-timeslice)"}}),
    ));
    // The webhook fails open while the policy denies (rule sandbox-deny).
    c.webhooks[0]["webhooks"][0]["failurePolicy"] = json!("Ignore");
    c
}

/// The guide's doctor outputs: the cluster above, one whose policy ConfigMap does not load, and the
/// DRA failures of [`gpu_cluster::dra_broken`].
async fn guide_outputs() -> Vec<String> {
    let mut out = Vec::new();
    let api = serve(&guide_cluster()).await;
    out.push(stdout_text(&doctor(&api, &[]).await));
    let mut c = gpu_cluster::healthy(0);
    for cm in &mut c.configmaps {
        if cm["metadata"]["name"] == "gpu-slicer-policy" {
            let policy = cm["data"]["policy.yaml"].as_str().unwrap().replacen(
                "profile: 1g.10gb",
                "profile: 1g.7gb",
                1,
            );
            cm["data"]["policy.yaml"] = json!(policy);
        }
    }
    let api = serve(&c).await;
    out.push(stdout_text(&doctor(&api, &[]).await));
    let api = serve(&gpu_cluster::dra_broken()).await;
    out.push(stdout_text(&doctor(&api, &[]).await));
    out
}

/// Every line of a doctor finding shown in docs/troubleshooting.md (`console` blocks of `gpu-slicer
/// doctor`) is a line doctor prints for the failures planted in [`guide_cluster`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_troubleshooting_guide_shows_what_doctor_prints() {
    let outputs = guide_outputs().await;
    if std::env::var_os("PRINT_GUIDE").is_some() {
        for o in &outputs {
            eprintln!("{o}\n-----");
        }
    }
    let page = std::fs::read_to_string(common::repo("docs/troubleshooting.md")).unwrap();
    let mut checked = 0;
    let mut in_doctor_block = false;
    for line in page.lines() {
        if line.starts_with("```") {
            in_doctor_block = false;
            continue;
        }
        if line.starts_with("$ gpu-slicer doctor") {
            in_doctor_block = true;
            continue;
        }
        // Finding lines are indented; `...` marks lines left out.
        if in_doctor_block && line.starts_with("  ") && line.trim() != "..." {
            assert!(
                outputs.iter().any(|o| o.lines().any(|l| l == line)),
                "docs/troubleshooting.md shows a doctor line doctor does not print:\n{line}\n\ndoctor printed:\n{}",
                outputs.join("\n-----\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} doctor lines in the guide");
}

// ---- The live DRA checks (issue 20: dra-device-plugin-overlap, dra-mig-pool-empty; issue 24:
// dra-template-name-taken) ----

fn dra_findings(report: &Value) -> Vec<&Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"].as_str().unwrap().starts_with("dra-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_dra_cluster_has_no_dra_finding_and_its_dra_lists_are_paginated() {
    let api = serve(&gpu_cluster::dra_healthy()).await;
    let out = doctor(&api, &["-o", "json"]).await;
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(dra_findings(&report).is_empty(), "{report:#}");
    let requests = api.requests();
    assert!(requests.iter().all(|(m, _)| m == "GET"), "{requests:?}");
    for list in ["resourceslices", "resourceclaimtemplates"] {
        let want = format!("/apis/resource.k8s.io/v1/{list}?");
        assert!(
            requests
                .iter()
                .any(|(_, u)| u.starts_with(&want) && u.contains("limit=500")),
            "{want}: {requests:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_dra_cluster_names_the_node_the_pool_and_the_template_to_fix() {
    let api = serve(&gpu_cluster::dra_broken()).await;
    let out = doctor(&api, &["-o", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&out);
    let text = |f: &Value, k: &str| f[k].as_str().unwrap().to_string();

    // The driver's kubelet plugin also runs on a device-plugin node, and a DRA node still runs the
    // device plugin; the healthy DRA node (no device-plugin resources) is not reported.
    let overlap = findings(&report, "dra-device-plugin-overlap");
    assert_eq!(overlap.len(), 2, "{report:#}");
    assert!(overlap.iter().all(|f| f["severity"] == "error"));
    let (plugin_node, dra_node) = (overlap[0], overlap[1]);
    assert_eq!(plugin_node["object"], "Node/ip-10-0-1-5.ec2.internal");
    let says = |f: &Value, k: &str, wants: &[&str]| {
        let t = text(f, k);
        for want in wants {
            assert!(t.contains(want), "{want}: {t}");
        }
    };
    says(
        plugin_node,
        "message",
        &[
            "(NodePool gpu-mig)",
            "nvidia.com/mig-1g.10gb x16",
            "ResourceSlice ip-10-0-1-5.ec2.internal-gpu.nvidia.com-",
            "32 device(s) of driver gpu.nvidia.com",
        ],
    );
    says(
        plugin_node,
        "fix",
        &[
            "NodePool gpu-mig is a device-plugin pool (device-plugin rule inference-mig routes to it)",
            "kubeletPlugin.nodeSelector to gpu-slicer.io/gpu-allocator: dra",
        ],
    );
    assert_eq!(dra_node["object"], "Node/ip-10-0-2-9.ec2.internal");
    says(
        dra_node,
        "message",
        &["(NodePool gpu-dra-whole) advertises device-plugin GPU resources (nvidia.com/gpu x4)"],
    );
    says(
        dra_node,
        "fix",
        &[
            "NodePool gpu-dra-whole is a DRA pool",
            "nvidia.com/gpu.deploy.device-plugin: \"false\"",
        ],
    );

    // The DRA MIG pool drained: Karpenter will not bring it back.
    let empty = findings(&report, "dra-mig-pool-empty");
    assert_eq!(empty.len(), 1, "{report:#}");
    assert_eq!(empty[0]["object"], "NodePool/gpu-dra-mig");
    let msg = text(empty[0], "message");
    assert!(
        msg.contains("rule inference-dra routes MIG claims to it (namespace ml-inference-dra)"),
        "{msg}"
    );
    assert!(
        text(empty[0], "fix").starts_with("make NodePool gpu-dra-mig static: set spec.replicas")
    );

    // A tenant's template holds one of the names rule training-dra needs; the others are gpu-slicer's.
    let taken = findings(&report, "dra-template-name-taken");
    assert_eq!(taken.len(), 1, "{report:#}");
    assert_eq!(
        taken[0]["object"],
        "ResourceClaimTemplate/ml-training-dra/gpu-slicer-gpu"
    );
    let msg = text(taken[0], "message");
    assert!(msg.contains("rule training-dra (backend dra) needs ResourceClaimTemplate gpu-slicer-gpu in namespace ml-training-dra"), "{msg}");
    assert!(msg.contains("managed by Helm"), "{msg}");
    assert!(
        text(taken[0], "fix")
            .contains("`kubectl -n ml-training-dra delete resourceclaimtemplate gpu-slicer-gpu`")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_dra_served_or_readable_the_dra_checks_say_why_they_were_skipped() {
    let api = serve(&gpu_cluster::dra_broken().without_dra()).await;
    let report = json_of(&doctor(&api, &["-o", "json"]).await);
    for check in ["dra-device-plugin-overlap", "dra-template-name-taken"] {
        let f = findings(&report, check);
        assert_eq!(f.len(), 1, "{check}: {report:#}");
        assert_eq!(f[0]["severity"], "info");
        assert_eq!(f[0]["object"], "APIService/v1.resource.k8s.io");
        assert!(
            f[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("skipped: resource.k8s.io/v1 (Dynamic Resource Allocation, GA in Kubernetes 1.34) is not served"),
            "{report:#}"
        );
    }
    // Nodes and the policy are enough for this one.
    assert_eq!(
        findings(&report, "dra-mig-pool-empty")[0]["severity"],
        "error"
    );

    let api = serve(&gpu_cluster::dra_broken()).await;
    api.forbid("/apis/resource.k8s.io/v1/resourceslices");
    let report = json_of(&doctor(&api, &["-o", "json"]).await);
    let f = findings(&report, "dra-device-plugin-overlap");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["severity"], "info");
    let msg = f[0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("skipped: listing resourceslices: ") && msg.contains("403"),
        "{msg}"
    );
    // The other reads still work.
    assert_eq!(findings(&report, "dra-template-name-taken").len(), 1);
}

/// The check IDs are a contract: each one is in the guide's table.
#[test]
fn every_check_id_is_in_the_troubleshooting_table() {
    let page = std::fs::read_to_string(common::repo("docs/troubleshooting.md")).unwrap();
    for id in gpu_slicer::doctor::checks::ALL {
        assert!(page.contains(&format!("\n| `{id}` | ")), "{id}");
    }
}

/// After a policy change lowers a budget, doctor names each namespace over it: the rule, the budget,
/// what the namespace's live GPU pods hold (finished and terminating pods not counted) and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_over_its_budget_is_a_warning_naming_rule_budget_held_and_fix() {
    let mut c = gpu_cluster::healthy(0);
    let cm = c
        .configmaps
        .iter_mut()
        .find(|cm| cm["metadata"]["name"] == "gpu-slicer-policy")
        .unwrap();
    let policy = cm["data"]["policy.yaml"].as_str().unwrap().replacen(
        "      allowOptOut: false\n",
        "      allowOptOut: false\n      budget: {gpuEquivalents: \"0.3\"}\n",
        1,
    );
    cm["data"]["policy.yaml"] = json!(policy);
    let slice = || json!({"nvidia.com/mig-1g.10gb": "1"});
    let on_node = || {
        let mut r = gpu_cluster::routed_to_gpu_mig();
        r["nodeName"] = json!("ip-10-0-1-5.ec2.internal");
        r
    };
    // Two more running slices (3/7 held in all), a finished one and a terminating one (not counted).
    for (suffix, phase) in [("b", "Running"), ("c", "Running"), ("d", "Succeeded")] {
        c.pods.push(gpu_cluster::pod(
            "ml-inference",
            "llm",
            suffix,
            phase,
            slice(),
            on_node(),
        ));
    }
    let mut terminating =
        gpu_cluster::pod("ml-inference", "llm", "e", "Running", slice(), on_node());
    terminating["metadata"]["deletionTimestamp"] = json!(gpu_cluster::ago(1));
    c.pods.push(terminating);
    let api = serve(&c).await;
    let out = doctor(&api, &["-o", "json"]).await;
    let report = json_of(&out);
    let f = findings(&report, "namespace-over-budget");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0]["severity"], "warning");
    assert_eq!(f[0]["object"], "Namespace/ml-inference");
    let message = f[0]["message"].as_str().unwrap();
    for part in [
        "namespace ml-inference holds 0.428571 GPU-equivalents in 3 running or pending GPU pod(s)",
        "over the budget of 0.3 that rule inference-mig sets (0.128571 over",
        "largest: llm-7d9c8b6f5-abcde (0.142857)",
        "the webhook denies its new GPU pods until it is back within",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let fix = f[0]["fix"].as_str().unwrap();
    assert!(
        fix.contains("scale down or delete pods in ml-inference until they hold at most 0.3")
            && fix.contains("raise budget.gpuEquivalents of rule inference-mig in ConfigMap gpu-slicer/gpu-slicer-policy"),
        "{fix}"
    );
    // A warning: the exit status stays 0; the table shows it too.
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let table = stdout_text(&doctor(&api, &[]).await);
    assert!(
        table.contains("namespace-over-budget  Namespace/ml-inference"),
        "{table}"
    );

    // Within the budget (the policy raised again): no finding.
    let cm = c
        .configmaps
        .iter_mut()
        .find(|cm| cm["metadata"]["name"] == "gpu-slicer-policy")
        .unwrap();
    cm["data"]["policy.yaml"] = json!(policy.replace("\"0.3\"", "\"0.5\""));
    c.install(&api);
    let report = json_of(&doctor(&api, &["-o", "json"]).await);
    assert!(
        findings(&report, "namespace-over-budget").is_empty(),
        "{report:#}"
    );
}
