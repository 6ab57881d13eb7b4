//! `policy check`: does the policy agree with the NodePools it routes to and the GPU Operator configs
//! those NodePools select? Every finding names the rule, the NodePool and the config involved.
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::dra`], [`crate::gpu_operator`],
//! [`crate::karpenter`], [`crate::nodepool`], [`crate::policy`], [`crate::yaml`].

pub mod dra_driver;
pub mod replicas;

use crate::catalog::{self, InstanceType};
use crate::dra;
use crate::gpu_operator::{DeviceMigStrategy, GpuOperatorConfigs, MigLayout, SharingMode};
use crate::karpenter::{self, DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_LABEL};
use crate::nodepool::{INSTANCE_TYPE_LABEL, NodePool, NodePoolIndex};
use crate::policy::{Action, Backend, MigStrategy, Policy, Rule, mig_resource};

/// The GPU Operator's per-node switch for its device plugin: a DRA pool's template sets it to
/// `"false"`, so the device plugin and the DRA driver never both manage the node's GPUs.
pub const DEPLOY_DEVICE_PLUGIN_LABEL: &str = "nvidia.com/gpu.deploy.device-plugin";

/// What `policy check` found: where the policy and the cluster's configs disagree.
#[derive(Debug, Default)]
pub struct Disagreements {
    /// Disagreements: the command exits 1 if there is any.
    pub errors: Vec<String>,
    /// Things not checked, and why.
    pub notes: Vec<String>,
}

/// Labels Karpenter can satisfy when it launches a node without the label being in the NodePool's
/// template (its well-known labels). Any other selector key must be a template label, or Karpenter
/// cannot launch a node for the pod (labels that GPU feature discovery sets appear only after join).
fn karpenter_knows(key: &str) -> bool {
    key.starts_with("karpenter.sh/")
        || key.starts_with("karpenter.k8s.aws/")
        || key.starts_with("topology.kubernetes.io/")
        || matches!(
            key,
            INSTANCE_TYPE_LABEL
                | "kubernetes.io/arch"
                | "kubernetes.io/os"
                | "node.kubernetes.io/windows-build"
        )
}

/// The NodePool a rule names, and how findings name it (`NodePool x (file)`); a missing one is reported.
fn find_pool<'p>(
    pools: &'p NodePoolIndex,
    name: &str,
    at: &str,
    report: &mut Disagreements,
) -> Option<(&'p NodePool, String)> {
    let Some(pool) = pools.get(name) else {
        report.errors.push(format!(
            "{at}: nodePool {name:?} is not a NodePool in the NodePools given"
        ));
        return None;
    };
    let shown = match &pool.source {
        Some(src) => format!("NodePool {name} ({src})"),
        None => format!("NodePool {name}"),
    };
    Some((pool, shown))
}

/// Checks a policy against NodePools (when given) and GPU Operator configs (defaults when not given).
pub fn check(
    policy: &Policy,
    origin: &str,
    pools: Option<&NodePoolIndex>,
    ops: Option<&GpuOperatorConfigs>,
) -> Disagreements {
    check_with_device_classes(policy, origin, pools, ops, None)
}

/// [`check`], and the DeviceClasses `dra` rules' templates use against the names in `classes`.
pub fn check_with_device_classes(
    policy: &Policy,
    origin: &str,
    pools: Option<&NodePoolIndex>,
    ops: Option<&GpuOperatorConfigs>,
    classes: Option<&std::collections::BTreeSet<String>>,
) -> Disagreements {
    let mut report = Disagreements::default();
    let audited: Vec<&str> = policy.audited_rules().collect();
    if !audited.is_empty() {
        // Not a problem, but a rollout step someone must remember to finish.
        report.notes.push(format!(
            "in audit mode (warn \"would ...\", change nothing): rule(s) {}",
            audited.join(", ")
        ));
    }
    check_dra_rules(policy, origin, pools, classes, &mut report);
    let Some(pools) = pools else {
        report
            .notes
            .push("NodePools not checked: give --nodepools DIR".into());
        return report;
    };
    let default_ops;
    let ops = match ops {
        Some(o) => o,
        None => {
            report.notes.push("device plugin configs not checked: give --gpu-operator DIR (MIG configs: the GPU Operator's defaults)".into());
            default_ops = GpuOperatorConfigs::default();
            &default_ops
        }
    };
    let have_device_plugin = !ops.device_plugin.is_empty();
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(name) = rule.node_pool.as_deref() else {
            continue;
        };
        if rule.backend == Backend::Dra {
            continue; // check_dra_rules
        }
        let at = format!("{origin}: spec.rules[{i}] ({})", rule.name);
        let Some((pool, pool_at)) = find_pool(pools, name, &at, &mut report) else {
            continue;
        };
        replicas::check(rule, pool, &at, &pool_at, ops, &mut report);
        let mut err = |msg: String| report.errors.push(format!("{at}: {pool_at}: {msg}"));
        for (k, v) in &rule.node_selector {
            match pool.template_labels.get(k) {
                Some(have) if have != v => err(format!(
                    "nodeSelector {k}={v} contradicts the NodePool's template label {k}={have}"
                )),
                Some(_) => {}
                None if karpenter_knows(k) => {}
                None => err(format!(
                    "nodeSelector {k} is not a template label of the NodePool nor a label Karpenter knows: Karpenter cannot launch a node for such pods (labels set by GPU feature discovery appear only after a node joins)"
                )),
            }
        }
        let Some(types) = pool.instance_types() else {
            err(format!(
                "does not pin {INSTANCE_TYPE_LABEL} with operator In, so its GPUs cannot be checked"
            ));
            continue;
        };
        for t in types {
            let Some(it) = catalog::instance_type(t) else {
                err(format!(
                    "instance type {t} is not a GPU instance type gpu-slicer knows"
                ));
                continue;
            };
            check_instance(rule, pool, it, ops, have_device_plugin, &mut err);
        }
    }
    // A NodePool-level finding repeats for each of its instance types: say it once.
    let mut seen = std::collections::BTreeSet::new();
    report.errors.retain(|e| seen.insert(e.clone()));
    report
}

fn check_instance(
    rule: &Rule,
    pool: &NodePool,
    it: &InstanceType,
    ops: &GpuOperatorConfigs,
    have_device_plugin: bool,
    err: &mut impl FnMut(String),
) {
    let gpu = it.gpu;
    let mig_config = pool.template_labels.get(MIG_CONFIG_LABEL);
    let layout = mig_config.and_then(|c| ops.mig.layout(c, gpu)).flatten();
    let mig_on = matches!(layout, Some(MigLayout::Enabled(_)));
    let plugin_name = pool.template_labels.get(DEVICE_PLUGIN_CONFIG_LABEL);
    let plugin = plugin_name
        .and_then(|n| ops.device_plugin.get(n))
        .map(|(c, _)| c);
    let sharing = plugin.and_then(|c| c.sharing());
    if let (Some(name), None) = (plugin_name, plugin)
        && have_device_plugin
    {
        err(format!(
            "{DEVICE_PLUGIN_CONFIG_LABEL}={name} names no device plugin config in the GPU Operator configs given"
        ));
    }
    if mig_on && sharing.is_some_and(|(m, _)| m == SharingMode::Mps) {
        err(format!(
            "MPS is not combined with MIG: {MIG_CONFIG_LABEL}={} partitions {} while {DEVICE_PLUGIN_CONFIG_LABEL}={} shares with MPS (the device plugin refuses MPS on MIG devices)",
            mig_config.map_or("", |s| s.as_str()),
            it.name,
            plugin_name.map_or("", |s| s.as_str())
        ));
        return;
    }
    match rule.action {
        Action::Mig => check_mig_instance(rule, pool, it, ops, mig_config, err),
        Action::Timeslice | Action::Mps => {
            check_shared_instance(rule, pool, it, ops, plugin_name, plugin, err)
        }
        Action::Exclusive => {
            if mig_on {
                err(format!(
                    "{MIG_CONFIG_LABEL}={} partitions the GPUs of {}; exclusive needs whole GPUs",
                    mig_config.map_or("", |s| s.as_str()),
                    it.name
                ));
            }
            if let Some((mode, _)) = sharing {
                err(format!(
                    "device plugin config {} shares GPUs with {}; exclusive needs whole GPUs",
                    plugin_name.map_or("", |s| s.as_str()),
                    mode.as_str()
                ));
            }
        }
        Action::Deny | Action::Passthrough => {}
    }
}

/// A `mig` rule on one instance type: the GPU has MIG and the profiles, the NodePool's mig-parted
/// config exists, turns MIG on and makes the profiles, and the slices are named as the rule says.
fn check_mig_instance(
    rule: &Rule,
    pool: &NodePool,
    it: &InstanceType,
    ops: &GpuOperatorConfigs,
    mig_config: Option<&String>,
    err: &mut impl FnMut(String),
) {
    let gpu = it.gpu;
    if !gpu.supports_mig() {
        err(format!(
            "instance type {} carries {}, which has no MIG",
            it.name, gpu.name
        ));
        return;
    }
    for p in &rule.allowed_profiles {
        if gpu.mig_profile(p).is_none() {
            let have: Vec<_> = gpu.mig_profiles.iter().map(|m| m.name).collect();
            err(format!(
                "MIG profile {p} does not exist on {} ({}), which has {}",
                gpu.name,
                it.name,
                have.join(", ")
            ));
        }
    }
    let Some(config) = mig_config else {
        err(format!(
            "has no {MIG_CONFIG_LABEL} template label, so mig-manager leaves its GPUs whole"
        ));
        return;
    };
    match ops.mig.layout(config, gpu) {
        None => {
            let hint = if ops.mig_is_default {
                ""
            } else {
                " (the custom mig-parted config replaces the GPU Operator's defaults)"
            };
            err(format!(
                "{MIG_CONFIG_LABEL}={config} is not a config in {}{hint}",
                ops.mig.source
            ));
        }
        Some(None) => err(format!(
            "MIG config {config} has no entry for {} ({})",
            gpu.name, it.name
        )),
        Some(Some(MigLayout::Disabled)) => {
            err(format!("MIG config {config} turns MIG off on {}", it.name))
        }
        Some(Some(MigLayout::Enabled(devices))) => {
            let makes: Vec<String> = devices.iter().map(|(p, n)| format!("{p} x{n}")).collect();
            for p in &rule.allowed_profiles {
                if !devices.contains_key(p) && gpu.mig_profile(p).is_some() {
                    err(format!(
                        "profile {p} is not in MIG config {config}, which makes {} per {} GPU ({})",
                        makes.join(", "),
                        gpu.name,
                        it.name
                    ));
                }
            }
        }
    }
    check_mig_naming(rule, pool, it, ops, err);
}

/// A `timeslice` or `mps` rule on one instance type: the NodePool names a device plugin config that
/// shares GPUs the rule's way and advertises the rule's resource.
fn check_shared_instance(
    rule: &Rule,
    pool: &NodePool,
    it: &InstanceType,
    ops: &GpuOperatorConfigs,
    plugin_name: Option<&String>,
    plugin: Option<&crate::gpu_operator::DevicePluginConfig>,
    err: &mut impl FnMut(String),
) {
    let want = if rule.action == Action::Mps {
        SharingMode::Mps
    } else {
        SharingMode::TimeSlicing
    };
    let resource = rule.shared_resource.as_deref().unwrap_or("");
    let Some(name) = plugin_name else {
        err(format!(
            "has no {DEVICE_PLUGIN_CONFIG_LABEL} template label, so its GPUs are not shared"
        ));
        return;
    };
    let Some(config) = plugin else {
        return; // reported above, or no --gpu-operator (noted)
    };
    let Some((mode, shared)) = config.sharing() else {
        err(format!(
            "device plugin config {name} does not share GPUs (no sharing.timeSlicing or sharing.mps resources)"
        ));
        return;
    };
    if mode != want {
        err(format!(
            "rule action {} but device plugin config {name} uses {}",
            rule.action.as_str(),
            mode.as_str()
        ));
        return;
    }
    match karpenter::node_resources(pool, it, ops) {
        Err(e) => err(e),
        Ok(res) if res.get(resource).copied().unwrap_or(0) > 0 => {}
        Ok(res) => {
            let advertised: Vec<String> = res
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            let unrenamed = shared
                .resources
                .iter()
                .any(|r| shared.advertised_name(r) == r.name);
            let hint = if unrenamed && !shared.rename_by_default {
                " (renameByDefault is false: set renameByDefault: true, or shared.resourceName to the unrenamed name)"
            } else {
                ""
            };
            err(format!(
                "device plugin config {name} advertises {} on {}, not {resource}{hint}",
                advertised.join(", "),
                it.name
            ));
        }
    }
}

/// A `mig` rule against how its nodes' device plugin names the slices: the MIG strategy (the rule's
/// `mig.strategy` against the operator's or the config's), a uniform layout under `single`, and the
/// time-slicing of the slices (`mig.timeSlicing` against the config's `sharing.timeSlicing`). Then,
/// whatever the cause, every resource the rule renames to must be one the nodes advertise.
fn check_mig_naming(
    rule: &Rule,
    pool: &NodePool,
    it: &InstanceType,
    ops: &GpuOperatorConfigs,
    err: &mut impl FnMut(String),
) {
    let config = pool.template_labels.get(MIG_CONFIG_LABEL);
    let Some(MigLayout::Enabled(devices)) =
        config.and_then(|c| ops.mig.layout(c, it.gpu)).flatten()
    else {
        return; // reported by the caller
    };
    let config = config.map_or("", |s| s.as_str());
    let plugin_name = pool
        .template_labels
        .get(DEVICE_PLUGIN_CONFIG_LABEL)
        .map(String::as_str);
    let wanted = DeviceMigStrategy::from(rule.mig_strategy);
    let found = std::cell::Cell::new(0);
    let mut fail = |msg: String| {
        found.set(found.get() + 1);
        err(msg)
    };
    if let Some(effective) = ops.mig_strategy(plugin_name)
        && effective.strategy != wanted
    {
        fail(format!(
            "rule has mig.strategy {} but the device plugin of these nodes runs MIG strategy {} ({})",
            rule.mig_strategy.as_str(),
            effective.strategy.as_str(),
            effective.source
        ));
        return;
    }
    if rule.mig_strategy == MigStrategy::Single && devices.len() != 1 {
        let makes: Vec<String> = devices.iter().map(|(p, n)| format!("{p} x{n}")).collect();
        fail(format!(
            "MIG config {config} makes {} per {} GPU ({}): under strategy single a node's MIG devices must all be one profile (an all-<profile> config; all-balanced is not valid)",
            makes.join(", "),
            it.gpu.name,
            it.name
        ));
    }
    // The profiles this node makes that the rule may hand out.
    let profiles: Vec<&String> = rule
        .allowed_profiles
        .iter()
        .filter(|p| devices.contains_key(*p))
        .collect();
    let plugin = plugin_name
        .and_then(|n| ops.device_plugin.get(n))
        .map(|(c, _)| c);
    let time_sliced = plugin
        .and_then(|c| c.sharing())
        .filter(|(mode, _)| *mode == SharingMode::TimeSlicing)
        .map(|(_, shared)| shared);
    let plugin_text = plugin_name.unwrap_or("(none)");
    for p in &profiles {
        let base = mig_resource(rule.mig_strategy, None, p);
        let entry =
            time_sliced.and_then(|s| s.resources.iter().find(|r| r.name == base).map(|r| (s, r)));
        match (rule.mig_time_slicing, entry) {
            (Some(_), None) if !ops.device_plugin.is_empty() => fail(format!(
                "rule sets mig.timeSlicing but device plugin config {plugin_text} does not time-slice {base} (add it to sharing.timeSlicing.resources, or drop mig.timeSlicing)"
            )),
            (Some(ts), Some((shared, r))) => {
                let advertised = shared.advertised_name(r);
                let expected = rule.mig_resource(p);
                if advertised != expected {
                    fail(format!(
                        "device plugin config {plugin_text} advertises {base} time-sliced as {advertised}, but the rule (mig.timeSlicing.renameByDefault: {}) expects {expected}: make the rule's renameByDefault match the config's ({})",
                        ts.rename_by_default, shared.rename_by_default
                    ));
                }
            }
            (None, Some((shared, r))) => fail(format!(
                "device plugin config {plugin_text} time-slices {base} ({} replicas, advertised as {}): add mig.timeSlicing {{renameByDefault: {}}} to the rule",
                r.replicas,
                shared.advertised_name(r),
                shared.rename_by_default
            )),
            _ => {}
        }
    }
    if found.get() > 0 {
        return;
    }
    // Whatever the cause, the rule must not rename pods to a resource these nodes never advertise.
    let Ok(res) = karpenter::node_resources_assuming(pool, it, ops, wanted) else {
        return; // reported by the caller or `karpenter overlays`
    };
    for p in profiles {
        let name = rule.mig_resource(p);
        if res.get(&name).copied().unwrap_or(0) == 0 {
            let advertised: Vec<String> = res
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            fail(format!(
                "the rule gives {p} slices as {name}, but nodes of {} advertise {}",
                it.name,
                advertised.join(", ")
            ));
        }
    }
}

/// `backend: dra` rules: the action is one per-pod claims can serve, the device classes their templates
/// name exist (given `--device-classes`), and their NodePools leave the GPUs to the DRA driver: the GPU
/// Operator's device plugin is switched off there and no device-plugin rule routes to the same pool.
fn check_dra_rules(
    policy: &Policy,
    origin: &str,
    pools: Option<&NodePoolIndex>,
    classes: Option<&std::collections::BTreeSet<String>>,
    report: &mut Disagreements,
) {
    let dra_rules: Vec<(usize, &Rule)> = policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.backend == Backend::Dra)
        .collect();
    if dra_rules.is_empty() {
        return;
    }
    if classes.is_none() {
        report
            .notes
            .push("device classes not checked: give --device-classes DIR".into());
    }
    for (i, rule) in dra_rules {
        let at = format!("{origin}: spec.rules[{i}] ({})", rule.name);
        if let Some(why) = dra::unsupported(rule) {
            report.errors.push(format!("{at}: {why}"));
            continue;
        }
        match rule.action {
            Action::Mig => report.notes.push(format!(
                "{at}: Karpenter 1.15 has no metadata for MIG devices, so it cannot launch nodes for MIG claims: keep capacity in the rule's NodePool (static or pre-created nodes)"
            )),
            Action::Timeslice => report.notes.push(format!(
                "{at}: shared GPUs need the NVIDIA DRA driver's ConsumableShares feature gate and consumableShares: N, and for Karpenter the same N in the EC2NodeClass annotation karpenter.k8s.aws/nvidia-consumable-capacity"
            )),
            _ => {}
        }
        if let Some(classes) = classes {
            let mut wanted: Vec<&str> = dra::templates(rule)
                .iter()
                .map(|t| t.device_class())
                .collect();
            wanted.dedup();
            for class in wanted {
                if !classes.contains(class) {
                    report.errors.push(format!(
                        "{at}: DeviceClass {class} is not among the DeviceClasses given: install the NVIDIA DRA driver (it creates {} and {})",
                        dra::GPU_CLASS,
                        dra::MIG_CLASS
                    ));
                }
            }
        }
        let (Some(name), Some(pools)) = (rule.node_pool.as_deref(), pools) else {
            continue;
        };
        let Some((pool, pool_at)) = find_pool(pools, name, &at, report) else {
            continue;
        };
        if pool
            .template_labels
            .get(DEPLOY_DEVICE_PLUGIN_LABEL)
            .map(String::as_str)
            != Some("false")
        {
            report.errors.push(format!(
                "{at}: {pool_at}: set the template label {DEPLOY_DEVICE_PLUGIN_LABEL}: \"false\": otherwise the GPU Operator's device plugin and the DRA driver both manage the nodes' GPUs"
            ));
        }
        if let Some(plugin) = pool.template_labels.get(DEVICE_PLUGIN_CONFIG_LABEL) {
            report.errors.push(format!(
                "{at}: {pool_at}: {DEVICE_PLUGIN_CONFIG_LABEL}={plugin} configures a device plugin on a DRA pool; remove it"
            ));
        }
        for (j, other) in policy.rules.iter().enumerate() {
            if other.backend == Backend::DevicePlugin && other.node_pool.as_deref() == Some(name) {
                report.errors.push(format!(
                    "{at}: {pool_at} is also the pool of device-plugin rule spec.rules[{j}] ({}): a pool's GPUs are the device plugin's or the DRA driver's, not both",
                    other.name
                ));
            }
        }
        if let Some(types) = pool.instance_types() {
            for t in types {
                let Some(it) = catalog::instance_type(t) else {
                    report.errors.push(format!(
                        "{at}: {pool_at}: instance type {t} is not a GPU instance type gpu-slicer knows"
                    ));
                    continue;
                };
                if rule.action == Action::Mig {
                    for p in &rule.allowed_profiles {
                        if it.gpu.mig_profile(p).is_none() {
                            report.errors.push(format!(
                                "{at}: {pool_at}: MIG profile {p} does not exist on {} ({})",
                                it.gpu.name, it.name
                            ));
                        }
                    }
                }
            }
        }
    }
}
