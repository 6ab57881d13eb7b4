//! A cross-check of `examples/floor.rs`: a throwaway server written as issue 6 describes its floor, with
//! none of gpu-slicer's code: axum + tokio-rustls, keep-alive HTTP/1.1, the default tokio runtime,
//! allocator and hyper settings, answering every `POST /mutate` with a precomputed body after reading
//! the request. `bench/cross-check.sh` runs it beside our floor and the webhook; if it were much slower
//! than our floor, our floor would flatter the ratios in BENCHMARKS.md.
//!
//!     cargo run --release --example throwaway_floor -- ADDR CERT.pem KEY.pem ANSWER.json

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key, answer] = args.as_slice() else {
        return Err("usage: throwaway_floor ADDR CERT.pem KEY.pem ANSWER.json".into());
    };
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let answer = Bytes::from(std::fs::read(answer)?);
    let app = axum::Router::new().route(
        "/mutate",
        post(move |body: Body| {
            let answer = answer.clone();
            async move {
                let _ = axum::body::to_bytes(body, 3 * 1024 * 1024).await;
                ([("content-type", "application/json")], answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr.as_str()).await?;
    eprintln!("throwaway floor listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
        });
    }
}
