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
use crate::cluster::workloads;
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

/// Whether the report lists this object: not one another workload controls (only their owner is
/// reported). Deployments, StatefulSets, DaemonSets and CronJobs are reported even when an operator
/// owns them: their templates are what the webhook will see.
fn reported(object: &Value) -> bool {
    let kind = object["kind"].as_str().unwrap_or_default();
    !(matches!(kind, "ReplicaSet" | "Job" | "Pod") && workloads::controlled(object))
}

/// Reads the workloads of every kind the report knows, the Namespaces (their labels) and the
/// NodePools.
pub async fn read(client: &Client) -> Result<ClusterRead, ApiError> {
    let lists = [
        workloads::list::<core::Namespace>(client, reported).await?,
        workloads::list::<apps::Deployment>(client, reported).await?,
        workloads::list::<apps::StatefulSet>(client, reported).await?,
        workloads::list::<apps::DaemonSet>(client, reported).await?,
        workloads::list::<apps::ReplicaSet>(client, reported).await?,
        workloads::list::<batch::CronJob>(client, reported).await?,
        workloads::list::<batch::Job>(client, reported).await?,
        workloads::list::<core::Pod>(client, reported).await?,
    ];
    let documents = lists
        .into_iter()
        .flatten()
        .map(|v| (ORIGIN.to_string(), v))
        .collect();
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
