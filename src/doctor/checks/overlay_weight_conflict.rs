//! `overlay-weight-conflict`: two NodeOverlays that can match the same NodePool and instance type, set
//! the same capacity key and have the same weight. Karpenter marks them conflicting and applies
//! neither, so the pool's slices disappear from its plans.
//!
//! A finding names both overlays, the weight, the keys and where they meet, and says to give them
//! distinct weights (or delete one).

use std::collections::BTreeMap;

use super::findings::{finding, list};
use super::overlays::{Targets, karpenter_parts, targets};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, OverlayInfo};
use crate::doctor::{Finding, Severity};

pub const OVERLAY_WEIGHT_CONFLICT: &str = "overlay-weight-conflict";

/// The check, for [`super::ALL`].
pub struct OverlayWeightConflict;

impl Check for OverlayWeightConflict {
    fn name(&self) -> &'static str {
        OVERLAY_WEIGHT_CONFLICT
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        overlay_weight_conflict(s)
    }
}

/// Two overlays that can match the same NodePool and instance type, set the same capacity key and
/// share a weight: Karpenter marks them conflicting and applies neither.
pub fn overlay_weight_conflict(s: &ClusterSnapshot) -> Vec<Finding> {
    let (pools, overlays) = match karpenter_parts(s, OVERLAY_WEIGHT_CONFLICT) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let all: Vec<(&OverlayInfo, Targets)> =
        overlays.iter().map(|o| (o, targets(o, pools))).collect();
    let mut by_weight: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, (o, _)) in all.iter().enumerate() {
        by_weight.entry(o.weight).or_default().push(i);
    }
    let mut out = Vec::new();
    for (weight, idx) in by_weight {
        for (n, &i) in idx.iter().enumerate() {
            for &j in &idx[n + 1..] {
                let ((a, ta), (b, tb)) = (&all[i], &all[j]);
                let keys: Vec<&String> = a
                    .capacity
                    .keys()
                    .filter(|k| b.capacity.contains_key(*k))
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                let Some((pool, it)) = overlap(ta, tb) else {
                    continue;
                };
                let at = match it {
                    Some(t) => format!("NodePool {pool}, instance type {t}"),
                    None => format!("NodePool {pool}"),
                };
                out.push(finding(
                    OVERLAY_WEIGHT_CONFLICT,
                    Severity::Error,
                    format!("NodeOverlay/{}", a.name),
                    format!(
                        "NodeOverlay {} and NodeOverlay {} both have weight {weight}, both set {} and can both match {at}: Karpenter drops both",
                        a.name,
                        b.name,
                        list(&keys)
                    ),
                    "give them distinct weights (generated overlays use 1000-9999; regenerate with `gpu-slicer karpenter overlays`), or delete one",
                ));
            }
        }
    }
    out
}

/// Whether two overlays' targets share a NodePool and instance type.
fn overlap(a: &Targets, b: &Targets) -> Option<(String, Option<String>)> {
    for (pool, ta) in a {
        let Some(tb) = b.get(pool) else { continue };
        match (ta, tb) {
            (Some(x), Some(y)) => {
                if let Some(t) = x.intersection(y).next() {
                    return Some((pool.clone(), Some(t.clone())));
                }
            }
            (Some(x), None) | (None, Some(x)) => {
                return Some((pool.clone(), x.iter().next().cloned()));
            }
            (None, None) => return Some((pool.clone(), None)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use crate::doctor::snapshot::Read;

    #[test]
    fn two_same_weight_overlays_on_one_pool_and_type_conflict() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        let mut copy = o[1].clone();
        copy.name = "hand-written-p5".into();
        copy.capacity = BTreeMap::from([("nvidia.com/mig-1g.10gb".to_string(), 56)]);
        o.push(copy);
        s.node_overlays = Read::Found(o);
        let f = run_all(&s, &options());
        let f = only(&f, OVERLAY_WEIGHT_CONFLICT);
        assert!(f.message.contains("weight 1972"), "{}", f.message);
        assert!(
            f.message.contains("nvidia.com/mig-1g.10gb"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("NodePool gpu-mig, instance type p5.48xlarge"),
            "{}",
            f.message
        );
        // Distinct weights: no conflict (the higher one wins).
        let mut o = shipped_overlays();
        let mut copy = o[1].clone();
        copy.name = "hand-written-p5".into();
        copy.weight = 10;
        o.push(copy);
        s.node_overlays = Read::Found(o);
        assert!(overlay_weight_conflict(&s).is_empty());
    }
}
