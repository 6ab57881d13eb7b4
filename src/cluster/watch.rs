//! Cluster mode: what an AdmissionReview does not carry, read from the API server by kube-rs
//! reflectors (a watch and an in-memory store each; the request path reads only the stores).
//!
//! - Namespaces: their labels feed `namespaceSelector` rules. A namespace created a moment ago may not
//!   be in the store yet: it is read directly, once, with a short timeout ([`Cluster::lookup`]); if that
//!   fails too, the admission layer refuses GPU pods with a retryable message rather than guess (the
//!   stated fallback, see README "Cluster mode").
//! - Karpenter NodePools (`karpenter.sh/v1`): they feed the same [`NodePoolIndex`] that `--nodepools`
//!   feeds, rebuilt and swapped whole on every change. Without the NodePool CRD the webhook says so once,
//!   reports it in `/readyz`, routes by policy only, and looks for the CRD again every minute.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cluster::kubeapi;
use gpu_slicer_core::nodepool::{NodePool, NodePoolIndex};

/// How long a direct namespace read may take on the request path.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often to look for the NodePool CRD when it is not installed.
pub const CRD_RETRY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    /// namespaces | nodepools
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabel {
    /// found | missing | failed
    pub result: &'static str,
}

/// Cache metrics (registered by [`ClusterMetrics::register`]).
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub synced: Family<ResourceLabel, Gauge>,
    pub objects: Family<ResourceLabel, Gauge>,
    pub lookups: Family<LookupLabel, Counter>,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_synced",
            "1 when the watch cache has synced (nodepools: also when the CRD is absent)",
            self.synced.clone(),
        );
        registry.register(
            "cache_objects",
            "Objects in the watch cache",
            self.objects.clone(),
        );
        registry.register(
            "namespace_lookups",
            "Direct namespace reads for namespaces not yet in the cache",
            self.lookups.clone(),
        );
    }
}

/// What a direct namespace read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(BTreeMap<String, String>),
    /// The namespace does not exist (the API server will refuse the pod anyway).
    Missing,
    Failed(String),
}

/// State of the NodePool watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolWatch {
    /// From `--nodepools`, not watched.
    Static,
    Syncing,
    Synced,
    CrdMissing,
}

/// The watches and their stores.
pub struct Cluster {
    client: Client,
    namespaces: Store<Namespace>,
    namespaces_synced: AtomicBool,
    pool_state: std::sync::Mutex<PoolWatch>,
    metrics: ClusterMetrics,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Cluster {
    /// Starts the watches; NodePools land in `pools`. Returns at once: see [`Cluster::ready`].
    /// With `watch_pools` false (NodePools come from `--nodepools`), only Namespaces are watched.
    pub fn start(
        client: Client,
        pools: Arc<ArcSwap<NodePoolIndex>>,
        watch_pools: bool,
        metrics: ClusterMetrics,
    ) -> Arc<Cluster> {
        let (writer_ns, namespaces) = {
            let writer = reflector::store::Writer::<Namespace>::default();
            let reader = writer.as_reader();
            (writer, reader)
        };
        let (changes, _) = tokio::sync::watch::channel(0u64);
        let cluster = Arc::new(Cluster {
            client: client.clone(),
            namespaces,
            namespaces_synced: AtomicBool::new(false),
            pool_state: std::sync::Mutex::new(PoolWatch::Syncing),
            metrics,
            changes,
        });
        for resource in ["namespaces", "nodepools"] {
            cluster
                .metrics
                .synced
                .get_or_create(&ResourceLabel { resource })
                .set(0);
        }

        let this = Arc::clone(&cluster);
        tokio::spawn(async move {
            let api: Api<Namespace> = Api::all(client);
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .reflect(writer_ns);
            futures_util::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        this.namespaces_synced.store(true, Ordering::Release);
                        this.metrics
                            .synced
                            .get_or_create(&ResourceLabel {
                                resource: "namespaces",
                            })
                            .set(1);
                        tracing::info!(
                            namespaces = this.namespaces.state().len(),
                            "namespace cache synced"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                }
                this.metrics
                    .objects
                    .get_or_create(&ResourceLabel {
                        resource: "namespaces",
                    })
                    .set(this.namespaces.state().len() as i64);
                this.changes.send_modify(|n| *n += 1);
            }
        });

        if watch_pools {
            let this = Arc::clone(&cluster);
            tokio::spawn(async move { this.watch_nodepools(pools).await });
        } else {
            cluster.set_pool_state(PoolWatch::Static);
        }
        cluster
    }

    async fn watch_nodepools(self: Arc<Self>, pools: Arc<ArcSwap<NodePoolIndex>>) {
        let ar = kubeapi::nodepools();
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        // Is the CRD there? A 404 on the list says it is not; look again later.
        let mut said = false;
        loop {
            match kubeapi::served(&self.client, &ar).await {
                Ok(true) => break,
                Ok(false) => {
                    self.set_pool_state(PoolWatch::CrdMissing);
                    if !said {
                        tracing::warn!(
                            "Karpenter NodePool CRD (karpenter.sh/v1 nodepools) is not installed: routing by policy only; looking again every minute"
                        );
                        said = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list NodePools; retrying"),
            }
            tokio::time::sleep(if said {
                CRD_RETRY
            } else {
                Duration::from_secs(5)
            })
            .await;
        }
        self.set_pool_state(PoolWatch::Syncing);
        let writer = reflector::store::Writer::<DynamicObject>::new(ar);
        let reader = writer.as_reader();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer);
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    self.set_pool_state(PoolWatch::Synced);
                    tracing::info!(nodepools = reader.state().len(), "NodePool cache synced");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "NodePool watch failed; retrying");
                    continue;
                }
            }
            let index = NodePoolIndex::new(reader.state().iter().filter_map(|obj| {
                let value = serde_json::to_value(obj.as_ref()).ok()?;
                NodePool::from_object(&value)
                    .map_err(|e| tracing::warn!(error = %e, "unreadable NodePool skipped"))
                    .ok()
            }));
            self.metrics
                .objects
                .get_or_create(&ResourceLabel {
                    resource: "nodepools",
                })
                .set(index.len() as i64);
            pools.store(Arc::new(index));
            self.changes.send_modify(|n| *n += 1);
        }
    }

    fn set_pool_state(&self, state: PoolWatch) {
        *self.pool_state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        let synced = state != PoolWatch::Syncing;
        self.metrics
            .synced
            .get_or_create(&ResourceLabel {
                resource: "nodepools",
            })
            .set(i64::from(synced));
        self.changes.send_modify(|n| *n += 1);
    }

    pub fn pool_watch(&self) -> PoolWatch {
        *self.pool_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready when both caches have synced (NodePools: or their CRD is absent).
    pub fn ready(&self) -> bool {
        self.namespaces_synced.load(Ordering::Acquire) && self.pool_watch() != PoolWatch::Syncing
    }

    /// A namespace's labels from the cache.
    pub fn cached_labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
    }

    /// Every cached namespace and its labels.
    pub fn namespaces(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.namespaces
            .state()
            .iter()
            .filter_map(|ns| {
                let name = ns.metadata.name.clone()?;
                Some((name, ns.metadata.labels.clone().unwrap_or_default()))
            })
            .collect()
    }

    /// Reads a namespace from the API server, within [`LOOKUP_TIMEOUT`].
    pub async fn lookup(&self, namespace: &str) -> Lookup {
        let read = kubeapi::get::<Namespace>(&self.client, namespace);
        let result = match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
            Ok(Ok(Some(ns))) => Lookup::Found(ns.metadata.labels.unwrap_or_default()),
            Ok(Ok(None)) => Lookup::Missing,
            // The API's own error, as before: the denial already names the namespace.
            Ok(Err(kubeapi::ApiError::Read { source, .. })) => Lookup::Failed(source.to_string()),
            Ok(Err(e)) => Lookup::Failed(e.to_string()),
            Err(_) => Lookup::Failed(format!("no answer within {}s", LOOKUP_TIMEOUT.as_secs())),
        };
        let label = match &result {
            Lookup::Found(_) => "found",
            Lookup::Missing => "missing",
            Lookup::Failed(_) => "failed",
        };
        self.metrics
            .lookups
            .get_or_create(&LookupLabel { result: label })
            .inc();
        result
    }

    /// What the pod's own ResourceClaims in `namespace` ask for (see [`super::claims`]).
    pub async fn read_claims(
        &self,
        namespace: &str,
        own: &[(String, gpu_slicer_core::dra::claims::ClaimSource<'_>)],
    ) -> gpu_slicer_core::dra::claims::ClaimFacts {
        super::claims::read(&self.client, namespace, own).await
    }

    /// A receiver that changes whenever a watch event has been applied (tests await it).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// `/readyz` details.
    pub fn status(&self) -> serde_json::Value {
        let pools = match self.pool_watch() {
            PoolWatch::Static => "from --nodepools",
            PoolWatch::Syncing => "syncing",
            PoolWatch::Synced => "synced",
            PoolWatch::CrdMissing => {
                "NodePool CRD (karpenter.sh/v1) not installed: routing by policy only"
            }
        };
        serde_json::json!({
            "namespaces": {
                "synced": self.namespaces_synced.load(Ordering::Acquire),
                "objects": self.namespaces.state().len(),
            },
            "nodePools": pools,
        })
    }
}
