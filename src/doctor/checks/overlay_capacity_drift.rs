//! `overlay-capacity-drift`: an initialized node whose advertised resources differ from what the
//! NodeOverlay for its NodePool and instance type promises (per capacity key the highest weight wins,
//! as in Karpenter). Karpenter plans with the overlay's numbers, so it launches too few nodes when the
//! promise is too high and too many when it is too low.
//!
//! A finding names the overlay, the resource, both numbers and the nodes, and says to regenerate the
//! overlays if the node is right, or to fix the node's MIG / device plugin config if the overlay is.

use std::collections::BTreeMap;

use gpu_slicer_core::karpenter::{DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_LABEL};
use gpu_slicer_core::nodepool::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL};

use super::findings::{finding, some_of};
use super::overlays::{Targets, karpenter_parts, targets};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, INITIALIZED_LABEL, OverlayInfo};
use crate::doctor::{Finding, Severity};

pub const OVERLAY_CAPACITY_DRIFT: &str = "overlay-capacity-drift";

/// The check, for [`super::ALL`].
pub struct OverlayCapacityDrift;

impl Check for OverlayCapacityDrift {
    fn name(&self) -> &'static str {
        OVERLAY_CAPACITY_DRIFT
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        overlay_capacity_drift(s)
    }
}

/// Initialized nodes whose advertised resources differ from what the overlay for their NodePool and
/// instance type promises: Karpenter then launches too few nodes (promise too high) or too many.
pub fn overlay_capacity_drift(s: &ClusterSnapshot) -> Vec<Finding> {
    let (pools, overlays) = match karpenter_parts(s, OVERLAY_CAPACITY_DRIFT) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let targets: Vec<(&OverlayInfo, Targets)> =
        overlays.iter().map(|o| (o, targets(o, pools))).collect();
    // (overlay, pool, instance type, resource, promised, advertised) -> nodes
    type Drift = (String, String, String, String, u64, u64);
    let mut drift: BTreeMap<Drift, Vec<String>> = BTreeMap::new();
    for node in &s.nodes {
        if node.label(INITIALIZED_LABEL) != Some("true") {
            continue;
        }
        let (Some(pool), Some(it)) = (node.label(NODEPOOL_LABEL), node.label(INSTANCE_TYPE_LABEL))
        else {
            continue;
        };
        // Per capacity key the highest weight wins (the NodeOverlay CRD's `weight`).
        let mut promised: BTreeMap<&str, (i64, &str, u64)> = BTreeMap::new();
        for (o, t) in &targets {
            let applies = t
                .get(pool)
                .is_some_and(|types| types.as_ref().is_none_or(|ts| ts.contains(it)));
            if !applies {
                continue;
            }
            for (k, v) in &o.capacity {
                let e = promised.entry(k).or_insert((o.weight, &o.name, *v));
                if o.weight > e.0 {
                    *e = (o.weight, &o.name, *v);
                }
            }
        }
        for (key, (_, overlay, want)) in promised {
            let have = node.offers(key);
            if have != want {
                drift
                    .entry((
                        overlay.to_string(),
                        pool.to_string(),
                        it.to_string(),
                        key.to_string(),
                        want,
                        have,
                    ))
                    .or_default()
                    .push(node.name.clone());
            }
        }
    }
    drift
        .into_iter()
        .map(|((overlay, pool, it, key, want, have), nodes)| {
            let effect = if want > have {
                "Karpenter counts on more than there is and launches too few nodes"
            } else {
                "Karpenter counts on less than there is and launches too many nodes"
            };
            finding(
                OVERLAY_CAPACITY_DRIFT,
                Severity::Error,
                format!("NodeOverlay/{overlay}"),
                format!(
                    "promises {key}: {want} per {it} node of NodePool {pool}, but {} initialized node(s) advertise {have} ({}): {effect}",
                    nodes.len(),
                    some_of(&nodes)
                ),
                format!(
                    "regenerate the overlays (`gpu-slicer karpenter overlays --policy ... --nodepools ... --gpu-operator ...`) if the node is right, or fix the node's MIG / device plugin config ({MIG_CONFIG_LABEL}, {DEVICE_PLUGIN_CONFIG_LABEL}) if the overlay is"
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use serde_json::json;

    #[test]
    fn overlay_capacity_drift_gives_both_numbers_either_way() {
        let mut s = healthy();
        let mut n = mig_node("ip-10-0-1-6.ec2.internal");
        n["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = json!("56");
        s.nodes.push(node(n));
        let f = run_all(&s, &options());
        let f = only(&f, OVERLAY_CAPACITY_DRIFT);
        assert_eq!(f.object, "NodeOverlay/gpu-slicer-gpu-mig-p5.48xlarge");
        assert!(
            f.message.contains("nvidia.com/mig-1g.10gb: 16"),
            "{}",
            f.message
        );
        assert!(f.message.contains("advertise 56"), "{}", f.message);
        assert!(f.message.contains("too many"), "{}", f.message);
        assert!(f.fix.contains("gpu-slicer karpenter overlays"));
        // The other way: the node offers fewer than promised.
        s.nodes.pop();
        let mut n = mig_node("ip-10-0-1-7.ec2.internal");
        n["status"]["allocatable"]["nvidia.com/mig-3g.40gb"] = json!("4");
        s.nodes.push(node(n));
        let f = overlay_capacity_drift(&s);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("nvidia.com/mig-3g.40gb: 8 per p5.48xlarge node of NodePool gpu-mig, but 1 initialized node(s) advertise 4 (ip-10-0-1-7.ec2.internal)"), "{}", f[0].message);
        assert!(f[0].message.contains("too few"), "{}", f[0].message);
    }
}
