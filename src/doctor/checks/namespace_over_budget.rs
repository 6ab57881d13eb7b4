//! `namespace-over-budget`: namespaces whose live GPU pods hold more GPU-equivalents than their rule's
//! `budget.gpuEquivalents` allows: typically after a policy change lowered a budget, or pods admitted
//! before gpu-slicer ran (or while it was failing open). Running pods are never evicted; the webhook
//! denies the namespace's new GPU pods (warns, in audit mode) until it is back within its budget.
//!
//! Each pod is counted as the webhook's Pod watch counts it ([`gpu_slicer_core::equivalents`], from its
//! resources and gpu-slicer claims, under the namespace's rule and the NodePools read): pods that are
//! not finished and not being deleted. A finding names the namespace, the rule, the budget, what is
//! held and the largest holders, and says to scale down or raise the budget.

use std::collections::BTreeMap;

use gpu_slicer_core::equivalents::{self, Units};
use gpu_slicer_core::gpus::Gpus;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::{Mode, Policy, Rule};

use super::findings::{POLICY_OBJECT, finding, skipped};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, PodInfo};
use crate::doctor::{Finding, Severity};

pub const NAMESPACE_OVER_BUDGET: &str = "namespace-over-budget";

/// The check, for [`super::ALL`].
pub struct NamespaceOverBudget;

impl Check for NamespaceOverBudget {
    fn name(&self) -> &'static str {
        NAMESPACE_OVER_BUDGET
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        namespace_over_budget(s)
    }
}

/// Namespaces whose live GPU pods hold more than their rule's budget.
pub fn namespace_over_budget(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(no) => return skipped(NAMESPACE_OVER_BUDGET, POLICY_OBJECT, &no.why()),
    };
    let policy = &loaded.policy;
    if policy.rules.iter().all(|r| r.budget.is_none()) {
        return Vec::new();
    }
    let pools = NodePoolIndex::new(s.node_pools.found().into_iter().flatten().cloned());
    let mut out = Vec::new();
    for (namespace, (rule, mut h)) in held_per_namespace(s, policy, &pools) {
        let Some(budget) = rule.budget else { continue };
        if h.held <= budget {
            continue;
        }
        h.largest
            .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let largest: Vec<String> = h
            .largest
            .iter()
            .take(3)
            .map(|(g, name)| format!("{name} ({g})"))
            .collect();
        let consequence = match rule.mode {
            Mode::Enforce => "the webhook denies its new GPU pods until it is back within",
            Mode::Audit => {
                "rule is in audit mode: its new GPU pods are admitted with a would-deny warning until it is back within"
            }
        };
        out.push(finding(
            NAMESPACE_OVER_BUDGET,
            Severity::Warning,
            format!("Namespace/{namespace}"),
            format!(
                "namespace {namespace} holds {} GPU-equivalents in {} running or pending GPU pod(s), over the budget of {budget} that rule {} sets ({} over; largest: {}); running pods are not evicted, but {consequence}",
                h.held,
                h.pods,
                rule.name,
                h.held.saturating_sub(budget),
                largest.join(", ")
            ),
            format!(
                "scale down or delete pods in {namespace} until they hold at most {budget} (kubectl get pods -n {namespace} -o custom-columns=NAME:.metadata.name,GPU-EQ:.metadata.annotations.gpu-slicer\\.io/gpu-equivalents), or raise budget.gpuEquivalents of rule {} in {}",
                rule.name, loaded.source
            ),
        ));
    }
    out
}

/// What a namespace's live GPU pods hold.
#[derive(Default)]
struct Held {
    pods: u64,
    held: Gpus,
    /// The largest holders, for the message: `(held, pod)`.
    largest: Vec<(Gpus, String)>,
}

fn live(pod: &PodInfo) -> bool {
    !matches!(pod.phase.as_str(), "Succeeded" | "Failed") && !pod.deleting
}

/// Sums each budgeted namespace's live GPU pods.
fn held_per_namespace<'p>(
    s: &ClusterSnapshot,
    policy: &'p Policy,
    pools: &NodePoolIndex,
) -> BTreeMap<String, (&'p Rule, Held)> {
    let mut out: BTreeMap<String, (&Rule, Held)> = BTreeMap::new();
    for pod in s.pods.iter().filter(|p| live(p)) {
        let fallback = gpu_slicer_core::labels::name_label(&pod.namespace);
        let labels = s.namespaces.get(&pod.namespace).unwrap_or(&fallback);
        let Some(rule) = policy.rule_for(&pod.namespace, labels) else {
            continue;
        };
        if rule.budget.is_none() {
            continue;
        }
        let units = Units {
            rule: Some(rule),
            policy,
            pools,
        };
        let usage = equivalents::of_requests(
            pod.gpu_requests.iter().map(|(k, n)| (k.as_str(), *n)),
            pod.claim_templates.iter().map(String::as_str),
            &units,
        );
        if usage.held == Gpus::ZERO {
            continue;
        }
        let (_, h) = out
            .entry(pod.namespace.clone())
            .or_insert_with(|| (rule, Held::default()));
        h.pods += 1;
        h.held = h.held.saturating_add(usage.held);
        h.largest.push((usage.held, pod.name.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_source::LoadedPolicy;

    fn snapshot(policy: &str, pods: Vec<PodInfo>) -> ClusterSnapshot {
        ClusterSnapshot {
            pods,
            policy: Ok(LoadedPolicy {
                policy: Policy::parse(policy, "p.yaml").unwrap(),
                source: "--policy p.yaml".into(),
                object: "SlicingPolicy/p.yaml".into(),
            }),
            ..ClusterSnapshot::default()
        }
    }

    fn pod(name: &str, requests: &[(&str, u64)], templates: &[&str]) -> PodInfo {
        PodInfo {
            namespace: "team".into(),
            name: name.into(),
            phase: "Running".into(),
            gpu_requests: requests.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            claim_templates: templates.iter().map(|t| t.to_string()).collect(),
            ..PodInfo::default()
        }
    }

    /// Claims of gpu-slicer's templates count as the webhook counts them; an audit rule says its pods
    /// are warned, not denied; a rule without a budget, or no policy, finds nothing.
    #[test]
    fn claims_count_and_audit_mode_is_said() {
        let policy = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: team, namespaces: [team], action: exclusive, backend: dra, mode: audit, budget: {gpuEquivalents: \"1\"}}\n";
        let pods = vec![
            pod("a", &[], &["gpu-slicer-gpu-x1"]),
            pod("b", &[("nvidia.com/gpu", 1)], &[]),
        ];
        let found = namespace_over_budget(&snapshot(policy, pods.clone()));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].object, "Namespace/team");
        assert!(
            found[0].message.contains("holds 2 GPU-equivalents in 2")
                && found[0].message.contains(
                    "audit mode: its new GPU pods are admitted with a would-deny warning"
                ),
            "{}",
            found[0].message
        );
        let unbudgeted = policy.replace(", budget: {gpuEquivalents: \"1\"}", "");
        assert!(namespace_over_budget(&snapshot(&unbudgeted, pods)).is_empty());
        let none = ClusterSnapshot::default();
        let skipped = namespace_over_budget(&none);
        assert_eq!(skipped[0].severity, Severity::Info);
        assert!(skipped[0].message.starts_with("skipped: "));
    }
}
