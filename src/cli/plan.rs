//! `gpu-slicer plan`: the cost planner ([`crate::planner`]) on an inventory file or a cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::planner;
use crate::terminal::escape_controls;

use super::on_cluster;

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

pub(super) fn run(args: PlanArgs) -> ExitCode {
    let result = (|| -> anyhow::Result<()> {
        let mut inventory = match &args.file {
            Some(file) => {
                planner::inventory::Inventory::parse(&crate::input::read_arg(file)?, file)?
            }
            None => inventory_from_cluster(args.kubeconfig.as_deref())?,
        };
        if let Some(n) = args.max_shared_replicas {
            inventory.max_shared_replicas = n.max(1);
        }
        if let Some(q) = &args.context_overhead {
            inventory.context_overhead = gpu_slicer_core::quantity::parse(q)
                .ok_or_else(|| anyhow::anyhow!("--context-overhead {q:?} is not a quantity"))?;
        }
        if let Some(q) = &args.node_reserve_cpu {
            inventory.node_reserve.cpu_millis = planner::inventory::parse_cpu(q)
                .ok_or_else(|| anyhow::anyhow!("--node-reserve-cpu {q:?} is not a CPU quantity"))?;
        }
        if let Some(q) = &args.node_reserve_memory {
            inventory.node_reserve.memory = gpu_slicer_core::quantity::parse(q)
                .ok_or_else(|| anyhow::anyhow!("--node-reserve-memory {q:?} is not a quantity"))?;
        }
        let plan = planner::assemble::plan(&inventory)
            .map_err(|e| e.join("\n"))
            .map_err(anyhow::Error::msg)?;
        for w in &plan.warnings {
            eprintln!("warning: {}", escape_controls(w));
        }
        match args.output {
            PlanOutput::Table => print!("{}", planner::text::table(&plan)),
            PlanOutput::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        if let Some(dir) = &args.emit {
            let emitted = planner::emit::emit(&plan, dir).map_err(anyhow::Error::msg)?;
            for c in &emitted.conflicts {
                eprintln!("warning: {}", escape_controls(c));
            }
            eprintln!("wrote {}", emitted.files.join(", "));
        }
        if let Some(file) = &args.html {
            std::fs::write(file, planner::html::render(&plan))
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            eprintln!("wrote {}", file.display());
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// The planner's inventory from the cluster's GPU workloads (defaults: 4 shared replicas, 512Mi context
/// overhead; the flags override them as for a file).
pub(super) fn inventory_from_cluster(
    kubeconfig: Option<&Path>,
) -> anyhow::Result<planner::inventory::Inventory> {
    let objects = on_cluster(kubeconfig, |client| async move {
        planner::cluster::list_workloads(client)
            .await
            .map_err(|e| anyhow::anyhow!("listing workloads: {e}"))
    })?;
    let (workloads, skipped) = planner::cluster::workloads_from_objects(&objects);
    for s in &skipped {
        eprintln!("skipped: {}", escape_controls(s));
    }
    if workloads.is_empty() {
        return Err(anyhow::anyhow!(
            "no GPU workload in the cluster has what the planner needs (see the skipped lines)"
        ));
    }
    Ok(planner::inventory::Inventory {
        max_shared_replicas: planner::inventory::DEFAULT_MAX_SHARED_REPLICAS,
        context_overhead: planner::inventory::DEFAULT_CONTEXT_OVERHEAD,
        node_reserve: planner::allocatable::NodeReserve::default(),
        workloads,
    })
}
