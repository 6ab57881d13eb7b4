//! `gpu-slicer policy report`: what the policy would do to each workload, from manifests or a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::report;
use crate::terminal::escape_controls;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;

use super::{cluster_policy, load_policy, load_pools, on_cluster, parse_label};

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
                let mut j = serde_json::to_string_pretty(&built)?;
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
