//! Renaming: the checks on the requests a rule renames, and the JSONPatch operations that rename
//! them and annotate the pod with what it holds.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde_json::Value;

use crate::annotations::PROFILE_ANNOTATION;
use crate::audit::Change;
use crate::equivalents::{Asks, Usage};
use crate::pod::Pod;
use crate::policy::{Action, Backend, MigStrategy, WHOLE_GPU};

use super::Decider;
use super::scan::Kind;
use super::sizing::{dra_offer, mig_offer};

impl Decider<'_> {
    /// The DRA claim (`backend: dra`) or the renamed requests, as patch operations and changes;
    /// returns what the pod holds afterwards.
    pub(super) fn rewrite(
        &self,
        target: &str,
        profile: Option<&str>,
        patch: &mut Vec<PatchOperation>,
        changes: &mut Vec<Change>,
    ) -> Result<Usage, String> {
        let rule = self.rule;
        let mut asks = Asks::of(self.pod, self.policy);
        if rule.backend == Backend::Dra {
            asks.claim_whole(self.claim(profile, patch, changes)?);
        } else if !target.is_empty() {
            asks.rename_whole(target);
        }
        let usage = asks.usage(&self.units());
        for u in &self.uses {
            if u.kind != Kind::Whole || rule.backend == Backend::Dra {
                continue;
            }
            changes.push(Change {
                container: u.label(),
                from: WHOLE_GPU.into(),
                to: target.to_string(),
                quantity: u.quantity_text(),
            });
            if target == WHOLE_GPU {
                continue;
            }
            let index = u.index.to_string();
            for (present, field) in [(u.in_limits, "limits"), (u.in_requests, "requests")] {
                if present {
                    let at = |name| ["spec", u.section.field(), &index, "resources", field, name];
                    patch.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer(&at(WHOLE_GPU)),
                    }));
                    patch.push(add(&at(target), u.quantity.clone()));
                }
            }
        }
        Ok(usage)
    }

    /// Enforces the rule on every GPU request: counts, and slices asked for directly.
    pub(super) fn check_requests(&mut self, target: &str) -> Result<(), String> {
        let rule = self.rule;
        let mut multi_mig = Vec::new();
        for u in &self.uses {
            if let Some(requests) = u.requests_differ {
                let shown = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return Err(format!(
                    "container {:?}: {} requests {} differ from its limits {}; extended resources need requests equal to limits (or limits alone)",
                    u.container,
                    u.key,
                    shown(requests),
                    u.quantity_text()
                ));
            }
            let Some(count) = u.count else {
                return Err(format!(
                    "container {:?}: {} {} is not a whole number of devices",
                    u.container,
                    u.key,
                    u.quantity_text()
                ));
            };
            let offered = match (u.kind, rule.action) {
                (Kind::Whole, _) => true,
                // DRA: GPUs come as claims only; no device plugin advertises other names.
                _ if rule.backend == Backend::Dra => false,
                // As the rule's nodes advertise them (strategy, time-slicing rename).
                (_, Action::Mig) => rule
                    .allowed_profiles
                    .iter()
                    .any(|p| rule.mig_resource(p) == u.key),
                (Kind::Shared(name), Action::Timeslice | Action::Mps) => {
                    rule.shared_resource.as_deref() == Some(name)
                }
                _ => false,
            };
            if !offered {
                let gives = match rule.action {
                    _ if rule.backend == Backend::Dra => dra_offer(rule),
                    Action::Mig => mig_offer(rule),
                    Action::Exclusive => "whole GPUs (nvidia.com/gpu)".to_string(),
                    _ => format!("{} replicas", rule.shared_resource.as_deref().unwrap_or("")),
                };
                return Err(format!(
                    "container {:?} asks for {}, which rule {} does not offer in namespace {:?} (it gives {gives}); ask for nvidia.com/gpu instead",
                    u.container, u.key, rule.name, self.ns.name
                ));
            }
            if let Some(max) = rule.max_per_container
                && count > max
            {
                let hint = match rule.action {
                    Action::Mig if rule.mig_time_slicing.is_some() => {
                        " (time-sliced slices: the device plugin rejects more than one per container)"
                            .into()
                    }
                    Action::Mig if rule.mig_strategy == MigStrategy::Single => format!(
                        " (its GPUs are {} MIG slices; a CUDA process uses only one)",
                        rule.mig_profile.as_deref().unwrap_or("")
                    ),
                    Action::Mig => format!(
                        " (ask for a bigger slice with the {PROFILE_ANNOTATION} annotation)"
                    ),
                    Action::Timeslice | Action::Mps => {
                        " (shared replicas add no compute; the device plugin rejects more than one)"
                            .into()
                    }
                    _ => String::new(),
                };
                return Err(format!(
                    "container {:?} asks for {count} {}; rule {} allows at most {max} per container in namespace {:?}{hint}",
                    u.container, u.key, rule.name, self.ns.name
                ));
            }
            if u.kind == Kind::Whole && target != WHOLE_GPU {
                let c = self
                    .pod
                    .all_containers()
                    .find(|(s, i, _)| *s == u.section && *i == u.index)
                    .map(|(_, _, c)| c);
                let clash = c.and_then(|c| c.resources.as_ref()).is_some_and(|r| {
                    [r.limits.as_ref(), r.requests.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|m| m.contains_key(target))
                });
                if clash {
                    return Err(format!(
                        "container {:?} asks for both {WHOLE_GPU} and {target}; ask for one of them",
                        u.container
                    ));
                }
            }
            if count > 1 && rule.action == Action::Mig {
                multi_mig.push(u.container);
            }
        }
        for c in multi_mig {
            self.warn(format_args!(
                "container {c:?} gets several MIG devices; a CUDA process uses only one of them"
            ));
        }
        Ok(())
    }
}

pub(super) fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// The JSON Pointer to `tokens` (unescaped), built in one allocation: patches are built on every
/// admission.
pub(super) fn pointer(tokens: &[&str]) -> PointerBuf {
    // Room for the separators and a few escapes (`/` and `~` take two characters). The empty string
    // is the root pointer; `push_back` encodes each token into the reserved room, with no re-parse.
    let room = tokens.iter().map(|t| t.len() + 1).sum::<usize>() + 8;
    let mut path = PointerBuf::parse(String::with_capacity(room)).unwrap_or_default();
    for token in tokens {
        path.push_back(*token);
    }
    path
}

/// Records the rewrite (`summary`, when there is one) and what the pod holds on the pod itself; the
/// GPU-equivalents annotations only where missing or different, so a reinvocation adds nothing (an
/// `add` replaces an existing value, RFC 6902 4.1).
pub(super) fn annotate(
    pod: &Pod,
    summary: Option<String>,
    usage: Usage,
    patch: &mut Vec<PatchOperation>,
) {
    let mut wanted: Vec<(&str, String)> = Vec::with_capacity(3);
    if let Some(summary) = summary {
        wanted.push((crate::annotations::REWRITTEN_ANNOTATION, summary));
    }
    for (key, value) in [
        (
            crate::annotations::EQUIVALENTS_ANNOTATION,
            usage.held.to_string(),
        ),
        (
            crate::annotations::REQUESTED_ANNOTATION,
            usage.requested.to_string(),
        ),
    ] {
        if pod.annotation(key) != Some(value.as_str()) {
            wanted.push((key, value));
        }
    }
    if wanted.is_empty() {
        return;
    }
    let map = || {
        Value::Object(
            wanted
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect(),
        )
    };
    match &pod.metadata {
        // No metadata at all (never from an API server, but a patch must apply to what it was given).
        None => patch.push(add(
            &["metadata"],
            serde_json::json!({ "annotations": map() }),
        )),
        Some(meta) if meta.annotations.is_none() => {
            patch.push(add(&["metadata", "annotations"], map()))
        }
        Some(_) => {
            for (key, value) in &wanted {
                patch.push(add(
                    &["metadata", "annotations", key],
                    Value::String(value.clone()),
                ));
            }
        }
    }
}
