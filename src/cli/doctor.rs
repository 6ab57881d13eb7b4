//! `gpu-slicer doctor`: [`crate::doctor`] on a live cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cluster::kubeapi;
use crate::doctor;
use crate::terminal::escape_controls;

use super::parse_duration;

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

/// Exit codes of `doctor`: 0 no error found, 1 errors found, 2 the cluster could not be read (or
/// `--policy` does not load).
pub(super) fn run(args: DoctorArgs) -> ExitCode {
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
