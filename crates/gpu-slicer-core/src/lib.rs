//! gpu-slicer's decision core: what the admission webhook, the planner, doctor and the policy report
//! decide, with nothing that reads or serves. Pure: no async runtime, HTTP, TLS or Kubernetes client
//! among its dependencies, and no file, network or clock read in its code (time comes in as a value).
//! The binary's crate (`gpu-slicer`) brings the input: files, the cluster, requests, the clock.
//!
//! A first read: [`policy`] (the file a platform team writes), then [`engine`] (pod + namespace +
//! policy + NodePools -> patch, warnings, audit record, or denial).
//!
//! The modules, lowest first; each imports only modules above it in this list:
//! - Facts: [`quantity`] (Kubernetes quantities), [`gpus`] (an amount of GPU-equivalents),
//!   [`annotations`] (the `gpu-slicer.io/` pod annotations), [`labels`] (label selectors),
//!   [`yaml`] (Kubernetes YAML documents), [`pod`] (the view of a Pod the engine reads),
//!   [`catalog`] (GPU models, MIG profiles, EKS instance types), [`audit`] (the audit record).
//! - [`policy`]: the policy file, its validation and rule matching, and the DRA driver's sharing
//!   modes a rule may ask for ([`policy::dra_sharing`]).
//! - [`nodepool`]: Karpenter NodePools and which one a rule routes to.
//! - [`dra`]: the DRA backend's ResourceClaimTemplates and DeviceClasses, and verdicts on a pod's own
//!   claims ([`dra::claims`]).
//! - [`equivalents`]: what a pod holds in GPU-equivalents.
//! - [`engine`]: the admission decision, and audit mode ([`engine::mode`]).
//! - [`budget`] (GPU budgets at admission) and [`spend`] ($/hour per namespace).
//! - Generated configs and their checks: [`gpu_operator`] (mig-parted and device plugin configs),
//!   [`karpenter`] (NodeOverlays), [`check`] (`policy check`: policy vs NodePools, GPU Operator and
//!   DRA driver).
//!
//! `tests/walls.rs` at the workspace root holds these lines: it fails on an import against the order
//! and on an I/O crate among this crate's dependencies.

pub mod annotations;
pub mod audit;
pub mod budget;
pub mod catalog;
pub mod check;
pub mod dra;
pub mod engine;
pub mod equivalents;
pub mod gpu_operator;
pub mod gpus;
pub mod karpenter;
pub mod labels;
pub mod nodepool;
pub mod pod;
pub mod policy;
pub mod quantity;
pub mod spend;
pub mod yaml;
