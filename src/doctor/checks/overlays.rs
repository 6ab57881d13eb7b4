//! What a NodeOverlay can apply to, shared by the overlay checks and `pod-slice-unschedulable`.
//!
//! Overlay requirements see only `karpenter.sh/nodepool`, the NodePool's template labels and the
//! instance type's labels (DESIGN.md "Karpenter"): a key that is none of these never matches, and an
//! instance-type label doctor cannot evaluate (architecture, zone, capacity type) is assumed to.

use std::collections::{BTreeMap, BTreeSet};

use gpu_slicer_core::nodepool::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, NodePool};

use super::findings::{KARPENTER_CRDS, skipped};
use super::selectors::admits;
use crate::doctor::Finding;
use crate::doctor::snapshot::{ClusterSnapshot, OverlayInfo, Read};

/// Labels of an instance type that overlays may select on but doctor cannot evaluate: assumed to match.
pub(super) fn instance_type_label(key: &str) -> bool {
    key.starts_with("karpenter.k8s.aws/")
        || key.starts_with("topology.kubernetes.io/")
        || matches!(
            key,
            "kubernetes.io/arch" | "kubernetes.io/os" | "karpenter.sh/capacity-type"
        )
}

/// What an overlay can match: per NodePool, the instance types (`None`: any the pool may launch).
pub(super) type Targets = BTreeMap<String, Option<BTreeSet<String>>>;

/// The NodePools and instance types `overlay` can apply to. Overlay requirements see only
/// `karpenter.sh/nodepool`, the NodePool's template labels and the instance type's labels
/// (DESIGN.md "Karpenter"); a key that is none of these never matches.
pub(super) fn targets(overlay: &OverlayInfo, pools: &[NodePool]) -> Targets {
    let mut out = Targets::new();
    'pools: for pool in pools {
        let mut types: Option<BTreeSet<String>> = pool
            .instance_types()
            .map(|t| t.into_iter().map(String::from).collect());
        for r in &overlay.requirements {
            if r.key == INSTANCE_TYPE_LABEL {
                match &mut types {
                    Some(t) => t.retain(|it| admits(r, Some(it))),
                    // The pool does not pin its types: an `In` narrows to those named.
                    None if r.operator == "In" => {
                        types = Some(r.values.iter().cloned().collect());
                    }
                    None => {}
                }
                continue;
            }
            let value = if r.key == NODEPOOL_LABEL {
                Some(pool.name.as_str())
            } else if let Some(v) = pool.template_labels.get(&r.key) {
                Some(v.as_str())
            } else if instance_type_label(&r.key) {
                continue;
            } else {
                None
            };
            if !admits(r, value) {
                continue 'pools;
            }
        }
        if types.as_ref().is_some_and(BTreeSet::is_empty) {
            continue;
        }
        out.insert(pool.name.clone(), types);
    }
    out
}

/// The NodePools and NodeOverlays, or `check`'s "skipped" finding when Karpenter's were not read.
pub(super) fn karpenter_parts<'a>(
    s: &'a ClusterSnapshot,
    check: &'static str,
) -> Result<(&'a [NodePool], &'a [OverlayInfo]), Vec<Finding>> {
    let pools = match &s.node_pools {
        Read::Found(p) => p,
        other => {
            return Err(skipped(
                check,
                KARPENTER_CRDS,
                other.why_not().unwrap_or(""),
            ));
        }
    };
    let overlays = match &s.node_overlays {
        Read::Found(o) => o,
        other => {
            return Err(skipped(
                check,
                "CustomResourceDefinition/nodeoverlays.karpenter.sh",
                other.why_not().unwrap_or(""),
            ));
        }
    };
    Ok((pools, overlays))
}
