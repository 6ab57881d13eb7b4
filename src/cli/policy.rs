//! `gpu-slicer policy`: its subcommands, each in its own file ([`super::policy_check`],
//! [`super::policy_report`]).

use clap::Subcommand;

use super::policy_check::CheckArgs;
use super::policy_report::ReportArgs;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file (and its agreement with NodePools and GPU Operator configs).
    Check(CheckArgs),
    /// What-if: what the policy (as enforce) would do to each existing workload at its next rollout.
    Report(ReportArgs),
}
