//! The `gpu-slicer` command line (DESIGN.md "Command line").
//!
//! The clap definitions ([`Cli`], [`Command`]) and one small file per command, each turning its
//! arguments into calls of the subsystems below (`anyhow` is for this edge only).
//!
//! Imports: anything in the crate; nothing imports it but `main.rs`.

mod certs;
mod doctor;
mod dra;
mod karpenter;
mod mutate;
mod plan;
mod policy;
mod policy_check;
mod policy_report;
mod serve;
mod usage;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::cluster::kubeapi;
use crate::policy_source::PolicySource;
use crate::terminal::escape_controls;
use certs::CertsArgs;
use doctor::DoctorArgs;
use dra::DraCommand;
use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use karpenter::KarpenterCommand;
use mutate::MutateArgs;
use plan::PlanArgs;
use policy::PolicyCommand;
use serve::ServeArgs;
use usage::UsageArgs;

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

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Mutate(args) => mutate::run(args),
        Command::Policy(PolicyCommand::Check(args)) => policy_check::check(args),
        Command::Policy(PolicyCommand::Report(args)) => policy_report::report(args),
        Command::Karpenter(KarpenterCommand::Overlays(args)) => karpenter::overlays(args),
        Command::Plan(args) => plan::run(args),
        Command::Dra(DraCommand::Templates(args)) => dra::templates(args),
        Command::Dra(DraCommand::DeviceClasses(args)) => dra::device_classes(args),
        Command::Certs(args) => certs::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Usage(args) => usage::run(args),
    }
}

/// `--policy FILE`, else the embedded example: the offline commands' policy.
fn load_policy(path: Option<&Path>) -> anyhow::Result<Policy> {
    PolicySource::file_or_example(path)
        .read_offline()
        .map(|loaded| loaded.policy)
        .map_err(anyhow::Error::from)
}

fn load_pools(dir: Option<&Path>) -> anyhow::Result<NodePoolIndex> {
    match dir {
        Some(d) => Ok(crate::input::nodepools(d)?),
        None => Ok(NodePoolIndex::default()),
    }
}

/// Runs `work` with a client for `kubeconfig` (else the in-cluster or default config) on a
/// current-thread runtime: the read-only `--from-cluster` commands.
fn on_cluster<T, F, Fut>(kubeconfig: Option<&Path>, work: F) -> anyhow::Result<T>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kubeapi::client(kubeconfig).await?;
        work(client).await
    })
}

fn print_yaml_or_fail(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", escape_controls(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Objects as one multi-document YAML file, after a comment header.
fn yaml_stream(header: &str, objects: &[serde_json::Value]) -> anyhow::Result<String> {
    let mut out = header.to_string();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(o)?);
    }
    Ok(out)
}

fn load_gpu_operator(dir: Option<&Path>) -> anyhow::Result<Option<GpuOperatorConfigs>> {
    Ok(dir.map(crate::input::gpu_operator_configs).transpose()?)
}

/// The policy to judge by: `--policy FILE`, else the webhook's ConfigMap; with where it was read.
async fn cluster_policy(
    client: &kube::Client,
    path: Option<&Path>,
) -> anyhow::Result<(Policy, String)> {
    let loaded = PolicySource::file_or_configmap(path).read(client).await?;
    // A file is named by its path in titles; the ConfigMap by where it was read.
    let shown = path.map_or(loaded.source, |p| p.display().to_string());
    Ok((loaded.policy, shown))
}
