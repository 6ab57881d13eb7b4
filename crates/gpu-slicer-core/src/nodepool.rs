//! Karpenter NodePools (`karpenter.sh/v1`) as routing facts: the labels that select a slicing layout and
//! the taints a pod must tolerate. One index, fed by `--nodepools DIR` or by the cluster watch.
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::pod`], [`crate::policy`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pod::Toleration;

/// NodePool template labels that select the GPU layout; the webhook copies them into node selectors.
/// (The GPU Operator's mig-manager reads `nvidia.com/mig.config`; the device plugin reads
/// `nvidia.com/device-plugin.config`.)
pub const ROUTING_LABELS: &[&str] = &["nvidia.com/mig.config", "nvidia.com/device-plugin.config"];
pub const NODEPOOL_LABEL: &str = "karpenter.sh/nodepool";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

#[derive(Debug, thiserror::Error)]
pub enum NodePoolError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
}

/// A node taint (core/v1 Taint).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    pub effect: String,
}

impl Taint {
    /// The toleration a pod needs for this taint.
    pub fn toleration(&self) -> Toleration {
        let value = self.value.clone().filter(|v| !v.is_empty());
        Toleration {
            key: Some(self.key.clone()),
            operator: Some(if value.is_some() { "Equal" } else { "Exists" }.to_string()),
            value,
            effect: Some(self.effect.clone()),
            toleration_seconds: None,
        }
    }
}

/// A NodeSelectorRequirement of a NodePool.
#[derive(Debug, Clone, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

/// What gpu-slicer knows of one NodePool.
#[derive(Debug, Clone)]
pub struct NodePool {
    pub name: String,
    /// `spec.template.metadata.labels`.
    pub template_labels: BTreeMap<String, String>,
    /// `spec.template.spec.taints` (not `startupTaints`: pods need not tolerate those).
    pub taints: Vec<Taint>,
    /// `spec.template.spec.requirements`.
    pub requirements: Vec<Requirement>,
    /// `spec.replicas`: a static NodePool (Karpenter's `StaticCapacity`) keeps this many nodes.
    pub replicas: Option<i64>,
    /// `spec.template.spec.nodeClassRef.name`: its EC2NodeClass.
    pub node_class: Option<String>,
    /// The file it was read from, for messages.
    pub source: Option<String>,
}

impl NodePool {
    /// The template labels the webhook routes on (a subset of [`ROUTING_LABELS`]).
    pub fn routing_labels(&self) -> impl Iterator<Item = (&str, &str)> {
        ROUTING_LABELS
            .iter()
            .filter_map(|k| self.template_labels.get(*k).map(|v| (*k, v.as_str())))
    }

    /// Instance types the NodePool may launch, where its requirements pin them with `In`.
    pub fn instance_types(&self) -> Option<Vec<&str>> {
        self.requirements
            .iter()
            .find(|r| r.key == INSTANCE_TYPE_LABEL && r.operator == "In")
            .map(|r| r.values.iter().map(String::as_str).collect())
    }

    /// Reads a NodePool object (JSON or YAML already parsed); `None` if it is not a `karpenter.sh/v1`
    /// NodePool.
    pub fn from_value(value: &serde_json::Value) -> Result<Option<NodePool>, String> {
        if value.get("apiVersion").and_then(|v| v.as_str()) != Some("karpenter.sh/v1")
            || value.get("kind").and_then(|v| v.as_str()) != Some("NodePool")
        {
            return Ok(None);
        }
        NodePool::from_object(value).map(Some)
    }

    /// Reads a NodePool object known to be one (items of a watch may lack `apiVersion` and `kind`).
    pub fn from_object(value: &serde_json::Value) -> Result<NodePool, String> {
        let raw: RawNodePool = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        if raw.metadata.name.is_empty() {
            return Err("a NodePool without metadata.name".into());
        }
        let template = raw.spec.template;
        Ok(NodePool {
            name: raw.metadata.name,
            template_labels: template.metadata.labels,
            taints: template.spec.taints,
            requirements: template.spec.requirements,
            replicas: raw.spec.replicas,
            node_class: template.spec.node_class_ref.map(|r| r.name),
            source: None,
        })
    }
}

#[derive(Deserialize)]
struct RawNodePool {
    metadata: RawMeta,
    #[serde(default)]
    spec: RawSpec,
}
#[derive(Deserialize, Default)]
struct RawMeta {
    #[serde(default)]
    name: String,
}
#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(default)]
    template: RawTemplate,
    #[serde(default)]
    replicas: Option<i64>,
}
#[derive(Deserialize, Default)]
struct RawTemplate {
    #[serde(default)]
    metadata: RawTemplateMeta,
    #[serde(default)]
    spec: RawTemplateSpec,
}
#[derive(Deserialize, Default)]
struct RawTemplateMeta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}
#[derive(Deserialize, Default)]
struct RawTemplateSpec {
    #[serde(default)]
    taints: Vec<Taint>,
    #[serde(default)]
    requirements: Vec<Requirement>,
    #[serde(default, rename = "nodeClassRef")]
    node_class_ref: Option<RawNodeClassRef>,
}
#[derive(Deserialize)]
struct RawNodeClassRef {
    #[serde(default)]
    name: String,
}

/// NodePools by name.
#[derive(Debug, Clone, Default)]
pub struct NodePoolIndex {
    pools: BTreeMap<String, NodePool>,
}

impl NodePoolIndex {
    pub fn new(pools: impl IntoIterator<Item = NodePool>) -> NodePoolIndex {
        NodePoolIndex {
            pools: pools.into_iter().map(|p| (p.name.clone(), p)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&NodePool> {
        self.pools.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodePool> {
        self.pools.values()
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    pub fn insert(&mut self, pool: NodePool) {
        self.pools.insert(pool.name.clone(), pool);
    }

    pub fn remove(&mut self, name: &str) {
        self.pools.remove(name);
    }

    /// Every NodePool among `(origin, object)` pairs (the documents of a directory's YAML files,
    /// `input::nodepools`); other kinds are skipped.
    pub fn from_documents(
        docs: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<NodePoolIndex, NodePoolError> {
        let mut index = NodePoolIndex::default();
        for (path, doc) in docs {
            if let Some(mut pool) =
                NodePool::from_value(&doc).map_err(|message| NodePoolError::Load {
                    path: path.clone(),
                    message,
                })?
            {
                pool.source = Some(path);
                index.insert(pool);
            }
        }
        Ok(index)
    }
}

// ---- What a rule's NodePool holds. ----

/// The GPU models of the rule's NodePool when its instance types are known, else `None`.
pub fn pool_gpus(
    rule: &crate::policy::Rule,
    pools: &NodePoolIndex,
) -> Option<Vec<&'static crate::catalog::GpuModel>> {
    let gpus: Vec<_> = rule
        .node_pool
        .as_deref()
        .and_then(|p| pools.get(p))
        .and_then(|p| p.instance_types())?
        .iter()
        .filter_map(|t| crate::catalog::instance_type(t))
        .map(|t| t.gpu)
        .collect();
    (!gpus.is_empty()).then_some(gpus)
}

/// Memory of a MIG profile in MiB: on the GPUs of the rule's NodePool when its instance types are known,
/// else the least any catalogued GPU gives that profile (what the pod can count on anywhere).
pub fn profile_memory_mib(
    rule: &crate::policy::Rule,
    pools: &NodePoolIndex,
    profile: &str,
) -> Option<u64> {
    match pool_gpus(rule, pools) {
        Some(gpus) => gpus
            .iter()
            .filter_map(|g| g.mig_profile(profile))
            .map(|p| p.memory_mib)
            .min(),
        None => crate::catalog::mig_profile_min_memory_mib(profile),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_captured_nodepool_list() {
        let list: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/data/apiserver/nodepools-list.json"
        ))
        .unwrap();
        let pools: Vec<NodePool> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| NodePool::from_value(v).unwrap())
            .collect();
        let index = NodePoolIndex::new(pools);
        let pool = index.get("gpu-h100-mig").unwrap();
        assert_eq!(
            pool.routing_labels().collect::<Vec<_>>(),
            vec![("nvidia.com/mig.config", "all-1g.10gb")]
        );
        assert_eq!(pool.instance_types(), Some(vec!["p5.48xlarge"]));
        assert_eq!(
            pool.taints[0].toleration().operator.as_deref(),
            Some("Exists")
        );
    }
}
