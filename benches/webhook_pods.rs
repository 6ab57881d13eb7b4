//! The webhook's Pod watch at scale (issue 23): the real binary (`serve --kubeconfig`) against the fake
//! API server (tests/common/fakeapi.rs) serving N GPU pods in its list and an idle watch, once with 0
//! pods and once with N. Reports the server's resident memory (`VmRSS` from /proc) once the pod index
//! has synced (its log line) and after the admission loop, and the admission latency of a simple loop
//! of reviews over one HTTP/2 connection (each review a GPU pod in a budgeted namespace, so every
//! answer goes through the budget gate). Targets: memory growth at 20,000 pods < 32 MiB; latency
//! unchanged beyond noise. Figures in BENCHMARKS.md.
//!
//!     cargo bench --bench webhook_pods                 # 0 and 20,000 pods, 2,000 reviews each
//!     cargo bench --bench webhook_pods -- 50000 5000   # pods reviews
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs 2,000 pods and 200 reviews once, as
//! a smoke test of the same path; it never fails on time or memory.

#[path = "../tests/common/admit.rs"]
mod admit;
#[path = "../tests/common/fakeapi.rs"]
mod fakeapi;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fakeapi::FakeApi;
use serde_json::{Value, json};

const POLICY: &str = "apiVersion: gpu-slicer.io/v1alpha1
kind: SlicingPolicy
spec:
  rules:
  - name: team
    namespaces: [\"team-*\"]
    action: mig
    mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb]}
    nodePool: gpu-mig
    budget: {gpuEquivalents: \"1000000\"}
";
const NAMESPACES: usize = 100;

/// A pod as the API server stores it after the webhook rewrote it (about 2 KiB of JSON).
fn stored_pod(i: usize) -> Value {
    let ns = format!("team-{}", i % NAMESPACES);
    let rs = format!("infer-{}-7d9c8b6f5", i / 50);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{rs}-{i:06}"), "namespace": ns, "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "resourceVersion": format!("{}", 1000 + i), "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": format!("infer-{}", i / 50), "pod-template-hash": "7d9c8b6f5"},
            "annotations": {"gpu-slicer.io/rewritten": "main: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb 1 (rule team)",
                "gpu-slicer.io/gpu-equivalents": "0.142857", "gpu-slicer.io/requested-gpus": "1"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "containers": [{"name": "main", "image": "nvcr.io/nvidia/tritonserver:25.08-py3",
                "env": [{"name": "MODEL", "value": "llama-3-8b"}, {"name": "PORT", "value": "8000"}],
                "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1", "cpu": "4", "memory": "16Gi"},
                              "requests": {"nvidia.com/mig-1g.10gb": "1", "cpu": "2", "memory": "16Gi"}},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
            "nodeSelector": {"karpenter.sh/nodepool": "gpu-mig", "nvidia.com/mig.config": "all-balanced"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "schedulerName": "default-scheduler", "nodeName": format!("ip-10-0-{}-{}.ec2.internal", i / 250 % 256, i % 250)
        },
        "status": {"phase": "Running", "qosClass": "Burstable", "podIP": "10.1.2.3", "startTime": "2026-01-01T00:00:05Z"}
    })
}

/// Resident memory of process `pid`, in KiB (`VmRSS` in /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// What the server logged that the bench waits for.
enum Log {
    Listening(SocketAddr),
    Synced,
}

/// Starts `serve --kubeconfig` against `api`; returns once it listens and its pod index has synced.
fn start_server(api: &FakeApi, dir: &std::path::Path) -> (Child, SocketAddr, Duration) {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write the policy");
    let kubeconfig = api.kubeconfig(dir);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--policy")
        .arg(&policy)
        .args(["--nodepools", "manifests/karpenter", "--certs-dir"])
        .arg(dir.join("certs"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .env_remove("KUBECONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gpu-slicer serve");
    let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("serving https") {
                let v: Value = serde_json::from_str(&line).unwrap_or_default();
                if let Some(addr) = v["addr"].as_str().and_then(|a| a.parse().ok()) {
                    let _ = tx.send(Log::Listening(addr));
                }
            } else if line.contains("pod usage index synced") {
                let _ = tx.send(Log::Synced);
            }
        }
    });
    let (mut addr, mut synced) = (None, None);
    while addr.is_none() || synced.is_none() {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Log::Listening(a)) => addr = Some(a),
            Ok(Log::Synced) => synced = Some(started.elapsed()),
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not listen and sync its pod index within 120 s");
            }
        }
    }
    (
        child,
        addr.unwrap_or_else(|| unreachable!()),
        synced.unwrap_or_default(),
    )
}

struct Run {
    pods: usize,
    sync: Duration,
    rss_synced_kib: u64,
    rss_after_kib: u64,
    /// Per review, microseconds, sorted.
    latencies: Vec<f64>,
}

impl Run {
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i]
    }

    fn mean(&self) -> f64 {
        self.latencies.iter().sum::<f64>() / self.latencies.len() as f64
    }
}

fn run(runtime: &tokio::runtime::Runtime, pods: usize, reviews: usize) -> Run {
    let api = runtime.block_on(async {
        let api = FakeApi::start().await;
        let names = (0..NAMESPACES)
            .map(|i| {
                let n = format!("team-{i}");
                json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}})
            })
            .collect();
        api.serve("/api/v1/namespaces", "v1", "NamespaceList", names);
        api.serve(
            "/api/v1/pods",
            "v1",
            "PodList",
            (0..pods).map(stored_pod).collect(),
        );
        api
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr, sync) = start_server(&api, dir.path());
    // Let the allocator settle after the list's pages.
    std::thread::sleep(Duration::from_millis(500));
    let rss_synced_kib = rss_kib(child.id());
    let ca = std::fs::read(dir.path().join("certs/ca.crt")).expect("the server's CA");
    let latencies = runtime.block_on(async {
        let connector = admit::connector(&ca);
        let mut h2 = admit::h2(addr, &connector).await;
        for i in 0..reviews / 10 {
            admit::call(&mut h2, admit::review("team-0", "1", i)).await;
        }
        let mut out = Vec::with_capacity(reviews);
        for i in 0..reviews {
            let body = admit::review(&format!("team-{}", i % NAMESPACES), "1", i);
            let t = Instant::now();
            let r = admit::call(&mut h2, body).await;
            out.push(t.elapsed().as_secs_f64() * 1e6);
            assert_eq!(r["allowed"], json!(true), "{r}");
        }
        out
    });
    let rss_after_kib = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let mut latencies = latencies;
    latencies.sort_by(f64::total_cmp);
    Run {
        pods,
        sync,
        rss_synced_kib,
        rss_after_kib,
        latencies,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (pods, reviews) = match numbers.as_slice() {
        [p, r] => (*p, *r),
        _ if bench => (20_000, 2_000),
        _ => (2_000, 200),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runs = [run(&runtime, 0, reviews), run(&runtime, pods, reviews)];
    println!("webhook_pods: {reviews} admission reviews over one HTTP/2 connection per run");
    println!(
        "{:>7}  {:>8}  {:>12}  {:>12}  {:>9}  {:>9}  {:>9}",
        "pods", "sync", "RSS synced", "RSS after", "mean µs", "p50 µs", "p99 µs"
    );
    for r in &runs {
        println!(
            "{:>7}  {:>6.2} s  {:>8.1} MiB  {:>8.1} MiB  {:>9.0}  {:>9.0}  {:>9.0}",
            r.pods,
            r.sync.as_secs_f64(),
            r.rss_synced_kib as f64 / 1024.0,
            r.rss_after_kib as f64 / 1024.0,
            r.mean(),
            r.quantile(0.5),
            r.quantile(0.99)
        );
    }
    let growth = (runs[1].rss_synced_kib as f64 - runs[0].rss_synced_kib as f64) / 1024.0;
    println!(
        "RSS growth at {pods} pods (synced): {growth:.1} MiB (target < 32 MiB); latency {pods} pods / 0 pods: mean x{:.2}, p50 x{:.2}, p99 x{:.2}",
        runs[1].mean() / runs[0].mean(),
        runs[1].quantile(0.5) / runs[0].quantile(0.5),
        runs[1].quantile(0.99) / runs[0].quantile(0.99)
    );
}
