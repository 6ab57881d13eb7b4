//! Sizing: the MIG profile whole-GPU requests become (the developer's profile, else the smallest
//! allowed one that holds the asked GPU memory, else the rule's default), and the sizing annotations
//! a rule ignores.

use crate::annotations::{GPU_MEMORY_ANNOTATION, PROFILE_ANNOTATION};
use crate::catalog;
use crate::dra;
use crate::nodepool::{NodePoolIndex, pool_gpus, profile_memory_mib};
use crate::policy::{Action, Backend, MIG_PREFIX, MigStrategy, Rule};
use crate::quantity;

use super::Decider;

impl Decider<'_> {
    pub(super) fn note_unused_sizing_annotations(&mut self) {
        for key in [PROFILE_ANNOTATION, GPU_MEMORY_ANNOTATION] {
            // DRA time-slicing by memory asks for the pod's gpu-memory (dra::template_for).
            let sized_claim = key == GPU_MEMORY_ANNOTATION
                && self.rule.backend == Backend::Dra
                && self.rule.dra.shares == crate::policy::dra_sharing::ConsumableShares::Memory;
            if self.pod.annotation(key).is_some() && !sized_claim {
                let why = match self.rule.action {
                    Action::Mig => "the pod asks for MIG slices directly",
                    Action::Exclusive => "the rule gives whole GPUs",
                    _ => "shared GPUs have no memory isolation",
                };
                self.warn(format_args!(
                    "{key} ignored: {why} (rule {})",
                    self.rule.name
                ));
            }
        }
    }

    /// The MIG profile for whole-GPU requests: the developer's profile, else the smallest allowed one
    /// that holds the requested GPU memory, else the rule's default.
    pub(super) fn choose_profile(&mut self) -> Result<String, String> {
        let rule = self.rule;
        let allowed = rule.allowed_profiles.join(", ");
        let memory_ask = match self.pod.annotation(GPU_MEMORY_ANNOTATION) {
            None => None,
            Some(text) => match quantity::parse(text) {
                Some(bytes) => Some((text, bytes)),
                None => {
                    return Err(format!(
                        "{GPU_MEMORY_ANNOTATION} {text:?} is not a Kubernetes quantity (e.g. 18Gi)"
                    ));
                }
            },
        };
        let memory = |profile: &str| {
            profile_memory_mib(rule, self.pools, profile).map(|m| u128::from(m) << 20)
        };
        if rule.mig_strategy == MigStrategy::Single {
            let profile = rule.mig_profile.clone().unwrap_or_default();
            if let Some(asked) = self.pod.annotation(PROFILE_ANNOTATION)
                && asked != profile
            {
                return Err(format!(
                    "{PROFILE_ANNOTATION} {asked:?}: the GPUs of namespace {:?} are {profile} MIG slices, one profile per node (rule {}, MIG strategy single); remove the annotation",
                    self.ns.name, rule.name
                ));
            }
            if let Some((text, bytes)) = memory_ask
                && memory(&profile).is_some_and(|m| m < bytes)
            {
                return Err(format!(
                    "{GPU_MEMORY_ANNOTATION} {text:?} is more than a {profile} slice holds, the only profile of namespace {:?} (rule {}, MIG strategy single){}",
                    self.ns.name,
                    rule.name,
                    smallest_holding(rule, self.pools, bytes)
                ));
            }
            return Ok(profile);
        }
        if let Some(profile) = self.pod.annotation(PROFILE_ANNOTATION) {
            if !rule.allowed_profiles.iter().any(|p| p == profile) {
                return Err(format!(
                    "{PROFILE_ANNOTATION} {profile:?} is not allowed in namespace {:?}; rule {} allows {allowed}",
                    self.ns.name, rule.name
                ));
            }
            if let Some((text, bytes)) = memory_ask
                && memory(profile).is_some_and(|m| m < bytes)
            {
                return Err(format!(
                    "{PROFILE_ANNOTATION} {profile:?} holds less than {GPU_MEMORY_ANNOTATION} {text:?}; drop one of the two"
                ));
            }
            return Ok(profile.to_string());
        }
        if let Some((text, bytes)) = memory_ask {
            let mut fitting: Vec<(u128, &String)> = rule
                .allowed_profiles
                .iter()
                .filter_map(|p| memory(p).map(|m| (m, p)))
                .filter(|(m, _)| *m >= bytes)
                .collect();
            fitting.sort();
            return match fitting.first() {
                Some((_, p)) => Ok((*p).clone()),
                None => Err(format!(
                    "no MIG profile allowed in namespace {:?} holds {GPU_MEMORY_ANNOTATION} {text:?} (rule {} allows {allowed}){}",
                    self.ns.name,
                    rule.name,
                    smallest_holding(rule, self.pools, bytes)
                )),
            };
        }
        Ok(rule.mig_profile.clone().unwrap_or_default())
    }
}

/// What a `dra` rule offers, for denials: its templates.
pub(super) fn dra_offer(rule: &Rule) -> String {
    let names: Vec<String> = dra::templates(rule).into_iter().map(|t| t.name).collect();
    format!("claims from templates {}", names.join(", "))
}

/// What a `mig` rule offers, for denials: the profiles, and the resource names when they are not the
/// mixed strategy's own.
pub(super) fn mig_offer(rule: &Rule) -> String {
    let profiles = rule.allowed_profiles.join(", ");
    let names: Vec<String> = rule
        .allowed_profiles
        .iter()
        .map(|p| rule.mig_resource(p))
        .collect();
    let plain = rule
        .allowed_profiles
        .iter()
        .zip(&names)
        .all(|(p, n)| n.strip_prefix(MIG_PREFIX) == Some(p.as_str()));
    let kind = if rule.mig_time_slicing.is_some() {
        "time-sliced MIG slices"
    } else {
        "MIG slices"
    };
    if plain {
        format!("{kind} {profiles}")
    } else {
        let mut names = names;
        names.dedup();
        format!("{kind} {profiles} as {}", names.join(", "))
    }
}

/// `; the smallest MIG profile that holds it is <p>` (on the rule's GPUs), or that none does, for
/// denials of a `gpu-slicer.io/gpu-memory` no allowed profile holds.
pub(super) fn smallest_holding(rule: &Rule, pools: &NodePoolIndex, bytes: u128) -> String {
    let gpus = pool_gpus(rule, pools).unwrap_or_else(|| catalog::GPUS.to_vec());
    let best = gpus
        .iter()
        .flat_map(|g| g.mig_profiles.iter())
        .filter(|p| u128::from(p.memory_mib) << 20 >= bytes)
        .filter_map(|p| Some((profile_memory_mib(rule, pools, p.name)?, p.name)))
        .filter(|(m, _)| u128::from(*m) << 20 >= bytes)
        .min();
    match best {
        Some((_, name)) => format!("; the smallest MIG profile that holds it is {name}"),
        None => "; no MIG profile of these GPUs holds it: ask for a whole GPU".into(),
    }
}
