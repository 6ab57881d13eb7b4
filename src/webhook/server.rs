//! The HTTPS server: routes, TLS, connection hygiene and graceful shutdown.
//!
//! - TCP_NODELAY; a TLS handshake timeout and an HTTP/1 header-read timeout, so idle scanners and slow
//!   clients cannot hold connections; a body size limit and a body read timeout.
//! - Memory: request bodies are reserved against a per-connection, per-address and process-wide byte
//!   budget ([`crate::webhook::body_budget`]) as they arrive; one address holds at most
//!   [`Limits::max_connections_per_peer`] connections; HTTP/2 streams per connection are capped and
//!   connections that carry no request for [`Limits::idle_timeout`] are closed (HTTP/2 GOAWAY).
//! - SIGTERM (or any shutdown future) stops accepting, lets in-flight requests finish, and closes
//!   keep-alive connections (the API server reuses them; kubernetes#127335), within a drain deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::cluster::watch::{Cluster, Lookup};
use crate::policy_source::LivePolicy;
use crate::webhook::admission::{self, BadReview, Labels, StaticFacts};
use crate::webhook::body_budget::{BodyBudget, BudgetLimits, ConnectionBudget, Exhausted, Held};
use crate::webhook::metrics::{AdmissionLabels, AuditLabels, ErrorLabels, Metrics};
use gpu_slicer_core::audit::Outcome;
use gpu_slicer_core::dra::claims::ClaimFacts;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;

/// Limits that keep one client from hurting the others.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body. The API server caps objects at ~1.5 MiB; a review carries one pod.
    pub max_body_bytes: usize,
    /// Most time for one review, from its headers to the answer (body read included). The API server's
    /// own deadline (`?timeout=` from the webhook's `timeoutSeconds`) shortens it: see [`deadline`].
    pub request_timeout: Duration,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time to read request headers (HTTP/1). hyper starts this timer whenever a connection waits for
    /// a request, so it also closes idle keep-alive connections: slow-header clients cannot hold them.
    pub header_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold; further ones are closed at once. The API server uses a
    /// few (HTTP/2 multiplexes); a pod that opens hundreds is not the API server.
    pub max_connections_per_peer: usize,
    /// Request-body bytes held at once by the whole process (the shipped memory limit is 128 MiB).
    pub max_in_flight_body_bytes: usize,
    /// Request-body bytes held at once by one client address: one address cannot take the room the
    /// API server's requests need.
    pub max_peer_body_bytes: usize,
    /// Request-body bytes held at once by one connection (its HTTP/2 streams together).
    pub max_connection_body_bytes: usize,
    /// HTTP/2 streams served at once on one connection (the API server opens another connection
    /// when it needs more).
    pub max_concurrent_streams: u32,
    /// A connection that starts no request for this long is closed (HTTP/2: GOAWAY, then close).
    pub idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

impl Limits {
    fn budget(&self) -> BudgetLimits {
        BudgetLimits {
            process_bytes: self.max_in_flight_body_bytes,
            peer_bytes: self.max_peer_body_bytes,
            connection_bytes: self.max_connection_body_bytes,
            peer_connections: self.max_connections_per_peer.max(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(8),
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_peer: 256,
            max_in_flight_body_bytes: 48 << 20,
            max_peer_body_bytes: 16 << 20,
            max_connection_body_bytes: 6 << 20,
            max_concurrent_streams: 32,
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Everything a request handler reads.
pub struct App {
    /// The policy in force; replaced whole on reload, so no request sees half of one. Shared with
    /// the template controller, which follows its replacements.
    pub policy: Arc<LivePolicy>,
    /// NodePools, from `--nodepools` or the cluster watch; replaced whole on every change.
    pub pools: Arc<ArcSwap<NodePoolIndex>>,
    cluster: OnceLock<Arc<Cluster>>,
    /// Cluster mode: what each namespace's pods hold, from the Pod watch (budgets, usage metrics).
    usage: OnceLock<Arc<crate::cluster::usage::UsageIndex>>,
    /// Bumped after every Pod watch event (tests wait on it).
    pub usage_changes: OnceLock<tokio::sync::watch::Sender<u64>>,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Body bytes of requests that come without a connection's budget (router tests).
    detached: ConnectionBudget,
    accepting: AtomicBool,
    policy_status: Mutex<PolicyStatus>,
}

/// The last refused policy, for `/readyz` (the generation in force is [`LivePolicy`]'s).
#[derive(Debug, Clone, Default)]
struct PolicyStatus {
    last_error: Option<String>,
}

impl App {
    pub fn new(facts: StaticFacts, metrics: Metrics, limits: Limits) -> Arc<App> {
        metrics.policy_rules.set(facts.policy.rules.len() as i64);
        metrics.policy_generation.set(1);
        metrics.policy_last_reload_success.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        Arc::new(App {
            policy: Arc::new(LivePolicy::new(facts.policy)),
            pools: Arc::new(ArcSwap::from_pointee(facts.pools)),
            cluster: OnceLock::new(),
            usage: OnceLock::new(),
            usage_changes: OnceLock::new(),
            metrics,
            detached: BodyBudget::new(limits.budget()).detached(),
            limits,
            accepting: AtomicBool::new(true),
            policy_status: Mutex::new(PolicyStatus { last_error: None }),
        })
    }

    /// Attaches the cluster watches (cluster mode); `/readyz` then waits for their caches.
    pub fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Attaches the Pod watch's usage index (cluster mode): budgets are then enforced.
    pub fn attach_usage(&self, index: Arc<crate::cluster::usage::UsageIndex>) {
        let _ = self.usage.set(index);
    }

    pub fn usage_index(&self) -> Option<&Arc<crate::cluster::usage::UsageIndex>> {
        self.usage.get()
    }

    /// Marks the server as (not) accepting work, e.g. while shutting down.
    pub fn set_ready(&self, ready: bool) {
        self.accepting.store(ready, Ordering::Relaxed);
    }

    /// Ready: accepting, and the caches (if any) have synced.
    pub fn ready(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
            && self.cluster().is_none_or(|c| c.ready())
            && self.usage_index().is_none_or(|u| u.synced())
    }

    /// Puts a new valid policy in force, atomically between requests.
    pub fn replace_policy(&self, policy: Policy) {
        let rules = policy.rules.len();
        // Under the status lock, so `/readyz` never pairs a new generation with an old error.
        let mut status = self.policy_status.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.policy.replace(policy);
        status.last_error = None;
        self.metrics.policy_generation.set(generation as i64);
        self.metrics.policy_rules.set(rules as i64);
    }

    /// Records a policy that was refused; the one in force stays.
    pub fn policy_refused(&self, error: String) {
        self.metrics.policy_reload_errors.inc();
        self.policy_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some(error);
    }

    /// Namespace labels for a decision: from the cache, else one direct read, else unknown.
    async fn labels_for(&self, request: &admission::Request, policy: &Policy) -> Labels {
        let Some(ns) = request.namespace_for_labels(policy) else {
            return Labels::NotNeeded;
        };
        let Some(cluster) = self.cluster() else {
            return Labels::Known(gpu_slicer_core::labels::name_label(ns));
        };
        if let Some(labels) = cluster.cached_labels(ns) {
            return Labels::Known(labels);
        }
        match cluster.lookup(ns).await {
            Lookup::Found(labels) => Labels::Known(labels),
            // The API server refuses pods in a namespace that does not exist; decide on the name.
            Lookup::Missing => Labels::Known(gpu_slicer_core::labels::name_label(ns)),
            Lookup::Failed(why) => {
                tracing::warn!(namespace = ns, error = %why, "namespace labels unavailable");
                Labels::Unknown(why)
            }
        }
    }
}

impl App {
    /// What the pod's own ResourceClaims ask for: read in cluster mode; offline, unread (the engine
    /// then refuses GPU-ish claims outside passthrough rules, saying why).
    async fn claims_for(&self, request: &admission::Request) -> ClaimFacts {
        let own = request.own_claims();
        match (self.cluster(), request.namespace()) {
            (Some(cluster), Some(ns)) if !own.is_empty() => cluster.read_claims(ns, &own).await,
            _ => ClaimFacts::default(),
        }
    }
}

/// The HTTP routes, without TLS or sockets (tests call it with `oneshot`).
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error after which the rest of the body stays unread: tell the client not to reuse the connection
/// (hyper closes it), so its next request does not meet a closed socket.
fn json_error_closing(status: StatusCode, message: &str) -> Response {
    let mut resp = json_error(status, message);
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    resp
}

/// Go's duration syntax as the API server writes `?timeout=` (`10s`, `1m30s`, `500ms`).
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// How long this review may take: [`Limits::request_timeout`], or less when the API server says it
/// gives up sooner (`?timeout=`): then 80% of that, so the answer (even an error) arrives in time.
pub fn deadline(limits: &Limits, query: Option<&str>) -> Duration {
    let api = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("timeout="))
        .and_then(go_duration)
        .filter(|d| !d.is_zero());
    match api {
        Some(d) => limits.request_timeout.min(d.mul_f64(0.8)),
        None => limits.request_timeout,
    }
}

async fn mutate(State(app): State<Arc<App>>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let deadline = deadline(&app.limits, parts.uri.query());
    let budget = parts
        .extensions
        .get::<ConnectionBudget>()
        .unwrap_or(&app.detached)
        .hold();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match tokio::time::timeout(deadline, review(&app, body, length, budget)).await {
        Ok(response) => response,
        Err(_) => {
            app.metrics
                .bad_requests
                .get_or_create(&ErrorLabels { reason: "timeout" })
                .inc();
            json_error_closing(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "no answer within {} ms (body too slow, or facts unavailable)",
                    deadline.as_millis()
                ),
            )
        }
    }
}

/// Why a body was not read whole.
enum BodyError {
    TooLarge,
    Busy(Exhausted),
    Read(String),
}

/// Reads a request body of at most `limit` bytes, reserving each byte in `held` before it is kept
/// (all at once when `Content-Length` says how many will come, so a refusal costs no buffering).
async fn read_body(
    body: Body,
    limit: usize,
    length: Option<usize>,
    held: &mut Held,
) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    if let Some(n) = length {
        if n > limit {
            return Err(BodyError::TooLarge);
        }
        held.grow(n).map_err(BodyError::Busy)?;
    }
    let mut buf = bytes::BytesMut::with_capacity(length.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let total = buf.len() + chunk.len();
        if total > limit {
            return Err(BodyError::TooLarge);
        }
        if total > held.bytes() {
            held.grow(total - held.bytes()).map_err(BodyError::Busy)?;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

async fn review(app: &App, body: Body, length: Option<usize>, mut held: Held) -> Response {
    let bad = |reason: &'static str| {
        app.metrics
            .bad_requests
            .get_or_create(&ErrorLabels { reason })
            .inc()
    };
    let limit = app.limits.max_body_bytes;
    let bytes = match read_body(body, limit, length, &mut held).await {
        Err(BodyError::TooLarge) => {
            bad("too_large");
            return json_error_closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds {limit} bytes"),
            );
        }
        Err(BodyError::Busy(which)) => {
            bad("overloaded");
            tracing::warn!(
                bound = which.as_str(),
                "request body refused: memory budget spent"
            );
            let mut resp = json_error_closing(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "too many request bytes in flight for this {}; retry",
                    which.as_str()
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return resp;
        }
        Err(BodyError::Read(e)) => {
            bad("read_error");
            return json_error_closing(
                StatusCode::BAD_REQUEST,
                &format!("request body could not be read: {e}"),
            );
        }
        Ok(bytes) => bytes,
    };
    let started = Instant::now();
    match admission::parse(&bytes) {
        Ok(request) => {
            let policy = app.policy.load_full();
            let labels = app.labels_for(&request, &policy).await;
            let claims = app.claims_for(&request).await;
            let pools = app.pools.load();
            let reviewed = if app.usage_index().is_some() {
                request.decide_gated(&policy, &pools, labels, &claims, |input, d| {
                    crate::webhook::gpu_budget::gate(app, input, d)
                })
            } else {
                request.decide_with_claims(&policy, &pools, labels, &claims)
            };
            let m = &app.metrics;
            let (outcome, action, rule) = match &reviewed.audit {
                Some(a) => (
                    a.record.outcome.as_str(),
                    a.record.action,
                    a.record.rule.clone().unwrap_or_default(),
                ),
                None => ("ignored", "none", String::new()),
            };
            m.admissions
                .get_or_create(&AdmissionLabels {
                    outcome,
                    action,
                    rule,
                })
                .inc();
            if reviewed.patched {
                m.patches.inc();
            }
            if reviewed.denied {
                m.denials.inc();
            }
            if let Some(entry) = &reviewed.audit {
                let outcome = entry.record.outcome;
                if matches!(
                    outcome,
                    Outcome::WouldRewrite | Outcome::WouldRoute | Outcome::WouldDeny
                ) {
                    m.audit_would
                        .get_or_create(&AuditLabels {
                            outcome: outcome.as_str(),
                            rule: entry.record.rule.clone().unwrap_or_default(),
                            namespace: entry.namespace.clone(),
                        })
                        .inc();
                }
                crate::webhook::audit_log::emit(entry);
            }
            m.duration.observe(started.elapsed().as_secs_f64());
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                reviewed.body,
            )
                .into_response()
        }
        Err(e) => {
            bad(match e {
                BadReview::NotJson(_) => "bad_json",
                BadReview::NotAReview(_) => "not_a_review",
                BadReview::NotAPod(_) => "not_a_pod",
            });
            tracing::warn!(error = %e, "bad admission request");
            json_error(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let ready = app.ready();
    let (generation, last_error) = {
        let status = app.policy_status.lock().unwrap_or_else(|p| p.into_inner());
        (app.policy.generation(), status.last_error.clone())
    };
    let body = serde_json::json!({
        "ready": ready,
        "policy": {
            "generation": generation,
            "rules": app.policy.load().rules.len(),
            "lastError": last_error,
        },
        "nodePools": app.pools.load().len(),
        "cluster": app.cluster().map_or(serde_json::json!("offline"), |c| c.status()),
    })
    .to_string();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    if app.usage_index().is_some() {
        app.metrics
            .usage
            .refresh(&crate::webhook::gpu_budget::rows(&app));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

/// A bound listener, not yet serving (bind to port 0 and read the address back: no port races).
pub struct Bound {
    listener: TcpListener,
}

impl Bound {
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
        Ok(Bound {
            listener: TcpListener::bind(addr).await?,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves HTTPS (HTTP/1.1 and HTTP/2) until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        router: Router,
        tls: Arc<rustls::ServerConfig>,
        limits: Limits,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        let max_connections = limits.max_connections.clamp(1, u32::MAX as usize);
        let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let budget = BodyBudget::new(limits.budget());
        let (stop, stopping) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        loop {
            // At the connection cap, stop accepting: new connections wait in the kernel's backlog.
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Some(conn_budget) = budget.connect(peer.ip()) else {
                tracing::debug!(%peer, "address holds its share of connections; closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let connection = Connection {
                acceptor: acceptor.clone(),
                router: router.clone(),
                limits: limits.clone(),
                budget: conn_budget,
                stopping: stopping.clone(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                connection.run(tcp, peer).await;
            });
        }
        drop(self.listener);
        tracing::info!("shutting down: draining connections");
        let _ = stop.send(true);
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        tokio::select! {
            _ = slots.acquire_many(all) => tracing::info!("all connections closed"),
            () = tokio::time::sleep(limits.drain_timeout) => tracing::warn!("drain deadline passed; closing remaining connections"),
        }
    }
}

/// One accepted TCP connection, served until it closes, idles out or the server stops.
struct Connection {
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
    budget: ConnectionBudget,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Connection {
    async fn run(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let limits = &self.limits;
        let tls =
            match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(64 * 1024)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(64 * 1024)
            // A peer that stops answering pings is gone: free its connection.
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        // When the last request started (ms since the connection opened, + 1; 0: none yet).
        let opened = Instant::now();
        let last_request = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = last_request.clone();
        let budget = self.budget.clone();
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            self.router.clone(),
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                let at = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
                seen.store(at + 1, Ordering::Relaxed);
                req.extensions_mut().insert(budget.clone());
                req
            },
        ));
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        let mut closing: Option<Instant> = None;
        loop {
            // A client that completes the handshake and then says nothing would sit in hyper's
            // protocol detection forever (the header timer starts only once bytes arrive): close it
            // after the header timeout. Later, a connection idle for `idle_timeout` is closed
            // gracefully (every review finishes within its deadline, far below the idle timeout).
            let last = last_request.load(Ordering::Relaxed);
            let wake = match (closing, last) {
                (Some(since), _) => since + limits.drain_timeout,
                // No request yet: closed at the header timeout (or the idle one, if shorter).
                (None, 0) => opened + limits.header_timeout.min(limits.idle_timeout),
                (None, ms) => opened + Duration::from_millis(ms - 1) + limits.idle_timeout,
            };
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                changed = self.stopping.changed(), if closing.is_none() => {
                    if changed.is_err() || *self.stopping.borrow() {
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {
                    if closing.is_some() {
                        tracing::debug!(%peer, "connection did not close in time after shutdown; dropped");
                        return;
                    }
                    let now = last_request.load(Ordering::Relaxed);
                    if now == 0 {
                        tracing::debug!(%peer, "connection sent no request in time; closed");
                        return;
                    }
                    if now == last {
                        tracing::debug!(%peer, "connection idle; closing");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                }
            }
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_timeout_shortens_the_deadline() {
        let limits = Limits::default();
        assert_eq!(go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("ten"), None);
        assert_eq!(deadline(&limits, None), limits.request_timeout);
        assert_eq!(
            deadline(&limits, Some("timeout=5s")),
            Duration::from_secs(4)
        );
        assert_eq!(
            deadline(&limits, Some("a=b&timeout=30s")),
            limits.request_timeout
        );
        assert_eq!(
            deadline(&limits, Some("timeout=junk")),
            limits.request_timeout
        );
    }
}
