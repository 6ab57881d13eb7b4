//! The webhook's transport: the AdmissionReview envelope, HTTPS and certificates, live reload, metrics.

pub mod admission;
pub mod audit_log;
pub mod body_budget;
pub mod gpu_budget;
pub mod metrics;
pub mod reload;
pub mod serve;
pub mod server;
pub mod tls;
pub mod usage_metrics;
