//! The plan as the table a person reads in a terminal (`plan`, `-o table`): the workloads and their
//! choices, the nodes after, and before against after. Names and reasons come from the inventory or the
//! cluster: escaped, so they cannot drive the terminal.
//!
//! Imports: [`crate::terminal`], the core's catalog, and the planner's plan and inventory (its
//! quantities). Nothing renders from here but this table.

use super::assemble::{HOURS_PER_MONTH, Plan};
use super::inventory::{cpu_text, memory_text};
use crate::terminal::escape_controls;
use gpu_slicer_core::catalog;

const GIB: f64 = (1u64 << 30) as f64;

/// The plan as the table a person reads.
pub fn table(plan: &Plan) -> String {
    let mut out = String::new();
    out.push_str(&workloads(plan));
    out.push_str(&nodes_after(plan));
    out.push_str(&totals(plan));
    out
}

/// One line per workload: what it runs on after, and why.
fn workloads(plan: &Plan) -> String {
    let mut out = String::new();
    out.push_str(
        "WORKLOAD                         REPLICAS  CHOICE                                   WHY\n",
    );
    for w in &plan.workloads {
        let choice = format!("{} {}", w.instance_type, w.layout.name());
        out.push_str(&format!(
            "{:<32} {:>8}  {:<40} {}\n",
            escape_controls(&format!("{}/{}", w.namespace, w.name)),
            w.replicas,
            escape_controls(&choice),
            escape_controls(&w.reason)
        ));
    }
    out
}

/// One line per node group, with its fullest node's vCPU and memory against the allocatable.
fn nodes_after(plan: &Plan) -> String {
    let mut out = String::from(
        "\nNODES AFTER                                                                   FULLEST NODE: vCPU, GiB requested / allocatable\n",
    );
    for g in &plan.after.nodes {
        // "-" where no workload on these nodes gave the request: nothing was checked.
        let cpu = g.loads.iter().map(|n| n.cpu_millis).max().unwrap_or(0);
        let mem = g.loads.iter().map(|n| n.memory).max().unwrap_or(0);
        let cpu = if cpu > 0 {
            format!("{:.2}", cpu as f64 / 1000.0)
        } else {
            "-".into()
        };
        let mem = if mem > 0 {
            format!("{:.1}", mem as f64 / GIB)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "  {:>3} x {:<18} {:<14} {:>4} replicas in {:>4} slots  ${:>10.2}/h   {:>7} / {:<7.2} {:>8} / {:.1}\n",
            g.count,
            g.instance_type,
            g.layout,
            g.replicas,
            g.count * g.slots_per_node,
            g.usd_per_hour,
            cpu,
            g.allocatable.cpu_millis as f64 / 1000.0,
            mem,
            g.allocatable.memory as f64 / GIB
        ));
    }
    out
}

/// Before, after and the saving, then what the figures assume.
fn totals(plan: &Plan) -> String {
    let mut out = String::new();
    let b = &plan.before;
    let a_usd = plan.after.usd_per_hour;
    out.push_str(&format!(
        "\n            {:>6} {:>6} {:>12} {:>14}\nbefore      {:>6} {:>6} {:>12.2} {:>14.2}\nafter       {:>6} {:>6} {:>12.2} {:>14.2}\n",
        "nodes",
        "GPUs",
        "$/hour",
        "$/month",
        b.nodes,
        b.gpus,
        b.usd_per_hour,
        b.usd_per_hour * HOURS_PER_MONTH,
        plan.after_node_count(),
        plan.after_gpus(),
        a_usd,
        a_usd * HOURS_PER_MONTH
    ));
    let saving = b.usd_per_hour - a_usd;
    let pct = if b.usd_per_hour > 0.0 {
        saving / b.usd_per_hour * 100.0
    } else {
        0.0
    };
    out.push_str(&format!(
        "saving                    {:>12.2} {:>14.2}  ({pct:.1}%)\n",
        saving,
        saving * HOURS_PER_MONTH
    ));
    if !b.unpriced.is_empty() {
        out.push_str(&format!(
            "note: no on-demand price for the current placement of {}; left out of 'before'\n",
            escape_controls(&b.unpriced.join(", "))
        ));
    }
    out.push_str(&format!(
        "prices: on-demand, {} ({}); hosts: Karpenter's allocatable (kube-reserved, eviction threshold, VM overhead) less {} vCPU and {} per node for DaemonSets; compute is not modelled (slices and shared GPUs get a fraction of the SMs)\n",
        catalog::PRICES_REGION,
        catalog::PRICES_AS_OF,
        cpu_text(plan.node_reserve.cpu_millis),
        memory_text(u128::from(plan.node_reserve.memory_bytes))
    ));
    out
}
