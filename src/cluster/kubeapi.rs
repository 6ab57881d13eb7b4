//! Reading the Kubernetes API, in one place: the client (`--kubeconfig`, `KUBECONFIG`, in-cluster),
//! paginated lists of typed and dynamic objects, and a missing CRD as an outcome rather than an error.
//!
//! What runs on it: the webhook's reflectors ([`crate::cluster`]), `plan --from-cluster`
//! ([`crate::planner::cluster`]) and `doctor` ([`crate::doctor`]). Like kube-runtime on kube-client, this
//! layer knows nothing of what the callers do with the objects.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client, Config};
use serde::de::DeserializeOwned;

/// Items per list request. The API server's own cap is not documented as fixed; kubectl asks for 500,
/// and so do we: big enough that 20,000 pods are 40 requests, small enough to bound each response.
pub const PAGE_SIZE: u32 = 500;

/// How long a connection to the API server may take to open (kube's default is 30 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure to build a client or to read from the API server, naming what was being read.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `--kubeconfig FILE` could not be read or used.
    #[error("--kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    /// Neither `KUBECONFIG`, `~/.kube/config` nor the in-cluster service account gave a configuration.
    #[error("no cluster configuration (give --kubeconfig, set KUBECONFIG, or run in a pod): {0}")]
    NoConfig(String),
    /// Inside a pod, the in-cluster configuration is unusable.
    #[error("in-cluster config: {0}")]
    InCluster(String),
    /// The HTTP client could not be built from the configuration.
    #[error("API client: {0}")]
    Client(String),
    /// A list or get failed (other than a missing CRD, which is [`Listed::Missing`]).
    #[error("{what}: {source}")]
    Read {
        /// What was read, e.g. `listing nodes` or `listing karpenter.sh/v1 nodeclaims`.
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl ApiError {
    /// The HTTP status the API server answered with, when it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            ApiError::Read {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    /// Whether the API server refused for lack of permission (401 or 403): the cluster was reached.
    pub fn is_denied(&self) -> bool {
        matches!(self.status_code(), Some(401 | 403))
    }
}

/// The client configuration a kubeconfig file names (its current context).
pub async fn kubeconfig_file(path: &Path) -> Result<Config, ApiError> {
    let failed = |message: String| ApiError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|e| failed(e.to_string()))?;
    Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))
}

/// The configuration one-shot commands use (`plan --from-cluster`, `doctor`): `--kubeconfig FILE`,
/// else what kubectl would use (`KUBECONFIG`, `~/.kube/config`), else the in-cluster service account.
pub async fn infer_config(kubeconfig: Option<&Path>) -> Result<Config, ApiError> {
    match kubeconfig {
        Some(path) => kubeconfig_file(path).await,
        None => Config::infer()
            .await
            .map_err(|e| ApiError::NoConfig(e.to_string())),
    }
}

/// A client for one-shot commands (see [`infer_config`]), with a bounded connect timeout so that an
/// unreachable cluster is reported in seconds.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ApiError> {
    let mut config = infer_config(kubeconfig).await?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Client::try_from(config).map_err(|e| ApiError::Client(e.to_string()))
}

/// The webhook's client: `--kubeconfig FILE`, else the in-cluster configuration inside a pod; `None`
/// outside a pod without `--kubeconfig` (the webhook then runs offline rather than reach for a
/// developer's kubeconfig).
pub async fn webhook_client(kubeconfig: Option<&Path>) -> Result<Option<Client>, ApiError> {
    let config = if let Some(path) = kubeconfig {
        kubeconfig_file(path).await?
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Config::incluster().map_err(|e| ApiError::InCluster(e.to_string()))?
    } else {
        return Ok(None);
    };
    Client::try_from(config)
        .map(Some)
        .map_err(|e| ApiError::Client(e.to_string()))
}

/// Karpenter's NodePool, `karpenter.sh/v1`.
pub fn nodepools() -> ApiResource {
    resource("karpenter.sh", "v1", "NodePool", "nodepools")
}

/// Karpenter's NodeClaim, `karpenter.sh/v1`.
pub fn nodeclaims() -> ApiResource {
    resource("karpenter.sh", "v1", "NodeClaim", "nodeclaims")
}

/// Karpenter's NodeOverlay, `karpenter.sh/v1alpha1` (feature gate `NodeOverlay`).
pub fn nodeoverlays() -> ApiResource {
    resource("karpenter.sh", "v1alpha1", "NodeOverlay", "nodeoverlays")
}

/// The NVIDIA GPU Operator's ClusterPolicy, `nvidia.com/v1`.
pub fn cluster_policies() -> ApiResource {
    resource("nvidia.com", "v1", "ClusterPolicy", "clusterpolicies")
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What a list found.
#[derive(Debug, Clone, PartialEq)]
pub enum Listed<T> {
    /// Every object, across all pages.
    Found(Vec<T>),
    /// The API server does not serve the resource (404 on the list): its CRD is not installed.
    Missing,
}

impl<T> Listed<T> {
    /// The objects; none when the resource is missing.
    pub fn unwrap_or_default(self) -> Vec<T> {
        match self {
            Listed::Found(items) => items,
            Listed::Missing => Vec::new(),
        }
    }

    /// Maps the found objects.
    pub fn map<U>(self, f: impl FnOnce(Vec<T>) -> Vec<U>) -> Listed<U> {
        match self {
            Listed::Found(items) => Listed::Found(f(items)),
            Listed::Missing => Listed::Missing,
        }
    }
}

/// Lists every object of `api`, [`PAGE_SIZE`] at a time, mapping each item as its page arrives (`keep`
/// returns `None` to drop it): only one page of full objects is in memory at once, so a caller that
/// keeps a digest of each pod can read 20,000 pods in a few tens of MiB.
///
/// A `410 Gone` mid-way (the continue token expired: Kubernetes "API concepts: retrieving large results
/// sets in chunks") restarts the list once from the beginning; a 404 on the first page is
/// [`Listed::Missing`]. `what` names the list in errors.
pub async fn list_pages<K, T>(
    api: &Api<K>,
    what: &str,
    mut keep: impl FnMut(K) -> Option<T>,
) -> Result<Listed<T>, ApiError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut restarted = false;
    'list: loop {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(PAGE_SIZE);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = match api.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(status)) if status.is_not_found() && token.is_none() => {
                    return Ok(Listed::Missing);
                }
                Err(kube::Error::Api(status)) if status.code == 410 && !restarted => {
                    restarted = true;
                    continue 'list;
                }
                Err(source) => {
                    return Err(ApiError::Read {
                        what: what.to_string(),
                        source,
                    });
                }
            };
            out.extend(page.items.into_iter().filter_map(&mut keep));
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                return Ok(Listed::Found(out));
            }
        }
    }
}

/// Every object of a built-in kind in the cluster (all namespaces for a namespaced kind), paginated.
pub async fn list_all<K>(client: &Client) -> Result<Listed<K>, ApiError>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let what = format!("listing {}", K::plural(&()));
    list_pages(&Api::<K>::all(client.clone()), &what, Some).await
}

/// Every object of a custom resource (cluster-wide), paginated; [`Listed::Missing`] without its CRD.
pub async fn list_dynamic(
    client: &Client,
    resource: &ApiResource,
) -> Result<Listed<DynamicObject>, ApiError> {
    let what = format!("listing {} {}", resource.api_version, resource.plural);
    list_pages(
        &Api::<DynamicObject>::all_with(client.clone(), resource),
        &what,
        Some,
    )
    .await
}

/// Whether the API server serves `resource` (one list of one item): `false` on 404.
pub async fn served(client: &Client, resource: &ApiResource) -> Result<bool, ApiError> {
    let api = Api::<DynamicObject>::all_with(client.clone(), resource);
    match api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(source) => Err(ApiError::Read {
            what: format!("listing {} {}", resource.api_version, resource.plural),
            source,
        }),
    }
}

/// One cluster-scoped object by name (a Namespace, a Node); `None` when it does not exist.
pub async fn get<K>(client: &Client, name: &str) -> Result<Option<K>, ApiError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|source| ApiError::Read {
            what: format!("reading {} {name}", K::kind(&())),
            source,
        })
}

/// One namespaced object by name; `None` when it does not exist.
pub async fn get_namespaced<K>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>, ApiError>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| ApiError::Read {
            what: format!("reading {} {namespace}/{name}", K::kind(&())),
            source,
        })
}
