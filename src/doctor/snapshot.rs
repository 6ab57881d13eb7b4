//! What `doctor` read from the cluster, reduced to what the checks look at: one [`ClusterSnapshot`]
//! that the checks take as a plain value (tests build one from JSON; [`super::read`] from the API).
//!
//! Pods and Nodes are digested page by page as they arrive, so 20,000 pods cost a few MiB, not the
//! hundreds of MiB their full objects would.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaimTemplate, ResourceSlice};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use gpu_slicer_core::annotations::EXCLUSIVE_ANNOTATION;
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::nodepool::{NodePool, Requirement};
use gpu_slicer_core::pod::Toleration;
use gpu_slicer_core::quantity;

/// Karpenter sets this label on a node once every requested resource is registered.
pub const INITIALIZED_LABEL: &str = "karpenter.sh/initialized";
/// mig-manager's progress label: `pending`, `success`, `failed`.
pub const MIG_CONFIG_STATE_LABEL: &str = "nvidia.com/mig.config.state";

/// The outcome of reading one kind of object.
#[derive(Debug, Clone)]
pub enum Read<T> {
    /// Read.
    Found(T),
    /// Not installed (a 404 on the list: no CRD), with the sentence saying so.
    Missing(String),
    /// Could not be read (e.g. forbidden), with the error.
    Failed(String),
}

impl<T> Read<T> {
    /// The value when found.
    pub fn found(&self) -> Option<&T> {
        match self {
            Read::Found(t) => Some(t),
            _ => None,
        }
    }

    /// Why it is not there (for "skipped: ..." lines).
    pub fn why_not(&self) -> Option<&str> {
        match self {
            Read::Found(_) => None,
            Read::Missing(why) | Read::Failed(why) => Some(why),
        }
    }
}

/// A Node, as the checks see it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Extended resources in `status.allocatable` (keys with a `/`), as counts.
    pub allocatable: BTreeMap<String, u64>,
    pub created: Option<Timestamp>,
}

impl NodeInfo {
    /// Digests a Node.
    pub fn from_node(node: Node) -> NodeInfo {
        let allocatable = node
            .status
            .and_then(|s| s.allocatable)
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.contains('/'))
            .map(|(k, q)| {
                let n = quantity::parse_count(&q.0).unwrap_or(0);
                (k, n)
            })
            .collect();
        NodeInfo {
            name: node.metadata.name.unwrap_or_default(),
            labels: node.metadata.labels.unwrap_or_default(),
            allocatable,
            created: node.metadata.creation_timestamp.map(|t| t.0),
        }
    }

    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// How many of `resource` the node offers (0 when it does not advertise it).
    pub fn offers(&self, resource: &str) -> u64 {
        self.allocatable.get(resource).copied().unwrap_or(0)
    }

    /// The GPU resources it advertises, for messages: `nvidia.com/gpu x8, ...`, or `no nvidia.com/ resource`.
    pub fn advertised(&self) -> String {
        let list: Vec<String> = self
            .allocatable
            .iter()
            .filter(|(k, n)| k.starts_with("nvidia.com/") && **n > 0)
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        if list.is_empty() {
            "no nvidia.com/ resource".into()
        } else {
            list.join(", ")
        }
    }
}

/// A Pod, as the checks see it.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub phase: String,
    /// `spec.nodeName`: set once scheduled.
    pub node_name: Option<String>,
    /// Carries `gpu-slicer.io/rewritten`.
    pub rewritten: bool,
    /// Carries `gpu-slicer.io/exclusive: "true"`.
    pub opted_out: bool,
    /// `nvidia.com/` resources the pod needs: the sum over containers, or the largest init container's
    /// (limits, else requests).
    pub gpu_requests: BTreeMap<String, u64>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// The controlling owner: kind and name.
    pub owner: Option<(String, String)>,
    /// Has a `deletionTimestamp`: its GPUs are being freed.
    pub deleting: bool,
    /// The gpu-slicer ResourceClaimTemplates its pod-level claims name (`gpu-slicer-...`).
    pub claim_templates: Vec<String>,
}

impl PodInfo {
    /// Digests a Pod.
    pub fn from_pod(pod: Pod) -> PodInfo {
        let meta = pod.metadata;
        let annotations = meta.annotations.unwrap_or_default();
        let spec = pod.spec.unwrap_or_default();
        let of = |c: &k8s_openapi::api::core::v1::Container| -> BTreeMap<String, u64> {
            let res = c.resources.as_ref();
            let limits = res.and_then(|r| r.limits.as_ref());
            let requests = res.and_then(|r| r.requests.as_ref());
            let mut out = BTreeMap::new();
            for map in [requests, limits].into_iter().flatten() {
                for (k, q) in map {
                    if k.starts_with("nvidia.com/") {
                        // Limits win over requests for extended resources (they must be equal anyway).
                        out.insert(k.clone(), quantity::parse_count(&q.0).unwrap_or(0));
                    }
                }
            }
            out
        };
        let mut gpu_requests: BTreeMap<String, u64> = BTreeMap::new();
        for c in &spec.containers {
            for (k, n) in of(c) {
                *gpu_requests.entry(k).or_default() += n;
            }
        }
        for c in spec.init_containers.iter().flatten() {
            for (k, n) in of(c) {
                let e = gpu_requests.entry(k).or_default();
                *e = (*e).max(n);
            }
        }
        gpu_requests.retain(|_, n| *n > 0);
        let tolerations = spec
            .tolerations
            .unwrap_or_default()
            .into_iter()
            .map(|t| Toleration {
                key: t.key,
                operator: t.operator,
                value: t.value,
                effect: t.effect,
                toleration_seconds: t.toleration_seconds,
            })
            .collect();
        let owner = meta
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.kind, o.name));
        let claim_templates = spec
            .resource_claims
            .iter()
            .flatten()
            .filter_map(|c| c.resource_claim_template_name.clone())
            .filter(|t| t.starts_with(gpu_slicer_core::dra::PREFIX))
            .collect();
        PodInfo {
            deleting: meta.deletion_timestamp.is_some(),
            claim_templates,
            namespace: meta.namespace.unwrap_or_default(),
            name: meta.name.unwrap_or_default(),
            phase: pod.status.and_then(|s| s.phase).unwrap_or_default(),
            node_name: spec.node_name.filter(|n| !n.is_empty()),
            rewritten: annotations.contains_key(gpu_slicer_core::annotations::REWRITTEN_ANNOTATION),
            opted_out: annotations
                .get(EXCLUSIVE_ANNOTATION)
                .is_some_and(|v| v == "true"),
            gpu_requests,
            node_selector: spec.node_selector.unwrap_or_default(),
            tolerations,
            owner,
        }
    }

    /// `Pod/namespace/name`.
    pub fn object(&self) -> String {
        format!("Pod/{}/{}", self.namespace, self.name)
    }

    /// Pods of one controller share their problems: `ReplicaSet ns/name`, or the pod itself.
    pub fn group(&self) -> String {
        match &self.owner {
            Some((kind, name)) => format!("{kind} {}/{name}", self.namespace),
            None => format!("Pod {}/{}", self.namespace, self.name),
        }
    }
}

/// A status condition (metav1.Condition, as Karpenter writes them).
#[derive(Debug, Clone, Default)]
pub struct Condition {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition: Option<Timestamp>,
}

fn conditions_of(obj: &Value) -> Vec<Condition> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Condition {
                type_: s("type"),
                status: s("status"),
                reason: s("reason"),
                message: s("message"),
                last_transition: c
                    .get("lastTransitionTime")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse().ok()),
            }
        })
        .collect()
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect()
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A Karpenter NodeClaim (`karpenter.sh/v1`).
#[derive(Debug, Clone, Default)]
pub struct NodeClaimInfo {
    pub name: String,
    /// Its `karpenter.sh/nodepool` label.
    pub node_pool: Option<String>,
    /// Its `node.kubernetes.io/instance-type` label.
    pub instance_type: Option<String>,
    /// `status.nodeName`: the Node it registered as.
    pub node_name: Option<String>,
    pub conditions: Vec<Condition>,
    pub created: Option<Timestamp>,
}

impl NodeClaimInfo {
    /// Reads a NodeClaim object (JSON).
    pub fn from_value(obj: &Value) -> NodeClaimInfo {
        let labels = labels_of(obj);
        NodeClaimInfo {
            name: name_of(obj),
            node_pool: labels
                .get(gpu_slicer_core::nodepool::NODEPOOL_LABEL)
                .cloned(),
            instance_type: labels
                .get(gpu_slicer_core::nodepool::INSTANCE_TYPE_LABEL)
                .cloned(),
            node_name: obj
                .pointer("/status/nodeName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from),
            conditions: conditions_of(obj),
            created: obj
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse().ok()),
        }
    }

    /// The condition of this type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// A Karpenter NodeOverlay (`karpenter.sh/v1alpha1`).
#[derive(Debug, Clone, Default)]
pub struct OverlayInfo {
    pub name: String,
    /// `spec.weight`; Karpenter treats an unset weight as 0.
    pub weight: i64,
    pub requirements: Vec<Requirement>,
    /// `spec.capacity` as counts.
    pub capacity: BTreeMap<String, u64>,
}

impl OverlayInfo {
    /// Reads a NodeOverlay object (JSON).
    pub fn from_value(obj: &Value) -> OverlayInfo {
        let spec = &obj["spec"];
        OverlayInfo {
            name: name_of(obj),
            weight: spec["weight"].as_i64().unwrap_or(0),
            requirements: serde_json::from_value(spec["requirements"].clone()).unwrap_or_default(),
            capacity: spec["capacity"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| {
                    let n = match v {
                        Value::String(s) => quantity::parse_count(s)?,
                        Value::Number(n) => n.as_u64()?,
                        _ => return None,
                    };
                    Some((k.clone(), n))
                })
                .collect(),
        }
    }
}

/// A ResourceSlice (resource.k8s.io/v1), as the checks see it: a DRA driver's kubelet plugin publishes
/// one or more per node it runs on (`spec.nodeName`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceInfo {
    pub name: String,
    /// `spec.driver`, e.g. `gpu.nvidia.com`.
    pub driver: String,
    /// `spec.nodeName`: set for node-local devices (what a kubelet plugin publishes).
    pub node_name: Option<String>,
    /// How many devices the slice lists.
    pub devices: usize,
}

impl SliceInfo {
    /// Digests a ResourceSlice.
    pub fn from_slice(slice: ResourceSlice) -> SliceInfo {
        SliceInfo {
            name: slice.metadata.name.unwrap_or_default(),
            driver: slice.spec.driver,
            node_name: slice.spec.node_name.filter(|n| !n.is_empty()),
            devices: slice.spec.devices.map_or(0, |d| d.len()),
        }
    }
}

/// A ResourceClaimTemplate (resource.k8s.io/v1), as the checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateInfo {
    pub namespace: String,
    pub name: String,
    /// gpu-slicer's own: its managed-by label and owner annotation
    /// ([`crate::controller::is_ours`]).
    pub ours: bool,
    /// Its `app.kubernetes.io/managed-by` label, for messages (who else may own it).
    pub managed_by: Option<String>,
}

impl TemplateInfo {
    /// Digests a ResourceClaimTemplate.
    pub fn from_template(t: &ResourceClaimTemplate) -> TemplateInfo {
        TemplateInfo {
            namespace: t.metadata.namespace.clone().unwrap_or_default(),
            name: t.metadata.name.clone().unwrap_or_default(),
            ours: crate::controller::is_ours(t),
            managed_by: t
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(gpu_slicer_core::dra::MANAGED_BY.0))
                .cloned(),
        }
    }

    /// `ResourceClaimTemplate/namespace/name`.
    pub fn object(&self) -> String {
        format!("ResourceClaimTemplate/{}/{}", self.namespace, self.name)
    }
}

use crate::policy_source::{LoadedPolicy, NoPolicy};

/// The GPU Operator as read from its ClusterPolicy and the ConfigMaps it names.
#[derive(Debug, Clone)]
pub struct GpuOperator {
    /// The ClusterPolicy's name.
    pub cluster_policy: String,
    /// mig-parted and device plugin configs (the defaults where the ClusterPolicy names none), and the
    /// ClusterPolicy's `spec.mig.strategy`.
    pub configs: GpuOperatorConfigs,
    /// Whether device plugin configs were read (a ClusterPolicy without `devicePlugin.config`
    /// has none: every node runs the plugin's built-in default).
    pub device_plugin_known: bool,
}

/// Everything doctor read: the checks' only input besides the clock.
#[derive(Debug, Clone)]
pub struct ClusterSnapshot {
    pub nodes: Vec<NodeInfo>,
    pub pods: Vec<PodInfo>,
    /// Namespace name -> labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub node_pools: Read<Vec<NodePool>>,
    pub node_claims: Read<Vec<NodeClaimInfo>>,
    pub node_overlays: Read<Vec<OverlayInfo>>,
    pub webhooks: Read<Vec<MutatingWebhookConfiguration>>,
    /// The policy, or why there is none.
    pub policy: Result<LoadedPolicy, NoPolicy>,
    pub gpu_operator: Read<GpuOperator>,
    /// DeviceClass names (resource.k8s.io/v1), for `backend: dra` rules.
    pub device_classes: Read<Vec<String>>,
    /// ResourceSlices (resource.k8s.io/v1): which nodes a DRA driver's kubelet plugin serves.
    pub resource_slices: Read<Vec<SliceInfo>>,
    /// ResourceClaimTemplates (resource.k8s.io/v1) whose names gpu-slicer's templates use (`gpu-slicer-*`).
    pub claim_templates: Read<Vec<TemplateInfo>>,
}

impl Default for ClusterSnapshot {
    /// A cluster with nothing in it, Karpenter and the GPU Operator installed but empty, no webhook.
    fn default() -> Self {
        ClusterSnapshot {
            nodes: Vec::new(),
            pods: Vec::new(),
            namespaces: BTreeMap::new(),
            node_pools: Read::Found(Vec::new()),
            node_claims: Read::Found(Vec::new()),
            node_overlays: Read::Found(Vec::new()),
            webhooks: Read::Found(Vec::new()),
            policy: Err(NoPolicy::Absent("no policy".into())),
            gpu_operator: Read::Missing("no GPU Operator".into()),
            device_classes: Read::Missing("resource.k8s.io/v1 is not served".into()),
            resource_slices: Read::Missing("resource.k8s.io/v1 is not served".into()),
            claim_templates: Read::Missing("resource.k8s.io/v1 is not served".into()),
        }
    }
}

impl ClusterSnapshot {
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A NodePool by name (none when Karpenter is absent).
    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.found()?.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_needs_its_containers_sum_or_its_largest_init_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "annotations": {"gpu-slicer.io/exclusive": "true"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u", "controller": true}]},
            "spec": {
                "initContainers": [{"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "3"}}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2"}, "requests": {"nvidia.com/gpu": "1"}}},
                    {"name": "b", "resources": {"requests": {"nvidia.com/mig-1g.10gb": "2"}}},
                    {"name": "c"}]},
            "status": {"phase": "Pending"}
        }))
        .unwrap();
        let info = PodInfo::from_pod(pod);
        assert_eq!(
            info.gpu_requests,
            BTreeMap::from([
                ("nvidia.com/gpu".into(), 3),
                ("nvidia.com/mig-1g.10gb".into(), 2)
            ])
        );
        assert!(info.opted_out && !info.rewritten);
        assert_eq!(info.group(), "Job ns/train");
        assert_eq!(info.object(), "Pod/ns/p");
        assert_eq!(info.node_name, None);
    }

    #[test]
    fn overlay_capacity_and_weight_read_as_karpenter_does() {
        let o = OverlayInfo::from_value(&json!({"metadata": {"name": "o"}, "spec": {
            "requirements": [{"key": "karpenter.sh/nodepool", "operator": "In", "values": ["p"]}],
            "capacity": {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "56", "smarter-devices/fuse": "1k"}}}));
        // No weight: 0 (the CRD's default); a quantity that is not a count is left out.
        assert_eq!(o.weight, 0);
        assert_eq!(o.capacity.get("nvidia.com/mig-1g.10gb"), Some(&56));
        assert_eq!(o.capacity.get("nvidia.com/gpu"), Some(&0));
        assert_eq!(o.requirements[0].values, ["p"]);
    }
}
