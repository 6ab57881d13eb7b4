//! Budgets in cluster mode, end to end: the real HTTPS server, the Pod watch against the fake API
//! server's pod list/watch, and `/metrics`. A namespace fills to its budget and the next pod is denied
//! with the message; deleting a pod frees room within seconds; audit mode warns instead; a burst of
//! 50 concurrent creates against one replica ends at or under the budget.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::admit::{self, H2, call, gpu_pod, message, review};
use common::fakeapi::FakeApi;
use gpu_slicer::webhook::server::{self, App, Bound, Limits};
use gpu_slicer::webhook::tls;
use gpu_slicer_core::nodepool::{NodePool, NodePoolIndex};
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

const RULES: &str = r#"
  - name: team
    namespaces: ["team-*"]
    action: exclusive
    nodePool: p5
    budget: {gpuEquivalents: "2"}
  - name: trial
    namespaces: ["trial"]
    mode: audit
    action: exclusive
    nodePool: p5
    budget: {gpuEquivalents: "1"}
  - name: burst
    namespaces: ["burst"]
    action: mig
    mig: {profile: 1g.10gb}
    nodePool: p5
    budget: {gpuEquivalents: "3"}
"#;

fn policy() -> Policy {
    Policy::parse(&common::policy_yaml(RULES), "budgets.yaml").unwrap()
}

const PODS: &str = "/api/v1/pods";

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
}

fn pools() -> NodePoolIndex {
    NodePoolIndex::new([NodePool::from_object(&json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p5"},
        "spec": {"template": {"spec": {"requirements": [
            {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5.48xlarge"]}]}}}
    }))
    .unwrap()])
}

struct Webhook {
    api: FakeApi,
    app: Arc<App>,
    addr: SocketAddr,
    connector: TlsConnector,
    _certs: tempfile::TempDir,
}

/// The fake API server holding `pods` and the namespaces of [`RULES`].
async fn fake_api(pods: Vec<Value>) -> FakeApi {
    let api = FakeApi::start().await;
    let names = ["team-a", "trial", "burst"].map(namespace).to_vec();
    api.serve("/api/v1/namespaces", "v1", "NamespaceList", names);
    api.serve(PODS, "v1", "PodList", pods);
    api
}

/// The webhook in cluster mode against a fake API server holding `pods`, served over real TLS.
async fn webhook(pods: Vec<Value>) -> Webhook {
    let api = fake_api(pods).await;
    let (app, addr, connector, certs) = replica(&api).await;
    Webhook {
        api,
        app,
        addr,
        connector,
        _certs: certs,
    }
}

/// One webhook replica (its own App, watches and HTTPS server) against `api`, once its caches and
/// pod index have synced.
async fn replica(api: &FakeApi) -> (Arc<App>, SocketAddr, TlsConnector, tempfile::TempDir) {
    let (app, cluster) = common::cluster_app(api.client(), policy(), pools());
    gpu_slicer::webhook::gpu_budget::start_watch(&app, api.client());
    let mut changes = cluster.subscribe();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !app.ready() {
            tokio::select! {
                _ = changes.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await
    .expect("caches and the pod index synced");

    let certs = tempfile::tempdir().unwrap();
    let bundle = tls::generate(&["localhost".into()], "test").unwrap();
    tls::write_bundle(certs.path(), &bundle, false).unwrap();
    let cert = Arc::new(
        tls::ReloadingCert::load(&certs.path().join("tls.crt"), &certs.path().join("tls.key"))
            .unwrap(),
    );
    let bound = Bound::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let config = tls::server_config(cert).unwrap();
    tokio::spawn(bound.serve(
        server::router(app.clone()),
        config,
        Limits::default(),
        std::future::pending(),
    ));
    let connector = admit::connector(bundle.ca_cert.as_bytes());
    (app, addr, connector, certs)
}

impl Webhook {
    /// An HTTP/2 connection over TLS.
    async fn h2(&self) -> H2 {
        admit::h2(self.addr, &self.connector).await
    }

    async fn admit(&self, ns: &str, gpus: &str, uid: usize) -> Value {
        let mut h2 = self.h2().await;
        call(&mut h2, review(ns, gpus, uid)).await
    }

    async fn metrics(&self) -> String {
        admit::get(&mut self.h2().await, "/metrics").await
    }

    /// Waits on the Pod watch's change notifications (not on a clock) until `cond` holds.
    async fn until(&self, what: &str, cond: impl Fn() -> bool) {
        let mut rx = self.app.usage_changes.get().unwrap().subscribe();
        tokio::time::timeout(Duration::from_secs(5), async {
            while !cond() {
                rx.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

#[tokio::test]
async fn a_full_namespace_denies_the_next_pod_and_a_deleted_pod_frees_room() {
    let w = webhook(vec![
        gpu_pod("team-a", "one", "1"),
        gpu_pod("team-a", "two", "1"),
        // Finished and terminating pods hold nothing.
        {
            let mut p = gpu_pod("team-a", "done", "1");
            p["status"]["phase"] = json!("Succeeded");
            p
        },
        {
            let mut p = gpu_pod("team-a", "leaving", "1");
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            p
        },
    ])
    .await;
    let denied = w.admit("team-a", "1", 1).await;
    assert_eq!(denied["allowed"], json!(false), "{denied}");
    let msg = message(&denied);
    for part in [
        "namespace \"team-a\" is over its GPU budget",
        "rule team allows 2 GPU-equivalents",
        "pods hold 2",
        "this pod asks for 1",
        "delete or scale down pods",
        "raise budget.gpuEquivalents of rule team",
    ] {
        assert!(msg.contains(part), "{part}: {msg}");
    }

    let metrics = w.metrics().await;
    for line in [
        "gpu_slicer_gpu_equivalents{namespace=\"team-a\",rule=\"team\"} 2.0",
        "gpu_slicer_requested_gpus{namespace=\"team-a\",rule=\"team\"} 2.0",
        "gpu_slicer_budget_gpu_equivalents{namespace=\"team-a\",rule=\"team\"} 2.0",
        // p5.48xlarge: $55.04/h over 8 GPUs.
        "gpu_slicer_cost_usd_per_hour{namespace=\"team-a\",rule=\"team\"} 13.76",
        "gpu_slicer_saving_usd_per_hour{namespace=\"team-a\",rule=\"team\"} 0.0",
        "gpu_slicer_budget_gpu_equivalents{namespace=\"burst\",rule=\"burst\"} 3.0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in:\n{metrics}"
        );
    }

    w.api.delete(PODS, "one");
    let index = w.app.usage_index().unwrap().clone();
    w.until("the deleted pod is gone from the index", || {
        index.holding("team-a", std::time::Instant::now()).pods == gpu_slicer_core::gpus::Gpus::ONE
    })
    .await;
    let allowed = w.admit("team-a", "1", 2).await;
    assert_eq!(allowed["allowed"], json!(true), "{allowed}");
    // Its reservation holds the room until its pod shows up: the next one is denied.
    let again = w.admit("team-a", "1", 3).await;
    assert_eq!(again["allowed"], json!(false), "{again}");
    assert!(message(&again).contains("being admitted now"), "{again}");
    // The admitted pod appears in the watch: counted once, its reservation released.
    w.api.upsert(PODS, gpu_pod("team-a", "three", "1"));
    w.until("the new pod is counted", || {
        index.holding("team-a", std::time::Instant::now())
            == gpu_slicer_core::budget::Holding {
                pods: gpu_slicer_core::gpus::Gpus::whole(2),
                in_flight: gpu_slicer_core::gpus::Gpus::ZERO,
            }
    })
    .await;
}

#[tokio::test]
async fn audit_mode_warns_that_it_would_deny() {
    let w = webhook(vec![gpu_pod("trial", "one", "1")]).await;
    let r = w.admit("trial", "1", 1).await;
    assert_eq!(r["allowed"], json!(true), "{r}");
    assert!(r.get("patch").is_none(), "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("would deny"), "{warnings}");
    assert!(warnings.contains("over its GPU budget"), "{warnings}");
}

#[tokio::test]
async fn a_burst_of_fifty_concurrent_creates_ends_at_or_under_the_budget() {
    let w = webhook(Vec::new()).await;
    // 1g.10gb on H100: 1/7 each; a budget of 3 holds 21.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut h2 = w.h2().await;
        tasks.push(tokio::spawn(async move {
            call(&mut h2, review("burst", "1", i)).await
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r["allowed"] == json!(true) {
            allowed += 1;
        } else {
            assert!(message(&r).contains("over its GPU budget"), "{r}");
        }
    }
    assert_eq!(allowed, 21, "3 GPU-equivalents of 1/7 slices");
    let held = w
        .app
        .usage_index()
        .unwrap()
        .holding("burst", std::time::Instant::now())
        .total();
    assert_eq!(held, gpu_slicer_core::gpus::Gpus::whole(3));
}

/// A pod as the API server stores it once a replica admitted it: the rewritten 1g.10gb slice.
fn admitted_slice(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("burst-{i}"), "namespace": "burst", "uid": format!("uid-burst-{i}")},
        "spec": {"containers": [{"name": "main", "image": "vllm",
            "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}, "requests": {"nvidia.com/mig-1g.10gb": "1"}}}]},
        "status": {"phase": "Pending"}
    })
}

/// A burst of `n` concurrent creates split across `replicas` (alternately); with `store`, each
/// admitted pod is stored in the fake API server as soon as its answer arrives (as the API server
/// does), so the other replica's watch can see it. Returns the pods admitted.
async fn split_burst(
    api: &FakeApi,
    replicas: &[(SocketAddr, TlsConnector)],
    n: usize,
    store: bool,
) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (addr, connector) = &replicas[i % replicas.len()];
        let mut h2 = admit::h2(*addr, connector).await;
        tasks.push(tokio::spawn(async move {
            (i, call(&mut h2, review("burst", "1", i)).await)
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        let (i, r) = t.await.unwrap();
        if r["allowed"] == json!(true) {
            admitted += 1;
            if store {
                api.upsert(PODS, admitted_slice(i));
            }
        } else {
            assert!(message(&r).contains("over its GPU budget"), "{r}");
        }
    }
    admitted
}

/// Two replicas watching the same pods: each admits up to the budget minus what it sees (the pods
/// in its watch and its own admissions in flight), so a namespace can end at most the other
/// replica's admissions not yet in the watch over its budget: `budget - held` at the burst's start.
/// Measured with 1/7 slices against a budget of 3 (21 slices) and 50 concurrent creates split
/// across the two: README, "Budgets".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_overshoot_by_at_most_what_the_other_admitted_unseen() {
    let budget_slices = 21;
    // Worst case: no admitted pod reaches either watch during the burst (the API server has not
    // stored them yet): each replica fills the budget on its own.
    let api = fake_api(Vec::new()).await;
    let (a, addr_a, conn_a, _ca) = replica(&api).await;
    let (b, addr_b, conn_b, _cb) = replica(&api).await;
    let both = [(addr_a, conn_a), (addr_b, conn_b)];
    let unseen = split_burst(&api, &both, 50, false).await;
    assert_eq!(
        unseen,
        2 * budget_slices,
        "each replica admits the whole budget"
    );
    eprintln!(
        "two replicas, admitted pods never stored: {unseen} of 50 admitted = {:.6} GPU-equivalents for a budget of 3 (overshoot {:.6})",
        unseen as f64 / 7.0,
        (unseen - budget_slices) as f64 / 7.0
    );
    drop((a, b));

    // As in a cluster: each admitted pod is stored at once and reaches both watches.
    let api = fake_api(Vec::new()).await;
    let (_a, addr_a, conn_a, _ca) = replica(&api).await;
    let (_b, addr_b, conn_b, _cb) = replica(&api).await;
    let both = [(addr_a, conn_a), (addr_b, conn_b)];
    let stored = split_burst(&api, &both, 50, true).await;
    eprintln!(
        "two replicas, admitted pods stored as answered: {stored} of 50 admitted = {:.6} GPU-equivalents for a budget of 3 (overshoot {:.6})",
        stored as f64 / 7.0,
        stored.saturating_sub(budget_slices) as f64 / 7.0
    );
    assert!(
        (budget_slices..=2 * budget_slices).contains(&stored),
        "{stored} admitted: the bound is the budget plus what the other replica admitted unseen"
    );
}
