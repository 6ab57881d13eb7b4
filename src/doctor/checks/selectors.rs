//! Label matching for the checks, through [`gpu_slicer_core::labels`] (the one implementation the
//! webhook and the planner use too): a NodePool / NodeOverlay requirement against a label value, and
//! a Kubernetes `LabelSelector` against a label set.

use std::collections::BTreeMap;

use gpu_slicer_core::labels;
use gpu_slicer_core::nodepool::Requirement;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether a requirement admits a label value (`None`: the label is absent).
pub(super) fn admits(r: &Requirement, value: Option<&str>) -> bool {
    labels::admits(&r.operator, &r.values, value)
}

/// Whether a `LabelSelector` (a webhook's `namespaceSelector`) selects `labels`.
pub(super) fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    labels::selector_admits(
        sel.match_labels.iter().flatten(),
        sel.match_expressions.iter().flatten().map(|e| {
            (
                e.key.as_str(),
                e.operator.as_str(),
                e.values.as_deref().unwrap_or_default(),
            )
        }),
        labels,
    )
}
