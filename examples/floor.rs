//! The transport floor for `bench/run.sh`: the same TLS/HTTP stack as `gpu-slicer serve` (tokio-rustls,
//! hyper HTTP/1.1 + HTTP/2, the same limits and accept loop: `server::Bound::serve`), answering every
//! `POST /mutate` with a precomputed response (the webhook's own answer to the benchmark review) after
//! reading the body. The gap between this and the webhook is the admission work itself.
//!
//!     cargo run --release --example floor -- ADDR CERT_DIR REVIEW.json

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use gpu_slicer::webhook::admission::{self, StaticFacts};
use gpu_slicer::webhook::server::{self, Bound, Limits};
use gpu_slicer::webhook::tls;
use gpu_slicer_core::nodepool::NodePoolIndex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, certs, review] = args.as_slice() else {
        return Err("usage: floor ADDR CERT_DIR REVIEW.json".into());
    };
    let dir = std::path::Path::new(certs);
    let dev = tls::ensure_dev_certs(dir)?;
    let cert = Arc::new(tls::ReloadingCert::load(&dev.cert, &dev.key)?);
    let config = tls::server_config(cert)?;
    // The precomputed answer: what the webhook answers to this very review.
    let body = std::fs::read(review)?;
    let facts = StaticFacts {
        policy: gpu_slicer::policy_source::example(),
        pools: NodePoolIndex::default(),
    };
    let answer = Bytes::from(admission::review(&body, &facts)?.body);
    let router = axum::Router::new()
        .route(
            "/mutate",
            post(move |body: Body| {
                let answer = answer.clone();
                async move {
                    let _ = axum::body::to_bytes(body, 3 * 1024 * 1024).await;
                    ([("content-type", "application/json")], answer)
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let bound = Bound::bind(addr.parse()?).await?;
    eprintln!("floor listening on {}", bound.local_addr()?);
    bound
        .serve(router, config, Limits::default(), server::shutdown_signal())
        .await;
    Ok(())
}
