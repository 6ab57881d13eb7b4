//! The one workload lister: every object of a workload kind, cluster-wide, read-only and paginated
//! through [`crate::cluster::kubeapi`], as JSON with `kind` set (list items come without it) and
//! filtered as each page arrives, so a cluster's 20,000 pods never sit in memory at once. `policy
//! report --from-cluster` and `plan --from-cluster` read their workloads through it.

use kube::Client;
use kube::api::Api;
use serde_json::Value;

use crate::cluster::kubeapi::{self, ApiError};

/// Every `K` in the cluster as JSON with its `kind`, those `keep` accepts.
pub async fn list<K>(
    client: &Client,
    mut keep: impl FnMut(&Value) -> bool,
) -> Result<Vec<Value>, ApiError>
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
    let listed = kubeapi::list_pages(&api, &what, |obj| {
        let mut v = serde_json::to_value(obj).ok()?;
        v["kind"] = Value::from(<K as k8s_openapi::Resource>::KIND);
        keep(&v).then_some(v)
    })
    .await?;
    // Built-in kinds are always served: a 404 would be a broken API server, read as "none".
    Ok(listed.unwrap_or_default())
}

/// Whether another object controls this one (an owner reference with `controller: true`): a
/// Deployment's ReplicaSets, a CronJob's Jobs, any controller's Pods.
pub fn controlled(object: &Value) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == Value::Bool(true)))
}
