//! Routing: the node selector and tolerations that send the pod to its rule's Karpenter NodePool.

use json_patch::PatchOperation;
use serde_json::Value;

use crate::nodepool::{NODEPOOL_LABEL, NodePool};
use crate::pod::Toleration;

use super::Decider;
use super::rename::add;

impl Decider<'_> {
    /// Node selectors and tolerations that send the pod to the rule's NodePool.
    pub(super) fn route(
        &self,
        pool: Option<&NodePool>,
        patch: &mut Vec<PatchOperation>,
    ) -> Result<(), String> {
        let rule = self.rule;
        let mut wanted: Vec<(&str, &str, SelectorSource)> = Vec::new();
        if let Some(name) = rule.node_pool.as_deref() {
            wanted.push((NODEPOOL_LABEL, name, SelectorSource::RulePool(name)));
        }
        if let Some(pool) = pool {
            for (k, v) in pool.routing_labels() {
                wanted.push((k, v, SelectorSource::PoolTemplate(&pool.name)));
            }
        }
        for (k, v) in &rule.node_selector {
            wanted.push((k, v, SelectorSource::RuleSelector(&rule.name)));
        }
        let mut selector: Vec<(&str, &str)> = Vec::new();
        for (k, v, source) in &wanted {
            match selector.iter().find(|(sk, _)| sk == k) {
                Some((_, sv)) if sv == v => {}
                Some((_, sv)) => {
                    let first = wanted.iter().find(|(wk, _, _)| wk == k).map(|w| &w.2);
                    return Err(format!(
                        "policy inconsistency in rule {}: {} says {k}={sv} but {source} says {k}={v}; tell the platform team",
                        rule.name,
                        first.unwrap_or(source)
                    ));
                }
                None => selector.push((k, v)),
            }
        }
        let existing = self.pod.spec.node_selector.as_ref();
        let mut missing = Vec::new();
        for (k, v) in selector {
            match existing.and_then(|m| m.get(k)) {
                Some(have) if have == v => {}
                Some(have) => {
                    return Err(format!(
                        "the pod's nodeSelector {k}={have} conflicts with rule {}, which sends GPU pods in namespace {:?} to {k}={v}; remove that selector",
                        rule.name, self.ns.name
                    ));
                }
                None => missing.push((k, v)),
            }
        }
        if existing.is_none() && !missing.is_empty() {
            let map: serde_json::Map<String, Value> = missing
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            patch.push(add(&["spec", "nodeSelector"], Value::Object(map)));
        } else {
            for (k, v) in missing {
                patch.push(add(
                    &["spec", "nodeSelector", k],
                    Value::String(v.to_string()),
                ));
            }
        }

        let needs = rule.tolerations.iter().cloned().chain(
            pool.into_iter()
                .flat_map(|p| p.taints.iter().map(|t| t.toleration())),
        );
        let existing: &[Toleration] = self.pod.spec.tolerations.as_deref().unwrap_or(&[]);
        let mut missing: Vec<Toleration> = Vec::new();
        for need in needs {
            if !existing
                .iter()
                .chain(missing.iter())
                .any(|t| t.covers(&need))
            {
                missing.push(need);
            }
        }
        if self.pod.spec.tolerations.is_none() && !missing.is_empty() {
            let list = missing
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect();
            patch.push(add(&["spec", "tolerations"], Value::Array(list)));
        } else {
            for t in &missing {
                patch.push(add(
                    &["spec", "tolerations", "-"],
                    serde_json::to_value(t).unwrap_or(Value::Null),
                ));
            }
        }
        Ok(())
    }
}

/// Where a node selector the pod needs comes from; named only when two of them disagree.
pub(super) enum SelectorSource<'a> {
    RulePool(&'a str),
    PoolTemplate(&'a str),
    RuleSelector(&'a str),
}

impl std::fmt::Display for SelectorSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectorSource::RulePool(name) => write!(f, "nodePool {name}"),
            SelectorSource::PoolTemplate(pool) => write!(f, "NodePool {pool} template label"),
            SelectorSource::RuleSelector(rule) => write!(f, "rule {rule} nodeSelector"),
        }
    }
}
