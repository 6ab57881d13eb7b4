//! A local fake API server speaking the list wire format of kube-apiserver: `GET <collection>` answers
//! a `*List` with `metadata.resourceVersion`, paginated by `limit` and `continue` (with
//! `remainingItemCount`, as the real one sends); a collection it does not serve is a 404 `Status`, as
//! for a CRD that is not installed; `GET <collection>/<name>` answers one object. It records every
//! request (method, path, query) so tests can check that a reader paginates and never writes.
//! `?watch=true` on a collection streams the `ADDED`/`MODIFIED`/`DELETED` events of
//! [`FakeApi::upsert`] and [`FakeApi::delete`] (newline-delimited, as the API server sends them).
//!
//! Also used by `examples/doctor_scale.rs` (included by path), so it depends only on the crate's own
//! dependencies.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

struct Collection {
    api_version: String,
    list_kind: String,
    /// Name and serialized object: serialized once, so 20,000 pods cost their JSON, not a tree of
    /// `Value`s several times that size.
    items: Arc<Vec<(String, String)>>,
}

#[derive(Default)]
struct Inner {
    collections: Mutex<BTreeMap<String, Collection>>,
    forbidden: Mutex<BTreeSet<String>>,
    requests: Mutex<Vec<(Method, String)>>,
    /// Continue tokens still to be refused with 410 Gone (an expired token).
    expire_continue: AtomicUsize,
    /// Watch events per collection path.
    events: Mutex<BTreeMap<String, tokio::sync::broadcast::Sender<String>>>,
    /// The resourceVersion of the last change.
    version: AtomicUsize,
}

impl Inner {
    fn events(&self, path: &str) -> tokio::sync::broadcast::Sender<String> {
        self.events
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_insert_with(|| tokio::sync::broadcast::channel(4096).0)
            .clone()
    }
}

/// The running fake server.
#[derive(Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/").replace("%3D", "=")))
        .collect()
}

async fn handle(State(inner): State<Arc<Inner>>, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_string();
    inner
        .requests
        .lock()
        .unwrap()
        .push((method.clone(), uri.to_string()));
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server is read-only",
        );
    }
    if inner.forbidden.lock().unwrap().contains(&path) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("{path} is forbidden: User \"doctor\" cannot list resource"),
        );
    }
    let q = query(&uri);
    if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let rx = inner.events(&path).subscribe();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(line) => Some((Ok::<_, std::convert::Infallible>(format!("{line}\n")), rx)),
                Err(_) => None,
            }
        });
        return Body::from_stream(stream).into_response();
    }
    let collections = inner.collections.lock().unwrap();
    if let Some(c) = collections.get(&path) {
        let start: usize = match q.get("continue") {
            None => 0,
            Some(token) => {
                if inner
                    .expire_continue
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return status(
                        StatusCode::GONE,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    );
                }
                match token.strip_prefix("fake-").and_then(|n| n.parse().ok()) {
                    Some(n) => n,
                    None => {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "invalid continue token",
                        );
                    }
                }
            }
        };
        let limit = q
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let end = start.saturating_add(limit).min(c.items.len());
        let rv = inner.version.load(Ordering::SeqCst).to_string();
        let mut metadata = json!({"resourceVersion": rv});
        if end < c.items.len() {
            metadata["continue"] = json!(format!("fake-{end}"));
            metadata["remainingItemCount"] = json!(c.items.len() - end);
        }
        let items = &c.items[start.min(end)..end];
        let mut body = format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{metadata},\"items\":[",
            json!(c.list_kind),
            json!(c.api_version)
        );
        for (i, (_, item)) in items.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(item);
        }
        body.push_str("]}");
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
    }
    // One object: the parent collection's item with that name.
    if let Some((parent, name)) = path.rsplit_once('/')
        && let Some(c) = collections.get(parent)
    {
        return match c.items.iter().find(|(n, _)| n == name) {
            Some((_, obj)) => (
                StatusCode::OK,
                [("content-type", "application/json")],
                obj.clone(),
            )
                .into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("\"{name}\" not found"),
            ),
        };
    }
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

impl FakeApi {
    /// Starts the server on a free port of 127.0.0.1 (read back, no port races).
    pub async fn start() -> FakeApi {
        let inner = Arc::new(Inner::default());
        inner.version.store(4242, Ordering::SeqCst);
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakeApi { addr, inner }
    }

    /// Serves a collection at `path` (e.g. `/api/v1/pods`, `/apis/karpenter.sh/v1/nodeclaims`).
    /// Namespaced objects are also served at `/api/v1/namespaces/NS/<plural>/NAME` when registered
    /// with [`FakeApi::serve_namespaced`].
    pub fn serve(&self, path: &str, api_version: &str, list_kind: &str, items: Vec<Value>) {
        self.inner.collections.lock().unwrap().insert(
            path.to_string(),
            Collection {
                api_version: api_version.to_string(),
                list_kind: list_kind.to_string(),
                items: Arc::new(
                    items
                        .iter()
                        .map(|o| {
                            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                            (name, o.to_string())
                        })
                        .collect(),
                ),
            },
        );
    }

    /// Serves namespaced objects both cluster-wide (`<prefix>/<plural>`) and per namespace
    /// (`<prefix>/namespaces/NS/<plural>`, and `/NAME` below that).
    pub fn serve_namespaced(
        &self,
        prefix: &str,
        plural: &str,
        api_version: &str,
        list_kind: &str,
        items: Vec<Value>,
    ) {
        let mut by_ns: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for item in &items {
            let ns = item["metadata"]["namespace"].as_str().unwrap_or("default");
            by_ns.entry(ns.to_string()).or_default().push(item.clone());
        }
        for (ns, items) in by_ns {
            self.serve(
                &format!("{prefix}/namespaces/{ns}/{plural}"),
                api_version,
                list_kind,
                items,
            );
        }
        self.serve(&format!("{prefix}/{plural}"), api_version, list_kind, items);
    }

    /// Adds or replaces an object of the collection at `path` and tells its watches.
    pub fn upsert(&self, path: &str, mut object: Value) {
        let rv = self.inner.version.fetch_add(1, Ordering::SeqCst) + 1;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let kind = {
            let mut collections = self.inner.collections.lock().unwrap();
            let c = collections.get_mut(path).expect("a served collection");
            let mut items: Vec<(String, String)> = (*c.items).clone();
            let kind = match items.iter_mut().find(|(n, _)| *n == name) {
                Some(item) => {
                    item.1 = object.to_string();
                    "MODIFIED"
                }
                None => {
                    items.push((name, object.to_string()));
                    "ADDED"
                }
            };
            c.items = Arc::new(items);
            kind
        };
        let _ = self
            .inner
            .events(path)
            .send(json!({"type": kind, "object": object}).to_string());
    }

    /// Deletes an object of the collection at `path` and tells its watches.
    pub fn delete(&self, path: &str, name: &str) {
        let rv = self.inner.version.fetch_add(1, Ordering::SeqCst) + 1;
        let removed = {
            let mut collections = self.inner.collections.lock().unwrap();
            let c = collections.get_mut(path).expect("a served collection");
            let mut items: Vec<(String, String)> = (*c.items).clone();
            let at = items.iter().position(|(n, _)| n == name);
            let removed = at.map(|i| items.remove(i).1);
            c.items = Arc::new(items);
            removed
        };
        if let Some(text) = removed {
            let mut object: Value = serde_json::from_str(&text).unwrap();
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let _ = self
                .inner
                .events(path)
                .send(json!({"type": "DELETED", "object": object}).to_string());
        }
    }

    /// Stops serving a collection (its CRD uninstalled: 404).
    pub fn remove(&self, path: &str) {
        self.inner.collections.lock().unwrap().remove(path);
    }

    /// Answers 403 for this path.
    pub fn forbid(&self, path: &str) {
        self.inner
            .forbidden
            .lock()
            .unwrap()
            .insert(path.to_string());
    }

    /// Refuses the next `n` continue tokens with 410 Gone.
    pub fn expire_continue_tokens(&self, n: usize) {
        self.inner.expire_continue.store(n, Ordering::SeqCst);
    }

    /// Every request so far: method and path with query.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// A kube client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Writes a kubeconfig for this server into `dir`; returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig_for(&format!("http://{}", self.addr), dir)
    }
}

/// A kubeconfig whose current context points at `server`.
pub fn kubeconfig_for(server: &str, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster: {{server: \"{server}\"}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: fake, user: u}}\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path
}
