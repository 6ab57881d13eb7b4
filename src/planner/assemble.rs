//! The plan's assembly: every workload's pick ([`super::choose`]) and the shared nodes they pack
//! onto ([`pack`](mod@super::pack)), against "before", each workload's current placement on whole
//! GPUs; totals in $/hour, and the warnings for what the plan could not check. What [`plan`] returns
//! is what the renderers (the table, the page, `--emit`) read.
//!
//! Imports: the core's catalog, and the planner's inventory, allocatable, choose and pack. No renderer.

use serde::Serialize;

use super::allocatable;
use super::choose::{Binding, Fit, Layout, Pick, pick};
use super::inventory::{Inventory, Workload, cpu_text, memory_text};
use super::pack::{NodeGroup, ResourcesJson, node_groups};
use gpu_slicer_core::catalog;

/// Hours in a month, for $/month.
pub const HOURS_PER_MONTH: f64 = 730.0;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Before {
    pub usd_per_hour: f64,
    pub nodes: u64,
    #[serde(skip)]
    pub gpus: u64,
    /// Workloads whose current instance type has no known price (left out of the totals).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct After {
    pub usd_per_hour: f64,
    pub nodes: Vec<NodeGroup>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPlan {
    pub name: String,
    pub namespace: String,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas_per_gpu: Option<u32>,
    /// Replicas time-sharing one MIG slice (`mig-timeslice`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas_per_slice: Option<u32>,
    pub instance_type: &'static str,
    /// Replicas one node holds (alone): the least of GPU slots, vCPU and memory.
    pub replicas_per_node: u64,
    /// Which of them sets `replicasPerNode`.
    pub binding_resource: Binding,
    /// False when the workload gave no cpu or memory: the hosts were not checked for it.
    pub host_resources_checked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(skip)]
    pub layout: Layout,
    #[serde(skip)]
    pub replicas: u64,
    #[serde(skip)]
    pub reason: String,
    #[serde(skip)]
    pub gpus_per_replica: u32,
    #[serde(skip)]
    pub fit: Fit,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub before: Before,
    pub after: After,
    pub workloads: Vec<WorkloadPlan>,
    /// What the plan could not check (workloads without cpu or memory).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The per-node DaemonSet reserve the allocatable figures are net of.
    pub node_reserve: ResourcesJson,
}

impl Plan {
    pub fn after_gpus(&self) -> u64 {
        self.after.nodes.iter().map(|g| g.gpus).sum()
    }
    pub fn after_node_count(&self) -> u64 {
        self.after.nodes.iter().map(|g| g.count).sum()
    }
}

/// Plans every workload and groups the picks into shared nodes.
pub fn plan(inv: &Inventory) -> Result<Plan, Vec<String>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut workloads = Vec::new();
    let mut before = Before {
        usd_per_hour: 0.0,
        nodes: 0,
        gpus: 0,
        unpriced: Vec::new(),
    };
    for w in &inv.workloads {
        warnings.extend(unchecked_hosts(w));
        if let Err(e) = add_before(w, inv, &mut before, &mut warnings) {
            errors.push(e);
        }
        match pick(w, inv) {
            Ok(p) => workloads.push(workload_plan(w, p)),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let picked: Vec<_> = workloads
        .iter()
        .map(|wp| (wp.instance_type, wp.layout))
        .collect();
    let nodes = node_groups(inv, &picked).map_err(|e| vec![e])?;
    let mut after = After {
        usd_per_hour: nodes.iter().fold(0.0, |sum, g| sum + g.usd_per_hour),
        nodes,
    };
    // Sums of prices carry float noise (318.15945000000005): keep them to a millionth of a dollar.
    let round = |v: f64| (v * 1e6).round() / 1e6;
    before.usd_per_hour = round(before.usd_per_hour);
    after.usd_per_hour = round(after.usd_per_hour);
    Ok(Plan {
        before,
        after,
        workloads,
        warnings,
        node_reserve: ResourcesJson::new(inv.node_reserve.cpu_millis, inv.node_reserve.memory),
    })
}

/// The warning for a workload that gave no cpu or no memory: the hosts were not checked for it.
fn unchecked_hosts(w: &Workload) -> Option<String> {
    if w.host_checked() {
        return None;
    }
    let missing = match (w.cpu_millis, w.memory) {
        (None, None) => "cpu and memory",
        (None, Some(_)) => "cpu",
        _ => "memory",
    };
    Some(format!(
        "{}/{}: no {missing} per replica given, so the plan did not check it against the nodes' allocatable (it may place more replicas on a node than the node can run)",
        w.namespace, w.name
    ))
}

/// Adds a workload's current placement to `before`; an error where the inventory's `current` is not
/// a placement the catalog knows.
fn add_before(
    w: &Workload,
    inv: &Inventory,
    before: &mut Before,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let id = format!("{}/{}", w.namespace, w.name);
    let it = match catalog::instance_type(&w.current_instance_type) {
        Some(it) if it.gpus >= w.gpus_per_replica => it,
        Some(it) => {
            return Err(format!(
                "{id}: current.gpusPerReplica {} is more than {} has ({})",
                w.gpus_per_replica, it.name, it.gpus
            ));
        }
        None => {
            return Err(format!(
                "{id}: current.instanceType {:?} is not a GPU instance type in the catalog",
                w.current_instance_type
            ));
        }
    };
    // Today's placement within the same host limits as the plan's, so both sides compare.
    let fit = Fit::new(w, inv, it, &Layout::Whole(w.gpus_per_replica));
    let mut per_node = fit.per_node();
    if per_node == 0 {
        // It runs there today, so the model's reserve or the requests are off: say so and count
        // today's nodes by GPUs alone rather than refuse the plan.
        let a = allocatable::allocatable(it, &inv.node_reserve);
        warnings.push(format!(
            "{id}: current.instanceType {} cannot run one replica by this model: it offers {} vCPU and {} memory after kube-reserved, eviction threshold and the node reserve (--node-reserve-cpu, --node-reserve-memory); 'before' counts it by GPUs alone",
            it.name,
            cpu_text(a.cpu_millis),
            memory_text(a.memory)
        ));
        per_node = fit.gpu;
    }
    let nodes = w.replicas.div_ceil(per_node.max(1));
    before.nodes += nodes;
    before.gpus += nodes * u64::from(it.gpus);
    match it.usd_per_hour {
        Some(p) => before.usd_per_hour += nodes as f64 * p,
        None => before.unpriced.push(id),
    }
    Ok(())
}

/// A workload's line of the plan, from its pick.
fn workload_plan(w: &Workload, p: Pick) -> WorkloadPlan {
    let layout = p.choice.layout;
    WorkloadPlan {
        name: w.name.clone(),
        namespace: w.namespace.clone(),
        mode: layout.mode(),
        profile: match layout {
            Layout::Mig(prof) | Layout::MigTimeslice(prof, _) => Some(prof),
            _ => None,
        },
        replicas_per_gpu: match layout {
            Layout::Timeslice(n) => Some(n),
            _ => None,
        },
        replicas_per_slice: match layout {
            Layout::MigTimeslice(_, n) => Some(n),
            _ => None,
        },
        instance_type: p.choice.instance.name,
        replicas_per_node: p.choice.slots_per_node,
        binding_resource: p.choice.fit.binding(),
        host_resources_checked: w.host_checked(),
        cpu_millis: w.cpu_millis,
        memory_bytes: w.memory.map(|m| u64::try_from(m).unwrap_or(u64::MAX)),
        layout,
        replicas: w.replicas,
        reason: p.reason,
        gpus_per_replica: w.gpus_per_replica,
        fit: p.choice.fit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(workloads: &str) -> Inventory {
        Inventory::parse(&format!("apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n  workloads:\n{workloads}"), "t").unwrap()
    }

    #[test]
    fn fifty_six_small_isolated_replicas_fit_one_p4de_at_all_1g_10gb() {
        let i = inv(
            "  - {name: embedder, namespace: ml, replicas: 56, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge, gpusPerReplica: 1}}\n",
        );
        let p = plan(&i).unwrap();
        assert_eq!(p.workloads[0].instance_type, "p4de.24xlarge");
        assert_eq!(p.workloads[0].layout, Layout::Mig("1g.10gb"));
        assert_eq!(p.after.nodes.len(), 1);
        assert_eq!(p.after.nodes[0].count, 1);
        assert!((p.after.usd_per_hour - 27.44705).abs() < 1e-9);
        assert_eq!(p.before.nodes, 7);
        assert!((p.before.usd_per_hour - 7.0 * 27.44705).abs() < 1e-9); // $192.13/h
    }
}
