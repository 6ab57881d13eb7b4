//! Server tests: routes without sockets (`oneshot`), then the real server over TLS on an ephemeral port
//! with a client that trusts only the test CA.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use gpu_slicer::webhook::admission::StaticFacts;
use gpu_slicer::webhook::metrics::Metrics;
use gpu_slicer::webhook::server::{self, App, Bound, Limits};
use gpu_slicer::webhook::tls;
use gpu_slicer_core::nodepool::NodePoolIndex;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tower::ServiceExt;

fn app() -> Arc<App> {
    App::new(
        StaticFacts {
            policy: contract_policy(),
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        Limits::default(),
    )
}

fn fixture_body(name: &str) -> (Vec<u8>, String) {
    let rev = review(name);
    (
        serde_json::to_vec(&rev).unwrap(),
        rev["request"]["uid"].as_str().unwrap().to_string(),
    )
}

async fn call(
    router: axum::Router,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn decode_patch(response: &Value) -> Value {
    let b64 = response["response"]["patch"]
        .as_str()
        .expect("patch is a base64 string");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn routes_answer_reviews_health_and_metrics() {
    let app = app();
    let router = server::router(app.clone());
    let (body, uid) = fixture_body("ml-inference-llm-server-84f7f4dd45-create");
    let (status, out) = call(router.clone(), "POST", "/mutate?timeout=10s", body).await;
    assert_eq!(status, StatusCode::OK);
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], uid.as_str());
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    assert_eq!(
        decode_patch(&out)[1]["path"],
        "/spec/containers/0/resources/limits/nvidia.com~1mig-1g.10gb"
    );
    let audit = out["response"]["auditAnnotations"].as_object().unwrap();
    assert_eq!(audit["rule"], "ml");
    assert!(audit.keys().all(|k| !k.contains('/') && k.len() <= 63));
    assert!(!out["response"]["warnings"].as_array().unwrap().is_empty());

    // Non-GPU pods: allowed, and no patch or patchType at all.
    let (body, uid) = fixture_body("ml-inference-cpu-only-create");
    let (_, out) = call(router.clone(), "POST", "/mutate", body).await;
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["response"], json!({"uid": uid, "allowed": true}));

    // Denials carry a status the developer can act on, and no patch.
    let mut rev = review("ml-inference-embedder-0-create");
    rev["request"]["namespace"] = json!("sandbox");
    let (_, out) = call(
        router.clone(),
        "POST",
        "/mutate",
        serde_json::to_vec(&rev).unwrap(),
    )
    .await;
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 403);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("may not use GPUs")
    );
    assert!(out["response"].get("patch").is_none());

    assert_eq!(
        call(router.clone(), "GET", "/healthz", vec![]).await.0,
        StatusCode::OK
    );
    let (status, ready) = call(router.clone(), "GET", "/readyz", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&ready).unwrap()["policy"]["rules"],
        7
    );
    let (_, metrics) = call(router.clone(), "GET", "/metrics", vec![]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(
            "gpu_slicer_admissions_total{outcome=\"rewritten\",action=\"mig\",rule=\"ml\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("gpu_slicer_denials_total 1"), "{metrics}");
    assert!(
        metrics.contains("gpu_slicer_admission_duration_seconds_count 3"),
        "{metrics}"
    );

    app.set_ready(false);
    assert_eq!(
        call(router.clone(), "GET", "/readyz", vec![]).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(router, "GET", "/mutate", vec![]).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn bad_bodies_get_a_4xx_with_a_json_error() {
    let router = server::router(app());
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("not json", b"{{{nope".to_vec(), StatusCode::BAD_REQUEST, "not JSON"),
        ("not a review", br#"{"foo": 1}"#.to_vec(), StatusCode::BAD_REQUEST, "not an admission.k8s.io/v1 AdmissionReview"),
        ("no request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(), StatusCode::BAD_REQUEST, "no request"),
        ("v1beta1", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#.to_vec(), StatusCode::BAD_REQUEST, "expected admission.k8s.io/v1"),
        ("pod is not a pod", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","kind":"Pod"},"resource":{"group":"","resource":"pods"},"operation":"CREATE","object":{"spec":{"containers":7}}}}"#.to_vec(), StatusCode::BAD_REQUEST, "request.object is not a Pod"),
        ("oversized", vec![b' '; 4 * 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "exceeds"),
    ];
    for (name, body, want, text) in cases {
        let (status, out) = call(router.clone(), "POST", "/mutate", body).await;
        assert_eq!(status, want, "{name}");
        let err: Value = serde_json::from_slice(&out)
            .unwrap_or_else(|_| panic!("{name}: error body is not JSON"));
        assert!(
            err["error"].as_str().unwrap().contains(text),
            "{name}: {err}"
        );
    }
}

#[tokio::test]
async fn other_operations_and_kinds_are_allowed_untouched() {
    let router = server::router(app());
    for (field, value) in [
        ("operation", json!("UPDATE")),
        ("subResource", json!("ephemeralcontainers")),
        (
            "resource",
            json!({"group": "apps", "version": "v1", "resource": "deployments"}),
        ),
    ] {
        let mut rev = review("ml-inference-embedder-0-create");
        rev["request"][field] = value;
        let (status, out) = call(
            router.clone(),
            "POST",
            "/mutate",
            serde_json::to_vec(&rev).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out["response"],
            json!({"uid": rev["request"]["uid"], "allowed": true}),
            "{field}"
        );
    }
}

#[tokio::test]
async fn dry_runs_get_the_same_answer() {
    let router = server::router(app());
    let mut rev = review("ml-inference-embedder-0-create");
    let (_, wet) = call(
        router.clone(),
        "POST",
        "/mutate",
        serde_json::to_vec(&rev).unwrap(),
    )
    .await;
    rev["request"]["dryRun"] = json!(true);
    let (_, dry) = call(router, "POST", "/mutate", serde_json::to_vec(&rev).unwrap()).await;
    assert_eq!(wet, dry);
}

// ---- Real TLS ----

struct Running {
    addr: SocketAddr,
    ca: Vec<u8>,
    dir: tempfile::TempDir,
    cert: Arc<tls::ReloadingCert>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start() -> Running {
    let limits = Limits::default();
    let router = server::router(App::new(
        StaticFacts {
            policy: contract_policy(),
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        limits,
    ));
    start_with(router).await
}

async fn start_with(router: axum::Router) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tls::generate(&["localhost".into(), "127.0.0.1".into()], "test").unwrap();
    tls::write_bundle(dir.path(), &bundle, false).unwrap();
    let cert = Arc::new(
        tls::ReloadingCert::load(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap(),
    );
    let config = tls::server_config(cert.clone()).unwrap();
    let bound = Bound::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits::default();
    let done = tokio::spawn(bound.serve(router, config, limits, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        ca: bundle.ca_cert.into_bytes(),
        dir,
        cert,
        stop,
        done,
    }
}

fn connector(cas: &[&[u8]], alpn: &[&[u8]]) -> TlsConnector {
    tls_connector(cas, rustls::DEFAULT_VERSIONS, alpn)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> Tls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

async fn h1<B>(stream: Tls) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn post(body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("/mutate?timeout=10s")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn read(resp: hyper::Response<hyper::body::Incoming>) -> (StatusCode, Version, Value) {
    let (status, version) = (resp.status(), resp.version());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        version,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn real_tls_http1_and_http2_with_bad_input_and_graceful_stop() {
    let srv = start().await;
    let conn = connector(&[&srv.ca], &[b"http/1.1"]);
    let mut client = h1(tls_connect(srv.addr, &conn).await).await;
    let (body, uid) = fixture_body("ml-training-finetune-create");
    let (status, version, out) = read(client.send_request(post(body.clone())).await.unwrap()).await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_11));
    assert_eq!(out["response"]["uid"], uid.as_str());
    assert!(out["response"]["patch"].is_string());

    // Malformed and wrong-kind bodies on the same keep-alive connection.
    let (status, _, err) = read(client.send_request(post(b"{{{".to_vec())).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].is_string());
    let (status, _, _) = read(
        client
            .send_request(post(br#"{"kind":"Pod"}"#.to_vec()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Oversized: refused (413), or the connection is closed before the body is read.
    let mut big = h1(tls_connect(srv.addr, &conn).await).await;
    if let Ok(resp) = big.send_request(post(vec![b'x'; 6 * 1024 * 1024])).await {
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    // HTTP/2 through ALPN.
    let h2conn = connector(&[&srv.ca], &[b"h2"]);
    let stream = tls_connect(srv.addr, &h2conn).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn2) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn2);
    let req = Request::post("https://localhost/mutate")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (status, version, out) = read(h2.send_request(req).await.unwrap()).await;
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(out["response"]["uid"], uid.as_str());

    // Still healthy after all that.
    let health = Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        client.send_request(health).await.unwrap().status(),
        StatusCode::OK
    );

    drop(client);
    drop(h2);
    let _ = srv.stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(10), srv.done)
        .await
        .expect("server stopped")
        .unwrap();
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_closes_idle_keep_alive_connections() {
    // A route that tells the test when it is running and waits to be released: no sleeps needed.
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let hooks = Arc::new(std::sync::Mutex::new(Some((entered_tx, release_rx))));
    let router = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let hooks = hooks.lock().unwrap().take();
            async move {
                if let Some((entered, release)) = hooks {
                    let _ = entered.send(());
                    let _ = release.await;
                }
                "done"
            }
        }),
    );
    let srv = start_with(router).await;
    let conn = connector(&[&srv.ca], &[b"http/1.1"]);
    let mut idle = h1::<Full<Bytes>>(tls_connect(srv.addr, &conn).await).await;
    let idle_health = Request::get("/slow")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()));
    let _ = idle_health; // the idle connection never sends a request
    let mut busy = h1::<Full<Bytes>>(tls_connect(srv.addr, &conn).await).await;
    let req = Request::get("/slow")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(async move { busy.send_request(req).await });
    entered_rx.await.unwrap();
    srv.stop.send(()).unwrap();
    release_tx.send(()).unwrap();
    let resp = pending
        .await
        .unwrap()
        .expect("the in-flight request is answered during the drain");
    assert_eq!(resp.status(), StatusCode::OK);
    tokio::time::timeout(std::time::Duration::from_secs(10), srv.done)
        .await
        .expect("drain finished")
        .unwrap();
    // The idle keep-alive connection was closed by the server, not left hanging.
    assert!(
        idle.ready().await.is_err()
            || idle
                .send_request(Request::get("/").body(Full::new(Bytes::new())).unwrap())
                .await
                .is_err()
    );
}

#[tokio::test]
async fn rotated_certificates_serve_new_handshakes_and_keep_open_connections() {
    let srv = start().await;
    let first_ca = srv.ca.clone();
    let next = tls::generate(&["localhost".into()], "rotated").unwrap();
    let conn = connector(&[&first_ca, next.ca_cert.as_bytes()], &[b"http/1.1"]);

    let stream = tls_connect(srv.addr, &conn).await;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut open = h1(stream).await;
    let on_disk =
        rustls_pki_types::CertificateDer::from_pem_file(srv.dir.path().join("tls.crt")).unwrap();
    assert_eq!(served, on_disk);

    // Rotate the files as the kubelet would, then reload (the server polls; here we call it directly).
    tls::write_bundle(srv.dir.path(), &next, false).unwrap();
    assert_eq!(srv.cert.reload().unwrap(), tls::Reload::Replaced);
    let fresh = tls_connect(srv.addr, &conn).await;
    let rotated = fresh.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(rotated, served);
    assert_eq!(
        rotated,
        rustls_pki_types::CertificateDer::from_pem_file(srv.dir.path().join("tls.crt")).unwrap()
    );

    // The connection opened before the rotation still works.
    let (body, uid) = fixture_body("ml-inference-embedder-0-create");
    let (status, _, out) = read(open.send_request(post(body)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["response"]["uid"], uid.as_str());
    let _ = srv.stop.send(());
}

#[tokio::test]
async fn refusing_an_unread_body_closes_the_connection_so_clients_do_not_reuse_it() {
    let router = server::router(app());
    let req = Request::post("/mutate")
        .body(Body::from(vec![b' '; 4 * 1024 * 1024]))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.headers()["connection"], "close");
}

/// Serves `policy` and `pools` over real TLS and sends the captured llm-server review, moved to
/// namespace `ns`; applies the answer's patch to the pod and sends the patched pod again
/// (reinvocation), checking that the second answer allows it with no patch. Returns the first
/// answer and the patched pod.
async fn admit_and_reinvoke(
    policy: gpu_slicer_core::policy::Policy,
    pools: NodePoolIndex,
    ns: &str,
) -> (Value, Value) {
    let router = server::router(App::new(
        StaticFacts { policy, pools },
        Metrics::new(),
        Limits::default(),
    ));
    let srv = start_with(router).await;
    let conn = connector(&[&srv.ca], &[b"http/1.1"]);
    let mut client = h1(tls_connect(srv.addr, &conn).await).await;
    let mut rev = review("ml-inference-llm-server-84f7f4dd45-create");
    rev["request"]["namespace"] = json!(ns);
    rev["request"]["object"]["metadata"]["namespace"] = json!(ns);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let body = serde_json::to_vec(&rev).unwrap();
        let (status, _, out) = read(client.send_request(post(body)).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(out["response"]["allowed"], true, "{ns}: {out}");
        if answers.is_empty() {
            let patch: json_patch::Patch = serde_json::from_value(decode_patch(&out)).unwrap();
            json_patch::patch(&mut rev["request"]["object"], &patch).unwrap();
        }
        answers.push(out);
    }
    assert!(
        answers[1]["response"]["patch"].is_null(),
        "{ns}: {}",
        answers[1]
    );
    drop(client);
    let _ = srv.stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), srv.done).await;
    (answers.swap_remove(0), rev["request"]["object"].take())
}

/// The MIG single strategy and time-slicing on MIG over real TLS: the patch names what each setup's
/// device plugin advertises, the warnings say so, and the patched pod sent again gets no patch.
#[tokio::test]
async fn mig_single_and_time_sliced_mig_over_real_tls() {
    let single_dir = repo("manifests/examples/mig-single");
    let setups = [
        (
            gpu_slicer::policy_source::load_file(&single_dir.join("policy.yaml")).unwrap(),
            gpu_slicer::input::nodepools(&single_dir).unwrap(),
            "ml-seed-dev",
            "nvidia.com/gpu",
            "is a time-sliced share of a 1g.5gb MIG slice",
        ),
        (
            example_policy(),
            shipped_pools(),
            "ml-notebooks-mig",
            "nvidia.com/mig-1g.10gb.shared",
            "nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb.shared",
        ),
    ];
    for (policy, pools, ns, resource, warning) in setups {
        let (out, pod) = admit_and_reinvoke(policy, pools, ns).await;
        let warnings = out["response"]["warnings"].to_string();
        assert!(warnings.contains(warning), "{ns}: {warnings}");
        assert_eq!(out["response"]["auditAnnotations"]["action"], "mig");
        let vllm = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(vllm["limits"][resource], "1", "{ns}: {vllm}");
        assert_eq!(vllm["requests"][resource], "1", "{ns}: {vllm}");
    }
}

/// The DRA backend over real TLS: the patch turns the whole GPU into a claim, the pod validates as a
/// v1.36 Pod, and the patched pod sent again gets no patch.
#[tokio::test]
async fn dra_claims_over_real_tls() {
    let dir = repo("manifests/examples/dra");
    let (out, pod) = admit_and_reinvoke(
        gpu_slicer::policy_source::load_file(&dir.join("policy.yaml")).unwrap(),
        gpu_slicer::input::nodepools(&dir).unwrap(),
        "ml-inference-dra",
    )
    .await;
    assert!(
        out["response"]["auditAnnotations"]["rewrites"]
            .as_str()
            .unwrap()
            .contains("-> claim gpu-slicer-mig-1g.10gb (mig 1g.10gb, else 2g.20gb, DRA)")
    );
    assert_eq!(
        pod["spec"]["resourceClaims"],
        json!([{"name": "gpu-slicer-0", "resourceClaimTemplateName": "gpu-slicer-mig-1g.10gb"}])
    );
    let dropped = common::validate::roundtrip::<k8s_openapi::api::core::v1::Pod>(&pod).unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
}

/// Audit mode over real TLS: allowed, no patch (nor patchType), `gpu-slicer (audit): would ...`
/// warnings, `would-*` auditAnnotations and metrics, and no patches or denials counted.
#[tokio::test]
async fn audit_mode_over_real_tls_warns_and_changes_nothing() {
    let text = std::fs::read_to_string(repo("tests/data/policies/contract.yaml")).unwrap();
    let text = text.replacen("spec:\n", "spec:\n  mode: audit\n", 1);
    let policy = gpu_slicer_core::policy::Policy::parse(&text, "audit.yaml").unwrap();
    let app = App::new(
        StaticFacts {
            policy,
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        Limits::default(),
    );
    let srv = start_with(server::router(app)).await;
    let conn = connector(&[&srv.ca], &[b"http/1.1"]);
    let mut client = h1(tls_connect(srv.addr, &conn).await).await;

    let (body, uid) = fixture_body("ml-inference-llm-server-84f7f4dd45-create");
    let (status, _, out) = read(client.send_request(post(body)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let response = &out["response"];
    assert_eq!(response["uid"], uid.as_str());
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{out}");
    assert!(response.get("patchType").is_none(), "{out}");
    assert_eq!(
        response["warnings"],
        json!([
            "gpu-slicer (audit): would rewrite vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb (rule ml)",
            "gpu-slicer (audit): would route to Karpenter NodePool gpu-h100-mig (rule ml)"
        ])
    );
    let audit = &response["auditAnnotations"];
    assert_eq!(audit["outcome"], "would-rewrite");
    assert_eq!(audit["rule"], "ml");
    assert!(
        audit["rewrites"]
            .as_str()
            .unwrap()
            .contains("vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb"),
        "{audit}"
    );

    // What enforce would deny is allowed, with the denial as warnings and the reason audited.
    let mut rev = review("ml-inference-embedder-0-create");
    rev["request"]["namespace"] = json!("sandbox");
    let (_, _, out) = read(
        client
            .send_request(post(serde_json::to_vec(&rev).unwrap()))
            .await
            .unwrap(),
    )
    .await;
    let response = &out["response"];
    assert_eq!(response["allowed"], true, "{out}");
    assert!(response.get("status").is_none() && response.get("patch").is_none());
    let first = response["warnings"][0].as_str().unwrap();
    assert!(
        first.starts_with("gpu-slicer (audit): would deny: namespace \"sandbox\" may not use GPUs"),
        "{first}"
    );
    assert_eq!(response["auditAnnotations"]["outcome"], "would-deny");
    assert!(
        response["auditAnnotations"]["reason"]
            .as_str()
            .unwrap()
            .contains("may not use GPUs")
    );

    let get = Request::get("/metrics")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.send_request(get).await.unwrap();
    let metrics = resp.into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    for line in [
        "gpu_slicer_admissions_total{outcome=\"would-rewrite\",action=\"mig\",rule=\"ml\"} 1",
        "gpu_slicer_admissions_total{outcome=\"would-deny\",action=\"deny\",rule=\"sandbox\"} 1",
        "gpu_slicer_patches_total 0",
        "gpu_slicer_denials_total 0",
        // Per rule and namespace, for the rollout dashboard.
        "gpu_slicer_audit_would_total{outcome=\"would-rewrite\",rule=\"ml\",namespace=\"ml-inference\"} 1",
        "gpu_slicer_audit_would_total{outcome=\"would-deny\",rule=\"sandbox\",namespace=\"sandbox\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    drop(client);
    let _ = srv.stop.send(());
}
