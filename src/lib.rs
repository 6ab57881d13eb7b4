//! gpu-slicer: a Kubernetes mutating admission webhook that rewrites whole-GPU requests
//! (`nvidia.com/gpu`) into what the namespace's policy says — a MIG slice, a time-sliced or MPS replica,
//! a whole GPU, a DRA claim, or a denial — and routes the pod to the right Karpenter NodePool.
//!
//! What decides lives in the pure core crate, [`gpu_slicer_core`] (policy, engine, GPU facts); this
//! crate brings it input and runs it: files, the cluster, HTTPS, the clock. Its modules, lowest first;
//! each imports only modules above it in this list (and the core):
//! - [`input`] (every offline input, capped in size and from regular files only), [`terminal`]
//!   (the commands' terminal output) and [`html`] (helpers the HTML pages share).
//! - [`cluster`]: reading the cluster: the client, paginated lists, the webhook's watches, a pod's own
//!   claims, the usage index behind budgets, the workloads of a cluster.
//! - [`policy_source`]: where the policy comes from (file, ConfigMap, embedded example).
//! - [`controller`]: the controller that keeps the DRA backend's ResourceClaimTemplates.
//! - [`webhook`]: the admission server: the AdmissionReview envelope, HTTPS and certificates, body and
//!   GPU budgets, metrics, the audit log.
//! - The subsystems the commands run, peers that do not import each other: [`planner`] (the cost
//!   planner), [`doctor`], [`report`] (`policy report`), [`usage`] (`gpu-slicer usage`).
//! - [`cli`]: the clap definitions and one small file per command.
//!
//! `tests/walls.rs` holds these lines: it fails on an import against this order.

pub mod html;
pub mod input;
pub mod terminal;

pub mod cluster;

pub mod policy_source;

pub mod controller;

pub mod webhook;

pub mod doctor;
pub mod planner;
pub mod report;
pub mod usage;

pub mod cli;
