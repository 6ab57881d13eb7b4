//! Packing: the workloads that picked the same instance type and layout share nodes, placed by
//! first-fit decreasing over GPU slots, vCPU and memory together so that no node holds more than its
//! allocatable ([`pack`]); one [`NodeGroup`] per instance type and layout, with its nodes' loads and cost.
//!
//! Imports: the core's catalog, [`super::inventory`], [`super::choose`] (the layout each workload
//! picked) and [`super::allocatable`]. The plan's assembly reads the groups made here.

use std::collections::BTreeMap;

use serde::Serialize;

use super::allocatable::{self, Allocatable};
use super::choose::Layout;
use super::inventory::Inventory;
use gpu_slicer_core::catalog;

/// One node's load, as the joint packing placed it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeLoad {
    /// (index into `Plan::workloads`, replicas) per workload on this node.
    pub replicas: Vec<(usize, u64)>,
    /// GPU slots used.
    pub slots: u64,
    /// vCPU requested, millicores (replicas without a cpu count 0).
    pub cpu_millis: u64,
    /// Memory requested, bytes (replicas without a memory count 0).
    pub memory: u128,
}

/// Nodes of one instance type and layout, shared by the workloads that picked them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    pub instance_type: &'static str,
    pub layout: String,
    pub count: u64,
    /// What one node offers the planned pods.
    pub allocatable_per_node: ResourcesJson,
    #[serde(skip)]
    pub layout_kind: Layout,
    #[serde(skip)]
    pub replicas: u64,
    /// GPU slots per node.
    #[serde(skip)]
    pub slots_per_node: u64,
    #[serde(skip)]
    pub usd_per_hour: f64,
    #[serde(skip)]
    pub gpus: u64,
    /// Every node's load.
    #[serde(skip)]
    pub loads: Vec<NodeLoad>,
    #[serde(skip)]
    pub allocatable: Allocatable,
}

/// vCPU and memory in the JSON output.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesJson {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl ResourcesJson {
    /// Memory in bytes, saturating at `u64::MAX`.
    pub(crate) fn new(cpu_millis: u64, memory: u128) -> ResourcesJson {
        ResourcesJson {
            cpu_millis,
            memory_bytes: u64::try_from(memory).unwrap_or(u64::MAX),
        }
    }
}

/// One workload's replicas to pack: (index, replicas, cpu millis, memory bytes).
type Item = (usize, u64, u64, u128);

/// First-fit decreasing of whole workloads' replicas onto nodes of `slots` GPU slots and `alloc`:
/// the largest replicas (by their largest share of a node) first, each into the first node with room
/// for it in every resource, new nodes as needed. No node ends over any of the three.
pub fn pack(items: &[Item], slots: u64, alloc: Allocatable) -> Result<Vec<NodeLoad>, String> {
    let share = |&(_, _, cpu, mem): &Item| {
        let s = 1.0 / slots.max(1) as f64;
        let c = cpu as f64 / alloc.cpu_millis.max(1) as f64;
        let m = mem as f64 / alloc.memory.max(1) as f64;
        s.max(c).max(m)
    };
    let mut order: Vec<&Item> = items.iter().collect();
    order.sort_by(|a, b| share(b).total_cmp(&share(a)).then(a.0.cmp(&b.0)));
    let room = |n: &NodeLoad, cpu: u64, mem: u128| -> u64 {
        let by_slots = slots.saturating_sub(n.slots);
        // A workload without a request for a resource is not limited by it.
        let by_cpu = alloc
            .cpu_millis
            .saturating_sub(n.cpu_millis)
            .checked_div(cpu)
            .unwrap_or(u64::MAX);
        let by_mem = alloc
            .memory
            .saturating_sub(n.memory)
            .checked_div(mem)
            .map_or(u64::MAX, |k| u64::try_from(k).unwrap_or(u64::MAX));
        by_slots.min(by_cpu).min(by_mem)
    };
    let mut nodes: Vec<NodeLoad> = Vec::new();
    for &&(index, replicas, cpu, mem) in &order {
        let mut left = replicas;
        let place = |n: &mut NodeLoad, k: u64| {
            n.replicas.push((index, k));
            n.slots += k;
            n.cpu_millis += k * cpu;
            n.memory += u128::from(k) * mem;
        };
        for n in nodes.iter_mut() {
            let k = room(n, cpu, mem).min(left);
            if k > 0 {
                place(n, k);
                left -= k;
            }
        }
        while left > 0 {
            let mut n = NodeLoad::default();
            let k = room(&n, cpu, mem).min(left);
            if k == 0 {
                return Err(format!(
                    "workload {index}: one replica does not fit an empty node"
                ));
            }
            place(&mut n, k);
            left -= k;
            nodes.push(n);
        }
    }
    Ok(nodes)
}

/// The node groups of a plan: `picked[i]` is the instance type and layout workload `i` of `inv`
/// picked; workloads that picked the same share nodes. Groups come in order of instance type, then
/// layout.
pub fn node_groups(
    inv: &Inventory,
    picked: &[(&'static str, Layout)],
) -> Result<Vec<NodeGroup>, String> {
    let mut groups: BTreeMap<(&'static str, Layout), Vec<Item>> = BTreeMap::new();
    for (i, (w, key)) in inv.workloads.iter().zip(picked).enumerate() {
        groups.entry(*key).or_default().push((
            i,
            w.replicas,
            w.cpu_millis.unwrap_or(0),
            w.memory.unwrap_or(0),
        ));
    }
    let mut out = Vec::new();
    for ((name, layout), items) in groups {
        let Some(it) = catalog::instance_type(name) else {
            return Err(format!("{name}: not in the catalog"));
        };
        let slots = layout.slots(it);
        let alloc = allocatable::allocatable(it, &inv.node_reserve);
        let loads = pack(&items, slots, alloc).map_err(|e| format!("{name}: {e}"))?;
        let count = loads.len() as u64;
        out.push(NodeGroup {
            instance_type: name,
            layout: layout.name(),
            count,
            allocatable_per_node: ResourcesJson::new(alloc.cpu_millis, alloc.memory),
            layout_kind: layout,
            replicas: items.iter().map(|i| i.1).sum(),
            slots_per_node: slots,
            usd_per_hour: count as f64 * it.usd_per_hour.unwrap_or(0.0),
            gpus: count * u64::from(it.gpus),
            loads,
            allocatable: alloc,
        });
    }
    Ok(out)
}
