//! `gpu-slicer serve`: logging set up, then the webhook assembled from its configuration
//! ([`crate::webhook::serve`]) and run.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::policy_source::PolicySource;
use crate::terminal::escape_controls;
use crate::webhook::serve::{Certificate, ClusterAccess, Config, Server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Policy file; without it, the embedded example policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM); with --tls-key. Without both, dev certificates under --certs-dir.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where dev certificates are created when --tls-cert/--tls-key are not given.
    #[arg(long, default_value = "certs")]
    pub certs_dir: PathBuf,
    /// Directory of Karpenter NodePool YAML to route with.
    #[arg(long)]
    pub nodepools: Option<PathBuf>,
    /// How often to re-read the policy and certificate files, seconds.
    #[arg(long, default_value_t = 10)]
    pub reload_interval: u64,
    /// Cluster mode outside a pod: watch Namespaces and NodePools through this kubeconfig.
    #[arg(long, conflicts_with = "offline")]
    pub kubeconfig: Option<PathBuf>,
    /// No cluster access, even in a pod: namespaces known by name only, NodePools from --nodepools.
    #[arg(long)]
    pub offline: bool,
}

/// Logs go through a background writer: the request thread formats a line and queues it, and one
/// thread writes whatever has queued up with one write(2) (a write(2) per audit line cost ~1.5 us
/// per admission; BENCHMARKS.md). Not lossy: when the queue is full, requests wait rather than audit
/// lines being dropped. Dropping the guard writes what is queued.
pub(super) fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("gpu-slicer-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    // JSON where a machine reads the logs (a pod), human-readable on a terminal.
    if terminal {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .init();
    } else {
        let audit_writer = writer.clone();
        crate::webhook::audit_log::send_json_lines_to(Box::new(move |line| {
            // A line that cannot be queued (the writer thread is gone) has nowhere else to go.
            let _ = std::io::Write::write_all(&mut audit_writer.clone(), line);
        }));
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(writer)
            .init();
    }
    guard
}

/// Log lines queued for the writer thread at most (~2 MiB of audit lines).
const LOG_QUEUE_LINES: usize = 4096;

pub(super) fn run(args: ServeArgs) -> ExitCode {
    let _log_writer = init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Builds the webhook's configuration from the flags, starts it and says where it listens (the
/// line tests and operators wait for, under this module's log target).
async fn serve_async(args: ServeArgs) -> anyhow::Result<()> {
    let certificate = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Certificate::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => Certificate::Dev(args.certs_dir.clone()),
    };
    let config = Config {
        policy: PolicySource::file_or_example(args.policy.as_deref()),
        nodepools: args.nodepools.clone(),
        listen: args.listen,
        certificate,
        reload_every: Duration::from_secs(args.reload_interval.max(1)),
        cluster: if args.offline {
            ClusterAccess::Offline
        } else {
            ClusterAccess::Api {
                kubeconfig: args.kubeconfig.clone(),
            }
        },
    };
    let server = Server::start(config).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, "serving https: POST /mutate, GET /healthz /readyz /metrics");
    server.run().await;
    Ok(())
}
