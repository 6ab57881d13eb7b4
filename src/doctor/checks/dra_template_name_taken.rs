//! `dra-template-name-taken`: a ResourceClaimTemplate name a `backend: dra` rule needs in a namespace,
//! held by an object gpu-slicer did not make. Its controller never writes or deletes such an object (a
//! Warning Event `TemplateNameTaken`), and the pods the webhook rewrites claim from it, so they get
//! what that object asks for, not what the rule gives.
//!
//! A finding names the template, the rule and who holds the name (a hand-applied copy of gpu-slicer's
//! own, another manager, nobody), and says to delete or rename it so the controller creates its own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use gpu_slicer_core::dra::MANAGED_BY;
use gpu_slicer_core::policy::Policy;

use super::findings::{POLICY_OBJECT, finding, listed, skipped};
use super::{Check, Options};
use crate::controller::{self, OWNER_ANNOTATION};
use crate::doctor::snapshot::{ClusterSnapshot, TemplateInfo};
use crate::doctor::{Finding, Severity};

pub const DRA_TEMPLATE_NAME_TAKEN: &str = "dra-template-name-taken";

/// The check, for [`super::ALL`].
pub struct DraTemplateNameTaken;

impl Check for DraTemplateNameTaken {
    fn name(&self) -> &'static str {
        DRA_TEMPLATE_NAME_TAKEN
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        dra_template_name_taken(s)
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

#[cfg(test)]
mod tests {
    use super::*;

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
