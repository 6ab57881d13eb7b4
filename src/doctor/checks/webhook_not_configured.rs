//! `webhook-not-configured`: no MutatingWebhookConfiguration calls gpu-slicer, or the one that does
//! lacks what the shipped registration (manifests/webhook) has: pod
//! CREATE in its rules, the `matchConditions` that keep non-GPU pods off the webhook, the namespace
//! exclusions that keep the webhook's own pods (and kube-system's) from depending on it; or it fails
//! open (`failurePolicy: Ignore`) while the policy denies.
//!
//! Each finding names the registration and what it lacks; the fix is to apply manifests/webhook.

use std::collections::BTreeMap;

use gpu_slicer_core::policy::{Action, DefaultAction};

use super::findings::{finding, list, skipped};
use super::selectors::selector_matches;
use super::webhook_manifest::{gpu_slicer_webhooks, shipped_webhook};
use super::{Check, Options};
use crate::doctor::snapshot::ClusterSnapshot;
use crate::doctor::{Finding, Severity};

pub const WEBHOOK_NOT_CONFIGURED: &str = "webhook-not-configured";

/// The check, for [`super::ALL`].
pub struct WebhookNotConfigured;

impl Check for WebhookNotConfigured {
    fn name(&self) -> &'static str {
        WEBHOOK_NOT_CONFIGURED
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        webhook_not_configured(s)
    }
}

/// No registration calls gpu-slicer, or it lacks what the shipped one has (`matchConditions`, the
/// namespace exclusions, pod CREATE), or it fails open while the policy denies.
pub fn webhook_not_configured(s: &ClusterSnapshot) -> Vec<Finding> {
    const FIX: &str = "apply manifests/webhook (`kubectl apply -k manifests/webhook/overlays/cert-manager`, or plain-certs)";
    if let Some(why) = s.webhooks.why_not() {
        return skipped(
            WEBHOOK_NOT_CONFIGURED,
            "MutatingWebhookConfiguration/gpu-slicer",
            why,
        );
    }
    let hooks = gpu_slicer_webhooks(s);
    if hooks.is_empty() {
        return vec![finding(
            WEBHOOK_NOT_CONFIGURED,
            Severity::Error,
            "MutatingWebhookConfiguration/gpu-slicer",
            "no MutatingWebhookConfiguration calls gpu-slicer (service gpu-slicer or a webhook named *.gpu-slicer.io): GPU pods are admitted unchanged",
            FIX,
        )];
    }
    let (excluded, conditions) = shipped_webhook();
    let denies = s.policy.as_ref().ok().is_some_and(|p| {
        p.policy.default_action == DefaultAction::Deny
            || p.policy.rules.iter().any(|r| r.action == Action::Deny)
    });
    let mut out = Vec::new();
    for (config, w) in hooks {
        let object = format!("MutatingWebhookConfiguration/{config}");
        let mut problem = |message: String| {
            out.push(finding(
                WEBHOOK_NOT_CONFIGURED,
                Severity::Error,
                &object,
                format!("webhook {}: {message}", w.name),
                FIX,
            ));
        };
        let pods_create = w.rules.iter().flatten().any(|r| {
            let has =
                |v: &Option<Vec<String>>, x: &str| v.iter().flatten().any(|s| s == x || s == "*");
            has(&r.operations, "CREATE") && has(&r.resources, "pods") && has(&r.api_groups, "")
        });
        if !pods_create {
            problem("its rules do not cover CREATE of pods, so it never sees new pods".into());
        }
        let have: Vec<&str> = w
            .match_conditions
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        let missing: Vec<&String> = conditions
            .iter()
            .filter(|c| !have.contains(&c.as_str()))
            .collect();
        if !missing.is_empty() {
            problem(format!(
                "lacks the matchConditions of the shipped manifest ({}): every pod creation calls the webhook, so an outage blocks non-GPU pods too",
                list(&missing)
            ));
        }
        let not_excluded: Vec<&String> = excluded
            .iter()
            .filter(|ns| {
                let labels =
                    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())]);
                w.namespace_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, &labels))
            })
            .collect();
        if !not_excluded.is_empty() {
            problem(format!(
                "its namespaceSelector does not exclude {} as the shipped manifest does: the webhook's own pods (and kube-system's) then depend on it",
                list(&not_excluded)
            ));
        }
        if w.failure_policy.as_deref() == Some("Ignore") && denies {
            problem(
                "failurePolicy is Ignore while the policy denies GPU pods: during an outage denied pods are admitted, unchanged".into(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::checks::run_all;
    use crate::doctor::snapshot::Read;

    #[test]
    fn a_missing_or_weakened_webhook_registration_is_reported() {
        let mut s = healthy();
        s.webhooks = Read::Found(Vec::new());
        let f = run_all(&s, &options());
        assert!(
            only(&f, WEBHOOK_NOT_CONFIGURED)
                .message
                .contains("no MutatingWebhookConfiguration calls gpu-slicer")
        );

        let mut weak = shipped_webhook_config();
        let w = &mut weak.webhooks.as_mut().unwrap()[0];
        w.match_conditions = None;
        w.namespace_selector = None;
        w.failure_policy = Some("Ignore".into());
        s.webhooks = Read::Found(vec![weak]);
        let f = webhook_not_configured(&s);
        let messages: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(f.len(), 3, "{messages:#?}");
        assert!(messages[0].contains(
            "lacks the matchConditions of the shipped manifest (requests-nvidia-resource)"
        ));
        assert!(messages[1].contains("does not exclude kube-system, gpu-slicer"));
        assert!(messages[2].contains("failurePolicy is Ignore while the policy denies"));
        assert!(
            f.iter()
                .all(|f| f.object == "MutatingWebhookConfiguration/gpu-slicer"
                    && f.fix.contains("manifests/webhook"))
        );
    }
}
