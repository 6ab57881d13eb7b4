//! An admission client for the webhook's HTTPS server: HTTP/2 over TLS trusting the server's CA, the
//! AdmissionReview of a GPU pod, and the call. Shared by tests/budgets.rs, the two-replica test and
//! benches/webhook_pods.rs.
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// A TLS 1.2/1.3 client trusting `ca_pem`, offering `h2`.
pub fn connector(ca_pem: &[u8]) -> TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(std::sync::Arc::new(client))
}

/// An HTTP/2 connection over TLS to `addr` (certificate for `localhost`).
pub async fn h2(addr: SocketAddr, connector: &TlsConnector) -> H2 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    // As the API server's client does: no Nagle delay on small frames.
    tcp.set_nodelay(true).unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// A Pod in `ns` asking for `gpus` whole GPUs, as the API server stores it (`name` and `uid` set).
pub fn gpu_pod(ns: &str, name: &str, gpus: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
        "spec": {"containers": [{"name": "main", "image": "vllm",
            "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}}]},
        "status": {"phase": "Running"}
    })
}

/// The AdmissionReview of a CREATE of a pod asking for `gpus` whole GPUs in `ns`.
pub fn review(ns: &str, gpus: &str, uid: usize) -> Vec<u8> {
    let mut pod = gpu_pod(ns, "", gpus);
    pod["metadata"] = json!({"generateName": "infer-", "namespace": ns});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": format!("review-{uid}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns, "operation": "CREATE", "userInfo": {"username": "dev"},
            "object": pod, "dryRun": false}
    }))
    .unwrap()
}

/// Posts a review to `/mutate`; the AdmissionReview's `response`.
pub async fn call(h2: &mut H2, body: Vec<u8>) -> Value {
    let req = hyper::Request::post("https://localhost/mutate?timeout=10s")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice::<Value>(&body).unwrap()["response"].clone()
}

/// `GET path` (e.g. `/metrics`), the body as text.
pub async fn get(h2: &mut H2, path: &str) -> String {
    let req = hyper::Request::get(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The denial message of a response ("" when allowed).
pub fn message(response: &Value) -> String {
    response["status"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
