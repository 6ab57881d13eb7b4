//! `policy check`'s cross-checks of `backend: dra` rules against the cluster side, offline: routing,
//! static MIG pools, the NVIDIA DRA driver's Helm values (`--dra-values`), the EC2NodeClasses of DRA
//! pools, and DeviceClasses that map extended resources (`--device-classes`). Each finding names the
//! object to fix. Why each matters: two allocators (the device plugin and the DRA driver) that see
//! the same GPU hand it out twice, "oversubscribing it without any error" (Karpenter's DRA page), and
//! a claim written for one consumable-shares mode shares devices under another (docs/dra-backend.md).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::check::Disagreements;
use crate::nodepool::NodePoolIndex;
use crate::policy::dra_sharing::ConsumableShares;
use crate::policy::{Action, Backend, DefaultAction, Policy, Rule, WHOLE_GPU};

/// The EC2NodeClass annotation through which Karpenter learns the driver's consumable-shares mode.
pub const CONSUMABLE_CAPACITY_ANNOTATION: &str = "karpenter.k8s.aws/nvidia-consumable-capacity";

/// What `policy check` reads of the NVIDIA DRA driver's Helm values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverValues {
    pub source: String,
    /// `consumableShares`, in effect only with `featureGates.ConsumableShares: true`.
    pub shares: ConsumableShares,
    /// `kubeletPlugin.nodeSelector`: the nodes the kubelet plugin (the allocator's node side) runs on.
    pub node_selector: BTreeMap<String, String>,
}

impl DriverValues {
    /// Parses a Helm values file of the driver's chart (`source` names it in errors).
    pub fn from_text(text: &str, source: String) -> Result<DriverValues, String> {
        let doc = crate::yaml::documents(text)
            .map_err(|e| format!("{source}: {e}"))?
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        DriverValues::from_value(&doc, source)
    }

    pub fn from_value(doc: &Value, source: String) -> Result<DriverValues, String> {
        let gate = doc
            .pointer("/featureGates/ConsumableShares")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let written = match doc.get("consumableShares") {
            None | Some(Value::Null) => ConsumableShares::Disabled,
            Some(Value::Number(n)) => n.to_string().parse()?,
            Some(Value::String(s)) => s.parse()?,
            Some(other) => {
                return Err(format!("{source}: consumableShares: {other} is not a mode"));
            }
        };
        // consumable_shares.go: without the gate the driver publishes no shared device.
        let shares = if gate {
            written
        } else {
            ConsumableShares::Disabled
        };
        let node_selector = match doc.pointer("/kubeletPlugin/nodeSelector") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| format!("{source}: kubeletPlugin.nodeSelector: {e}"))?,
        };
        Ok(DriverValues {
            source,
            shares,
            node_selector,
        })
    }
}

/// The cluster objects the DRA checks read, each with its file.
#[derive(Debug, Clone, Default)]
pub struct DraCluster {
    pub values: Option<DriverValues>,
    /// DeviceClass objects (`--device-classes`).
    pub device_classes: Vec<(String, Value)>,
    /// EC2NodeClass name -> (its consumable-capacity annotation, file), from `--nodepools`.
    pub node_classes: BTreeMap<String, (Option<String>, String)>,
}

impl DraCluster {
    /// Collects EC2NodeClasses from `(file, document)` pairs (a `--nodepools` directory).
    pub fn add_node_classes(&mut self, docs: &[(String, Value)]) {
        for (path, doc) in docs {
            if doc.get("kind").and_then(Value::as_str) != Some("EC2NodeClass") {
                continue;
            }
            let Some(name) = doc.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let annotation = doc
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(CONSUMABLE_CAPACITY_ANNOTATION))
                .and_then(Value::as_str)
                .map(str::to_string);
            self.node_classes
                .insert(name.to_string(), (annotation, path.clone()));
        }
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Runs every DRA cross-check; findings go to `report`.
pub fn check(
    policy: &Policy,
    origin: &str,
    pools: Option<&NodePoolIndex>,
    cluster: &DraCluster,
    report: &mut Disagreements,
) {
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.backend != Backend::Dra || dra_unserved(rule) {
            continue;
        }
        let at = format!("{origin}: spec.rules[{i}] ({})", rule.name);
        check_rule(rule, &at, pools, cluster, report);
    }
    check_device_classes(policy, origin, cluster, report);
    if let (Some(values), Some(pools)) = (&cluster.values, pools) {
        check_device_plugin_pools(policy, values, pools, report);
    }
}

fn dra_unserved(rule: &Rule) -> bool {
    matches!(rule.action, Action::Deny | Action::Passthrough)
}

fn check_rule(
    rule: &Rule,
    at: &str,
    pools: Option<&NodePoolIndex>,
    cluster: &DraCluster,
    report: &mut Disagreements,
) {
    if rule.node_pool.is_none() && rule.node_selector.is_empty() {
        report.errors.push(format!(
            "{at}: a backend dra rule must route (nodePool or nodeSelector) to nodes whose GPUs only the DRA driver manages; unrouted, its claims can be allocated GPUs a device plugin also hands out"
        ));
    }
    let own_mode = rule.spec.dra.as_ref().and_then(|d| d.consumable_shares);
    if let Some(values) = &cluster.values
        && own_mode.is_none()
    {
        if values.shares != rule.dra.shares {
            report.errors.push(format!(
                "{at}: the policy says consumableShares {} (spec.dra.consumableShares) but the driver's values {} say {} (consumableShares with featureGates.ConsumableShares): claims written for one mode share devices in another; make them agree",
                rule.dra.shares, values.source, values.shares
            ));
        }
        if values.node_selector.is_empty() {
            report.errors.push(format!(
                "{at}: {}: kubeletPlugin.nodeSelector is not set, so the DRA kubelet plugin runs on every GPU node, device-plugin pools included; set it to a label only DRA NodePools carry",
                values.source
            ));
        } else if rule.node_pool.is_none() && !selects(&values.node_selector, &rule.node_selector) {
            report.errors.push(format!(
                "{at}: nodeSelector must include the driver's kubeletPlugin.nodeSelector {:?} ({}), so its pods land only where the DRA kubelet plugin runs",
                values.node_selector, values.source
            ));
        }
    }
    let (Some(name), Some(pools)) = (rule.node_pool.as_deref(), pools) else {
        return;
    };
    let Some(pool) = pools.get(name) else {
        return; // check_dra_rules reports a missing pool
    };
    let pool_at = format!(
        "NodePool {name} ({})",
        pool.source.as_deref().unwrap_or("cluster")
    );
    if rule.action == Action::Mig && pool.replicas.is_none() {
        report.errors.push(format!(
            "{at}: {pool_at} is dynamic: Karpenter cannot launch nodes for MIG claims (it has no metadata for MIG devices), so once the pool drains to zero the namespace's pods stay Pending; make it static (spec.replicas, Karpenter's StaticCapacity gate) or route with nodeSelector to a managed node group"
        ));
    }
    if let Some(values) = &cluster.values
        && !values.node_selector.is_empty()
        && !selects(&values.node_selector, &pool.template_labels)
    {
        report.errors.push(format!(
            "{at}: {pool_at}: the driver's kubeletPlugin.nodeSelector {:?} ({}) does not select this pool's template labels: add them to spec.template.metadata.labels, or no node of the pool can serve a claim",
            values.node_selector, values.source
        ));
    }
    let Some(class) = &pool.node_class else {
        return;
    };
    match cluster.node_classes.get(class) {
        None => report.notes.push(format!(
            "{at}: {pool_at}: EC2NodeClass {class} not among the files given; its {CONSUMABLE_CAPACITY_ANNOTATION} annotation is not checked"
        )),
        Some((annotation, file)) => {
            let said = annotation
                .as_deref()
                .map_or(Ok(ConsumableShares::Disabled), str::parse::<ConsumableShares>);
            if said.as_ref().ok() != Some(&rule.dra.shares) {
                report.errors.push(format!(
                    "{at}: EC2NodeClass {class} ({file}) annotation {CONSUMABLE_CAPACITY_ANNOTATION} is {} but the rule's driver mode is {}: Karpenter plans shares from the annotation; set it to \"{}\"",
                    annotation.as_deref().unwrap_or("unset"),
                    rule.dra.shares,
                    rule.dra.shares
                ));
            }
        }
    }
}

/// The extended resources device-plugin rules hand out (and `nvidia.com/gpu`, which passthrough
/// namespaces and device-plugin `exclusive` rules leave as it is).
fn device_plugin_resources(policy: &Policy) -> BTreeMap<String, String> {
    let mut used = BTreeMap::new();
    for rule in &policy.rules {
        if rule.backend != Backend::DevicePlugin || rule.action == Action::Deny {
            continue;
        }
        let mut names: Vec<String> = rule
            .allowed_profiles
            .iter()
            .map(|p| rule.mig_resource(p))
            .collect();
        names.extend(rule.shared_resource.clone());
        if matches!(rule.action, Action::Exclusive | Action::Passthrough) {
            names.push(WHOLE_GPU.into());
        }
        for n in names {
            used.entry(n)
                .or_insert_with(|| format!("rule {}", rule.name));
        }
    }
    // Pods gpu-slicer leaves alone keep nvidia.com/gpu too; a class mapping it gives them claims that
    // ask no capacity, which share a device in the driver's integer and unlimited modes.
    let shares_plain_claims = policy.rules.iter().any(|r| {
        r.backend == Backend::Dra
            && matches!(
                r.dra.shares,
                ConsumableShares::Shares(_) | ConsumableShares::Unlimited
            )
    });
    if policy.default_action == DefaultAction::Passthrough && shares_plain_claims {
        used.entry(WHOLE_GPU.into()).or_insert_with(|| {
            "namespaces no rule matches (passthrough), whose plain claims would take a share".into()
        });
    }
    used
}

/// A DeviceClass whose `extendedResourceName` maps a resource the device plugin also serves: the
/// scheduler may then give such a pod a DRA claim from the class, which asks for no capacity and in a
/// sharing mode takes a share of a device (KEP-5004, KEP-5075).
fn check_device_classes(
    policy: &Policy,
    origin: &str,
    cluster: &DraCluster,
    report: &mut Disagreements,
) {
    let used = device_plugin_resources(policy);
    for (file, class) in &cluster.device_classes {
        let Some(resource) = class
            .pointer("/spec/extendedResourceName")
            .and_then(Value::as_str)
        else {
            continue;
        };
        let name = class
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if name.starts_with(crate::dra::PREFIX) {
            continue; // gpu-slicer's own (`dra device-classes`), for device-plugin-free clusters
        }
        if let Some(user) = used.get(resource) {
            report.errors.push(format!(
                "DeviceClass {name} ({file}): spec.extendedResourceName {resource} is also served by the device plugin for {user} ({origin}): pods asking for {resource} can then get a DRA claim that asks no capacity (a share of a shared device); remove extendedResourceName from the DeviceClass"
            ));
        }
    }
}

/// Device-plugin pools the DRA kubelet plugin also runs on: two allocators for the same GPUs.
fn check_device_plugin_pools(
    policy: &Policy,
    values: &DriverValues,
    pools: &NodePoolIndex,
    report: &mut Disagreements,
) {
    if values.node_selector.is_empty() {
        return; // reported per DRA rule
    }
    for rule in &policy.rules {
        if rule.backend != Backend::DevicePlugin {
            continue;
        }
        let Some(pool) = rule.node_pool.as_deref().and_then(|n| pools.get(n)) else {
            continue;
        };
        if selects(&values.node_selector, &pool.template_labels) {
            report.errors.push(format!(
                "NodePool {} ({}), the pool of device-plugin rule {}: the DRA driver's kubeletPlugin.nodeSelector {:?} ({}) selects it too, so both allocators hand out its GPUs; drop the label from the pool or narrow the selector",
                pool.name,
                pool.source.as_deref().unwrap_or("cluster"),
                rule.name,
                values.node_selector,
                values.source
            ));
        }
    }
}
