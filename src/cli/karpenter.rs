//! `gpu-slicer karpenter overlays`: the NodeOverlays Karpenter needs to launch nodes for slices.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use gpu_slicer_core::karpenter;

use super::{load_gpu_operator, print_yaml_or_fail};

#[derive(Debug, Subcommand)]
pub enum KarpenterCommand {
    /// Print the NodeOverlays that let Karpenter launch nodes for the slices the policy asks for.
    Overlays(OverlaysArgs),
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

pub(super) fn overlays(args: OverlaysArgs) -> ExitCode {
    let result = (|| -> anyhow::Result<String> {
        let policy = crate::policy_source::load_file(&args.policy)?;
        let pools = crate::input::nodepools(&args.nodepools)?;
        let ops = load_gpu_operator(args.gpu_operator.as_deref())?.unwrap_or_default();
        let overlays = karpenter::overlays(&policy, &pools, &ops)
            .map_err(|errors| anyhow::anyhow!(errors.join("\n")))?;
        let mut command = format!(
            "gpu-slicer karpenter overlays --policy {} --nodepools {}",
            args.policy.display(),
            args.nodepools.display()
        );
        if let Some(dir) = &args.gpu_operator {
            command.push_str(&format!(" --gpu-operator {}", dir.display()));
        }
        karpenter::overlays_yaml(&overlays, &command).map_err(anyhow::Error::msg)
    })();
    print_yaml_or_fail(result)
}
