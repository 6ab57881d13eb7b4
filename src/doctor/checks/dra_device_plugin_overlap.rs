//! `dra-device-plugin-overlap`: a node whose GPUs both the device plugin (extended resources in its
//! allocatable) and the NVIDIA DRA driver's kubelet plugin (ResourceSlices of driver `gpu.nvidia.com`
//! for the node) hand out. Two allocators oversubscribe the same GPUs without any error: one GPU can
//! go to a device-plugin pod and a DRA claim at once.
//!
//! A finding names the node, its NodePool, both allocators' evidence, and turns off the allocator that
//! does not own the pool (who owns it is read from the node's labels and the rules routing to its
//! NodePool), or says to decide when nothing tells.

use std::collections::BTreeMap;

use gpu_slicer_core::check::DEPLOY_DEVICE_PLUGIN_LABEL;
use gpu_slicer_core::dra;
use gpu_slicer_core::nodepool::NODEPOOL_LABEL;
use gpu_slicer_core::policy::Backend;

use super::findings::{finding, listed, some_of};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, NodeInfo};
use crate::doctor::{Finding, Severity};

pub const DRA_DEVICE_PLUGIN_OVERLAP: &str = "dra-device-plugin-overlap";

/// The check, for [`super::ALL`].
pub struct DraDevicePluginOverlap;

impl Check for DraDevicePluginOverlap {
    fn name(&self) -> &'static str {
        DRA_DEVICE_PLUGIN_OVERLAP
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        dra_device_plugin_overlap(s)
    }
}

/// The label the shipped DRA NodePools carry and the driver's `kubeletPlugin.nodeSelector` selects
/// (manifests/examples/dra).
pub const DRA_ALLOCATOR_LABEL: (&str, &str) = ("gpu-slicer.io/gpu-allocator", "dra");

/// The driver values file the fixes point to.
const DRIVER_VALUES: &str = "manifests/examples/dra/driver/values.yaml";

/// Nodes that advertise device-plugin GPU resources and for which the NVIDIA DRA driver's kubelet
/// plugin publishes ResourceSlices: both allocators hand out the same GPUs (Karpenter's DRA page: "If
/// both run, they can each hand out the same device, oversubscribing it without any error").
pub fn dra_device_plugin_overlap(s: &ClusterSnapshot) -> Vec<Finding> {
    let slices = match listed(&s.resource_slices, DRA_DEVICE_PLUGIN_OVERLAP) {
        Ok(slices) => slices,
        Err(skip) => return skip,
    };
    // Node -> (slice names, devices) of the NVIDIA driver.
    let mut served: BTreeMap<&str, (Vec<String>, usize)> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.driver == dra::DRIVER) {
        if let Some(node) = &slice.node_name {
            let entry = served.entry(node.as_str()).or_default();
            entry.0.push(slice.name.clone());
            entry.1 += slice.devices;
        }
    }
    let mut out = Vec::new();
    for node in &s.nodes {
        let Some((names, devices)) = served.get(node.name.as_str()) else {
            continue;
        };
        let resources = device_plugin_resources(node);
        if resources.is_empty() {
            continue;
        }
        let pool = node
            .label(NODEPOOL_LABEL)
            .map_or("no NodePool: not launched by Karpenter".to_string(), |p| {
                format!("NodePool {p}")
            });
        let message = format!(
            "node {} ({pool}) advertises device-plugin GPU resources ({}) and the NVIDIA DRA driver's kubelet plugin publishes its GPUs too (ResourceSlice {}: {devices} device(s) of driver {}): two allocators hand out the same GPUs, so one GPU can go to a device-plugin pod and a DRA claim at once, without any error",
            node.name,
            resources.join(", "),
            some_of(names),
            dra::DRIVER,
        );
        out.push(finding(
            DRA_DEVICE_PLUGIN_OVERLAP,
            Severity::Error,
            format!("Node/{}", node.name),
            message,
            overlap_fix(node, &owner(s, node)),
        ));
    }
    out
}

/// The GPU resources a device plugin advertises on `node` (count > 0): `nvidia.com/gpu`,
/// `nvidia.com/gpu.shared`, `nvidia.com/mig-*` (and their `.shared` replicas).
fn device_plugin_resources(node: &NodeInfo) -> Vec<String> {
    node.allocatable
        .iter()
        .filter(|(k, n)| {
            **n > 0
                && (k.as_str() == gpu_slicer_core::policy::WHOLE_GPU
                    || k.as_str() == "nvidia.com/gpu.shared"
                    || k.starts_with(gpu_slicer_core::policy::MIG_PREFIX))
        })
        .map(|(k, n)| format!("{k} x{n}"))
        .collect()
}

/// Who should hand out a node's GPUs, as far as the cluster and the policy say.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// The DRA driver; the reason.
    Dra(String),
    /// The device plugin; the reason.
    DevicePlugin(String),
    Unknown,
}

fn rules_routing_to<'a>(s: &'a ClusterSnapshot, pool: &str, backend: Backend) -> Vec<&'a str> {
    let Ok(loaded) = &s.policy else {
        return Vec::new();
    };
    loaded
        .policy
        .rules
        .iter()
        .filter(|r| r.backend == backend && r.node_pool.as_deref() == Some(pool))
        .map(|r| r.name.as_str())
        .collect()
}

fn owner(s: &ClusterSnapshot, node: &NodeInfo) -> Owner {
    let (key, value) = DRA_ALLOCATOR_LABEL;
    if node.label(key) == Some(value) {
        return Owner::Dra(format!(
            "the node carries {key}={value}, the DRA pools' label"
        ));
    }
    if node.label(DEPLOY_DEVICE_PLUGIN_LABEL) == Some("false") {
        return Owner::Dra(format!(
            "the node carries {DEPLOY_DEVICE_PLUGIN_LABEL}=false, yet a device plugin still advertises its GPUs"
        ));
    }
    let Some(pool) = node.label(NODEPOOL_LABEL) else {
        return Owner::Unknown;
    };
    let dra_rules = rules_routing_to(s, pool, Backend::Dra);
    if !dra_rules.is_empty() {
        return Owner::Dra(format!(
            "backend dra rule {} routes to it",
            dra_rules.join(", ")
        ));
    }
    let plugin_rules = rules_routing_to(s, pool, Backend::DevicePlugin);
    if !plugin_rules.is_empty() {
        return Owner::DevicePlugin(format!(
            "device-plugin rule {} routes to it",
            plugin_rules.join(", ")
        ));
    }
    Owner::Unknown
}

/// The fix for a node both allocators serve, by who should own its GPUs.
fn overlap_fix(node: &NodeInfo, owner: &Owner) -> String {
    let (key, value) = DRA_ALLOCATOR_LABEL;
    let (pool_is, on_pool) = match node.label(NODEPOOL_LABEL) {
        Some(pool) => (
            format!("NodePool {pool}"),
            format!("NodePool {pool}'s spec.template.metadata.labels"),
        ),
        None => (
            format!("node {}", node.name),
            format!("the labels of node {}'s node group", node.name),
        ),
    };
    let device_plugin_off = format!(
        "set {DEPLOY_DEVICE_PLUGIN_LABEL}: \"false\" (and {key}: {value}) in {on_pool}, as manifests/examples/dra/nodepools.yaml does, so the GPU Operator removes its device plugin (`kubectl label node {} {DEPLOY_DEVICE_PLUGIN_LABEL}=false --overwrite` takes effect now; Karpenter replaces drifted nodes)",
        node.name
    );
    let kubelet_plugin_off = format!(
        "set the DRA driver's Helm value kubeletPlugin.nodeSelector to {key}: {value} ({DRIVER_VALUES}), a label only DRA NodePools carry, and keep that label off {on_pool}, so its kubelet plugin leaves this node (`gpu-slicer policy check --dra-values` checks the selector offline)"
    );
    match owner {
        Owner::Dra(why) => format!("{pool_is} is a DRA pool ({why}): {device_plugin_off}"),
        Owner::DevicePlugin(why) => {
            format!("{pool_is} is a device-plugin pool ({why}): {kubelet_plugin_off}")
        }
        Owner::Unknown => format!(
            "decide which allocator owns {pool_is}'s GPUs; DRA: {device_plugin_off}; device plugin: {kubelet_plugin_off}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(name: &str, labels: &[(&str, &str)], allocatable: &[(&str, u64)]) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            allocatable: allocatable
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect::<BTreeMap<_, _>>(),
            created: None,
        }
    }

    #[test]
    fn device_plugin_resources_are_gpus_shares_and_mig_slices_advertised_above_zero() {
        let n = node(
            "n",
            &[],
            &[
                ("nvidia.com/gpu", 0),
                ("nvidia.com/mig-1g.10gb", 7),
                ("nvidia.com/gpu.shared", 4),
                ("nvidia.com/pgpu", 1),
                ("vpc.amazonaws.com/efa", 4),
            ],
        );
        assert_eq!(
            device_plugin_resources(&n),
            ["nvidia.com/gpu.shared x4", "nvidia.com/mig-1g.10gb x7"]
        );
    }

    #[test]
    fn the_fix_turns_off_the_allocator_that_does_not_own_the_pool() {
        let s = ClusterSnapshot::default();
        let dra_node = node(
            "a",
            &[
                ("karpenter.sh/nodepool", "gpu-dra-mig"),
                ("gpu-slicer.io/gpu-allocator", "dra"),
            ],
            &[],
        );
        let fix = overlap_fix(&dra_node, &owner(&s, &dra_node));
        assert!(fix.starts_with("NodePool gpu-dra-mig is a DRA pool (the node carries gpu-slicer.io/gpu-allocator=dra"), "{fix}");
        assert!(
            fix.contains("nvidia.com/gpu.deploy.device-plugin: \"false\""),
            "{fix}"
        );
        let unowned = node("b", &[], &[]);
        let fix = overlap_fix(&unowned, &owner(&s, &unowned));
        assert!(
            fix.starts_with("decide which allocator owns node b's GPUs"),
            "{fix}"
        );
        assert!(fix.contains("kubeletPlugin.nodeSelector"), "{fix}");
        assert!(fix.contains("the labels of node b's node group"), "{fix}");
        let plugin = Owner::DevicePlugin("device-plugin rule r routes to it".into());
        let fix = overlap_fix(
            &node("c", &[("karpenter.sh/nodepool", "gpu-mig")], &[]),
            &plugin,
        );
        assert!(
            fix.starts_with("NodePool gpu-mig is a device-plugin pool"),
            "{fix}"
        );
        assert!(!fix.contains("gpu.deploy.device-plugin"), "{fix}");
    }
}
