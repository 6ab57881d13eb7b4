//! Label selectors, matched the one way Kubernetes does (k8s.io/apimachinery/pkg/labels): a rule's
//! `namespaceSelector`, a NodePool's requirements seen by doctor, a workload's selector. Also the
//! label every namespace carries with its own name.
//!
//! Imports: nothing of this crate (the lowest layer).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The label the API server sets on every namespace: its own name (`kubernetes.io/metadata.name`;
/// NamespaceDefaultLabelName, GA in 1.22).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels of a namespace known only by name: its name label, which every namespace has.
pub fn name_label(namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string())])
}

/// A Kubernetes LabelSelector, strictly parsed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl SelectorOperator {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorOperator::In => "In",
            SelectorOperator::NotIn => "NotIn",
            SelectorOperator::Exists => "Exists",
            SelectorOperator::DoesNotExist => "DoesNotExist",
        }
    }
}

impl LabelSelector {
    /// Kubernetes label selector semantics (k8s.io/apimachinery/pkg/labels): every term must hold.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        selector_admits(
            &self.match_labels,
            self.match_expressions
                .iter()
                .map(|e| (e.key.as_str(), e.operator.as_str(), e.values.as_slice())),
            labels,
        )
    }
}

/// A selector's `matchLabels` and `matchExpressions` (`(key, operator, values)`) against `labels`:
/// every term must hold. Also what doctor matches k8s-openapi's selectors with.
pub fn selector_admits<'a>(
    match_labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    requirements: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match_labels
        .into_iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && requirements.into_iter().all(|(key, operator, values)| {
            admits(operator, values, labels.get(key).map(String::as_str))
        })
}

/// One requirement against the value of its key (`None`: the label is absent), as
/// `labels.Requirement.Matches`: `In`, `NotIn`, `Exists`, `DoesNotExist`, and node selectors'
/// `Gt` / `Lt` (integers; anything else fails them). An unknown operator admits nothing.
pub fn admits(operator: &str, values: &[String], value: Option<&str>) -> bool {
    let num = |s: &str| s.parse::<i64>().ok();
    let first = || values.first().and_then(|x| num(x));
    match operator {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((value.and_then(num), first()), (Some(v), Some(x)) if v > x),
        "Lt" => matches!((value.and_then(num), first()), (Some(v), Some(x)) if v < x),
        _ => false,
    }
}
