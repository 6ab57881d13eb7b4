//! A local HTTP server speaking the API server's wire format for what gpu-slicer's ResourceClaimTemplate
//! controller (cluster mode, `backend: dra`) uses: Namespace list and watch, ResourceClaimTemplate list
//! and watch (all namespaces, label selector) and per-namespace list, server-side apply (PATCH
//! `application/apply-patch+yaml`) and DELETE, per-namespace Pod list, and Event POST. Every write is
//! recorded, and every request counted.
//!
//! Used by `tests/dra_controller.rs` and by `benches/controller_scale.rs` (included by path), so it
//! depends only on the crate's own dependencies.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// What the fake API server stores.
#[derive(Default)]
pub struct Store {
    pub rv: u64,
    pub namespaces: BTreeMap<String, Value>,
    /// (namespace, name) -> object.
    pub templates: BTreeMap<(String, String), Value>,
    /// (namespace, name) -> Pod: what the controller reads before deleting a template.
    pub pods: BTreeMap<(String, String), Value>,
    /// `PATCH ns/name`, `DELETE ns/name`: every write, in order.
    pub writes: Vec<String>,
    /// Events posted (events.k8s.io/v1).
    pub events: Vec<Value>,
}

/// The running fake: its store, the watch streams, and a count of the requests served.
pub struct Fake {
    pub store: Mutex<Store>,
    pub ns_events: tokio::sync::broadcast::Sender<String>,
    pub tpl_events: tokio::sync::broadcast::Sender<String>,
    /// Requests served, by `METHOD kind` (`GET list templates`, `PATCH template`, ...).
    pub requests: Mutex<BTreeMap<String, usize>>,
    served: AtomicUsize,
}

/// How many watch events a slow watcher may fall behind before its stream ends (and kube-runtime's
/// watcher lists again): enough for every template of a 2,000-namespace policy change.
const WATCH_BUFFER: usize = 1 << 15;

/// The templates of `ns`, by name (a range of the store, not a scan of every namespace's).
fn templates_of<'a>(
    templates: &'a BTreeMap<(String, String), Value>,
    ns: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Value)> + 'a {
    templates
        .range((ns.to_string(), String::new())..)
        .take_while(move |((n, _), _)| n == ns)
        .map(|((_, name), v)| (name, v))
}

impl Fake {
    pub fn next_rv(store: &mut Store) -> String {
        store.rv += 1;
        store.rv.to_string()
    }

    pub fn set_namespace(&self, name: &str, labels: Value) {
        let mut s = self.store.lock().unwrap();
        let rv = Fake::next_rv(&mut s);
        let kind = if s.namespaces.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": rv, "labels": labels}});
        s.namespaces.insert(name.to_string(), obj.clone());
        let _ = self
            .ns_events
            .send(json!({"type": kind, "object": obj}).to_string());
    }

    pub fn put_template(&self, ns: &str, obj: Value) {
        let mut s = self.store.lock().unwrap();
        let rv = Fake::next_rv(&mut s);
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(rv);
        obj["metadata"]["namespace"] = json!(ns);
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if s.templates.contains_key(&(ns.to_string(), name.clone())) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.templates.insert((ns.to_string(), name), obj.clone());
        let _ = self
            .tpl_events
            .send(json!({"type": kind, "object": obj}).to_string());
    }

    pub fn templates_in(&self, ns: &str) -> BTreeMap<String, Value> {
        let s = self.store.lock().unwrap();
        templates_of(&s.templates, ns)
            .map(|(name, v)| (name.clone(), v.clone()))
            .collect()
    }

    /// How many namespaces hold a template named `name`.
    pub fn namespaces_with(&self, name: &str) -> usize {
        let s = self.store.lock().unwrap();
        s.templates.keys().filter(|(_, n)| n == name).count()
    }

    /// Requests served so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    pub fn writes(&self) -> Vec<String> {
        self.store.lock().unwrap().writes.clone()
    }
}

fn respond(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn matches(obj: &Value, selector: Option<&String>) -> bool {
    selector.is_none_or(|sel| {
        sel.split(',').all(|term| match term.split_once('=') {
            Some((k, v)) => obj["metadata"]["labels"][k] == v,
            None => true,
        })
    })
}

fn watch(rx: tokio::sync::broadcast::Receiver<String>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(line) => Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), rx)),
            Err(_) => None,
        }
    });
    Body::from_stream(stream).into_response()
}

async fn namespaces(
    State(f): State<Arc<Fake>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(f.ns_events.subscribe());
    }
    let s = f.store.lock().unwrap();
    let items: Vec<Value> = s.namespaces.values().cloned().collect();
    list(s.rv, "v1", "NamespaceList", items)
}

/// A `*List` at resourceVersion `rv`.
fn list(rv: u64, api_version: &str, kind: &str, items: Vec<Value>) -> Response {
    respond(
        StatusCode::OK,
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

fn template_list(s: &Store, ns: Option<&str>, selector: Option<&String>) -> Response {
    let items: Vec<Value> = match ns {
        Some(ns) => templates_of(&s.templates, ns)
            .map(|(_, v)| v)
            .filter(|v| matches(v, selector))
            .cloned()
            .collect(),
        None => s
            .templates
            .values()
            .filter(|v| matches(v, selector))
            .cloned()
            .collect(),
    };
    list(
        s.rv,
        "resource.k8s.io/v1",
        "ResourceClaimTemplateList",
        items,
    )
}

async fn all_templates(
    State(f): State<Arc<Fake>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return watch(f.tpl_events.subscribe());
    }
    template_list(&f.store.lock().unwrap(), None, q.get("labelSelector"))
}

async fn ns_templates(
    State(f): State<Arc<Fake>>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    template_list(&f.store.lock().unwrap(), Some(&ns), q.get("labelSelector"))
}

async fn apply(
    State(f): State<Arc<Fake>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    assert_eq!(
        headers["content-type"], "application/apply-patch+yaml",
        "server-side apply"
    );
    assert_eq!(
        q.get("fieldManager").map(String::as_str),
        Some("gpu-slicer")
    );
    let obj: Value = serde_json::from_slice(&body).expect("apply body is JSON");
    assert_eq!(obj["metadata"]["name"], name.as_str());
    f.store
        .lock()
        .unwrap()
        .writes
        .push(format!("PATCH {ns}/{name}"));
    f.put_template(&ns, obj);
    let stored = f.templates_in(&ns)[&name].clone();
    respond(StatusCode::OK, stored)
}

async fn delete(State(f): State<Arc<Fake>>, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut s = f.store.lock().unwrap();
    s.writes.push(format!("DELETE {ns}/{name}"));
    let Some(obj) = s.templates.remove(&(ns.clone(), name.clone())) else {
        return respond(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "metadata": {}}),
        );
    };
    Fake::next_rv(&mut s);
    let _ = f
        .tpl_events
        .send(json!({"type": "DELETED", "object": obj}).to_string());
    respond(StatusCode::OK, obj)
}

async fn pods(State(f): State<Arc<Fake>>, Path(ns): Path<String>) -> Response {
    let s = f.store.lock().unwrap();
    let items: Vec<Value> = s
        .pods
        .iter()
        .filter(|((n, _), _)| *n == ns)
        .map(|(_, v)| v.clone())
        .collect();
    list(s.rv, "v1", "PodList", items)
}

async fn post_event(State(f): State<Arc<Fake>>, body: Bytes) -> Response {
    let event: Value = serde_json::from_slice(&body).expect("event body is JSON");
    f.store.lock().unwrap().events.push(event.clone());
    respond(StatusCode::CREATED, event)
}

/// What a request was, for [`Fake::requests`]: its method and the kind of call.
fn kind_of(method: &str, path: &str, query: &str) -> String {
    let watch = query.contains("watch=true") || query.contains("watch=1");
    let what = if path.ends_with("/events") {
        "event"
    } else if path.ends_with("/pods") {
        "list pods"
    } else if path == "/api/v1/namespaces" {
        if watch {
            "watch namespaces"
        } else {
            "list namespaces"
        }
    } else if path.ends_with("/resourceclaimtemplates") {
        match (watch, path.contains("/namespaces/")) {
            (true, _) => "watch templates",
            (false, true) => "list templates (namespace)",
            (false, false) => "list templates (all)",
        }
    } else {
        "template"
    };
    format!("{method} {what}")
}

async fn count(State(f): State<Arc<Fake>>, request: Request, next: Next) -> Response {
    let uri = request.uri();
    let kind = kind_of(
        request.method().as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
    );
    *f.requests.lock().unwrap().entry(kind).or_default() += 1;
    f.served.fetch_add(1, Ordering::SeqCst);
    next.run(request).await
}

/// Starts the server on a free port of 127.0.0.1.
pub async fn start() -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake {
        store: Mutex::new(Store::default()),
        ns_events: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
        tpl_events: tokio::sync::broadcast::channel(WATCH_BUFFER).0,
        requests: Mutex::new(BTreeMap::new()),
        served: AtomicUsize::new(0),
    });
    let router = axum::Router::new()
        .route("/api/v1/namespaces", get(namespaces))
        .route(
            "/apis/resource.k8s.io/v1/resourceclaimtemplates",
            get(all_templates),
        )
        .route(
            "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates",
            get(ns_templates),
        )
        .route(
            "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates/{name}",
            axum::routing::patch(apply).delete(delete),
        )
        .route("/api/v1/namespaces/{ns}/pods", get(pods))
        .route(
            "/apis/events.k8s.io/v1/namespaces/{ns}/events",
            axum::routing::post(post_event),
        )
        .layer(axum::middleware::from_fn_with_state(fake.clone(), count))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (addr, fake)
}
