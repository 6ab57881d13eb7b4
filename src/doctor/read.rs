//! One read-only pass over the cluster into a [`ClusterSnapshot`], through [`crate::cluster::kubeapi`]: every
//! list paginated, every kind read concurrently, a missing CRD recorded as such.
//!
//! Nodes, Pods and Namespaces must be readable (otherwise the cluster counts as unreadable: exit 2);
//! anything else that fails (forbidden, say) only makes the checks that need it say they were skipped.

use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaimTemplate, ResourceSlice};
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use super::snapshot::{
    ClusterSnapshot, GpuOperator, NodeClaimInfo, NodeInfo, OverlayInfo, PodInfo, Read, SliceInfo,
    TemplateInfo,
};
use crate::cluster::kubeapi::{self, ApiError, Listed};
use crate::policy_source::PolicySource;
use gpu_slicer_core::dra;
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::nodepool::NodePool;

/// Where the GPU Operator's ConfigMaps are looked for when its ClusterPolicy does not say.
pub const GPU_OPERATOR_NAMESPACE: &str = "gpu-operator";

/// Why doctor could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The cluster could not be reached or read (exit 2).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// `--policy FILE` does not load.
    #[error("--policy {0}")]
    Policy(String),
}

fn read_of<T>(result: Result<Listed<T>, ApiError>, missing: &str) -> Read<Vec<T>> {
    match result {
        Ok(Listed::Found(items)) => Read::Found(items),
        Ok(Listed::Missing) => Read::Missing(missing.to_string()),
        Err(e) => Read::Failed(e.to_string()),
    }
}

async fn list_custom<T>(
    client: &Client,
    resource: ApiResource,
    keep: impl FnMut(DynamicObject) -> Option<T>,
) -> Result<Listed<T>, ApiError> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let what = format!("listing {} {}", resource.api_version, resource.plural);
    kubeapi::list_pages(&api, &what, keep).await
}

fn as_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or_default()
}

/// Reads everything doctor looks at. `policy_file` is `--policy`; without it, the webhook's ConfigMap.
pub async fn read(
    client: &Client,
    policy_file: Option<&Path>,
) -> Result<ClusterSnapshot, ReadError> {
    let source = PolicySource::file_or_configmap(policy_file);
    let file_policy = match &source {
        PolicySource::ConfigMap => None,
        offline => Some(
            offline
                .read_offline()
                .map_err(|e| ReadError::Policy(e.to_string()))?,
        ),
    };
    // Only GPU pods (GPU resources, or gpu-slicer claims) matter to the checks: drop the rest as each
    // page arrives.
    let (pod_api, node_api, ns_api) = (
        Api::<Pod>::all(client.clone()),
        Api::<Node>::all(client.clone()),
        Api::<Namespace>::all(client.clone()),
    );
    let pods = kubeapi::list_pages(&pod_api, "listing pods", |p| {
        Some(PodInfo::from_pod(p))
            .filter(|p| !p.gpu_requests.is_empty() || !p.claim_templates.is_empty())
    });
    let nodes = kubeapi::list_pages(&node_api, "listing nodes", |n| Some(NodeInfo::from_node(n)));
    let namespaces = kubeapi::list_pages(&ns_api, "listing namespaces", |ns| {
        Some((
            ns.metadata.name.unwrap_or_default(),
            ns.metadata.labels.unwrap_or_default(),
        ))
    });
    let pools = list_custom(client, kubeapi::nodepools(), |o| {
        NodePool::from_object(&as_value(o)).ok()
    });
    let claims = list_custom(client, kubeapi::nodeclaims(), |o| {
        Some(NodeClaimInfo::from_value(&as_value(o)))
    });
    let overlays = list_custom(client, kubeapi::nodeoverlays(), |o| {
        Some(OverlayInfo::from_value(&as_value(o)))
    });
    let webhooks = kubeapi::list_all::<MutatingWebhookConfiguration>(client);
    let policy = async {
        match file_policy {
            Some(p) => Ok(p),
            None => crate::policy_source::from_configmap(client).await,
        }
    };
    let gpu_operator = gpu_operator(client);
    let dra = read_dra(client);
    let (
        pods,
        nodes,
        namespaces,
        pools,
        claims,
        overlays,
        webhooks,
        policy,
        gpu_operator,
        (device_classes, resource_slices, claim_templates),
    ) = tokio::join!(
        pods,
        nodes,
        namespaces,
        pools,
        claims,
        overlays,
        webhooks,
        policy,
        gpu_operator,
        dra
    );
    let no_karpenter = "Karpenter is not installed (no karpenter.sh/v1 NodePool CRD)";
    Ok(ClusterSnapshot {
        // Core kinds are always served: a 404 would be a broken API server, read as "none".
        nodes: nodes?.unwrap_or_default(),
        pods: pods?.unwrap_or_default(),
        namespaces: namespaces?.unwrap_or_default().into_iter().collect(),
        node_pools: read_of(pools, no_karpenter),
        node_claims: read_of(
            claims,
            "Karpenter is not installed (no karpenter.sh/v1 NodeClaim CRD)",
        ),
        node_overlays: read_of(
            overlays,
            "the NodeOverlay CRD (karpenter.sh/v1alpha1) is not installed: Karpenter >= v1.13 with the NodeOverlay feature gate has it",
        ),
        webhooks: read_of(webhooks, "admissionregistration.k8s.io/v1 is not served"),
        policy,
        gpu_operator,
        device_classes,
        resource_slices,
        claim_templates,
    })
}

/// Why a resource.k8s.io/v1 list found nothing: the API group version is not served.
const NO_DRA: &str =
    "resource.k8s.io/v1 (Dynamic Resource Allocation, GA in Kubernetes 1.34) is not served";

/// The DRA objects doctor reads: DeviceClass names, ResourceSlices (digested), and the
/// ResourceClaimTemplates whose names gpu-slicer's use (`gpu-slicer-*`; others are dropped as each page
/// arrives).
async fn read_dra(
    client: &Client,
) -> (
    Read<Vec<String>>,
    Read<Vec<SliceInfo>>,
    Read<Vec<TemplateInfo>>,
) {
    let class_api = Api::<DeviceClass>::all(client.clone());
    let slice_api = Api::<ResourceSlice>::all(client.clone());
    let template_api = Api::<ResourceClaimTemplate>::all(client.clone());
    let (classes, slices, templates) = tokio::join!(
        kubeapi::list_pages(&class_api, "listing deviceclasses", |c| c.metadata.name),
        kubeapi::list_pages(&slice_api, "listing resourceslices", |s| {
            Some(SliceInfo::from_slice(s))
        }),
        kubeapi::list_pages(&template_api, "listing resourceclaimtemplates", |t| {
            let name = t.metadata.name.as_deref().unwrap_or_default();
            name.starts_with(dra::PREFIX)
                .then(|| TemplateInfo::from_template(&t))
        }),
    );
    (
        read_of(classes, NO_DRA),
        read_of(slices, NO_DRA),
        read_of(templates, NO_DRA),
    )
}

/// The GPU Operator: its ClusterPolicy and the mig-parted / device plugin ConfigMaps it names.
async fn gpu_operator(client: &Client) -> Read<GpuOperator> {
    let listed = list_custom(client, kubeapi::cluster_policies(), |o| Some(as_value(o))).await;
    let cp = match listed {
        Ok(Listed::Found(items)) => match items.into_iter().next() {
            Some(cp) => cp,
            None => {
                return Read::Missing(
                    "the GPU Operator is not deployed (no ClusterPolicy object)".into(),
                );
            }
        },
        Ok(Listed::Missing) => {
            return Read::Missing(
                "the GPU Operator is not installed (no nvidia.com/v1 ClusterPolicy CRD)".into(),
            );
        }
        Err(e) => return Read::Failed(e.to_string()),
    };
    let text = |p: &str| cp.pointer(p).and_then(Value::as_str).map(String::from);
    let namespace = text("/status/namespace").unwrap_or_else(|| GPU_OPERATOR_NAMESPACE.to_string());
    let mig_name = text("/spec/migManager/config/name");
    let plugin_name = text("/spec/devicePlugin/config/name");
    // The ClusterPolicy itself: its spec.mig.strategy outranks the device plugin configs' own.
    let mut cp_doc = cp.clone();
    cp_doc["apiVersion"] = Value::from("nvidia.com/v1");
    cp_doc["kind"] = Value::from("ClusterPolicy");
    let mut docs = vec![("the cluster".to_string(), cp_doc)];
    let mut device_plugin_known = false;
    for (name, is_plugin) in [(mig_name, false), (plugin_name, true)] {
        let Some(name) = name else { continue };
        match kubeapi::get_namespaced::<ConfigMap>(client, &namespace, &name).await {
            Ok(Some(cm)) => {
                device_plugin_known |= is_plugin;
                docs.push((
                    format!("namespace {namespace}"),
                    serde_json::to_value(cm).unwrap_or_default(),
                ));
            }
            Ok(None) => {}
            Err(e) => return Read::Failed(e.to_string()),
        }
    }
    match GpuOperatorConfigs::from_documents(docs) {
        Ok(configs) => Read::Found(GpuOperator {
            cluster_policy: text("/metadata/name").unwrap_or_default(),
            configs,
            device_plugin_known,
        }),
        Err(e) => Read::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy_source::{POLICY_CONFIGMAP, POLICY_KEY, POLICY_NAMESPACE};

    #[test]
    fn the_policy_configmap_is_where_the_shipped_manifests_put_it() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| -> Value {
            serde_norway::from_str(&std::fs::read_to_string(root.join(p)).unwrap()).unwrap()
        };
        let policy = read("manifests/policy/kustomization.yaml");
        assert_eq!(policy["configMapGenerator"][0]["name"], POLICY_CONFIGMAP);
        assert_eq!(policy["configMapGenerator"][0]["files"][0], POLICY_KEY);
        assert_eq!(
            read("manifests/webhook/base/kustomization.yaml")["namespace"],
            POLICY_NAMESPACE
        );
        assert_eq!(
            read("manifests/gpu-operator/kustomization.yaml")["namespace"],
            GPU_OPERATOR_NAMESPACE
        );
    }
}
