//! `overlay-matches-nothing`: a NodeOverlay whose requirements admit no NodePool and instance type
//! (see the `overlays` helper for what an overlay can see). Karpenter still reports it Ready, but its
//! capacity applies nowhere, so the NodePool it was written for looks as if it offered no slices.
//!
//! A finding says why nothing matches: a NodePool name that does not exist (with the closest one, "did
//! you mean"), a requirement key overlays cannot see (a NodePool's `spec.requirements`), or an instance
//! type the NodePool does not allow, and what to select on instead.

use std::collections::BTreeSet;

use gpu_slicer_core::nodepool::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, NodePool};

use super::findings::{finding, list};
use super::overlays::{instance_type_label, karpenter_parts, targets};
use super::selectors::admits;
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, OverlayInfo};
use crate::doctor::{Finding, Severity};

pub const OVERLAY_MATCHES_NOTHING: &str = "overlay-matches-nothing";

/// The check, for [`super::ALL`].
pub struct OverlayMatchesNothing;

impl Check for OverlayMatchesNothing {
    fn name(&self) -> &'static str {
        OVERLAY_MATCHES_NOTHING
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        overlay_matches_nothing(s)
    }
}

/// NodeOverlays that can apply to no NodePool / instance type: Karpenter still reports them Ready.
pub fn overlay_matches_nothing(s: &ClusterSnapshot) -> Vec<Finding> {
    let (pools, overlays) = match karpenter_parts(s, OVERLAY_MATCHES_NOTHING) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let mut out = Vec::new();
    for o in overlays {
        if !targets(o, pools).is_empty() {
            continue;
        }
        let (why, fix) = why_no_match(o, pools);
        out.push(finding(
            OVERLAY_MATCHES_NOTHING,
            Severity::Warning,
            format!("NodeOverlay/{}", o.name),
            format!(
                "matches no NodePool and instance type, so its capacity applies nowhere (Karpenter still reports it Ready): {why}"
            ),
            fix,
        ));
    }
    out
}

fn why_no_match(o: &OverlayInfo, pools: &[NodePool]) -> (String, String) {
    let mut names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    for r in &o.requirements {
        if r.key == NODEPOOL_LABEL && r.operator == "In" {
            let missing: Vec<&String> = r
                .values
                .iter()
                .filter(|v| !names.contains(&v.as_str()))
                .collect();
            if missing.len() == r.values.len() {
                let guess = missing
                    .first()
                    .and_then(|m| closest(m, names.iter().copied()));
                return (
                    format!(
                        "{NODEPOOL_LABEL} In [{}] names no NodePool (NodePools: {})",
                        list(&r.values),
                        list(&names)
                    ),
                    match guess {
                        Some(g) => format!("use the NodePool name {g} (did you mean it?)"),
                        None => format!("use one of the NodePool names: {}", list(&names)),
                    },
                );
            }
        }
    }
    for r in &o.requirements {
        if r.key != NODEPOOL_LABEL
            && r.key != INSTANCE_TYPE_LABEL
            && !instance_type_label(&r.key)
            && !pools.iter().any(|p| p.template_labels.contains_key(&r.key))
        {
            return (
                format!(
                    "requirement key {} is neither {NODEPOOL_LABEL}, a NodePool template label, nor an instance-type label (overlays do not see a NodePool's spec.requirements)",
                    r.key
                ),
                format!(
                    "select on {NODEPOOL_LABEL} and {INSTANCE_TYPE_LABEL} instead of {}",
                    r.key
                ),
            );
        }
    }
    if let Some(r) = o
        .requirements
        .iter()
        .find(|r| r.key == INSTANCE_TYPE_LABEL && r.operator == "In")
    {
        let named: Vec<&NodePool> = pools
            .iter()
            .filter(|p| {
                o.requirements
                    .iter()
                    .filter(|q| q.key == NODEPOOL_LABEL)
                    .all(|q| admits(q, Some(&p.name)))
            })
            .collect();
        let allowed: BTreeSet<&str> = named
            .iter()
            .filter_map(|p| p.instance_types())
            .flatten()
            .collect();
        return (
            format!(
                "{INSTANCE_TYPE_LABEL} In [{}], but the NodePool(s) it selects ({}) allow only {}",
                list(&r.values),
                list(named.iter().map(|p| p.name.as_str())),
                list(&allowed)
            ),
            format!(
                "use an instance type the NodePool allows: {}",
                list(&allowed)
            ),
        );
    }
    (
        "its requirements admit no NodePool's template labels".into(),
        format!(
            "select on {NODEPOOL_LABEL} and {INSTANCE_TYPE_LABEL}; regenerate with `gpu-slicer karpenter overlays`"
        ),
    )
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use crate::doctor::snapshot::Read;
    use gpu_slicer_core::nodepool::Requirement;

    #[test]
    fn an_overlay_with_a_misspelt_nodepool_matches_nothing_and_says_which_was_meant() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        o[0].name = "gpu-mgi-p4de".into();
        o[0].requirements[0].values = vec!["gpu-mgi".into()];
        o[0].weight = 42;
        s.node_overlays = Read::Found(o);
        let f = run_all(&s, &options());
        let f = only(&f, OVERLAY_MATCHES_NOTHING);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.object, "NodeOverlay/gpu-mgi-p4de");
        assert!(
            f.message.contains("[gpu-mgi] names no NodePool"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("gpu-mig"), "{}", f.fix);
    }

    #[test]
    fn an_overlay_on_an_instance_type_the_pool_does_not_allow_matches_nothing() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        o[0].requirements[1].values = vec!["p5e.48xlarge".into()];
        s.node_overlays = Read::Found(o);
        let f = overlay_matches_nothing(&s);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("allow only p4de.24xlarge, p5.48xlarge"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn an_overlay_selecting_on_a_nodepool_requirement_key_matches_nothing() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        // capacity-type is an instance-type label (may match); a key only in the NodePool's
        // spec.requirements is not visible to overlays.
        o[0].requirements.push(Requirement {
            key: "example.com/team".into(),
            operator: "In".into(),
            values: vec!["ml".into()],
        });
        o[1].requirements.push(Requirement {
            key: "karpenter.sh/capacity-type".into(),
            operator: "In".into(),
            values: vec!["on-demand".into()],
        });
        s.node_overlays = Read::Found(o);
        let f = overlay_matches_nothing(&s);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].object, "NodeOverlay/gpu-slicer-gpu-mig-p4de.24xlarge");
        assert!(
            f[0].message
                .contains("requirement key example.com/team is neither"),
            "{}",
            f[0].message
        );
    }
}
