//! gpu-slicer: a Kubernetes mutating admission webhook that rewrites whole-GPU requests
//! (`nvidia.com/gpu`) into what the namespace's policy says — a MIG slice, a time-sliced or MPS replica,
//! a whole GPU, a DRA claim, or a denial — and routes the pod to the right Karpenter NodePool.
//!
//! The source is grouped by what a newcomer looks for; each group holds one module per concept:
//! - [`decision`]: the pure core. [`policy`] (the file, validation, rule matching), [`engine`] (pod +
//!   namespace + policy + NodePools -> patch, warnings, audit record), [`mode`] (audit mode), [`pod`]
//!   (the view of a Pod the engine reads), [`claims`] (a pod's own DRA claims), [`dra_sharing`] (the
//!   DRA driver's sharing modes), [`equivalents`] (GPU-equivalents), [`budget`], [`spend`], [`audit`]
//!   (the audit trail), [`quantity`].
//! - [`webhook`]: the transport. [`admission`] (the AdmissionReview envelope), [`server`] and [`tls`]
//!   (HTTPS, certificates, shutdown), [`webhook::body_budget`] (request-body memory),
//!   [`webhook::gpu_budget`] (GPU budgets at admission), [`reload`] (live policy reload), [`metrics`].
//! - [`cluster`]: reading the cluster. [`cluster::kubeapi`] (client, paginated lists, missing CRDs:
//!   the one place every reader uses), [`cluster::watch`] (the webhook's reflectors),
//!   [`cluster::claims`] (a pod's own claims read), [`cluster::pod_watch`] and [`cluster::usage`] (the
//!   usage index behind budgets), and
//!   [`cluster::claim_templates`] (the controller that keeps DRA ResourceClaimTemplates).
//! - [`gpu`]: GPU and Karpenter knowledge. [`catalog`] (GPU models, MIG profiles, EKS instance types),
//!   [`nodepool`], [`karpenter`] (NodeOverlays), [`gpu_operator`] (mig-parted and device plugin
//!   configs), [`dra`] (the DRA backend's templates and DeviceClasses), [`check`] (`policy check`,
//!   with [`dra_check`] and [`gpu::replicas_check`]).
//! - [`commands`]: what runs on top. [`cli`], [`plan`] (the cost planner), [`doctor`], [`report`]
//!   (`policy report`), [`commands::usage`] (`gpu-slicer usage`).
//!
//! - [`yaml`] and [`input`]: reading Kubernetes YAML, and every offline input, capped in size
//!   ([`input::MAX_INPUT_BYTES`]) and from regular files only.
//!
//! Each module is also re-exported at the crate root (`gpu_slicer::engine`, ...), so paths stay short.

pub mod cluster;
pub mod commands;
pub mod decision;
pub mod gpu;
pub mod input;
pub mod webhook;
pub mod yaml;

pub use commands::{cli, doctor, plan, report};
pub use decision::{
    audit, budget, claims, dra_sharing, engine, equivalents, mode, pod, policy, quantity, spend,
};
pub use gpu::{catalog, check, dra, dra_check, gpu_operator, karpenter, nodepool};
pub use webhook::{admission, metrics, reload, server, tls};
