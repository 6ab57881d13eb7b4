//! `pod-not-rewritten`: pods still asking for whole GPUs (`nvidia.com/gpu`) without the
//! `gpu-slicer.io/rewritten` annotation, in a namespace whose rule slices (or, under `backend: dra`,
//! turns the request into a claim). They were admitted while the webhook was down (`failurePolicy:
//! Ignore`) or bypassed it (a namespaceSelector that excludes their namespace), and hold whole GPUs.
//!
//! One finding per owner names the rule and, when the webhook's namespaceSelector excludes the
//! namespace, says so; the fix is the restart that sends new pods through the webhook.

use std::collections::BTreeMap;

use gpu_slicer_core::policy::{Action, Rule, WHOLE_GPU};

use super::findings::{POLICY_OBJECT, finding, skipped, some_of};
use super::selectors::selector_matches;
use super::webhook_manifest::gpu_slicer_webhooks;
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, PodInfo};
use crate::doctor::{Finding, Severity};

pub const POD_NOT_REWRITTEN: &str = "pod-not-rewritten";

/// The check, for [`super::ALL`].
pub struct PodNotRewritten;

impl Check for PodNotRewritten {
    fn name(&self) -> &'static str {
        POD_NOT_REWRITTEN
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        pod_not_rewritten(s)
    }
}

/// Pods still asking for whole GPUs, without `gpu-slicer.io/rewritten`, in namespaces whose rule
/// slices: admitted while the webhook was down (`failurePolicy: Ignore`) or bypassed.
pub fn pod_not_rewritten(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(no) => return skipped(POD_NOT_REWRITTEN, POLICY_OBJECT, &no.why()),
    };
    let webhooks = gpu_slicer_webhooks(s);
    let mut groups: BTreeMap<String, (Vec<&PodInfo>, String)> = BTreeMap::new();
    let empty = BTreeMap::new();
    for pod in &s.pods {
        if matches!(pod.phase.as_str(), "Succeeded" | "Failed")
            || pod.rewritten
            || !pod.gpu_requests.contains_key(WHOLE_GPU)
        {
            continue;
        }
        let labels = s.namespaces.get(&pod.namespace).unwrap_or(&empty);
        let Some(rule) = loaded.policy.rule_for(&pod.namespace, labels) else {
            continue;
        };
        if !rewrites_whole_gpus(rule) {
            continue;
        }
        if pod.opted_out && rule.allow_opt_out {
            continue;
        }
        let mut ns_labels = labels.clone();
        ns_labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| pod.namespace.clone());
        let excluded = !webhooks.is_empty()
            && webhooks.iter().all(|(_, w)| {
                w.namespace_selector
                    .as_ref()
                    .is_some_and(|sel| !selector_matches(sel, &ns_labels))
            });
        let note = if excluded {
            format!(
                "; namespace {} is excluded by the webhook's namespaceSelector, so the webhook never sees its pods",
                pod.namespace
            )
        } else {
            String::new()
        };
        let detail = format!(
            "rule {} ({}) covers namespace {}{note}",
            rule.name,
            rule.action.as_str(),
            pod.namespace
        );
        groups
            .entry(pod.group())
            .or_insert_with(|| (Vec::new(), detail))
            .0
            .push(pod);
    }
    groups
        .into_iter()
        .map(|(group, (pods, detail))| {
            let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            let restart = restart(pods[0]);
            finding(
                POD_NOT_REWRITTEN,
                Severity::Warning,
                pods[0].object(),
                format!(
                    "{} pod(s) of {group} ({}) ask for {WHOLE_GPU} and carry no gpu-slicer.io/rewritten annotation, but {detail}: admitted while the webhook was down or bypassed, they hold whole GPUs",
                    pods.len(),
                    some_of(&names)
                ),
                format!(
                    "{restart}; keep the webhook's failurePolicy Fail and check its health (`kubectl -n gpu-slicer get pods`, /readyz)"
                ),
            )
        })
        .collect()
}

/// Whether the webhook turns a pod's `nvidia.com/gpu` into something else under `rule`, so a pod
/// still asking for it was not rewritten.
fn rewrites_whole_gpus(rule: &Rule) -> bool {
    // Under `backend: dra` every GPU action turns nvidia.com/gpu into a claim.
    let slices = matches!(rule.action, Action::Mig | Action::Timeslice | Action::Mps)
        || (rule.backend == gpu_slicer_core::policy::Backend::Dra
            && rule.action == Action::Exclusive);
    // A rule whose resource is nvidia.com/gpu itself (a shared resource without rename, MIG's
    // single strategy) keeps the request: such pods are indistinguishable here.
    let keeps_whole = rule.shared_resource.as_deref() == Some(WHOLE_GPU)
        || (rule.action == Action::Mig
            && rule
                .mig_profile
                .as_deref()
                .is_some_and(|p| rule.mig_resource(p) == WHOLE_GPU));
    slices && !keeps_whole
}

/// How to send a pod's owner's pods through the webhook again.
fn restart(pod: &PodInfo) -> String {
    match &pod.owner {
        Some((kind, name)) if kind == "ReplicaSet" => format!(
            "`kubectl -n {} rollout restart deployment/{}`",
            pod.namespace,
            name.rsplit_once('-').map_or(name.as_str(), |(d, _)| d)
        ),
        Some((kind, name)) => format!(
            "restart {} {}/{name} (its new pods pass through the webhook)",
            kind, pod.namespace
        ),
        None => "delete and recreate the pod".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use crate::policy_source::LoadedPolicy;
    use gpu_slicer_core::policy::Policy;
    use serde_json::json;

    #[test]
    fn pods_of_a_single_strategy_rule_keep_nvidia_com_gpu_and_are_not_reported() {
        let mut s = healthy();
        let policy = Policy::parse(
            "apiVersion: gpu-slicer.io/v1alpha1
kind: SlicingPolicy
spec:
  rules:
  - name: single-mig
    namespaces: [ml-inference]
    action: mig
    mig: {profile: 1g.10gb, strategy: single}
",
            "inline",
        )
        .unwrap();
        s.policy = Ok(LoadedPolicy {
            policy,
            source: "--policy inline".into(),
            object: "SlicingPolicy/inline".into(),
        });
        s.pods.push(pod(gpu_pod(
            "ml-inference",
            "x",
            "Running",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        assert!(pod_not_rewritten(&s).is_empty());
    }

    #[test]
    fn gpu_pods_that_bypassed_the_webhook_are_reported_once_per_owner() {
        let mut s = healthy();
        for name in ["llm-7d9c8b6f5-aaaaa", "llm-7d9c8b6f5-bbbbb"] {
            s.pods.push(pod(gpu_pod(
                "ml-inference",
                name,
                "Running",
                json!({"nvidia.com/gpu": "1"}),
                json!({}),
            )));
        }
        // Not covered by a slicing rule (deny), or finished: not reported.
        s.pods.push(pod(gpu_pod(
            "sandbox",
            "x",
            "Running",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        s.pods.push(pod(gpu_pod(
            "ml-inference",
            "done",
            "Succeeded",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        let f = run_all(&s, &options());
        let f = only(&f, POD_NOT_REWRITTEN);
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.message
                .starts_with("2 pod(s) of ReplicaSet ml-inference/llm-7d9c8b6f5"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("rule inference-mig (mig)"),
            "{}",
            f.message
        );
        assert!(
            f.fix.contains("rollout restart deployment/llm"),
            "{}",
            f.fix
        );
    }
}
