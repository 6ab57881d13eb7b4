//! Cluster mode against a local HTTP server that speaks the API server's list and watch wire format
//! (a `*List` with `metadata.resourceVersion`, then newline-delimited `ADDED`/`MODIFIED`/`DELETED`/
//! `BOOKMARK` events, and a 410 `ERROR` event for a too-old resourceVersion), so the real kube-rs client,
//! watcher and store run. Events are the ones captured from a real API server (tests/data/apiserver).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::*;
use gpu_slicer::cluster::watch::{Cluster, PoolWatch};
use gpu_slicer::webhook::admission::StaticFacts;
use gpu_slicer::webhook::metrics::Metrics;
use gpu_slicer::webhook::server::{self, App, Limits};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const HOLD_PERMITS: u32 = 1024;

/// One resource of the fake API server.
struct Resource {
    kind_list: &'static str,
    api_version: &'static str,
    items: Mutex<BTreeMap<String, Value>>,
    resource_version: Mutex<String>,
    events: tokio::sync::broadcast::Sender<String>,
    watches: tokio::sync::watch::Sender<usize>,
    lists: AtomicUsize,
    /// Watches still to be answered with `410 Gone` (too old resourceVersion).
    expire: AtomicUsize,
    installed: AtomicBool,
    /// Held lists wait for this (readiness test).
    hold_list: tokio::sync::Semaphore,
    /// Direct GETs fail with 500 when set.
    fail_get: AtomicBool,
}

impl Resource {
    fn new(list_file: &str, kind_list: &'static str, api_version: &'static str) -> Arc<Resource> {
        let list: Value =
            serde_json::from_str(&std::fs::read_to_string(repo(list_file)).unwrap()).unwrap();
        let items = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_string(),
                    o.clone(),
                )
            })
            .collect();
        Arc::new(Resource {
            kind_list,
            api_version,
            items: Mutex::new(items),
            resource_version: Mutex::new(
                list["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
            events: tokio::sync::broadcast::channel(64).0,
            watches: tokio::sync::watch::channel(0).0,
            lists: AtomicUsize::new(0),
            expire: AtomicUsize::new(0),
            installed: AtomicBool::new(true),
            hold_list: tokio::sync::Semaphore::new(HOLD_PERMITS as usize),
            fail_get: AtomicBool::new(false),
        })
    }

    /// Applies a captured event to the store and sends it to open watches.
    fn push(&self, line: &str) {
        let event: Value = serde_json::from_str(line).unwrap();
        let obj = &event["object"];
        let rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        if let Some(name) = obj["metadata"]["name"].as_str() {
            let mut items = self.items.lock().unwrap();
            if event["type"] == "DELETED" {
                items.remove(name);
            } else {
                items.insert(name.to_string(), obj.clone());
            }
        }
        *self.resource_version.lock().unwrap() = rv;
        let _ = self.events.send(line.to_string());
    }

    async fn watch_count_reaches(&self, n: usize) {
        let mut rx = self.watches.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|c| *c >= n))
            .await
            .expect("watch opened")
            .unwrap();
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
    )
}

async fn list_or_watch(res: Arc<Resource>, q: BTreeMap<String, String>) -> Response {
    if !res.installed.load(Ordering::SeqCst) {
        return not_found("the server could not find the requested resource");
    }
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        res.watches.send_modify(|n| *n += 1);
        if res.expire.load(Ordering::SeqCst) > 0 {
            res.expire.fetch_sub(1, Ordering::SeqCst);
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version: 1 (250)", "reason": "Expired", "code": 410}});
            return Body::from(format!("{gone}\n")).into_response();
        }
        let rx = res.events.subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(line) => Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), rx)),
                Err(_) => None,
            }
        });
        return Body::from_stream(stream).into_response();
    }
    let _permit = res.hold_list.acquire().await.unwrap();
    res.lists.fetch_add(1, Ordering::SeqCst);
    let items: Vec<Value> = res.items.lock().unwrap().values().cloned().collect();
    let rv = res.resource_version.lock().unwrap().clone();
    json_response(
        StatusCode::OK,
        json!({"kind": res.kind_list, "apiVersion": res.api_version, "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

async fn get_one(res: Arc<Resource>, name: String) -> Response {
    if res.fail_get.load(Ordering::SeqCst) {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "etcd unavailable", "code": 500}),
        );
    }
    match res.items.lock().unwrap().get(&name) {
        Some(obj) => json_response(StatusCode::OK, obj.clone()),
        None => not_found(&name),
    }
}

struct FakeApi {
    addr: SocketAddr,
    namespaces: Arc<Resource>,
    nodepools: Arc<Resource>,
}

async fn fake_api() -> FakeApi {
    let namespaces = Resource::new(
        "tests/data/apiserver/namespaces-list.json",
        "NamespaceList",
        "v1",
    );
    let nodepools = Resource::new(
        "tests/data/apiserver/nodepools-list.json",
        "NodePoolList",
        "karpenter.sh/v1",
    );
    let (ns, np) = (namespaces.clone(), nodepools.clone());
    let (ns2, np2) = (namespaces.clone(), nodepools.clone());
    let router = axum::Router::new()
        .route(
            "/api/v1/namespaces",
            get(move |Query(q): Query<BTreeMap<String, String>>| list_or_watch(ns.clone(), q)),
        )
        .route(
            "/api/v1/namespaces/{name}",
            get(move |Path(name): Path<String>| get_one(ns2.clone(), name)),
        )
        .route(
            "/apis/karpenter.sh/v1/nodepools",
            get(move |Query(q): Query<BTreeMap<String, String>>| list_or_watch(np.clone(), q)),
        )
        .route(
            "/apis/karpenter.sh/v1/nodepools/{name}",
            get(move |Path(name): Path<String>| get_one(np2.clone(), name)),
        )
        .with_state(());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    FakeApi {
        addr,
        namespaces,
        nodepools,
    }
}

fn client(api: &FakeApi) -> kube::Client {
    let config = kube::Config::new(format!("http://{}", api.addr).parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn captured(file: &str) -> Vec<String> {
    std::fs::read_to_string(repo(file))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

const LABEL_POLICY: &str = "apiVersion: gpu-slicer.io/v1alpha1
kind: SlicingPolicy
spec:
  rules:
  - name: labelled-mig
    namespaceSelector: {matchLabels: {gpu-sharing: mig}}
    action: mig
    mig: {profile: 1g.10gb}
  - name: labelled-timeslice
    namespaceSelector: {matchLabels: {gpu-sharing: timeslice}}
    action: timeslice
    shared: {resourceName: nvidia.com/gpu.shared}
";

struct Harness {
    api: FakeApi,
    app: Arc<App>,
    cluster: Arc<Cluster>,
}

async fn harness(policy: Policy, watch_pools: bool) -> Harness {
    harness_on(fake_api().await, policy, watch_pools)
}

/// The webhook app in cluster mode against `api` (set up as a test needs before the watches start).
fn harness_on(api: FakeApi, policy: Policy, watch_pools: bool) -> Harness {
    let app = App::new(
        StaticFacts {
            policy,
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        Limits::default(),
    );
    let cluster = Cluster::start(
        client(&api),
        app.pools.clone(),
        watch_pools,
        app.metrics.cluster.clone(),
    );
    app.attach_cluster(cluster.clone());
    Harness { api, app, cluster }
}

impl Harness {
    /// Waits (on the cluster's change notifications, not on a clock) until `cond` holds.
    async fn until(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let mut rx = self.cluster.subscribe();
        let wait = async {
            while !cond(self) {
                rx.changed().await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    async fn ready(&self) {
        self.until("caches synced", |h| h.app.ready()).await;
    }

    async fn decide(&self, namespace: &str) -> Value {
        let mut rev = review("ml-inference-embedder-0-create");
        rev["request"]["namespace"] = json!(namespace);
        rev["request"]["object"]["metadata"]["namespace"] = json!(namespace);
        let req = Request::post("/mutate")
            .body(Body::from(serde_json::to_vec(&rev).unwrap()))
            .unwrap();
        let resp = server::router(self.app.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        serde_json::from_slice::<Value>(&resp.into_body().collect().await.unwrap().to_bytes())
            .unwrap()["response"]
            .clone()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = server::router(self.app.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        (
            status,
            String::from_utf8(
                resp.into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
                    .to_vec(),
            )
            .unwrap(),
        )
    }
}

fn rule_of(response: &Value) -> String {
    response["auditAnnotations"]["rule"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn namespace_label_changes_flip_the_rule_a_pod_gets() {
    let h = harness(Policy::parse(LABEL_POLICY, "inline").unwrap(), true).await;
    h.ready().await;
    // From the list: ml-inference is labelled gpu-sharing=mig.
    assert_eq!(rule_of(&h.decide("ml-inference").await), "labelled-mig");
    h.api.namespaces.watch_count_reaches(1).await;

    let events = captured("tests/data/apiserver/namespaces-watch.ndjson");
    // ADDED ml-notebooks (no label), MODIFIED ml-notebooks (gpu-sharing=timeslice), MODIFIED ml-inference (label removed).
    for line in &events[..3] {
        h.api.namespaces.push(line);
    }
    h.until("ml-inference unlabelled", |h| {
        h.cluster
            .cached_labels("ml-inference")
            .is_some_and(|l| !l.contains_key("gpu-sharing"))
    })
    .await;
    assert_eq!(rule_of(&h.decide("ml-inference").await), "(defaultAction)");
    assert_eq!(
        rule_of(&h.decide("ml-notebooks").await),
        "labelled-timeslice"
    );

    // Bookmark, terminating, deleted: the namespace leaves the cache; a direct read finds nothing.
    for line in &events[3..] {
        h.api.namespaces.push(line);
    }
    h.until("ml-notebooks deleted", |h| {
        h.cluster.cached_labels("ml-notebooks").is_none()
    })
    .await;
    assert_eq!(rule_of(&h.decide("ml-notebooks").await), "(defaultAction)");
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("gpu_slicer_namespace_lookups_total{result=\"missing\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpu_slicer_cache_synced{resource=\"namespaces\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        h.api.namespaces.lists.load(Ordering::SeqCst),
        1,
        "one list, then only watch events"
    );
}

#[tokio::test]
async fn nodepool_taint_changes_change_the_tolerations() {
    let h = harness(contract_policy(), true).await;
    h.ready().await;
    let tolerations = |resp: &Value| -> Vec<Value> {
        let ops: Vec<Value> =
            serde_json::from_slice(&base64_decode(resp["patch"].as_str().unwrap())).unwrap();
        ops.into_iter()
            .filter(|o| o["path"].as_str().unwrap().starts_with("/spec/tolerations"))
            .map(|o| o["value"].clone())
            .collect()
    };
    let first = h.decide("team-a").await;
    assert_eq!(
        tolerations(&first),
        vec![json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})]
    );
    h.api.nodepools.watch_count_reaches(1).await;

    let events = captured("tests/data/apiserver/nodepools-watch.ndjson");
    h.api.nodepools.push(&events[0]); // MODIFIED: taint team=ml added
    h.until("team taint", |h| {
        h.app
            .pools
            .load()
            .get("gpu-h100-mig")
            .is_some_and(|p| p.taints.len() == 2)
    })
    .await;
    let second = h.decide("team-a").await;
    assert!(
        tolerations(&second).contains(
            &json!({"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"})
        ),
        "{second}"
    );

    h.api.nodepools.push(&events[1]); // DELETED
    h.until("pool deleted", |h| h.app.pools.load().is_empty())
        .await;
    let third = h.decide("team-a").await;
    assert!(!tolerations(&third).contains(
        &json!({"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"})
    ));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test]
async fn a_namespace_not_yet_cached_is_read_directly_and_an_unreadable_one_is_refused_not_guessed()
{
    let h = harness(Policy::parse(LABEL_POLICY, "inline").unwrap(), true).await;
    h.ready().await;
    // Created in the API server a moment ago; its watch event has not arrived.
    h.api.namespaces.items.lock().unwrap().insert(
        "fresh".into(),
        json!({"metadata": {"name": "fresh", "resourceVersion": "300", "labels": {"gpu-sharing": "mig", "kubernetes.io/metadata.name": "fresh"}}}),
    );
    assert_eq!(rule_of(&h.decide("fresh").await), "labelled-mig");

    h.api.namespaces.fail_get.store(true, Ordering::SeqCst);
    let refused = h.decide("brand-new").await;
    assert_eq!(refused["allowed"], false);
    let msg = refused["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("could not be read") && msg.contains("retry"),
        "{msg}"
    );
    // Pods without GPUs never depend on labels.
    let mut rev = review("ml-inference-cpu-only-create");
    rev["request"]["namespace"] = json!("brand-new");
    let req = Request::post("/mutate")
        .body(Body::from(serde_json::to_vec(&rev).unwrap()))
        .unwrap();
    let resp = server::router(h.app.clone()).oneshot(req).await.unwrap();
    let out: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(out["response"]["allowed"], true);

    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("gpu_slicer_namespace_lookups_total{result=\"found\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpu_slicer_namespace_lookups_total{result=\"failed\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn readyz_waits_for_the_caches_and_reports_a_missing_nodepool_crd() {
    let api = fake_api().await;
    api.nodepools.installed.store(false, Ordering::SeqCst);
    // Hold the namespace list: the cache cannot sync yet.
    let namespaces = api.namespaces.clone();
    let held = namespaces
        .hold_list
        .acquire_many(HOLD_PERMITS)
        .await
        .unwrap();
    let h = harness_on(api, contract_policy(), true);
    h.until("CRD probe", |h| {
        h.cluster.pool_watch() == PoolWatch::CrdMissing
    })
    .await;
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    drop(held);
    h.ready().await;
    let (status, body) = h.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(
        body["cluster"]["nodePools"]
            .as_str()
            .unwrap()
            .contains("not installed"),
        "{body}"
    );
    // Routing by policy only: the rule's selectors, no NodePool template labels or taints.
    let resp = h.decide("team-a").await;
    assert_eq!(resp["allowed"], true);
}

#[tokio::test]
async fn a_too_old_resource_version_makes_the_watcher_relist() {
    let api = fake_api().await;
    api.namespaces.expire.store(1, Ordering::SeqCst);
    let h = harness_on(api, Policy::parse(LABEL_POLICY, "inline").unwrap(), false);
    h.ready().await;
    // The first watch got 410 Gone; the watcher lists again, then watches from the new list.
    h.api.namespaces.watch_count_reaches(2).await;
    assert!(
        h.api.namespaces.lists.load(Ordering::SeqCst) >= 2,
        "relisted after 410"
    );
    let events = captured("tests/data/apiserver/namespaces-watch.ndjson");
    h.api.namespaces.push(&events[0]);
    h.api.namespaces.push(&events[1]);
    h.until("event after relist", |h| {
        h.cluster
            .cached_labels("ml-notebooks")
            .is_some_and(|l| l.get("gpu-sharing").map(String::as_str) == Some("timeslice"))
    })
    .await;
    assert_eq!(
        rule_of(&h.decide("ml-notebooks").await),
        "labelled-timeslice"
    );
}
