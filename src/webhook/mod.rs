//! The webhook's transport: the AdmissionReview envelope, HTTPS and certificates, live reload, metrics.

pub mod admission;
pub mod budget;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod tls;
