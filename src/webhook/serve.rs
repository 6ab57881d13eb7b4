//! `serve`, assembled in one place from its [`Config`]: the policy and its reload, the NodePools,
//! the certificate and its reload, cluster mode (the watches, the Pod watch behind budgets, the DRA
//! template controller) and the router, bound to its address; [`Server::run`] serves until SIGTERM
//! and drains. The command line only builds the `Config`, sets up logging and says where it listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpu_slicer_core::nodepool::NodePoolIndex;

use crate::cluster::kubeapi;
use crate::cluster::watch::Cluster;
use crate::policy_source::{PolicySource, ServedPolicyError};
use crate::webhook::admission::StaticFacts;
use crate::webhook::metrics::Metrics;
use crate::webhook::reload::PolicyReloader;
use crate::webhook::server::{self, App, Bound, Limits};
use crate::webhook::tls;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Certificate {
    /// `--tls-cert` and `--tls-key` (cert-manager's Secret, re-read on change).
    Files { cert: PathBuf, key: PathBuf },
    /// A dev CA and certificate for localhost in this directory, created when absent.
    Dev(PathBuf),
}

/// Everything `serve` is configured with.
pub struct Config {
    /// The policy: a file (re-read every `reload_every`) or the embedded example.
    pub policy: PolicySource,
    /// `--nodepools`: NodePools from a directory instead of the cluster's.
    pub nodepools: Option<PathBuf>,
    pub listen: SocketAddr,
    pub certificate: Certificate,
    /// How often the policy file and the certificate are re-read.
    pub reload_every: Duration,
    pub cluster: ClusterAccess,
}

/// Whether `serve` reads the cluster.
#[derive(Debug, Clone)]
pub enum ClusterAccess {
    /// `--offline`: namespaces known by name only, NodePools from `--nodepools`.
    Offline,
    /// Cluster mode, with `--kubeconfig` or else the in-cluster config (a pod's service account).
    Api { kubeconfig: Option<PathBuf> },
}

/// The API client for cluster mode; `None` offline, or outside a pod without `--kubeconfig`.
async fn cluster_client(access: &ClusterAccess) -> Result<Option<kube::Client>, ServeError> {
    let ClusterAccess::Api { kubeconfig } = access else {
        return Ok(None);
    };
    kubeapi::webhook_client(kubeconfig.as_deref())
        .await
        .map_err(|e| match e {
            kubeapi::ApiError::InCluster(_) => {
                ServeError::Cluster(format!("{e} (use --offline to run without the API)"))
            }
            e => ServeError::Cluster(e.to_string()),
        })
}

/// Why the server did not start; each message names the flag or input to fix.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Policy(#[from] ServedPolicyError),
    #[error(transparent)]
    NodePools(#[from] gpu_slicer_core::nodepool::NodePoolError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The API client for cluster mode (the message says to use `--offline` where that helps).
    #[error("{0}")]
    Cluster(String),
    #[error("--listen {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server bound to its address, not yet serving.
pub struct Server {
    app: Arc<App>,
    bound: Bound,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
}

fn certificate_files(certificate: &Certificate) -> Result<(PathBuf, PathBuf), ServeError> {
    match certificate {
        Certificate::Files { cert, key } => Ok((cert.clone(), key.clone())),
        Certificate::Dev(dir) => {
            let dev = tls::ensure_dev_certs(dir)?;
            if dev.created {
                tracing::info!(ca = %dev.ca.display(), "created a dev CA and serving certificate (localhost, 127.0.0.1); trust the CA to call the webhook");
            } else {
                tracing::info!(ca = %dev.ca.display(), cert = %dev.cert.display(), "using existing dev certificates");
            }
            Ok((dev.cert, dev.key))
        }
    }
}

/// Cluster mode: the template controller, the Namespace and NodePool watches, the Pod watch.
fn start_cluster_mode(app: &Arc<App>, client: kube::Client, pools_from_cluster: bool) {
    crate::controller::spawn_when_needed(client.clone(), app.policy.clone());
    let cluster = Cluster::start(
        client.clone(),
        app.pools.clone(),
        pools_from_cluster,
        app.metrics.cluster.clone(),
    );
    app.attach_cluster(cluster);
    crate::webhook::gpu_budget::start_watch(app, client);
    tracing::info!(
        "cluster mode: watching Namespaces and NodePools; ready once the caches have synced"
    );
}

impl Server {
    /// Loads what the configuration names, starts the reloads and watches, and binds the address.
    pub async fn start(config: Config) -> Result<Server, ServeError> {
        let (policy, policy_bytes) = config.policy.read_served()?;
        let pools = match &config.nodepools {
            Some(dir) => crate::input::nodepools(dir)?,
            None => NodePoolIndex::default(),
        };
        tracing::info!(
            policy = %config.policy.describe(),
            rules = policy.rules.len(),
            node_pools = pools.len(),
            "policy loaded"
        );
        let (cert, key) = certificate_files(&config.certificate)?;
        let every = config.reload_every;
        let resolver = Arc::new(tls::ReloadingCert::load(&cert, &key)?);
        let tls = tls::server_config(resolver.clone())?;
        let limits = Limits::default();
        let app = App::new(
            StaticFacts { policy, pools },
            Metrics::new(),
            limits.clone(),
        );
        resolver.spawn_poll(every, app.metrics.certificate_expiry.clone());
        if let PolicySource::File(path) = &config.policy {
            PolicyReloader::new(path.clone(), policy_bytes, app.clone()).spawn(every);
        }
        match cluster_client(&config.cluster).await? {
            Some(client) => start_cluster_mode(&app, client, config.nodepools.is_none()),
            None => {
                tracing::info!("offline: namespaces known by name only; NodePools from --nodepools")
            }
        }
        let bound = Bound::bind(config.listen)
            .await
            .map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?;
        Ok(Server {
            app,
            bound,
            tls,
            limits,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.bound.local_addr()
    }

    /// Serves until SIGTERM or Ctrl-C, then stops being ready and drains.
    pub async fn run(self) {
        let shutdown_app = self.app.clone();
        let shutdown = async move {
            server::shutdown_signal().await;
            shutdown_app.set_ready(false);
        };
        self.bound
            .serve(server::router(self.app), self.tls, self.limits, shutdown)
            .await;
    }
}
