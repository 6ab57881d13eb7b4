//! The admission webhook: the AdmissionReview envelope, HTTPS and certificates, live reload, body
//! and GPU budgets, metrics, the audit log.
//! [`serve`] assembles the server from its configuration in one place.
//!
//! Imports: the core, [`crate::input`], [`crate::cluster`], [`crate::policy_source`] and
//! [`crate::controller`]; never the commands (planner, doctor, report, usage, cli).

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
