//! `policy check`: a rule's replicas (`shared.replicas`, `mig.timeSlicing.replicas`) against the
//! `replicas` of the device plugin config its NodePool selects. GPU-equivalents count a shared
//! replica as 1/replicas of its device, so a rule that says 4 where the nodes make 8 halves what its
//! namespaces are charged and lets them hold twice their budget; a rule that says nothing counts each
//! replica as a whole device.
//!
//! A mismatch is an error naming the rule, the NodePool and the config; a rule without replicas on a
//! pool whose config shares is a note. Configs that are not known (no `--gpu-operator`, a config name
//! not found, a config that does not share the resource) are left to the other checks.

use crate::gpu_operator::{
    GpuOperatorConfigs, ReplicatedResource, ReplicatedResources, SharingMode,
};
use crate::karpenter::DEVICE_PLUGIN_CONFIG_LABEL;
use crate::nodepool::NodePool;
use crate::policy::{Action, Rule, mig_resource};

use super::Disagreements;

/// One shared resource the rule's pods ask for, with what the rule says of its replicas.
struct Claim {
    /// The name in the config's `resources[].name` (before any rename).
    base: String,
    /// The rule's field, for messages.
    field: &'static str,
    replicas: Option<u32>,
}

/// The resources the rule shares and the replicas it states.
fn claims(rule: &Rule) -> Vec<(Claim, SharingMode)> {
    match rule.action {
        Action::Timeslice | Action::Mps => {
            let mode = if rule.action == Action::Mps {
                SharingMode::Mps
            } else {
                SharingMode::TimeSlicing
            };
            rule.shared_resource
                .iter()
                .map(|r| {
                    (
                        Claim {
                            base: r.clone(),
                            field: "shared.replicas",
                            replicas: rule.shared_replicas,
                        },
                        mode,
                    )
                })
                .collect()
        }
        Action::Mig => match rule.mig_time_slicing {
            Some(ts) => rule
                .allowed_profiles
                .iter()
                .map(|p| {
                    (
                        Claim {
                            base: mig_resource(rule.mig_strategy, None, p),
                            field: "mig.timeSlicing.replicas",
                            replicas: ts.replicas,
                        },
                        SharingMode::TimeSlicing,
                    )
                })
                .collect(),
            None => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The config's entry for a resource: by the advertised name for `shared.resourceName` (which names
/// what the nodes advertise), by the base name for MIG profiles.
fn entry<'c>(
    shared: &'c ReplicatedResources,
    claim: &Claim,
    rule: &Rule,
) -> Option<&'c ReplicatedResource> {
    shared.resources.iter().find(|r| {
        if rule.action == Action::Mig {
            r.name == claim.base
        } else {
            shared.advertised_name(r) == claim.base
        }
    })
}

/// Checks one device-plugin rule's replicas against its NodePool's config. `at` names the rule,
/// `pool_at` the NodePool.
pub fn check(
    rule: &Rule,
    pool: &NodePool,
    at: &str,
    pool_at: &str,
    ops: &GpuOperatorConfigs,
    report: &mut Disagreements,
) {
    let Some(config_name) = pool
        .template_labels
        .get(DEVICE_PLUGIN_CONFIG_LABEL)
        .or(ops.default_plugin_config.as_ref())
    else {
        return;
    };
    let Some((config, source)) = ops.device_plugin.get(config_name) else {
        return;
    };
    let Some((mode, shared)) = config.sharing() else {
        return;
    };
    let mut noted = std::collections::BTreeSet::new();
    for (claim, want) in claims(rule) {
        if want != mode {
            continue; // a mode mismatch is an error of its own
        }
        let Some(r) = entry(shared, &claim, rule) else {
            continue;
        };
        let config_at = format!(
            "device plugin config {config_name} ({source}) {} {} with {} replicas",
            if mode == SharingMode::Mps {
                "shares"
            } else {
                "time-slices"
            },
            r.name,
            r.replicas
        );
        match claim.replicas {
            Some(n) if n != r.replicas => report.errors.push(format!(
                "{at}: {pool_at}: {} is {n}, but {config_at}: GPU-equivalents and budgets would count each pod as 1/{n} of a device while it holds 1/{}; set {} to {}",
                claim.field, r.replicas, claim.field, r.replicas
            )),
            Some(_) => {}
            None if noted.insert(claim.field) => report.notes.push(format!(
                "{at}: {pool_at}: {config_at}, but the rule does not set {}: GPU-equivalents count each replica as a whole {} (set {} to {} to count 1/{})",
                claim.field,
                if rule.action == Action::Mig { "slice" } else { "GPU" },
                claim.field,
                r.replicas,
                r.replicas
            )),
            None => {}
        }
    }
}
