//! `nodeclaim-resource-not-registered`: a Karpenter NodeClaim whose `Initialized` condition has stayed
//! not True with reason `ResourceNotRegistered` for longer than `--stuck-after`. Karpenter has no
//! initialization timeout: such a claim waits until `expireAfter`, and the pending pods keep waiting
//! for it instead of a node that would work.
//!
//! A finding names the resource that never registered, the node, the likely cause read from the
//! node's labels and what it advertises instead (mig-manager failed or pending, an unknown device
//! plugin config, the wrong MIG strategy, no sharing config, no rename), the correction to make in the
//! NodePool's template, and the `kubectl delete nodeclaim` that lets Karpenter replace it.

use gpu_slicer_core::gpu_operator::DeviceMigStrategy;
use gpu_slicer_core::karpenter::{DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_LABEL};
use gpu_slicer_core::nodepool::NODEPOOL_LABEL;
use gpu_slicer_core::policy::{MIG_PREFIX, WHOLE_GPU};

use super::findings::{finding, list, mig_manager_logs, skipped};
use super::{Check, Options};
use crate::doctor::snapshot::{
    ClusterSnapshot, GpuOperator, MIG_CONFIG_STATE_LABEL, NodeInfo, Read,
};
use crate::doctor::{Finding, Severity};

pub const NODECLAIM_RESOURCE_NOT_REGISTERED: &str = "nodeclaim-resource-not-registered";

/// The check, for [`super::ALL`].
pub struct NodeclaimResourceNotRegistered;

impl Check for NodeclaimResourceNotRegistered {
    fn name(&self) -> &'static str {
        NODECLAIM_RESOURCE_NOT_REGISTERED
    }

    fn run(&self, s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
        nodeclaim_resource_not_registered(s, o)
    }
}

/// The resource in Karpenter's message `Resource "nvidia.com/mig-1g.10gb" was requested but not
/// registered` (karpenter `pkg/controllers/nodeclaim/lifecycle/initialization.go`).
fn resource_in_message(message: &str) -> Option<&str> {
    let rest = &message[message.find('"')? + 1..];
    Some(&rest[..rest.find('"')?])
}

/// NodeClaims whose `Initialized` condition has stayed not True with reason `ResourceNotRegistered`
/// for longer than `--stuck-after`: Karpenter has no initialization timeout, so they wait until
/// `expireAfter` while attracting the pending pods.
pub fn nodeclaim_resource_not_registered(s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
    let claims = match &s.node_claims {
        Read::Found(c) => c,
        other => {
            return skipped(
                NODECLAIM_RESOURCE_NOT_REGISTERED,
                "CustomResourceDefinition/nodeclaims.karpenter.sh",
                other.why_not().unwrap_or(""),
            );
        }
    };
    let mut out = Vec::new();
    for claim in claims {
        let Some(cond) = claim.condition("Initialized") else {
            continue;
        };
        if cond.status == "True"
            || cond.reason != "ResourceNotRegistered"
            || !o.older_than_stuck(cond.last_transition)
        {
            continue;
        }
        let resource = resource_in_message(&cond.message).unwrap_or("(unnamed)");
        let since = cond
            .last_transition
            .map_or(String::new(), |t| format!(" for {}", o.age(t)));
        let node = claim.node_name.as_deref().and_then(|n| s.node(n));
        let delete = format!(
            "then `kubectl delete nodeclaim {}` (Karpenter never gives up on it by itself; it is replaced only at expireAfter)",
            claim.name
        );
        let (cause, fix) = match node {
            None => (
                format!(
                    "its node {} is not in the cluster",
                    claim
                        .node_name
                        .as_deref()
                        .unwrap_or("(status.nodeName unset)")
                ),
                format!("check the node's kubelet and the instance; {delete}"),
            ),
            Some(node) => {
                let (cause, fix) = likely_cause(s, node, resource);
                (cause, format!("{fix}; {delete}"))
            }
        };
        let on = claim
            .node_name
            .as_deref()
            .map_or(String::new(), |n| format!(" on node {n}"));
        let pool = claim
            .node_pool
            .as_deref()
            .map_or(String::new(), |p| format!(" (NodePool {p})"));
        out.push(finding(
            NODECLAIM_RESOURCE_NOT_REGISTERED,
            Severity::Error,
            format!("NodeClaim/{}", claim.name),
            format!(
                "Initialized={} (ResourceNotRegistered){since}: {resource} was requested but never registered{on}{pool}; likely cause: {cause}",
                cond.status
            ),
            fix,
        ));
    }
    out
}

/// A likely cause and its correction.
type Cause = (String, String);

/// What a node shows about why it lacks a resource: read once, weighed by each cause below.
struct Evidence<'a> {
    node: &'a NodeInfo,
    /// The resource that was requested but never registered.
    resource: &'a str,
    /// What the node advertises instead, for messages.
    advertises: String,
    mig_config: Option<&'a str>,
    plugin_config: Option<&'a str>,
    /// Where the node's labels come from: `NodePool x's template`.
    pool_hint: String,
    ops: Option<&'a GpuOperator>,
}

impl<'a> Evidence<'a> {
    fn read(s: &'a ClusterSnapshot, node: &'a NodeInfo, resource: &'a str) -> Evidence<'a> {
        let pool = node.label(NODEPOOL_LABEL).and_then(|p| s.pool(p));
        Evidence {
            node,
            resource,
            advertises: node.advertised(),
            mig_config: node.label(MIG_CONFIG_LABEL),
            plugin_config: node.label(DEVICE_PLUGIN_CONFIG_LABEL),
            pool_hint: pool.map_or("the NodePool's template".to_string(), |p| {
                format!("NodePool {}'s template", p.name)
            }),
            ops: s.gpu_operator.found(),
        }
    }
}

/// The most likely reason `node` does not advertise `resource`, read from its labels and what it
/// advertises instead, and the correction. mig-manager's state comes first, then the device plugin
/// config the node names, then what the kind of resource (MIG slice, whole GPU, shared GPU) needs.
fn likely_cause(s: &ClusterSnapshot, node: &NodeInfo, resource: &str) -> Cause {
    let e = Evidence::read(s, node, resource);
    let by_kind = || {
        if resource.starts_with(MIG_PREFIX) {
            mig_slice_missing(&e)
        } else if resource == WHOLE_GPU {
            whole_gpu_missing(&e)
        } else {
            shared_gpu_missing(&e)
        }
    };
    mig_manager_state(&e)
        .or_else(|| unknown_device_plugin_config(&e))
        .or_else(by_kind)
        .unwrap_or_else(|| nothing_more_specific(&e))
}

/// mig-manager failed to apply the node's MIG config, or has not applied it yet (for a MIG slice).
fn mig_manager_state(e: &Evidence) -> Option<Cause> {
    let (advertises, pool_hint) = (&e.advertises, &e.pool_hint);
    let mig_logs = mig_manager_logs(&e.node.name);
    match e.node.label(MIG_CONFIG_STATE_LABEL) {
        Some("failed") => Some((
            format!(
                "{MIG_CONFIG_STATE_LABEL}=failed: mig-manager could not apply {MIG_CONFIG_LABEL}={} (node advertises {advertises})",
                e.mig_config.unwrap_or("?")
            ),
            format!(
                "{mig_logs}; correct {MIG_CONFIG_LABEL} in {pool_hint} to a config that exists for this GPU"
            ),
        )),
        Some("pending") if e.resource.starts_with(MIG_PREFIX) => Some((
            format!(
                "{MIG_CONFIG_STATE_LABEL}=pending: mig-manager has not applied {MIG_CONFIG_LABEL}={} (node advertises {advertises})",
                e.mig_config.unwrap_or("?")
            ),
            format!("{mig_logs}; relabel the node to another config and back"),
        )),
        _ => None,
    }
}

/// The node names a device plugin config the GPU Operator's ConfigMap lacks (when its configs were
/// read): the plugin then starts without a sharing config.
fn unknown_device_plugin_config(e: &Evidence) -> Option<Cause> {
    let (name, ops) = (e.plugin_config?, e.ops?);
    if !ops.device_plugin_known || ops.configs.device_plugin.contains_key(name) {
        return None;
    }
    let known = list(ops.configs.device_plugin.keys());
    let pool_hint = &e.pool_hint;
    Some((
        format!(
            "{DEVICE_PLUGIN_CONFIG_LABEL}={name} names no device plugin config (the GPU Operator's ConfigMap has: {known}), so the plugin does not start with a sharing config"
        ),
        format!(
            "set {DEVICE_PLUGIN_CONFIG_LABEL} in {pool_hint} to one of {known}, or add {name} to the ConfigMap"
        ),
    ))
}

/// A MIG slice is missing: the node has no MIG config, advertises its slices as whole GPUs (the
/// single strategy, or MIG off), or makes other slices.
fn mig_slice_missing(e: &Evidence) -> Option<Cause> {
    let (node, resource) = (e.node, e.resource);
    let (advertises, pool_hint) = (&e.advertises, &e.pool_hint);
    let whole = node.offers(WHOLE_GPU);
    let slices = node
        .allocatable
        .iter()
        .any(|(k, n)| k.starts_with(MIG_PREFIX) && *n > 0);
    if e.mig_config.is_none() {
        return Some((
            format!(
                "the node has no {MIG_CONFIG_LABEL} label, so mig-manager leaves its GPUs whole (node advertises {advertises})"
            ),
            format!("add {MIG_CONFIG_LABEL} to {pool_hint}"),
        ));
    }
    if !slices && whole > 0 {
        return Some(slices_advertised_whole(e, whole));
    }
    if !slices {
        return None;
    }
    Some((
        format!(
            "{MIG_CONFIG_LABEL}={} makes other slices: the node advertises {advertises}",
            e.mig_config.unwrap_or("?")
        ),
        format!(
            "use a MIG config that makes {} in {pool_hint}, or regenerate the NodeOverlays (`gpu-slicer karpenter overlays`)",
            resource.trim_start_matches(MIG_PREFIX)
        ),
    ))
}

/// A MIG slice was asked for and the node advertises `whole` GPUs and no slice: the effective MIG
/// strategy is single (named where it comes from when the GPU Operator's configs say), or MIG is off.
fn slices_advertised_whole(e: &Evidence, whole: u64) -> Cause {
    let resource = e.resource;
    let plugin_name = e.plugin_config.unwrap_or("default");
    let effective = e.ops.and_then(|o| o.configs.mig_strategy(e.plugin_config));
    let why = match effective {
        Some(m) if m.strategy == DeviceMigStrategy::Single => format!(
            "{} is single, which advertises slices as nvidia.com/gpu",
            m.source
        ),
        _ => "the device plugin advertises slices as nvidia.com/gpu (the single MIG strategy), or MIG is off".to_string(),
    };
    (
        format!("the node advertises {WHOLE_GPU} x{whole} where {resource} was expected: {why}"),
        format!(
            "set the MIG strategy to mixed (ClusterPolicy spec.mig.strategy, and flags.migStrategy of device plugin config {plugin_name})"
        ),
    )
}

/// A whole GPU is missing and the node advertises MIG slices under their own names: its device
/// plugin runs the mixed strategy where the rule's pool needs single.
fn whole_gpu_missing(e: &Evidence) -> Option<Cause> {
    let slices = e
        .node
        .allocatable
        .iter()
        .any(|(k, n)| k.starts_with(MIG_PREFIX) && *n > 0);
    if !slices {
        return None;
    }
    let advertises = &e.advertises;
    Some((
        format!(
            "the node advertises its MIG slices under their own names ({advertises}) where {WHOLE_GPU} was expected: its device plugin runs the mixed strategy, and a pool for a rule with mig.strategy single needs single"
        ),
        format!(
            "run the single strategy on this pool's nodes (flags.migStrategy: single in device plugin config {}; a ClusterPolicy spec.mig.strategy outranks it), or set mig.strategy: mixed on the policy rule",
            e.plugin_config.unwrap_or("default")
        ),
    ))
}

/// A shared GPU is missing: the node runs the device plugin's default config (no sharing), or one
/// that shares without renaming (`nvidia.com/gpu` instead of `nvidia.com/gpu.shared`).
fn shared_gpu_missing(e: &Evidence) -> Option<Cause> {
    let (node, resource) = (e.node, e.resource);
    let (advertises, pool_hint) = (&e.advertises, &e.pool_hint);
    if e.plugin_config.is_none() {
        return Some((
            format!(
                "the node has no {DEVICE_PLUGIN_CONFIG_LABEL} label, so the device plugin runs its default config, which shares nothing (node advertises {advertises})"
            ),
            format!("add {DEVICE_PLUGIN_CONFIG_LABEL} to {pool_hint}"),
        ));
    }
    let base = resource.strip_suffix(".shared")?;
    if node.offers(base) == 0 {
        return None;
    }
    Some((
        format!(
            "the node advertises {base} x{} instead of {resource}: the device plugin config it runs ({}) does not rename (renameByDefault: false)",
            node.offers(base),
            e.plugin_config.unwrap_or("?")
        ),
        format!(
            "set renameByDefault: true in device plugin config {}",
            e.plugin_config.unwrap_or("?")
        ),
    ))
}

/// No cause more specific: the node advertises something else.
fn nothing_more_specific(e: &Evidence) -> Cause {
    let (advertises, resource, pool_hint) = (&e.advertises, e.resource, &e.pool_hint);
    (
        format!("the node advertises {advertises}, not {resource}"),
        format!(
            "correct the node's {MIG_CONFIG_LABEL} / {DEVICE_PLUGIN_CONFIG_LABEL} labels in {pool_hint}, or the resource name the pods ask for"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use crate::doctor::snapshot::GpuOperator;
    use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn a_nodeclaim_stuck_on_an_unregistered_slice_names_the_resource_node_cause_and_delete() {
        let mut s = healthy();
        let mut n = mig_node("ip-10-0-1-9.ec2.internal");
        n["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("failed");
        n["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        n["status"]["allocatable"] = json!({"nvidia.com/gpu": "8"});
        s.nodes.push(node(n));
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 45),
        )]);
        let all = run_all(&s, &options());
        let f: Vec<_> = all
            .iter()
            .filter(|f| f.check == NODECLAIM_RESOURCE_NOT_REGISTERED)
            .collect();
        assert_eq!(f.len(), 1, "{all:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.object, "NodeClaim/gpu-mig-q8w4z");
        for want in [
            "nvidia.com/mig-1g.10gb",
            "ip-10-0-1-9.ec2.internal",
            "mig.config.state=failed",
            "for 45m",
        ] {
            assert!(f.message.contains(want), "{want}: {}", f.message);
        }
        assert!(
            f.fix.contains("kubectl delete nodeclaim gpu-mig-q8w4z"),
            "{}",
            f.fix
        );
        assert!(
            f.fix.contains(
                "-l app=nvidia-mig-manager --field-selector spec.nodeName=ip-10-0-1-9.ec2.internal"
            ),
            "{}",
            f.fix
        );
    }

    #[test]
    fn a_nodeclaim_on_a_single_strategy_node_blames_the_strategy() {
        let mut s = healthy();
        let mut n = mig_node("ip-10-0-1-9.ec2.internal");
        n["status"]["allocatable"] = json!({"nvidia.com/gpu": "56"});
        s.nodes = vec![node(n)];
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 30),
        )]);
        let f = run_all(&s, &options());
        let f = f
            .iter()
            .find(|f| f.check == NODECLAIM_RESOURCE_NOT_REGISTERED)
            .unwrap();
        assert!(f.message.contains("single MIG strategy"), "{}", f.message);
        assert!(f.message.contains("nvidia.com/gpu x56"), "{}", f.message);
        assert!(f.fix.contains("mixed"), "{}", f.fix);
    }

    #[test]
    fn the_effective_mig_strategy_is_named_where_it_comes_from() {
        let mut s = healthy();
        let mut configs = GpuOperatorConfigs::from_documents([(
            "the cluster".to_string(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "device-plugin-config"},
                   "data": {"mig-single": "version: v1\nflags:\n  migStrategy: single\n"}}),
        )])
        .unwrap();
        configs.operator_mig_strategy = None;
        s.gpu_operator = Read::Found(GpuOperator {
            cluster_policy: "cluster-policy".into(),
            configs,
            device_plugin_known: true,
        });
        let mut n = mig_node("ip-10-0-1-9.ec2.internal");
        n["metadata"]["labels"]["nvidia.com/device-plugin.config"] = json!("mig-single");
        n["status"]["allocatable"] = json!({"nvidia.com/gpu": "56"});
        s.nodes = vec![node(n)];
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 30),
        )]);
        let f = nodeclaim_resource_not_registered(&s, &options());
        assert!(
            f[0].message
                .contains("flags.migStrategy of device plugin config mig-single is single"),
            "{}",
            f[0].message
        );
        // The other way round: a single-strategy pool's node that runs mixed.
        s.nodes = vec![node(mig_node("ip-10-0-1-9.ec2.internal"))];
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/gpu", 30),
        )]);
        let f = nodeclaim_resource_not_registered(&s, &options());
        assert!(
            f[0].message.contains("runs the mixed strategy"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].fix.contains("flags.migStrategy: single"),
            "{}",
            f[0].fix
        );
    }

    #[test]
    fn a_shared_resource_node_with_an_unknown_device_plugin_config_is_named() {
        let mut s = healthy();
        s.nodes = vec![node(json!({
            "metadata": {"name": "ip-10-0-2-7.ec2.internal", "labels": {
                "karpenter.sh/nodepool": "gpu-timeslice", "node.kubernetes.io/instance-type": "g6.xlarge",
                "nvidia.com/device-plugin.config": "timeslice-44"}},
            "status": {"allocatable": {"nvidia.com/gpu": "1"}}
        }))];
        s.node_claims = Read::Found(vec![claim(
            "gpu-timeslice-abc12",
            "ip-10-0-2-7.ec2.internal",
            not_registered("nvidia.com/gpu.shared", 30),
        )]);
        let f = nodeclaim_resource_not_registered(&s, &options());
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("device-plugin.config=timeslice-44 names no device plugin config"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn a_nodeclaim_waiting_less_than_stuck_after_is_not_reported() {
        let mut s = healthy();
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-5.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 3),
        )]);
        assert!(nodeclaim_resource_not_registered(&s, &options()).is_empty());
        let mut o = options();
        o.stuck_after = Duration::from_secs(60);
        assert_eq!(nodeclaim_resource_not_registered(&s, &o).len(), 1);
    }

    #[test]
    fn karpenters_message_names_the_resource() {
        assert_eq!(
            resource_in_message(
                "Resource \"nvidia.com/mig-1g.10gb\" was requested but not registered"
            ),
            Some("nvidia.com/mig-1g.10gb")
        );
        assert_eq!(resource_in_message("no quotes"), None);
    }
}
