//! The webhook registration gpu-slicer ships (manifests/webhook), and the live registrations that call
//! gpu-slicer: what `webhook-not-configured` compares, and the namespaceSelector `pod-not-rewritten`
//! consults.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;

use crate::doctor::snapshot::ClusterSnapshot;

/// The shipped webhook registration: what a healthy one looks like.
pub(super) const SHIPPED_WEBHOOK: &str =
    include_str!("../../../manifests/webhook/base/mutatingwebhookconfiguration.yaml");

/// The webhooks that call gpu-slicer, with their configuration's name.
pub(super) fn gpu_slicer_webhooks(s: &ClusterSnapshot) -> Vec<(&str, &MutatingWebhook)> {
    let Some(configs) = s.webhooks.found() else {
        return Vec::new();
    };
    configs
        .iter()
        .flat_map(|c| {
            let name = c.metadata.name.as_deref().unwrap_or("");
            c.webhooks
                .iter()
                .flatten()
                .filter(|w| {
                    w.name.ends_with("gpu-slicer.io")
                        || w.client_config
                            .service
                            .as_ref()
                            .is_some_and(|svc| svc.name == "gpu-slicer")
                        || w.client_config
                            .url
                            .as_deref()
                            .is_some_and(|u| u.contains("gpu-slicer"))
                })
                .map(move |w| (name, w))
        })
        .collect()
}

/// What the shipped registration has: the namespaces it excludes and its matchConditions' names.
pub(super) fn shipped_webhook() -> (Vec<String>, Vec<String>) {
    let doc: serde_json::Value = serde_norway::from_str(SHIPPED_WEBHOOK).unwrap_or_default();
    let w = &doc["webhooks"][0];
    let excluded = w["namespaceSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .flat_map(|e| e["values"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let conditions = w["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    (excluded, conditions)
}
