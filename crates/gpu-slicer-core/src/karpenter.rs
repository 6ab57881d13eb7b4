//! What Karpenter must be told: the extended resources a node of a NodePool will advertise once the GPU
//! Operator has applied its MIG layout and device plugin sharing config, as `NodeOverlay`s
//! (karpenter.sh/v1alpha1, feature gate `NodeOverlay`).
//!
//! Karpenter facts honoured here (from its source, see DESIGN.md "Karpenter"):
//! - overlay requirements see only `karpenter.sh/nodepool`, the NodePool's template labels and the
//!   instance type's labels, so overlays select on `karpenter.sh/nodepool` + instance type;
//! - capacity overwrites what Karpenter believes, so `nvidia.com/gpu: "0"` is set where no whole GPU is
//!   left: otherwise a pod still asking for a whole GPU makes Karpenter launch a node that never
//!   registers one, and Karpenter never gives up on it;
//! - two same-weight overlays touching one resource conflict and are dropped for every NodePool, so
//!   every overlay gets an explicit, distinct weight.
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::gpu_operator`], [`crate::nodepool`],
//! [`crate::policy`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::catalog::{self, InstanceType};
use crate::gpu_operator::{DeviceMigStrategy, GpuOperatorConfigs, MigLayout};
use crate::nodepool::{INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, NodePool, NodePoolIndex};
use crate::policy::{Action, Policy, WHOLE_GPU};

pub const MIG_CONFIG_LABEL: &str = "nvidia.com/mig.config";
pub const DEVICE_PLUGIN_CONFIG_LABEL: &str = "nvidia.com/device-plugin.config";
/// Generated overlay weights lie in `WEIGHTS` (Karpenter accepts 1..=10000).
pub const WEIGHTS: std::ops::Range<u32> = 1000..10000;

/// A weight for an overlay that depends only on its NodePool and instance type (FNV-1a), so adding a
/// NodePool does not renumber the others; `taken` weights are skipped to keep them distinct.
fn stable_weight(pool: &str, instance_type: &str, taken: &BTreeSet<u32>) -> u32 {
    let mut hash: u32 = 0x811c9dc5;
    for b in pool.bytes().chain([b'/']).chain(instance_type.bytes()) {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let span = WEIGHTS.end - WEIGHTS.start;
    let mut w = WEIGHTS.start + hash % span;
    while taken.contains(&w) {
        w = WEIGHTS.start + (w - WEIGHTS.start + 1) % span;
    }
    w
}

/// The GPU resources one node advertises: resource name -> count.
pub type Resources = BTreeMap<String, u64>;

/// What a node of `pool` on `it` advertises after the GPU Operator has configured it, assuming the
/// `mixed` MIG strategy where the configs do not say. See [`node_resources_assuming`].
pub fn node_resources(
    pool: &NodePool,
    it: &InstanceType,
    ops: &GpuOperatorConfigs,
) -> Result<Resources, String> {
    node_resources_assuming(pool, it, ops, DeviceMigStrategy::Mixed)
}

/// What a node of `pool` on `it` advertises after the GPU Operator has configured it: the MIG layout
/// (`nvidia.com/mig.config`), named by the device plugin's MIG strategy (`assumed` where the configs
/// read say nothing of it), then multiplied by its time-slicing or MPS replicas. Errors say which
/// config is missing or does not cover the GPU.
pub fn node_resources_assuming(
    pool: &NodePool,
    it: &InstanceType,
    ops: &GpuOperatorConfigs,
    assumed: DeviceMigStrategy,
) -> Result<Resources, String> {
    let gpus = u64::from(it.gpus);
    let plugin_config = pool
        .template_labels
        .get(DEVICE_PLUGIN_CONFIG_LABEL)
        .map(String::as_str);
    let mut res = Resources::new();
    match pool.template_labels.get(MIG_CONFIG_LABEL) {
        Some(config) => match ops.mig.layout(config, it.gpu) {
            None => {
                let hint = if ops.mig_is_default {
                    ""
                } else {
                    " (a custom mig-parted config replaces the GPU Operator's defaults)"
                };
                return Err(format!(
                    "MIG config {config:?} is not in {}{hint}",
                    ops.mig.source
                ));
            }
            Some(None) => {
                return Err(format!(
                    "MIG config {config:?} has no entry for {} ({})",
                    it.gpu.name, it.name
                ));
            }
            Some(Some(MigLayout::Disabled)) => {
                res.insert(WHOLE_GPU.to_string(), gpus);
            }
            Some(Some(MigLayout::Enabled(_))) if !it.gpu.supports_mig() => {
                return Err(format!(
                    "MIG config {config:?} enables MIG, but {} ({}) has no MIG",
                    it.gpu.name, it.name
                ));
            }
            Some(Some(MigLayout::Enabled(devices))) => {
                if let Some(p) = devices.keys().find(|p| it.gpu.mig_profile(p).is_none()) {
                    return Err(format!(
                        "MIG config {config:?} makes {p}, which {} ({}) does not have",
                        it.gpu.name, it.name
                    ));
                }
                let (strategy, source) = match ops.mig_strategy(plugin_config) {
                    Some(e) => (e.strategy, e.source),
                    None => (
                        assumed,
                        "assumed: no GPU Operator configs given".to_string(),
                    ),
                };
                // mig-parted's `devices: all`: every GPU of the node is partitioned, none stays whole.
                match strategy {
                    DeviceMigStrategy::Mixed => {
                        res.insert(WHOLE_GPU.to_string(), 0);
                        for (profile, count) in devices {
                            res.insert(
                                format!("nvidia.com/mig-{profile}"),
                                u64::from(count) * gpus,
                            );
                        }
                    }
                    // The plugin's single strategy requires every MIG device of the node to be one
                    // profile (its `mig-strategy.go`), and advertises each as a whole GPU.
                    DeviceMigStrategy::Single => {
                        let [(_, count)] = devices.iter().collect::<Vec<_>>()[..] else {
                            let makes: Vec<String> =
                                devices.iter().map(|(p, n)| format!("{p} x{n}")).collect();
                            return Err(format!(
                                "MIG config {config:?} makes {} per {} GPU, but the device plugin's MIG strategy is single ({source}), which needs one profile per node (an all-<profile> config)",
                                makes.join(", "),
                                it.gpu.name
                            ));
                        };
                        res.insert(WHOLE_GPU.to_string(), u64::from(*count) * gpus);
                    }
                    DeviceMigStrategy::None => {
                        return Err(format!(
                            "MIG config {config:?} partitions the GPUs of {}, but the device plugin's MIG strategy is none ({source}): it advertises no MIG devices",
                            it.name
                        ));
                    }
                }
            }
        },
        None => {
            res.insert(WHOLE_GPU.to_string(), gpus);
        }
    }
    if let Some(name) = pool.template_labels.get(DEVICE_PLUGIN_CONFIG_LABEL) {
        let Some((config, _)) = ops.device_plugin.get(name) else {
            return Err(format!(
                "device plugin config {name:?} is not in the GPU Operator configs given (--gpu-operator)"
            ));
        };
        if let Some((_, shared)) = config.sharing() {
            for r in &shared.resources {
                let Some(n) = res.get(&r.name).copied().filter(|n| *n > 0) else {
                    continue;
                };
                let advertised = shared.advertised_name(r);
                let total = n * u64::from(r.replicas);
                if advertised == r.name {
                    res.insert(advertised, total);
                } else {
                    res.insert(r.name.clone(), 0);
                    *res.entry(advertised).or_default() += total;
                }
            }
        }
    }
    Ok(res)
}

/// The capacity an overlay must declare: everything Karpenter would not assume by itself (it assumes
/// `nvidia.com/gpu` = the instance's GPU count).
pub fn overlay_capacity(res: &Resources, it: &InstanceType) -> Resources {
    res.iter()
        .filter(|(k, v)| !(k.as_str() == WHOLE_GPU && **v == u64::from(it.gpus)))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The NodePools a policy's device-plugin rules route to, in name order. DRA pools get no overlay:
/// Karpenter reads the NVIDIA DRA driver's devices from its own per-instance-type metadata.
pub fn routed_pools(policy: &Policy) -> BTreeSet<&str> {
    policy
        .rules
        .iter()
        .filter(|r| r.backend == crate::policy::Backend::DevicePlugin)
        .filter_map(|r| r.node_pool.as_deref())
        .collect()
}

/// The MIG strategy the policy's rules expect on a NodePool (the first `mig` rule routing there), used
/// where the GPU Operator configs do not say.
fn expected_strategy(policy: &Policy, pool: &str) -> DeviceMigStrategy {
    let rule = policy
        .rules
        .iter()
        .find(|r| r.action == Action::Mig && r.node_pool.as_deref() == Some(pool));
    rule.map_or(DeviceMigStrategy::Mixed, |r| r.mig_strategy.into())
}

/// NodeOverlays for every NodePool the policy routes to, one per instance type whose nodes advertise
/// more than whole GPUs. Errors name the NodePool and what is missing.
pub fn overlays(
    policy: &Policy,
    pools: &NodePoolIndex,
    ops: &GpuOperatorConfigs,
) -> Result<Vec<Value>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for name in routed_pools(policy) {
        let Some(pool) = pools.get(name) else {
            errors.push(format!(
                "NodePool {name:?} (named by the policy) is not among the NodePools given"
            ));
            continue;
        };
        let Some(types) = pool.instance_types() else {
            errors.push(format!(
                "NodePool {name}: pin {INSTANCE_TYPE_LABEL} with operator In, so its GPUs are known"
            ));
            continue;
        };
        for t in types {
            let Some(it) = catalog::instance_type(t) else {
                errors.push(format!(
                    "NodePool {name}: instance type {t} is not a GPU instance type gpu-slicer knows"
                ));
                continue;
            };
            match node_resources_assuming(pool, it, ops, expected_strategy(policy, name)) {
                Err(e) => errors.push(format!("NodePool {name}: {e}")),
                Ok(res) => {
                    let capacity = overlay_capacity(&res, it);
                    if !capacity.is_empty() {
                        out.push((pool, it, capacity));
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut taken = BTreeSet::new();
    Ok(out
        .into_iter()
        .map(|(pool, it, capacity)| {
            let weight = stable_weight(&pool.name, it.name, &taken);
            taken.insert(weight);
            let layout = [MIG_CONFIG_LABEL, DEVICE_PLUGIN_CONFIG_LABEL]
                .iter()
                .filter_map(|k| pool.template_labels.get(*k).map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(", ");
            let capacity: serde_json::Map<String, Value> =
                capacity.into_iter().map(|(k, v)| (k, Value::String(v.to_string()))).collect();
            json!({
                "apiVersion": "karpenter.sh/v1alpha1",
                "kind": "NodeOverlay",
                "metadata": {
                    "name": format!("gpu-slicer-{}-{}", pool.name, it.name),
                    "labels": {"app.kubernetes.io/managed-by": "gpu-slicer"},
                    "annotations": {"gpu-slicer.io/layout": format!("{} x {} with {layout}", it.gpus, it.gpu.name)},
                },
                "spec": {
                    "weight": weight,
                    "requirements": [
                        {"key": NODEPOOL_LABEL, "operator": "In", "values": [pool.name]},
                        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [it.name]},
                    ],
                    "capacity": capacity,
                }
            })
        })
        .collect())
}

/// Overlays as one multi-document YAML file with a header saying how it was made.
pub fn overlays_yaml(overlays: &[Value], command: &str) -> Result<String, String> {
    let mut out = format!(
        "# Generated by `{command}`; do not edit.\n# Karpenter >= v1.13 recommended, with the NodeOverlay feature gate on.\n"
    );
    for o in overlays {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(labels: &[(&str, &str)], types: &[&str]) -> NodePool {
        NodePool::from_value(&json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p"},
            "spec": {"template": {"metadata": {"labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
                "spec": {"requirements": [{"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": types}]}}}
        }))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn mig_layouts_multiply_by_gpus_and_zero_whole_gpus() {
        let ops = GpuOperatorConfigs::default();
        let p5 = catalog::instance_type("p5.48xlarge").unwrap();
        let res = node_resources(
            &pool(&[(MIG_CONFIG_LABEL, "all-1g.10gb")], &["p5.48xlarge"]),
            p5,
            &ops,
        )
        .unwrap();
        assert_eq!(
            res,
            Resources::from([
                ("nvidia.com/gpu".into(), 0),
                ("nvidia.com/mig-1g.10gb".into(), 56)
            ])
        );
        let res = node_resources(
            &pool(&[(MIG_CONFIG_LABEL, "all-balanced")], &["p5.48xlarge"]),
            p5,
            &ops,
        )
        .unwrap();
        assert_eq!(res["nvidia.com/mig-1g.10gb"], 16);
        assert_eq!(res["nvidia.com/mig-3g.40gb"], 8);
        let res = node_resources(
            &pool(&[(MIG_CONFIG_LABEL, "all-disabled")], &["p5.48xlarge"]),
            p5,
            &ops,
        )
        .unwrap();
        assert!(
            overlay_capacity(&res, p5).is_empty(),
            "whole GPUs need no overlay"
        );
        let err = node_resources(
            &pool(&[(MIG_CONFIG_LABEL, "all-7g.80gb")], &["g6.xlarge"]),
            catalog::instance_type("g6.xlarge").unwrap(),
            &ops,
        );
        assert!(
            err.unwrap_err()
                .contains("enables MIG, but L4 (g6.xlarge) has no MIG")
        );
    }
}
