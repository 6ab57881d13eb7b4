//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod admit;
pub mod browser;
pub mod dra_allocator;
pub mod dra_api;
pub mod fakeapi;
pub mod gpu_cluster;
pub mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use gpu_slicer_core::engine::{self, Decision, Namespace};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};

/// A TLS client trusting `cas` (PEM), speaking `versions` and offering `alpn` (e.g. `h2`).
pub fn tls_connector(
    cas: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca) {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// `kubectl kustomize` of a folder under the repo: its documents, or a panic with kubectl's error.
pub fn kustomize(dir: &str) -> Vec<Value> {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(repo(dir))
        .output()
        .expect("kubectl must be installed (it renders the kustomizations)");
    assert!(
        out.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    gpu_slicer_core::yaml::documents(&String::from_utf8_lossy(&out.stdout))
        .expect("kustomize output")
}

pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The contract policy of `../shared/tools/contract` (team-a mig, team-b opt-out, ml-* mig, notebooks
/// timeslice, serving mps, training exclusive, sandbox deny).
pub fn contract_policy() -> Policy {
    gpu_slicer::policy_source::load_file(&repo("tests/data/policies/contract.yaml"))
        .expect("contract policy")
}

pub fn example_policy() -> Policy {
    gpu_slicer::policy_source::example()
}

/// The NodePools shipped in `manifests/karpenter`.
pub fn shipped_pools() -> NodePoolIndex {
    gpu_slicer::input::nodepools(&repo("manifests/karpenter")).expect("shipped NodePools")
}

/// A captured AdmissionReview from `tests/data/reviews`.
pub fn review(name: &str) -> Value {
    let text =
        std::fs::read_to_string(repo(&format!("tests/data/reviews/{name}.json"))).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// A container as the API server sends it, with `nvidia.com/gpu`-like resources.
pub fn container(name: &str, gpu: &[(&str, &str)], limits_only: bool) -> Value {
    let mut limits = json!({"cpu": "2", "memory": "8Gi"});
    let mut requests = json!({"cpu": "1", "memory": "8Gi"});
    for (k, v) in gpu {
        limits[*k] = json!(v);
        if !limits_only {
            requests[*k] = json!(v);
        }
    }
    json!({"name": name, "image": "nvcr.io/nvidia/pytorch:24.08-py3", "resources": {"limits": limits, "requests": requests}})
}

/// A pod with these containers and, optionally, annotations, node selector and tolerations.
pub fn pod(containers: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "infer-7d9c8b6f5-", "namespace": "x"},
        "spec": {"containers": containers}
    })
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs the engine on a pod object; returns the decision and the patched object (the input when denied).
pub fn run(
    pod_value: &Value,
    ns: &str,
    ns_labels: &BTreeMap<String, String>,
    policy: &Policy,
    pools: &NodePoolIndex,
) -> (Decision, Value) {
    let pod: Pod = serde_json::from_value(pod_value.clone()).expect("pod view");
    let decision = engine::decide(
        &pod,
        Namespace {
            name: ns,
            labels: ns_labels,
        },
        policy,
        pools,
    );
    let mut out = pod_value.clone();
    json_patch::patch(&mut out, &decision.patch).expect("the patch applies to its input");
    (decision, out)
}

/// The patch as plain JSON, for exact comparisons.
pub fn ops(decision: &Decision) -> Value {
    serde_json::to_value(&decision.patch).unwrap()
}

/// Every resource key in limits or requests of every container and init container.
pub fn resource_keys(pod: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            for section in ["limits", "requests"] {
                if let Some(m) = c["resources"][section].as_object() {
                    keys.extend(m.keys().cloned());
                }
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Starts the `gpu-slicer` binary in the repository root with these arguments, stdin, stdout and
/// stderr piped.
pub fn spawn_gpu_slicer(args: &[&str]) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gpu-slicer binary runs")
}

/// Runs the `gpu-slicer` binary in the repository root with these arguments and `stdin`.
pub fn gpu_slicer_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = spawn_gpu_slicer(args);
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.as_bytes()).expect("stdin written");
    drop(pipe);
    child
        .wait_with_output()
        .expect("the gpu-slicer binary exits")
}

/// Runs the `gpu-slicer` binary in the repository root with these arguments (empty stdin).
pub fn gpu_slicer_cli(args: &[&str]) -> std::process::Output {
    gpu_slicer_with_stdin(args, "")
}

/// Output bytes as text, for assertions and their messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the real binary as `args` with `--kubeconfig` for `api` appended, off the async runtime (the
/// fake API server keeps serving on it); `files` are written beside the kubeconfig first and their
/// paths passed as `{name}` in `args` (e.g. `--policy {policy.yaml}`).
pub async fn gpu_slicer_against(
    api: &fakeapi::FakeApi,
    args: &[&str],
    files: &[(&str, &str)],
) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let mut all: Vec<String> = args
        .iter()
        .map(|a| {
            let mut a = a.to_string();
            for (name, _) in files {
                let path = dir.path().join(name);
                a = a.replace(&format!("{{{name}}}"), &path.display().to_string());
            }
            a
        })
        .collect();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    all.push("--kubeconfig".into());
    all.push(kubeconfig.display().to_string());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
            .args(&all)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        drop(dir);
        out
    })
    .await
    .unwrap()
}

/// A policy file: the `SlicingPolicy` header, then `rules` (YAML list items indented by two spaces).
pub fn policy_yaml(rules: &str) -> String {
    format!("apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n{rules}")
}

/// The webhook's `App` in cluster mode against `client`'s API server: its Namespace watch attached
/// (NodePools fixed to `pools`). The caller waits for readiness as its test needs.
pub fn cluster_app(
    client: kube::Client,
    policy: Policy,
    pools: NodePoolIndex,
) -> (
    std::sync::Arc<gpu_slicer::webhook::server::App>,
    std::sync::Arc<gpu_slicer::cluster::watch::Cluster>,
) {
    let app = gpu_slicer::webhook::server::App::new(
        gpu_slicer::webhook::admission::StaticFacts { policy, pools },
        gpu_slicer::webhook::metrics::Metrics::new(),
        gpu_slicer::webhook::server::Limits::default(),
    );
    let cluster = gpu_slicer::cluster::watch::Cluster::start(
        client,
        app.pools.clone(),
        false,
        app.metrics.cluster.clone(),
    );
    app.attach_cluster(cluster.clone());
    (app, cluster)
}
