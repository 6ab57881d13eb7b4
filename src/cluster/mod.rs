//! Reading the cluster. [`kubeapi`] is the one place the Kubernetes API is read from (client and
//! kubeconfig resolution, paginated lists, missing CRDs), the way kube-rs keeps `kube-runtime` apart
//! from what runs on it; the webhook's watches ([`watch`]), the DRA template controller
//! ([`crate::controller`]), `plan --from-cluster`, `doctor` and `policy report` all go through it.
//!
//! Imports: the core and [`crate::input`]; never the policy source, the controller, the webhook or
//! the commands above it (they pass what they need in).

pub mod claims;
pub mod kubeapi;
pub mod pod_watch;
pub mod usage;
pub mod watch;
pub mod workloads;
