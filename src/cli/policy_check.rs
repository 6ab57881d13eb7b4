//! `gpu-slicer policy check`: the policy against NodePools, GPU Operator configs and the DRA driver.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::terminal::escape_controls;
use gpu_slicer_core::check;

use super::load_gpu_operator;

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
        .map_err(anyhow::Error::from)
        .and_then(|policy| {
            let pools = args
                .nodepools
                .as_deref()
                .map(crate::input::nodepools)
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
