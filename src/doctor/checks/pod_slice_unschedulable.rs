//! `pod-slice-unschedulable`: a pending pod asking for a MIG or shared resource that nothing can
//! offer: no node advertises it, and no NodeOverlay gives it to a NodePool the pod's node selector and
//! tolerations admit. Karpenter then never launches a node for it, and the pod stays Pending.
//!
//! One finding per owner and resource says which NodePools refuse the pod and why (a node selector, a
//! taint), or which admit it but lack the overlay, and says to route the pod (its namespace's rule) or
//! to apply the overlays / template labels that make the slice.

use std::collections::{BTreeMap, BTreeSet};

use gpu_slicer_core::karpenter::{DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_LABEL};
use gpu_slicer_core::nodepool::{NODEPOOL_LABEL, NodePool};
use gpu_slicer_core::policy::MIG_PREFIX;

use super::findings::{finding, list};
use super::overlays::{Targets, targets};
use super::selectors::admits;
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, OverlayInfo, PodInfo};
use crate::doctor::{Finding, Severity};

pub const POD_SLICE_UNSCHEDULABLE: &str = "pod-slice-unschedulable";

/// The check, for [`super::ALL`].
pub struct PodSliceUnschedulable;

impl Check for PodSliceUnschedulable {
    fn name(&self) -> &'static str {
        POD_SLICE_UNSCHEDULABLE
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        pod_slice_unschedulable(s)
    }
}

/// Pending pods asking for a MIG or shared resource that nothing can offer: no node advertises it and
/// no overlay gives it to a NodePool the pod's selectors and tolerations admit.
pub fn pod_slice_unschedulable(s: &ClusterSnapshot) -> Vec<Finding> {
    let shared: BTreeSet<&str> = s
        .policy
        .as_ref()
        .map(|p| {
            p.policy
                .shared_resources
                .iter()
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    let is_slice =
        |r: &str| r.starts_with(MIG_PREFIX) || r.ends_with(".shared") || shared.contains(r);
    let pools: &[NodePool] = s.node_pools.found().map_or(&[], Vec::as_slice);
    let overlays: &[OverlayInfo] = s.node_overlays.found().map_or(&[], Vec::as_slice);
    let targets: Vec<(&OverlayInfo, Targets)> =
        overlays.iter().map(|o| (o, targets(o, pools))).collect();
    let advertised: BTreeSet<&str> = s
        .nodes
        .iter()
        .flat_map(|n| {
            n.allocatable
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(k, _)| k.as_str())
        })
        .collect();
    let karpenter = s.node_pools.why_not().map_or(String::new(), |why| {
        format!("; Karpenter's NodePools could not be read ({why}), so only existing nodes count")
    });
    // (group, resource) -> (pods, message, fix)
    let mut groups: BTreeMap<(String, String), (Vec<&PodInfo>, String, String)> = BTreeMap::new();
    for pod in &s.pods {
        if pod.phase != "Pending" || pod.node_name.is_some() {
            continue;
        }
        for resource in pod.gpu_requests.keys().filter(|r| is_slice(r)) {
            if advertised.contains(resource.as_str()) {
                continue;
            }
            let mut admitted = Vec::new();
            let mut refused = Vec::new();
            for pool in pools {
                match pool_admits(pool, pod) {
                    Ok(()) => admitted.push(pool),
                    Err(why) => refused.push(format!("{} ({why})", pool.name)),
                }
            }
            let offered = admitted.iter().any(|pool| {
                targets.iter().any(|(o, t)| {
                    t.contains_key(&pool.name) && o.capacity.get(resource).is_some_and(|n| *n > 0)
                })
            });
            if offered {
                continue;
            }
            let key = (pod.group(), resource.clone());
            if let Some(g) = groups.get_mut(&key) {
                g.0.push(pod);
                continue;
            }
            let (message, fix) = why_unschedulable(resource, &admitted, &refused, &karpenter);
            groups.insert(key, (vec![pod], message, fix));
        }
    }
    groups
        .into_iter()
        .map(|((group, _), (pods, message, fix))| {
            let more = if pods.len() > 1 {
                format!(" ({} pending pods of {group})", pods.len())
            } else {
                String::new()
            };
            finding(
                POD_SLICE_UNSCHEDULABLE,
                Severity::Error,
                pods[0].object(),
                format!("Pending: {message}{more}"),
                fix,
            )
        })
        .collect()
}

/// The message and fix for a pod that asks for `resource`, by whether any NodePool admits it: none
/// (`refused` says why each does not), or some that no NodeOverlay gives the resource to.
fn why_unschedulable(
    resource: &str,
    admitted: &[&NodePool],
    refused: &[String],
    karpenter: &str,
) -> (String, String) {
    if admitted.is_empty() {
        (
            format!(
                "asks for {resource}; no node advertises it and no NodePool admits the pod (NodePools: {}){karpenter}",
                list(refused)
            ),
            "route the pod to the NodePool that offers the slice (nodeSelector karpenter.sh/nodepool, its template labels) and tolerate its taints: a policy rule with nodePool does this for new pods; check the pod's namespace rule".to_string(),
        )
    } else {
        let names: Vec<&str> = admitted.iter().map(|p| p.name.as_str()).collect();
        (
            format!(
                "asks for {resource}; no node advertises it and no NodeOverlay gives it to the NodePool(s) the pod can use ({}){karpenter}",
                list(&names)
            ),
            format!(
                "apply NodeOverlays giving {resource} to NodePool {} (`gpu-slicer karpenter overlays --policy ... --nodepools ...`, feature gate NodeOverlay on), or give the NodePool the {MIG_CONFIG_LABEL} / {DEVICE_PLUGIN_CONFIG_LABEL} template label that makes it",
                names[0]
            ),
        )
    }
}

/// Whether a pod's node selector and tolerations let it onto nodes of `pool`.
fn pool_admits(pool: &NodePool, pod: &PodInfo) -> Result<(), String> {
    for (k, v) in &pod.node_selector {
        let ok = if k == NODEPOOL_LABEL {
            v == &pool.name
        } else if let Some(have) = pool.template_labels.get(k) {
            have == v
        } else if let Some(r) = pool.requirements.iter().find(|r| &r.key == k) {
            admits(r, Some(v))
        } else {
            true // a label Karpenter may still satisfy (instance type labels): not judged here
        };
        if !ok {
            return Err(format!("nodeSelector {k}={v}"));
        }
    }
    for taint in &pool.taints {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        let need = taint.toleration();
        if !pod.tolerations.iter().any(|t| t.covers(&need)) {
            return Err(format!(
                "taint {}{}:{} not tolerated",
                taint.key,
                taint
                    .value
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .map_or(String::new(), |v| format!("={v}")),
                taint.effect
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use crate::doctor::snapshot::Read;
    use serde_json::json;

    #[test]
    fn a_pending_pod_whose_slice_no_pool_offers_is_unschedulable() {
        let mut s = healthy();
        s.nodes.clear();
        // Overlays for gpu-mig removed: Karpenter does not know the pool offers slices.
        let o: Vec<OverlayInfo> = shipped_overlays()
            .into_iter()
            .filter(|o| !o.name.contains("gpu-mig"))
            .collect();
        s.node_overlays = Read::Found(o);
        s.node_claims = Read::Found(Vec::new());
        s.pods.retain(|p| p.phase == "Pending");
        let mut second = s.pods[0].clone();
        second.name = "llm-7d9c8b6f5-zzzzz".into();
        s.pods.push(second);
        let f = run_all(&s, &options());
        let f = only(&f, POD_SLICE_UNSCHEDULABLE);
        assert_eq!(f.object, "Pod/ml-inference/llm-7d9c8b6f5-fghij");
        assert!(
            f.message
                .contains("no NodeOverlay gives it to the NodePool(s) the pod can use (gpu-mig)"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("2 pending pods of ReplicaSet ml-inference/llm-7d9c8b6f5"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("NodePool gpu-mig"), "{}", f.fix);
    }

    #[test]
    fn a_pending_pod_that_tolerates_no_pool_says_so() {
        let mut s = healthy();
        s.nodes.clear();
        s.node_claims = Read::Found(Vec::new());
        s.pods = vec![pod(gpu_pod(
            "ml-inference",
            "bare",
            "Pending",
            json!({"nvidia.com/mig-1g.10gb": "1"}),
            json!({}),
        ))];
        let f = pod_slice_unschedulable(&s);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message.contains("no NodePool admits the pod"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].message
                .contains("gpu-mig (taint nvidia.com/gpu:NoSchedule not tolerated)"),
            "{}",
            f[0].message
        );
    }
}
