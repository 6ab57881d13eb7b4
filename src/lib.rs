//! gpu-slicer: a Kubernetes mutating admission webhook that rewrites whole-GPU requests
//! (`nvidia.com/gpu`) into what the namespace's policy says — a MIG slice, a time-sliced or MPS replica,
//! a whole GPU, or a denial — and routes the pod to the right Karpenter NodePool.
//!
//! The pieces, one module per concept:
//! - [`policy`]: the policy file, validation, rule matching;
//! - [`engine`]: the pure decision (pod + namespace + policy + NodePools -> patch, warnings, audit);
//! - [`catalog`]: GPU models, MIG profiles, EKS instance types;
//! - [`nodepool`]: Karpenter NodePools as routing facts;
//! - [`dra`]: the DRA backend's ResourceClaimTemplates and DeviceClasses;
//! - [`admission`]: the AdmissionReview envelope;
//! - [`server`], [`tls`]: HTTPS, certificates, shutdown;
//! - [`audit`], [`metrics`]: the audit trail and Prometheus metrics;
//! - [`kubeapi`]: reading the Kubernetes API (client, paginated lists, missing CRDs), under
//!   [`cluster`], [`plan::cluster`] and [`doctor`];
//! - [`doctor`]: what keeps sliced GPU pods from running in a live cluster;
//! - [`cli`]: the `gpu-slicer` command line.

pub mod admission;
pub mod audit;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod doctor;
pub mod dra;
pub mod dra_sync;
pub mod engine;
pub mod gpu_operator;
pub mod karpenter;
pub mod kubeapi;
pub mod metrics;
pub mod nodepool;
pub mod plan;
pub mod pod;
pub mod policy;
pub mod quantity;
pub mod reload;
pub mod server;
pub mod tls;
pub mod yaml;
