//! The live DRA checks (issues 20 and 24): pure functions of a [`ClusterSnapshot`], like
//! [`super::checks`], each naming the object to fix.
//!
//! - [`DRA_DEVICE_PLUGIN_OVERLAP`]: a node whose GPUs both the device plugin (extended resources in its
//!   allocatable) and the NVIDIA DRA driver's kubelet plugin (ResourceSlices of driver
//!   `gpu.nvidia.com` for the node) hand out: two allocators oversubscribe the same GPUs without any
//!   error.
//! - [`DRA_MIG_POOL_EMPTY`]: a `backend: dra`, `action: mig` rule whose NodePool (or `nodeSelector`)
//!   has no node: Karpenter cannot launch nodes for MIG claims, so its pods stay Pending.
//! - [`DRA_TEMPLATE_NAME_TAKEN`]: a ResourceClaimTemplate name a `dra` rule needs in a namespace, held
//!   by an object that is not gpu-slicer's own: the controller leaves it alone, and rewritten pods
//!   claim from it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::checks::{POLICY_OBJECT, finding, skipped, some_of};
use super::snapshot::{ClusterSnapshot, NodeInfo, Read, TemplateInfo};
use super::{Finding, Severity};
use crate::controller::{self, OWNER_ANNOTATION};
use gpu_slicer_core::check::DEPLOY_DEVICE_PLUGIN_LABEL;
use gpu_slicer_core::dra::{self, MANAGED_BY};
use gpu_slicer_core::nodepool::NODEPOOL_LABEL;
use gpu_slicer_core::policy::{Action, Backend, Policy, Rule};

pub const DRA_DEVICE_PLUGIN_OVERLAP: &str = "dra-device-plugin-overlap";
pub const DRA_MIG_POOL_EMPTY: &str = "dra-mig-pool-empty";
pub const DRA_TEMPLATE_NAME_TAKEN: &str = "dra-template-name-taken";

/// The label the shipped DRA NodePools carry and the driver's `kubeletPlugin.nodeSelector` selects
/// (manifests/examples/dra).
pub const DRA_ALLOCATOR_LABEL: (&str, &str) = ("gpu-slicer.io/gpu-allocator", "dra");

/// The object a skipped DRA check names: the API the lists come from.
const DRA_API: &str = "APIService/v1.resource.k8s.io";
/// The driver values file the fixes point to.
const DRIVER_VALUES: &str = "manifests/examples/dra/driver/values.yaml";

/// The objects of a resource.k8s.io list, or `check`'s "skipped" finding saying why there are none.
fn listed<'a, T>(read: &'a Read<Vec<T>>, check: &'static str) -> Result<&'a [T], Vec<Finding>> {
    match read {
        Read::Found(items) => Ok(items),
        other => Err(skipped(check, DRA_API, other.why_not().unwrap_or(""))),
    }
}

/// Runs the DRA checks.
pub fn run_all(s: &ClusterSnapshot) -> Vec<Finding> {
    let mut out = dra_device_plugin_overlap(s);
    out.extend(dra_mig_pool_empty(s));
    out.extend(dra_template_name_taken(s));
    out
}

// ---- dra-device-plugin-overlap ----

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

// ---- dra-mig-pool-empty ----

/// The existing namespaces whose rule is `rule`.
fn covered_namespaces(s: &ClusterSnapshot, policy: &Policy, rule: &Rule) -> Vec<String> {
    s.namespaces
        .iter()
        .filter(|(ns, labels)| {
            policy
                .rule_for(ns, labels)
                .is_some_and(|r| r.name == rule.name)
        })
        .map(|(ns, _)| ns.clone())
        .collect()
}

fn covering(namespaces: &[String]) -> String {
    if namespaces.is_empty() {
        "no namespace yet".into()
    } else {
        format!("namespace {}", some_of(namespaces))
    }
}

/// What to do about an empty NodePool, from what the NodePool says.
fn empty_pool_fix(s: &ClusterSnapshot, pool: &str) -> String {
    let static_pool = format!(
        "make NodePool {pool} static: set spec.replicas (Karpenter's StaticCapacity feature gate) so it keeps its nodes, as gpu-dra-mig in manifests/examples/dra/nodepools.yaml and docs/dra-backend.md do, or route the rule by nodeSelector to a managed node group"
    );
    if s.node_pools.found().is_none() {
        return format!("{static_pool} (NodePools could not be read here)");
    }
    match s.pool(pool) {
        None => format!(
            "NodePool {pool} does not exist: create it as a static pool (spec.replicas), as gpu-dra-mig in manifests/examples/dra/nodepools.yaml, or correct the rule's nodePool"
        ),
        Some(p) => match p.replicas {
            None => static_pool,
            Some(n) if n <= 0 => {
                format!("NodePool {pool} is static with spec.replicas {n}: raise spec.replicas")
            }
            Some(n) => format!(
                "NodePool {pool} asks for {n} node(s) (spec.replicas) and none has registered: check that Karpenter's StaticCapacity feature gate is on and why its NodeClaims fail (`kubectl get nodeclaims -l {NODEPOOL_LABEL}={pool}`, Karpenter's logs)"
            ),
        },
    }
}

/// `backend: dra`, `action: mig` rules whose nodes do not exist: a NodePool without nodes, or a
/// `nodeSelector` no node matches. Karpenter cannot launch nodes for MIG claims (it has no metadata
/// for MIG devices), so the pods stay Pending until someone adds nodes.
pub fn dra_mig_pool_empty(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(no) => return skipped(DRA_MIG_POOL_EMPTY, POLICY_OBJECT, &no.why()),
    };
    let policy = &loaded.policy;
    let mig_rules = policy
        .rules
        .iter()
        .filter(|r| r.backend == Backend::Dra && r.action == Action::Mig);
    // NodePool -> the rules routing to it (one finding per pool).
    let mut by_pool: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    let mut out = Vec::new();
    for rule in mig_rules {
        if let Some(pool) = rule.node_pool.as_deref() {
            by_pool.entry(pool).or_default().push(rule);
            continue;
        }
        if rule.node_selector.is_empty() {
            continue; // unrouted: policy-cluster-mismatch reports it
        }
        let matches = |n: &&NodeInfo| {
            rule.node_selector
                .iter()
                .all(|(k, v)| n.label(k) == Some(v.as_str()))
        };
        if s.nodes.iter().any(|n| matches(&n)) {
            continue;
        }
        let selector: Vec<String> = rule
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let selector = selector.join(",");
        out.push(finding(
            DRA_MIG_POOL_EMPTY,
            Severity::Error,
            &loaded.object,
            format!(
                "rule {} (backend dra, mig; {}) routes MIG claims by nodeSelector {selector}, and no node carries those labels: Karpenter cannot launch nodes for MIG claims, so the pods stay Pending",
                rule.name,
                covering(&covered_namespaces(s, policy, rule))
            ),
            format!(
                "add nodes labelled {selector} (scale up the node group that carries them, `kubectl get nodes -l {selector}`), or correct the rule's nodeSelector"
            ),
        ));
    }
    for (pool, rules) in by_pool {
        if s.nodes
            .iter()
            .any(|n| n.label(NODEPOOL_LABEL) == Some(pool))
        {
            continue;
        }
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let namespaces: BTreeSet<String> = rules
            .iter()
            .flat_map(|r| covered_namespaces(s, policy, r))
            .collect();
        let namespaces: Vec<String> = namespaces.into_iter().collect();
        out.push(finding(
            DRA_MIG_POOL_EMPTY,
            Severity::Error,
            format!("NodePool/{pool}"),
            format!(
                "NodePool {pool} has no nodes ({NODEPOOL_LABEL}={pool}), and backend dra rule {} routes MIG claims to it ({}): Karpenter cannot launch nodes for MIG claims (it has no metadata for MIG devices), so those pods stay Pending",
                names.join(", "),
                covering(&namespaces)
            ),
            empty_pool_fix(s, pool),
        ));
    }
    out
}

// ---- dra-template-name-taken ----

/// The template names `namespace`'s rule needs, and the rule's name.
fn needed(
    policy: &Policy,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<(String, Vec<String>)> {
    let rule = policy.rule_for(name, labels)?;
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let names: Vec<String> = controller::desired(policy, &namespace)
        .iter()
        .filter_map(|t| t.pointer("/metadata/name")?.as_str().map(String::from))
        .collect();
    (!names.is_empty()).then(|| (rule.name.clone(), names))
}

fn held_by_whom(t: &TemplateInfo) -> String {
    let (label, ours) = MANAGED_BY;
    let (annotation, owner) = OWNER_ANNOTATION;
    match t.managed_by.as_deref() {
        Some(v) if v == ours => format!(
            "it carries {label}: {ours} but not the annotation {annotation}: {owner} (applied by hand, e.g. from `gpu-slicer dra templates`?)"
        ),
        Some(other) => format!(
            "it is managed by {other} ({label}), without gpu-slicer's label and {annotation} annotation"
        ),
        None => {
            format!("it has neither gpu-slicer's {label} label nor its {annotation} annotation")
        }
    }
}

/// Template names a `dra` rule needs that an object gpu-slicer did not make holds (issue 24): the
/// controller never writes or deletes it (a Warning Event `TemplateNameTaken`), and pods it rewrites
/// claim from it, so they get what that object asks for, not what the rule gives.
pub fn dra_template_name_taken(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(no) => return skipped(DRA_TEMPLATE_NAME_TAKEN, POLICY_OBJECT, &no.why()),
    };
    if !controller::needs_templates(&loaded.policy) {
        return Vec::new();
    }
    let templates = match listed(&s.claim_templates, DRA_TEMPLATE_NAME_TAKEN) {
        Ok(templates) => templates,
        Err(skip) => return skip,
    };
    let by_name: BTreeMap<(&str, &str), &TemplateInfo> = templates
        .iter()
        .map(|t| ((t.namespace.as_str(), t.name.as_str()), t))
        .collect();
    let mut out = Vec::new();
    for (ns, labels) in &s.namespaces {
        let Some((rule, names)) = needed(&loaded.policy, ns, labels) else {
            continue;
        };
        for name in names {
            let Some(t) = by_name.get(&(ns.as_str(), name.as_str())) else {
                continue;
            };
            if t.ours {
                continue;
            }
            out.push(finding(
                DRA_TEMPLATE_NAME_TAKEN,
                Severity::Error,
                t.object(),
                format!(
                    "rule {rule} (backend dra) needs ResourceClaimTemplate {name} in namespace {ns}, and another object holds the name: {}. gpu-slicer's controller leaves it alone (Warning Event TemplateNameTaken on namespace {ns}), and the pods it rewrites claim from it, so they get what it asks for, not what the rule gives",
                    held_by_whom(t)
                ),
                format!(
                    "delete it (`kubectl -n {ns} delete resourceclaimtemplate {name}`), or rename it and what uses it; gpu-slicer's controller then creates its own within {}s",
                    controller::RETRY.as_secs()
                ),
            ));
        }
    }
    out
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

    #[test]
    fn a_hand_applied_gpu_slicer_template_is_told_apart_from_a_tenants() {
        let mut t = TemplateInfo {
            namespace: "ns".into(),
            name: "gpu-slicer-gpu".into(),
            ours: false,
            managed_by: Some("gpu-slicer".into()),
        };
        assert!(held_by_whom(&t).contains("but not the annotation gpu-slicer.io/owner"));
        t.managed_by = Some("Helm".into());
        assert!(held_by_whom(&t).starts_with("it is managed by Helm"));
        t.managed_by = None;
        assert!(held_by_whom(&t).starts_with("it has neither"));
    }
}
