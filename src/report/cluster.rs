//! `policy report --from-cluster`: the workloads, namespaces and NodePools of a live cluster, read once
//! (every list paginated, read-only) through [`crate::cluster::kubeapi`], as the documents [`super::read`] reads
//! from manifests. Objects made by another workload (a Deployment's ReplicaSets, a CronJob's Jobs,
//! any controller's Pods) are dropped as each page arrives: only their owner is reported, and a
//! cluster's 20,000 pods never sit in memory at once.

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::batch::v1 as batch;
use k8s_openapi::api::core::v1 as core;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::Value;

use super::read::Document;
use crate::cluster::kubeapi::{self, ApiError, Listed};
use gpu_slicer_core::nodepool::{NodePool, NodePoolIndex};

/// Where cluster objects say they come from, in rows and skipped lines.
pub const ORIGIN: &str = "cluster";

/// What the report needs from a cluster.
#[derive(Debug, Default)]
pub struct ClusterRead {
    /// Workloads and Namespaces, as documents with `kind` set.
    pub documents: Vec<Document>,
    /// The NodePools; `None` without Karpenter's NodePool CRD.
    pub pools: Option<NodePoolIndex>,
}

/// The object as JSON with its `kind` (list items come without it); `None` for one that another
/// workload controls.
fn keep<K>(obj: K) -> Option<Document>
where
    K: k8s_openapi::Resource + serde::Serialize,
{
    let mut v = serde_json::to_value(obj).ok()?;
    let owned = v
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == Value::Bool(true)));
    let kind = K::KIND;
    // Deployments, StatefulSets, DaemonSets and CronJobs are reported even when an operator owns
    // them: their templates are what the webhook will see.
    if owned && matches!(kind, "ReplicaSet" | "Job" | "Pod") {
        return None;
    }
    v["kind"] = Value::from(kind);
    Some((ORIGIN.to_string(), v))
}

async fn list<K>(client: &Client, out: &mut Vec<Document>) -> Result<(), ApiError>
where
    K: k8s_openapi::Resource
        + kube::Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Clone
        + std::fmt::Debug,
{
    let what = format!("listing {}", K::plural(&()));
    let api = Api::<K>::all(client.clone());
    // Built-in kinds are always served: a 404 would be a broken API server, read as "none".
    out.extend(
        kubeapi::list_pages(&api, &what, keep::<K>)
            .await?
            .unwrap_or_default(),
    );
    Ok(())
}

/// Reads the workloads of every kind the report knows, the Namespaces (their labels) and the
/// NodePools.
pub async fn read(client: &Client) -> Result<ClusterRead, ApiError> {
    let mut documents = Vec::new();
    list::<core::Namespace>(client, &mut documents).await?;
    list::<apps::Deployment>(client, &mut documents).await?;
    list::<apps::StatefulSet>(client, &mut documents).await?;
    list::<apps::DaemonSet>(client, &mut documents).await?;
    list::<apps::ReplicaSet>(client, &mut documents).await?;
    list::<batch::CronJob>(client, &mut documents).await?;
    list::<batch::Job>(client, &mut documents).await?;
    list::<core::Pod>(client, &mut documents).await?;
    let resource = kubeapi::nodepools();
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let what = format!("listing {} {}", resource.api_version, resource.plural);
    let pools = kubeapi::list_pages(&api, &what, |o| {
        NodePool::from_object(&serde_json::to_value(o).unwrap_or_default()).ok()
    })
    .await?;
    Ok(ClusterRead {
        documents,
        pools: match pools {
            Listed::Found(pools) => Some(NodePoolIndex::new(pools)),
            Listed::Missing => None,
        },
    })
}
