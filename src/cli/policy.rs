//! `gpu-slicer policy check` and `policy report`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use crate::report;
use crate::terminal::escape_controls;
use gpu_slicer_core::check;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;

use super::{cluster_policy, load_gpu_operator, load_policy, load_pools, on_cluster, parse_label};

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
pub(super) fn device_class_objects(dir: &Path) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    let docs = crate::input::documents_in_dir(dir)
        .map_err(|(path, message)| format!("{path}: {message}"))
        .map_err(anyhow::Error::msg)?;
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
pub(super) fn load_dra_cluster(
    args: &CheckArgs,
) -> anyhow::Result<gpu_slicer_core::check::dra_driver::DraCluster> {
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
            .map_err(|(path, message)| format!("{path}: {message}"))
            .map_err(anyhow::Error::msg)?;
        cluster.add_node_classes(&docs);
    }
    Ok(cluster)
}

pub(super) fn check(args: CheckArgs) -> ExitCode {
    let origin = args.file.display().to_string();
    let loaded = crate::policy_source::load_file(&args.file)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|policy| {
            let pools = args
                .nodepools
                .as_deref()
                .map(|d| crate::input::nodepools(d).map_err(|e| anyhow::anyhow!("{e}")))
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
            eprintln!("{}", escape_controls(&e.to_string()));
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
pub(super) fn report(args: ReportArgs) -> ExitCode {
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
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

/// Where each `--output` goes: `(format, file)`; checked before any work is done. clap hands the
/// values of every `--output` over as one list: a value that is not a format is the file of the
/// format before it.
pub(super) fn report_outputs(args: &ReportArgs) -> anyhow::Result<Vec<(&str, Option<&str>)>> {
    let mut outputs: Vec<(&str, Option<&str>)> = Vec::new();
    for value in &args.output {
        match (value.as_str(), outputs.last_mut()) {
            (format @ ("table" | "json" | "html"), _) => outputs.push((format, None)),
            (file, Some((_, slot @ None))) => *slot = Some(file),
            (other, _) => {
                return Err(anyhow::anyhow!(
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

pub(super) fn policy_report_inner(args: &ReportArgs) -> anyhow::Result<report::PolicyReport> {
    let outputs = report_outputs(args)?;
    let (docs, policy, pools, source) = if args.from_cluster {
        report_inputs_from_cluster(args)?
    } else {
        let docs = report::read::load_paths(&args.files).map_err(anyhow::Error::msg)?;
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
                let mut j =
                    serde_json::to_string_pretty(&built).map_err(|e| anyhow::anyhow!("{e}"))?;
                j.push('\n');
                j
            }
            "html" => report::html::render(&built, &source),
            _ => report::table(&built),
        };
        match file {
            Some(f) => {
                std::fs::write(f, text).map_err(|e| anyhow::anyhow!("{f}: {e}"))?;
                eprintln!("wrote {f}");
            }
            None => print!("{text}"),
        }
    }
    Ok(built)
}

/// `--from-cluster`: the cluster's workloads and Namespaces, the policy (`--policy`, else the
/// webhook's ConfigMap) and the NodePools (`--nodepools`, else the cluster's), and a title.
pub(super) fn report_inputs_from_cluster(
    args: &ReportArgs,
) -> anyhow::Result<(Vec<report::read::Document>, Policy, NodePoolIndex, String)> {
    on_cluster(args.kubeconfig.as_deref(), |client| async move {
        let cluster = report::cluster::read(&client)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the cluster: {e}"))?;
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
