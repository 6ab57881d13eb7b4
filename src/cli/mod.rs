//! The `gpu-slicer` command line (DESIGN.md "Command line").

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::Cluster;
use crate::cluster::kubeapi;
use crate::doctor;
use crate::planner;
use crate::report;
use crate::terminal::escape_controls;
use crate::webhook::admission::{self, StaticFacts};
use crate::webhook::metrics::Metrics;
use crate::webhook::reload::PolicyReloader;
use crate::webhook::server::{self, App, Bound, Limits};
use crate::webhook::tls;
use gpu_slicer_core::check;
use gpu_slicer_core::engine::{self, Namespace};
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::karpenter;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::{Mode, Policy};

#[derive(Debug, Parser)]
#[command(
    name = "gpu-slicer",
    version,
    about = "Share GPUs on Kubernetes: rewrite whole-GPU requests into MIG slices or shared GPUs, per namespace policy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admission webhook (HTTPS).
    Serve(ServeArgs),
    /// Offline dry run: mutate a Pod or AdmissionReview and print the result.
    Mutate(MutateArgs),
    /// Policy commands.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Karpenter commands.
    #[command(subcommand)]
    Karpenter(KarpenterCommand),
    /// Plan what slicing saves for an inventory of GPU workloads, and the configs that get there.
    Plan(PlanArgs),
    /// Dynamic Resource Allocation: the objects the `dra` backend needs.
    #[command(subcommand)]
    Dra(DraCommand),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Read a live cluster (read-only) and report what keeps sliced GPU pods from running.
    Doctor(DoctorArgs),
    /// GPU-equivalents, whole GPUs asked, $/hour and budget use per namespace, from a live cluster.
    Usage(UsageArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum UsageOutput {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Read the live cluster (read-only); the only source for now.
    #[arg(long, required = true)]
    pub from_cluster: bool,
    /// Kubeconfig; without it KUBECONFIG, ~/.kube/config, else the in-cluster config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Count by this policy file instead of the webhook's ConfigMap (gpu-slicer/gpu-slicer-policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: UsageOutput,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DoctorOutput {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Kubeconfig; without it KUBECONFIG, ~/.kube/config, else the in-cluster config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Judge the cluster by this policy file instead of the webhook's ConfigMap
    /// (gpu-slicer/gpu-slicer-policy, key policy.yaml, as manifests/webhook deploys it).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// How long a NodeClaim may wait for its resources, or mig-manager stay pending, before it is
    /// reported (e.g. 10m, 1h30m).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub stuck_after: Duration,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: DoctorOutput,
}

/// A Go-style duration (`90s`, `10m`, `1h30m`), as Kubernetes writes them.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 10m or 1h30m: {e}"))?;
    if d.is_negative() {
        return Err(format!("{s:?} is negative"));
    }
    Ok(d.into())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PlanOutput {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The inventory (kind: Inventory); `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster"
    )]
    pub file: Option<String>,
    /// Build the inventory from the cluster's Deployments, StatefulSets and Jobs that request
    /// nvidia.com/gpu (their pod templates' gpu-slicer.io/gpu-memory, gpu-slicer.io/isolation and
    /// instance type); uses --kubeconfig, else the in-cluster config, else the default kubeconfig.
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig for --from-cluster.
    #[arg(long, requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: PlanOutput,
    /// Write the policy, NodePools, NodeOverlays and GPU Operator ConfigMaps that make the plan real.
    #[arg(long)]
    pub emit: Option<PathBuf>,
    /// Write a self-contained HTML page of the plan.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Override the inventory's maxSharedReplicas.
    #[arg(long)]
    pub max_shared_replicas: Option<u32>,
    /// Override the inventory's contextOverhead (a quantity, e.g. 512Mi).
    #[arg(long)]
    pub context_overhead: Option<String>,
    /// Override the inventory's spec.nodeReserve.cpu: vCPU the DaemonSets take on every GPU node
    /// (default 500m).
    #[arg(long)]
    pub node_reserve_cpu: Option<String>,
    /// Override the inventory's spec.nodeReserve.memory: memory the DaemonSets take on every GPU node
    /// (default 1Gi).
    #[arg(long)]
    pub node_reserve_memory: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KarpenterCommand {
    /// Print the NodeOverlays that let Karpenter launch nodes for the slices the policy asks for.
    Overlays(OverlaysArgs),
}

#[derive(Debug, Subcommand)]
pub enum DraCommand {
    /// Print the ResourceClaimTemplates a namespace's `backend: dra` rule can reference.
    Templates(DraTemplatesArgs),
    /// Print DeviceClasses that map the MIG resources the policy renames to onto the NVIDIA DRA
    /// driver's devices (Kubernetes 1.36 extendedResourceName), so rewritten pods keep that form.
    DeviceClasses(DraClassesArgs),
}

#[derive(Debug, Args)]
pub struct DraTemplatesArgs {
    #[arg(long)]
    pub policy: PathBuf,
    #[arg(long)]
    pub namespace: String,
    /// Namespace labels (key=value), for rules with a namespaceSelector.
    #[arg(long = "namespace-label", value_parser = parse_label)]
    pub namespace_labels: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct DraClassesArgs {
    #[arg(long)]
    pub policy: PathBuf,
}

#[derive(Debug, Args)]
pub struct OverlaysArgs {
    #[arg(long)]
    pub policy: PathBuf,
    /// Directory of Karpenter NodePool YAML.
    #[arg(long)]
    pub nodepools: PathBuf,
    /// Directory of GPU Operator ConfigMaps (mig-parted and device plugin configs).
    #[arg(long)]
    pub gpu_operator: Option<PathBuf>,
}

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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Pod,
    Patch,
    Review,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Namespace the pod is created in.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// Policy file; without it, the embedded example policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Directory of Karpenter NodePool YAML.
    #[arg(long)]
    pub nodepools: Option<PathBuf>,
    /// A Pod (YAML or JSON) or an AdmissionReview; `-` for stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: String,
    /// What to print.
    #[arg(long, short = 'o', value_enum, default_value = "pod")]
    pub output: Output,
    /// Namespace labels (key=value), for rules with a namespaceSelector.
    #[arg(long = "namespace-label", value_parser = parse_label)]
    pub namespace_labels: Vec<(String, String)>,
    /// Decide as if every rule were in this mode (default: as the policy says).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

/// `--mode`: the policy's `spec.mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file (and its agreement with NodePools and GPU Operator configs).
    Check(CheckArgs),
    /// What-if: what the policy (as enforce) would do to each existing workload at its next rollout.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Manifests: a file (multi-document YAML, `kustomize build` output; `-` for stdin) or a
    /// directory (every *.yaml, *.yml, *.json under it). Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster"
    )]
    pub files: Vec<String>,
    /// Read the workloads, namespace labels and NodePools of a live cluster (read-only, paginated);
    /// uses --kubeconfig, else KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long)]
    pub from_cluster: bool,
    /// Kubeconfig for --from-cluster.
    #[arg(long, requires = "from_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Policy file; without it, the webhook's ConfigMap (gpu-slicer/gpu-slicer-policy) with
    /// --from-cluster, else the embedded example policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Directory of Karpenter NodePool YAML (routing labels and taints); with --from-cluster it
    /// replaces the cluster's NodePools.
    #[arg(long)]
    pub nodepools: Option<PathBuf>,
    /// A label (key=value) every namespace has, for rules with a namespaceSelector; Namespace
    /// objects among the manifests give their own labels too.
    #[arg(long = "namespace-label", value_parser = parse_label)]
    pub namespace_labels: Vec<(String, String)>,
    /// Namespace of manifests that name none (as kubectl apply would use).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// FORMAT [FILE]: table, json or html, to FILE or stdout; repeatable (a table on the terminal
    /// and an HTML page for the approvers). Default: table.
    #[arg(long, short = 'o', num_args = 1..=2, value_names = ["FORMAT", "FILE"], action = clap::ArgAction::Append)]
    pub output: Vec<String>,
    /// Exit 1 when any workload would be denied (for CI gating a policy change).
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,
}

/// `--fail-on`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FailOn {
    Deny,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    pub file: PathBuf,
    /// Directory of Karpenter NodePool YAML.
    #[arg(long)]
    pub nodepools: Option<PathBuf>,
    /// Directory of GPU Operator ConfigMaps (mig-parted and device plugin configs, recognised by content).
    #[arg(long)]
    pub gpu_operator: Option<PathBuf>,
    /// Directory of DeviceClass YAML (e.g. `kubectl get deviceclasses -o yaml`), to check the classes
    /// `backend: dra` rules use.
    #[arg(long)]
    pub device_classes: Option<PathBuf>,
    /// The NVIDIA DRA driver's Helm values, to check its consumableShares and kubeletPlugin.nodeSelector
    /// against the policy and the NodePools.
    #[arg(long)]
    pub dra_values: Option<PathBuf>,
}

/// The DeviceClasses in the YAML files of `dir` (List objects included), with their files.
fn device_class_objects(dir: &Path) -> Result<Vec<(String, serde_json::Value)>, String> {
    let docs = crate::input::documents_in_dir(dir)
        .map_err(|(path, message)| format!("{path}: {message}"))?;
    let mut classes = Vec::new();
    for (path, doc) in docs {
        let items = match doc.get("items").and_then(|i| i.as_array()) {
            Some(items) => items.clone(),
            None => vec![doc],
        };
        for item in items {
            if item.get("kind").and_then(|k| k.as_str()) == Some("DeviceClass") {
                classes.push((path.clone(), item));
            }
        }
    }
    Ok(classes)
}

/// What the DRA cross-checks read: driver values, DeviceClasses, and the EC2NodeClasses beside the
/// NodePools.
fn load_dra_cluster(
    args: &CheckArgs,
) -> Result<gpu_slicer_core::check::dra_driver::DraCluster, String> {
    let mut cluster = gpu_slicer_core::check::dra_driver::DraCluster {
        values: args
            .dra_values
            .as_deref()
            .map(crate::input::driver_values)
            .transpose()?,
        ..Default::default()
    };
    if let Some(dir) = &args.device_classes {
        cluster.device_classes = device_class_objects(dir)?;
    }
    if let Some(dir) = &args.nodepools {
        let docs = crate::input::documents_in_dir(dir)
            .map_err(|(path, message)| format!("{path}: {message}"))?;
        cluster.add_node_classes(&docs);
    }
    Ok(cluster)
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write ca.crt, tls.crt and tls.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// The webhook Service name.
    #[arg(long)]
    pub service: String,
    /// The webhook Service namespace.
    #[arg(long)]
    pub namespace: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Mutate(args) => mutate(args),
        Command::Policy(PolicyCommand::Check(args)) => policy_check(args),
        Command::Policy(PolicyCommand::Report(args)) => policy_report(args),
        Command::Karpenter(KarpenterCommand::Overlays(args)) => overlays(args),
        Command::Plan(args) => plan_command(args),
        Command::Dra(DraCommand::Templates(args)) => dra_templates(args),
        Command::Dra(DraCommand::DeviceClasses(args)) => dra_device_classes(args),
        Command::Certs(args) => certs(args),
        Command::Doctor(args) => doctor(args),
        Command::Usage(args) => usage(args),
    }
}

/// Logs go through a background writer: the request thread formats a line and queues it, and one
/// thread writes whatever has queued up with one write(2) (a write(2) per audit line cost ~1.5 us
/// per admission; BENCHMARKS.md). Not lossy: when the queue is full, requests wait rather than audit
/// lines being dropped. Dropping the guard writes what is queued.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
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

fn load_policy(path: Option<&Path>) -> Result<Policy, String> {
    match path {
        Some(p) => crate::policy_source::load_file(p).map_err(|e| e.to_string()),
        None => Ok(crate::policy_source::example()),
    }
}

fn load_pools(dir: Option<&Path>) -> Result<NodePoolIndex, String> {
    match dir {
        Some(d) => crate::input::nodepools(d).map_err(|e| e.to_string()),
        None => Ok(NodePoolIndex::default()),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
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
            eprintln!("error: {}", escape_controls(&e));
            ExitCode::FAILURE
        }
    }
}

async fn serve_async(args: ServeArgs) -> Result<(), String> {
    let (policy, policy_bytes) = match &args.policy {
        Some(path) => {
            let bytes = crate::input::read_bytes(path)
                .map_err(|e| format!("--policy {}: {e}", path.display()))?;
            let policy = Policy::parse(
                &String::from_utf8_lossy(&bytes),
                &path.display().to_string(),
            )
            .map_err(|e| e.to_string())?;
            (policy, bytes)
        }
        None => (crate::policy_source::example(), Vec::new()),
    };
    let pools = load_pools(args.nodepools.as_deref())?;
    tracing::info!(
        policy = %args.policy.as_ref().map_or("embedded example".into(), |p| p.display().to_string()),
        rules = policy.rules.len(),
        node_pools = pools.len(),
        "policy loaded"
    );
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dev = tls::ensure_dev_certs(&args.certs_dir).map_err(|e| e.to_string())?;
            if dev.created {
                tracing::info!(ca = %dev.ca.display(), "created a dev CA and serving certificate (localhost, 127.0.0.1); trust the CA to call the webhook");
            } else {
                tracing::info!(ca = %dev.ca.display(), cert = %dev.cert.display(), "using existing dev certificates");
            }
            (dev.cert, dev.key)
        }
    };
    let every = Duration::from_secs(args.reload_interval.max(1));
    let resolver = Arc::new(tls::ReloadingCert::load(&cert, &key).map_err(|e| e.to_string())?);
    let tls_config = tls::server_config(resolver.clone()).map_err(|e| e.to_string())?;

    let limits = Limits::default();
    let app = App::new(
        StaticFacts { policy, pools },
        Metrics::new(),
        limits.clone(),
    );
    resolver.spawn_poll(every, app.metrics.certificate_expiry.clone());
    if let Some(path) = &args.policy {
        PolicyReloader::new(path.clone(), policy_bytes, app.clone()).spawn(every);
    }
    if let Some(client) = cluster_client(&args).await? {
        crate::controller::spawn_when_needed(client.clone(), app.policy.clone());
        let client_for_pods = client.clone();
        let cluster = Cluster::start(
            client,
            app.pools.clone(),
            args.nodepools.is_none(),
            app.metrics.cluster.clone(),
        );
        app.attach_cluster(cluster);
        crate::webhook::gpu_budget::start_watch(&app, client_for_pods);
        tracing::info!(
            "cluster mode: watching Namespaces and NodePools; ready once the caches have synced"
        );
    } else {
        tracing::info!("offline: namespaces known by name only; NodePools from --nodepools");
    }

    let bound = Bound::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let addr = bound.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "serving https: POST /mutate, GET /healthz /readyz /metrics");
    let shutdown_app = app.clone();
    let shutdown = async move {
        server::shutdown_signal().await;
        shutdown_app.set_ready(false);
    };
    bound
        .serve(server::router(app), tls_config, limits, shutdown)
        .await;
    Ok(())
}

/// The API client for cluster mode: `--kubeconfig`, else the in-cluster config inside a pod; `None`
/// offline (`--offline`, or outside a pod without `--kubeconfig`).
async fn cluster_client(args: &ServeArgs) -> Result<Option<kube::Client>, String> {
    if args.offline {
        return Ok(None);
    }
    kubeapi::webhook_client(args.kubeconfig.as_deref())
        .await
        .map_err(|e| match e {
            kubeapi::ApiError::InCluster(_) => {
                format!("{e} (use --offline to run without the API)")
            }
            e => e.to_string(),
        })
}

/// Exit codes of `mutate`: 0 allowed, 1 denied, 2 bad input.
fn mutate(args: MutateArgs) -> ExitCode {
    match mutate_inner(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e));
            ExitCode::from(2)
        }
    }
}

fn mutate_inner(args: &MutateArgs) -> Result<bool, String> {
    let mut policy = load_policy(args.policy.as_deref())?;
    if let Some(mode) = args.mode {
        policy.force_mode(mode.into());
    }
    let pools = load_pools(args.nodepools.as_deref())?;
    let text = crate::input::read_arg(&args.file)?;
    let docs =
        gpu_slicer_core::yaml::documents(&text).map_err(|e| format!("{}: {e}", args.file))?;
    let [doc] = docs.as_slice() else {
        return Err(format!(
            "{}: expected one Pod or AdmissionReview, found {} documents",
            args.file,
            docs.len()
        ));
    };
    let mut labels = admission::name_label(&args.namespace);
    labels.extend(args.namespace_labels.iter().cloned());

    // An AdmissionReview carries its own pod; answer it exactly as the server would.
    let (pod_value, uid) = if doc.get("kind").and_then(|k| k.as_str()) == Some("AdmissionReview") {
        let obj = doc
            .pointer("/request/object")
            .cloned()
            .ok_or("AdmissionReview without request.object")?;
        let uid = doc
            .pointer("/request/uid")
            .and_then(|u| u.as_str())
            .unwrap_or("")
            .to_string();
        (obj, uid)
    } else if doc.get("kind").and_then(|k| k.as_str()) == Some("Pod") {
        (doc.clone(), String::new())
    } else {
        return Err(format!(
            "{}: not a Pod or an AdmissionReview (kind {:?})",
            args.file,
            doc.get("kind")
        ));
    };
    if let Some(ns) = pod_value
        .pointer("/metadata/namespace")
        .and_then(|n| n.as_str())
        && ns != args.namespace
    {
        eprintln!(
            "Warning: the pod says namespace {ns:?}; deciding for --namespace {:?}",
            args.namespace
        );
    }
    let pod: Pod = serde_json::from_value(pod_value.clone())
        .map_err(|e| format!("{}: not a valid Pod: {e}", args.file))?;
    let decision = engine::decide(
        &pod,
        Namespace {
            name: &args.namespace,
            labels: &labels,
        },
        &policy,
        &pools,
    );
    // What the webhook answers: in audit mode, allowed and unpatched, with "would ..." warnings.
    let decision = gpu_slicer_core::engine::mode::apply(decision);

    for w in &decision.warnings {
        eprintln!("Warning: {}", escape_controls(w));
    }
    if let Some(record) = &decision.audit {
        eprintln!(
            "audit: {}",
            serde_json::to_string(record).unwrap_or_default()
        );
    }
    if let Some(reason) = &decision.denied {
        eprintln!("denied: {}", escape_controls(reason));
    }
    let out = match args.output {
        Output::Review => {
            String::from_utf8_lossy(&admission::respond(&uid, &decision)).into_owned()
        }
        Output::Patch => {
            serde_json::to_string_pretty(&decision.patch).map_err(|e| e.to_string())?
        }
        Output::Pod => {
            if decision.denied.is_some() {
                return Ok(false);
            }
            let mut pod_value = pod_value;
            json_patch::patch(&mut pod_value, &decision.patch)
                .map_err(|e| format!("internal error: the patch does not apply: {e}"))?;
            serde_norway::to_string(&pod_value).map_err(|e| e.to_string())?
        }
    };
    println!("{}", out.trim_end());
    Ok(decision.allowed())
}

fn load_gpu_operator(dir: Option<&Path>) -> Result<Option<GpuOperatorConfigs>, String> {
    dir.map(|d| crate::input::gpu_operator_configs(d).map_err(|e| e.to_string()))
        .transpose()
}

fn policy_check(args: CheckArgs) -> ExitCode {
    let origin = args.file.display().to_string();
    let loaded = crate::policy_source::load_file(&args.file)
        .map_err(|e| e.to_string())
        .and_then(|policy| {
            let pools = args
                .nodepools
                .as_deref()
                .map(|d| crate::input::nodepools(d).map_err(|e| e.to_string()))
                .transpose()?;
            let ops = load_gpu_operator(args.gpu_operator.as_deref())?;
            let dra = load_dra_cluster(&args)?;
            let classes = args.device_classes.as_ref().map(|_| {
                dra.device_classes
                    .iter()
                    .filter_map(|(_, c)| c.pointer("/metadata/name")?.as_str().map(str::to_string))
                    .collect::<std::collections::BTreeSet<String>>()
            });
            Ok((policy, pools, ops, classes, dra))
        });
    let (policy, pools, ops, classes, dra) = match loaded {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{}", escape_controls(&e));
            return ExitCode::FAILURE;
        }
    };
    let mut report = check::check_with_device_classes(
        &policy,
        &origin,
        pools.as_ref(),
        ops.as_ref(),
        classes.as_ref(),
    );
    gpu_slicer_core::check::dra_driver::check(&policy, &origin, pools.as_ref(), &dra, &mut report);
    for note in &report.notes {
        println!("note: {note}");
    }
    if report.errors.is_empty() {
        println!("{origin}: OK ({} rules)", policy.rules.len());
        ExitCode::SUCCESS
    } else {
        for e in &report.errors {
            eprintln!("{}", escape_controls(e));
        }
        eprintln!("{origin}: {} problem(s)", report.errors.len());
        ExitCode::FAILURE
    }
}

/// Exit codes of `policy report`: 0, 1 with `--fail-on deny` when a workload would be denied, 2 when
/// the inputs cannot be read (kept apart so CI tells a broken pipeline from a denied workload).
fn policy_report(args: ReportArgs) -> ExitCode {
    match policy_report_inner(&args) {
        Ok(report) if args.fail_on.is_some() && report.any_denied() => {
            eprintln!(
                "--fail-on deny: {} workload(s) would be denied",
                report.totals.deny
            );
            ExitCode::from(1)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e));
            ExitCode::from(2)
        }
    }
}

/// Where each `--output` goes: `(format, file)`; checked before any work is done. clap hands the
/// values of every `--output` over as one list: a value that is not a format is the file of the
/// format before it.
fn report_outputs(args: &ReportArgs) -> Result<Vec<(&str, Option<&str>)>, String> {
    let mut outputs: Vec<(&str, Option<&str>)> = Vec::new();
    for value in &args.output {
        match (value.as_str(), outputs.last_mut()) {
            (format @ ("table" | "json" | "html"), _) => outputs.push((format, None)),
            (file, Some((_, slot @ None))) => *slot = Some(file),
            (other, _) => {
                return Err(format!(
                    "--output {other:?}: expected table, json or html (then optionally a FILE)"
                ));
            }
        }
    }
    if outputs.is_empty() {
        outputs.push(("table", None));
    }
    Ok(outputs)
}

fn policy_report_inner(args: &ReportArgs) -> Result<report::PolicyReport, String> {
    let outputs = report_outputs(args)?;
    let (docs, policy, pools, source) = if args.from_cluster {
        report_inputs_from_cluster(args)?
    } else {
        let docs = report::read::load_paths(&args.files)?;
        let source = format!(
            "{} against {}",
            args.files.join(", "),
            args.policy
                .as_ref()
                .map_or("the example policy".into(), |p| p.display().to_string())
        );
        (
            docs,
            load_policy(args.policy.as_deref())?,
            load_pools(args.nodepools.as_deref())?,
            source,
        )
    };
    let read = report::read::from_objects(docs, &args.namespace);
    let built = report::build(read, &policy, &pools, &args.namespace_labels);
    for (format, file) in outputs {
        let text = match format {
            "json" => {
                let mut j = serde_json::to_string_pretty(&built).map_err(|e| e.to_string())?;
                j.push('\n');
                j
            }
            "html" => report::html::render(&built, &source),
            _ => report::table(&built),
        };
        match file {
            Some(f) => {
                std::fs::write(f, text).map_err(|e| format!("{f}: {e}"))?;
                eprintln!("wrote {f}");
            }
            None => print!("{text}"),
        }
    }
    Ok(built)
}

/// `--from-cluster`: the cluster's workloads and Namespaces, the policy (`--policy`, else the
/// webhook's ConfigMap) and the NodePools (`--nodepools`, else the cluster's), and a title.
fn report_inputs_from_cluster(
    args: &ReportArgs,
) -> Result<(Vec<report::read::Document>, Policy, NodePoolIndex, String), String> {
    on_cluster(args.kubeconfig.as_deref(), |client| async move {
        let cluster = report::cluster::read(&client)
            .await
            .map_err(|e| format!("cannot read the cluster: {e}"))?;
        let (policy, policy_source) = cluster_policy(&client, args.policy.as_deref()).await?;
        let pools = match (&args.nodepools, cluster.pools) {
            (Some(dir), _) => load_pools(Some(dir))?,
            (None, Some(pools)) => pools,
            (None, None) => {
                eprintln!(
                    "note: Karpenter's NodePool CRD is not installed: routing by the policy alone"
                );
                NodePoolIndex::default()
            }
        };
        Ok((
            cluster.documents,
            policy,
            pools,
            format!("the cluster's workloads against {policy_source}"),
        ))
    })
}

/// Runs `work` with a client for `kubeconfig` (else the in-cluster or default config) on a
/// current-thread runtime: the read-only `--from-cluster` commands.
fn on_cluster<T, F, Fut>(kubeconfig: Option<&Path>, work: F) -> Result<T, String>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kubeapi::client(kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        work(client).await
    })
}

/// The policy to judge by: `--policy FILE`, else the webhook's ConfigMap; with where it was read.
async fn cluster_policy(
    client: &kube::Client,
    path: Option<&Path>,
) -> Result<(Policy, String), String> {
    match path {
        Some(path) => Ok((
            crate::policy_source::load_file(path).map_err(|e| e.to_string())?,
            path.display().to_string(),
        )),
        None => {
            let loaded = crate::policy_source::from_configmap(client)
                .await
                .map_err(|e| e.why())?;
            Ok((loaded.policy, loaded.source))
        }
    }
}

/// `usage`: exit 0, or 2 when the cluster or the policy cannot be read.
fn usage(args: UsageArgs) -> ExitCode {
    let result = on_cluster(args.kubeconfig.as_deref(), |client| async move {
        let facts = crate::usage::read(&client)
            .await
            .map_err(|e| format!("cannot read the cluster: {e}"))?;
        let (policy, _) = cluster_policy(&client, args.policy.as_deref()).await?;
        Ok(crate::usage::build(facts, &policy))
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e));
            return ExitCode::from(2);
        }
    };
    let text = match args.output {
        UsageOutput::Table => crate::usage::table(&report),
        UsageOutput::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        UsageOutput::Csv => crate::usage::csv(&report),
        UsageOutput::Html => crate::usage::html::render(&report),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

fn overlays(args: OverlaysArgs) -> ExitCode {
    let result = (|| {
        let policy = crate::policy_source::load_file(&args.policy).map_err(|e| e.to_string())?;
        let pools = crate::input::nodepools(&args.nodepools).map_err(|e| e.to_string())?;
        let ops = load_gpu_operator(args.gpu_operator.as_deref())?.unwrap_or_default();
        let overlays =
            karpenter::overlays(&policy, &pools, &ops).map_err(|errors| errors.join("\n"))?;
        let mut command = format!(
            "gpu-slicer karpenter overlays --policy {} --nodepools {}",
            args.policy.display(),
            args.nodepools.display()
        );
        if let Some(dir) = &args.gpu_operator {
            command.push_str(&format!(" --gpu-operator {}", dir.display()));
        }
        karpenter::overlays_yaml(&overlays, &command)
    })();
    print_yaml_or_fail(result)
}

fn print_yaml_or_fail(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", escape_controls(&e));
            ExitCode::FAILURE
        }
    }
}

/// Objects as one multi-document YAML file, after a comment header.
fn yaml_stream(header: &str, objects: &[serde_json::Value]) -> Result<String, String> {
    let mut out = header.to_string();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn dra_templates(args: DraTemplatesArgs) -> ExitCode {
    print_yaml_or_fail((|| {
        let policy = crate::policy_source::load_file(&args.policy).map_err(|e| e.to_string())?;
        let mut labels = admission::name_label(&args.namespace);
        labels.extend(args.namespace_labels.iter().cloned());
        let Some(rule) = policy.rule_for(&args.namespace, &labels) else {
            return Err(format!(
                "no rule of {} covers namespace {:?}: it needs no templates",
                args.policy.display(),
                args.namespace
            ));
        };
        if let Some(why) = gpu_slicer_core::dra::unsupported(rule) {
            return Err(why);
        }
        let objects = gpu_slicer_core::dra::template_objects(rule, &args.namespace);
        if objects.is_empty() {
            return Err(format!(
                "rule {} (action {}, backend {}) for namespace {:?} references no ResourceClaimTemplates",
                rule.name,
                rule.action.as_str(),
                rule.backend.as_str(),
                args.namespace
            ));
        }
        yaml_stream(
            &format!(
                "# ResourceClaimTemplates for namespace {} (rule {}); generated by gpu-slicer dra templates.\n",
                args.namespace, rule.name
            ),
            &objects,
        )
    })())
}

fn dra_device_classes(args: DraClassesArgs) -> ExitCode {
    print_yaml_or_fail((|| {
        let policy = crate::policy_source::load_file(&args.policy).map_err(|e| e.to_string())?;
        let (classes, skipped) = gpu_slicer_core::dra::device_classes(&policy);
        for s in &skipped {
            eprintln!("note: not mapped: {}", escape_controls(s));
        }
        if classes.is_empty() {
            return Err(format!(
                "{}: no MIG resource to map (DeviceClasses map the MIG resources devicePlugin rules rename to)",
                args.policy.display()
            ));
        }
        yaml_stream(
            "# DeviceClasses (Kubernetes 1.36, DRAExtendedResource) mapping the policy's MIG resources onto the NVIDIA DRA driver; generated by gpu-slicer dra device-classes.\n",
            &classes,
        )
    })())
}

fn plan_command(args: PlanArgs) -> ExitCode {
    let result = (|| -> Result<(), String> {
        let mut inventory = match &args.file {
            Some(file) => planner::Inventory::parse(&crate::input::read_arg(file)?, file)
                .map_err(|e| e.to_string())?,
            None => inventory_from_cluster(args.kubeconfig.as_deref())?,
        };
        if let Some(n) = args.max_shared_replicas {
            inventory.max_shared_replicas = n.max(1);
        }
        if let Some(q) = &args.context_overhead {
            inventory.context_overhead = gpu_slicer_core::quantity::parse(q)
                .ok_or_else(|| format!("--context-overhead {q:?} is not a quantity"))?;
        }
        if let Some(q) = &args.node_reserve_cpu {
            inventory.node_reserve.cpu_millis = planner::parse_cpu(q)
                .ok_or_else(|| format!("--node-reserve-cpu {q:?} is not a CPU quantity"))?;
        }
        if let Some(q) = &args.node_reserve_memory {
            inventory.node_reserve.memory = gpu_slicer_core::quantity::parse(q)
                .ok_or_else(|| format!("--node-reserve-memory {q:?} is not a quantity"))?;
        }
        let plan = planner::plan(&inventory).map_err(|e| e.join("\n"))?;
        for w in &plan.warnings {
            eprintln!("warning: {}", escape_controls(w));
        }
        match args.output {
            PlanOutput::Table => print!("{}", planner::table(&plan)),
            PlanOutput::Json => println!(
                "{}",
                serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?
            ),
        }
        if let Some(dir) = &args.emit {
            let emitted = planner::emit::emit(&plan, dir)?;
            for c in &emitted.conflicts {
                eprintln!("warning: {}", escape_controls(c));
            }
            eprintln!("wrote {}", emitted.files.join(", "));
        }
        if let Some(file) = &args.html {
            std::fs::write(file, planner::html::render(&plan))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            eprintln!("wrote {}", file.display());
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e));
            ExitCode::FAILURE
        }
    }
}

/// The planner's inventory from the cluster's GPU workloads (defaults: 4 shared replicas, 512Mi context
/// overhead; the flags override them as for a file).
fn inventory_from_cluster(kubeconfig: Option<&Path>) -> Result<planner::Inventory, String> {
    let objects = on_cluster(kubeconfig, |client| async move {
        planner::cluster::list_workloads(client)
            .await
            .map_err(|e| format!("listing workloads: {e}"))
    })?;
    let (workloads, skipped) = planner::cluster::workloads_from_objects(&objects);
    for s in &skipped {
        eprintln!("skipped: {}", escape_controls(s));
    }
    if workloads.is_empty() {
        return Err(
            "no GPU workload in the cluster has what the planner needs (see the skipped lines)"
                .into(),
        );
    }
    Ok(planner::Inventory {
        max_shared_replicas: planner::DEFAULT_MAX_SHARED_REPLICAS,
        context_overhead: planner::DEFAULT_CONTEXT_OVERHEAD,
        node_reserve: planner::allocatable::NodeReserve::default(),
        workloads,
    })
}

/// Exit codes of `doctor`: 0 no error found, 1 errors found, 2 the cluster could not be read (or
/// `--policy` does not load).
fn doctor(args: DoctorArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let snapshot = runtime.block_on(async {
        let client = kubeapi::client(args.kubeconfig.as_deref())
            .await
            .map_err(doctor::read::ReadError::Api)?;
        doctor::read::read(&client, args.policy.as_deref()).await
    });
    let snapshot = match snapshot {
        Ok(s) => s,
        Err(e @ doctor::read::ReadError::Policy(_)) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!(
                "error: cannot read the cluster: {}",
                escape_controls(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    let options = doctor::Options {
        now: k8s_openapi::jiff::Timestamp::now(),
        stuck_after: args.stuck_after,
    };
    let report = doctor::diagnose(&snapshot, &options);
    match args.output {
        DoctorOutput::Table => print!("{}", report.table()),
        DoctorOutput::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {}", escape_controls(&e.to_string()));
                return ExitCode::from(2);
            }
        },
    }
    ExitCode::from(report.exit_code())
}

fn certs(args: CertsArgs) -> ExitCode {
    let names = tls::service_names(&args.service, &args.namespace);
    let result = tls::generate(&names, &format!("{}.{}.svc", args.service, args.namespace))
        .and_then(|b| tls::write_bundle(&args.out, &b, false));
    match result {
        Ok(()) => {
            println!(
                "wrote {dir}/ca.crt, {dir}/tls.crt, {dir}/tls.key for {}",
                names.join(", "),
                dir = args.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
