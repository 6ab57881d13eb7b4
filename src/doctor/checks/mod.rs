//! The checks: each a pure function of a [`ClusterSnapshot`] and [`Options`] (the clock is an input)
//! behind one trait, [`Check`], returning findings; [`ALL`] lists them in the order they run. A check
//! that cannot run (Karpenter, the policy or the DRA API absent) says so in one `info` finding under
//! its own ID, so a silent check always means "looked, found nothing".
//!
//! One file per check, named after its ID, in the order of [`ALL`]:
//! - [`nodeclaim_resource_not_registered`]: a NodeClaim stuck waiting for a resource its node never
//!   registers, and why the node does not;
//! - [`overlay_capacity_drift`]: nodes advertising other numbers than their NodeOverlay promises;
//! - [`overlay_matches_nothing`]: a NodeOverlay that applies to no NodePool and instance type;
//! - [`overlay_weight_conflict`]: two NodeOverlays Karpenter drops for sharing a weight;
//! - [`pod_slice_unschedulable`]: pending pods asking for a slice nothing offers;
//! - [`pod_not_rewritten`]: pods holding whole GPUs the webhook never rewrote;
//! - [`mig_config_failed`]: nodes whose MIG config mig-manager did not apply;
//! - [`webhook_not_configured`]: the webhook registration missing or weaker than the shipped one;
//! - [`policy_cluster_mismatch`]: `policy check` against the live cluster;
//! - [`dra_device_plugin_overlap`]: nodes whose GPUs both the device plugin and the DRA driver hand out;
//! - [`dra_mig_pool_empty`]: DRA MIG rules routed to a NodePool without nodes;
//! - [`dra_template_name_taken`]: a ResourceClaimTemplate name a DRA rule needs, held by another object;
//! - [`namespace_over_budget`]: namespaces holding more GPU-equivalents than their budget.
//!
//! Helpers they share (private): `findings` (finding constructors, the objects a skipped check names,
//! shared wording), `overlays` (what a NodeOverlay can apply to: the overlay checks and
//! `pod-slice-unschedulable`), `selectors` (label matching through [`gpu_slicer_core::labels`]),
//! `webhook_manifest` (the shipped webhook registration and the live ones that call gpu-slicer).

use std::fmt;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::Finding;
use super::snapshot::ClusterSnapshot;

pub mod dra_device_plugin_overlap;
pub mod dra_mig_pool_empty;
pub mod dra_template_name_taken;
pub mod mig_config_failed;
pub mod namespace_over_budget;
pub mod nodeclaim_resource_not_registered;
pub mod overlay_capacity_drift;
pub mod overlay_matches_nothing;
pub mod overlay_weight_conflict;
pub mod pod_not_rewritten;
pub mod pod_slice_unschedulable;
pub mod policy_cluster_mismatch;
pub mod webhook_not_configured;

mod findings;
mod overlays;
mod selectors;
mod webhook_manifest;

#[cfg(test)]
mod fixtures;

pub use dra_device_plugin_overlap::{DRA_ALLOCATOR_LABEL, DRA_DEVICE_PLUGIN_OVERLAP};
pub use dra_mig_pool_empty::DRA_MIG_POOL_EMPTY;
pub use dra_template_name_taken::DRA_TEMPLATE_NAME_TAKEN;
pub use mig_config_failed::MIG_CONFIG_FAILED;
pub use namespace_over_budget::NAMESPACE_OVER_BUDGET;
pub use nodeclaim_resource_not_registered::NODECLAIM_RESOURCE_NOT_REGISTERED;
pub use overlay_capacity_drift::OVERLAY_CAPACITY_DRIFT;
pub use overlay_matches_nothing::OVERLAY_MATCHES_NOTHING;
pub use overlay_weight_conflict::OVERLAY_WEIGHT_CONFLICT;
pub use pod_not_rewritten::POD_NOT_REWRITTEN;
pub use pod_slice_unschedulable::POD_SLICE_UNSCHEDULABLE;
pub use policy_cluster_mismatch::POLICY_CLUSTER_MISMATCH;
pub use webhook_not_configured::WEBHOOK_NOT_CONFIGURED;

/// One doctor check: a pure function of the snapshot and the options, under its ID.
pub trait Check {
    /// The check's ID, as its findings show it ([`Finding::check`]): a contract, scripts and alerts
    /// key on it.
    fn name(&self) -> &'static str;

    /// The check's findings on `s`: none when all is well, or one `info` finding `skipped: ...` when
    /// what it needs could not be read.
    fn run(&self, s: &ClusterSnapshot, options: &Options) -> Vec<Finding>;
}

/// A check shows as its ID, so `format!("{check}")` over [`ALL`] gives the contract's IDs.
impl fmt::Display for dyn Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every check, in the order of the table, which is the order they run in. Their IDs are a
/// contract: scripts and alerts key on them, and docs/troubleshooting.md has a row for each.
pub const ALL: &[&dyn Check] = &[
    &nodeclaim_resource_not_registered::NodeclaimResourceNotRegistered,
    &overlay_capacity_drift::OverlayCapacityDrift,
    &overlay_matches_nothing::OverlayMatchesNothing,
    &overlay_weight_conflict::OverlayWeightConflict,
    &pod_slice_unschedulable::PodSliceUnschedulable,
    &pod_not_rewritten::PodNotRewritten,
    &mig_config_failed::MigConfigFailed,
    &webhook_not_configured::WebhookNotConfigured,
    &policy_cluster_mismatch::PolicyClusterMismatch,
    &dra_device_plugin_overlap::DraDevicePluginOverlap,
    &dra_mig_pool_empty::DraMigPoolEmpty,
    &dra_template_name_taken::DraTemplateNameTaken,
    &namespace_over_budget::NamespaceOverBudget,
];

/// What the checks need besides the snapshot.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time of the read.
    pub now: Timestamp,
    /// How long a NodeClaim may wait for its resources, or mig-manager stay `pending`, before it is
    /// reported (`--stuck-after`, default 10m).
    pub stuck_after: Duration,
}

impl Options {
    /// `--stuck-after`'s default.
    pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(600);

    fn older_than_stuck(&self, since: Option<Timestamp>) -> bool {
        // Unknown start: report (a condition without a time has been there since before we looked).
        since.is_none_or(|t| {
            self.now.as_second() - t.as_second() >= self.stuck_after.as_secs() as i64
        })
    }

    fn age(&self, since: Timestamp) -> String {
        human(Duration::from_secs(
            (self.now.as_second() - since.as_second()).max(0) as u64,
        ))
    }
}

/// `3h12m`, `14m`, `40s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Runs every check, in the order of [`ALL`].
pub fn run_all(s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
    ALL.iter().flat_map(|check| check.run(s, o)).collect()
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::pod_not_rewritten::pod_not_rewritten;
    use super::*;
    use crate::doctor::Severity;
    use crate::doctor::snapshot::Read;
    use crate::policy_source::NoPolicy;
    use gpu_slicer_core::policy::Policy;
    use serde_json::json;

    #[test]
    fn dra_rules_are_checked_against_the_clusters_device_classes_and_pods() {
        let mut s = healthy();
        let policy = Policy::parse(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: train-dra, namespaces: [train-dra], action: exclusive, backend: dra}\n",
            "p.yaml",
        )
        .unwrap();
        if let Ok(loaded) = &mut s.policy {
            loaded.policy = policy;
        }
        s.device_classes = Read::Found(vec!["mig.nvidia.com".into()]);
        s.pods.push(pod(gpu_pod(
            "train-dra",
            "trainer-0",
            "Pending",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        let findings = run_all(&s, &options());
        let mismatch = findings
            .iter()
            .find(|f| f.check == POLICY_CLUSTER_MISMATCH && f.severity == Severity::Error)
            .expect("the missing DeviceClass is reported");
        assert!(
            mismatch
                .message
                .contains("DeviceClass gpu.nvidia.com is not among"),
            "{mismatch:#?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.check == POD_NOT_REWRITTEN && f.object.contains("train-dra")),
            "{findings:#?}"
        );
    }

    #[test]
    fn a_healthy_cluster_is_silent_in_every_check() {
        let findings = run_all(&healthy(), &options());
        assert!(problems(&findings).is_empty(), "{findings:#?}");
        // The one info line says which policy was used.
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(
            findings[0]
                .message
                .contains("ConfigMap gpu-slicer/gpu-slicer-policy")
        );
        assert_eq!(findings[0].object, "ConfigMap/gpu-slicer/gpu-slicer-policy");
    }

    #[test]
    fn every_check_id_is_the_contracts() {
        assert_eq!(ALL.len(), 13);
        for id in ALL {
            assert!(
                id.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{id}"
            );
        }
    }

    #[test]
    fn without_karpenter_or_the_gpu_operator_checks_say_they_were_skipped_and_why() {
        let mut s = healthy();
        let why = "Karpenter is not installed (no karpenter.sh/v1 NodePool CRD)";
        s.node_pools = Read::Missing(why.into());
        s.node_claims = Read::Missing(why.into());
        s.node_overlays = Read::Missing(why.into());
        s.gpu_operator = Read::Missing("the GPU Operator is not installed".into());
        let f = run_all(&s, &options());
        assert!(problems(&f).is_empty(), "{f:#?}");
        for check in [
            NODECLAIM_RESOURCE_NOT_REGISTERED,
            OVERLAY_CAPACITY_DRIFT,
            OVERLAY_MATCHES_NOTHING,
            OVERLAY_WEIGHT_CONFLICT,
            POLICY_CLUSTER_MISMATCH,
        ] {
            assert!(
                f.iter().any(|x| x.check == check
                    && x.message.starts_with("skipped: ")
                    && x.message.contains("not installed")),
                "{check}: {f:#?}"
            );
        }
        s.policy = Err(NoPolicy::Absent(
            "no policy: ConfigMap gpu-slicer/gpu-slicer-policy does not exist".into(),
        ));
        let f = pod_not_rewritten(&s);
        assert!(f[0].message.starts_with("skipped: no policy"), "{f:#?}");
    }

    /// Each check's findings carry its own ID, skipped or not, so [`ALL`]'s names are the IDs a
    /// reader sees.
    #[test]
    fn every_finding_carries_the_id_of_the_check_that_made_it() {
        let mut broken = healthy();
        let why = "Karpenter is not installed (no karpenter.sh/v1 NodePool CRD)";
        broken.node_pools = Read::Missing(why.into());
        broken.node_overlays = Read::Missing(why.into());
        broken.node_claims = Read::Missing(why.into());
        broken.resource_slices = Read::Failed("forbidden".into());
        for s in [healthy(), broken, ClusterSnapshot::default()] {
            for check in ALL {
                for f in check.run(&s, &options()) {
                    assert_eq!(f.check, check.name(), "{f:#?}");
                }
            }
        }
        let mut ids: Vec<String> = ALL.iter().map(|c| c.to_string()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len(), "{ids:?}");
    }
}
