//! `gpu-slicer usage`: [`crate::usage`] on a live cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::terminal::escape_controls;

use super::{cluster_policy, on_cluster};

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

/// `usage`: exit 0, or 2 when the cluster or the policy cannot be read.
pub(super) fn run(args: UsageArgs) -> ExitCode {
    let result = on_cluster(args.kubeconfig.as_deref(), |client| async move {
        let facts = crate::usage::read(&client)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the cluster: {e}"))?;
        let (policy, _) = cluster_policy(&client, args.policy.as_deref()).await?;
        Ok(crate::usage::build(facts, &policy))
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
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
