//! `gpu-slicer plan`: what slicing saves, and the configs that get there.
//!
//! The model (README "Cost planner" states it for readers):
//! - per workload, every priced catalog instance type offers: a MIG profile whose real memory holds the
//!   replica's `gpuMemory`, laid out uniformly (`all-<profile>`, the catalog's max count per GPU); a
//!   time-sliced GPU (only `isolation: none`) with `min(maxSharedReplicas, floor(gpuMemory of the GPU /
//!   (gpuMemory + contextOverhead)))` replicas; or whole GPUs (`gpusPerReplica` of them, whose memory
//!   together holds `gpuMemory`);
//! - a node is one instance type with one layout on all its GPUs; slots per node = GPUs x replicas per
//!   GPU (whole: GPUs / gpusPerReplica);
//! - cost = ceil(replicas / slots per node) x on-demand $/hour; the cheapest wins, ties broken by fewer
//!   nodes, then stronger isolation (whole, then MIG, then time-slicing), then name;
//! - workloads that picked the same instance type and layout share nodes (their replicas add up, then
//!   round up once); before = each workload's `current` placement on whole GPUs, as it runs today;
//! - compute is not modelled (a slice gets a fraction of the GPU's SMs; time-sliced replicas share
//!   them); memory and isolation are.

pub mod cluster;
pub mod emit;
pub mod html;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{self, InstanceType};
use crate::quantity;

pub const API_VERSION: &str = "gpu-slicer.io/v1alpha1";
pub const KIND: &str = "Inventory";
/// Hours in a month, for $/month.
pub const HOURS_PER_MONTH: f64 = 730.0;
const MIB: u128 = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct InventoryError {
    pub origin: String,
    pub message: String,
}

// ---- The inventory file. ----

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InventoryFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    spec: InventorySpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InventorySpec {
    #[serde(default = "default_region")]
    region: String,
    #[serde(default = "default_max_shared")]
    max_shared_replicas: u32,
    #[serde(default = "default_overhead")]
    context_overhead: String,
    workloads: Vec<WorkloadSpec>,
}

fn default_region() -> String {
    catalog::PRICES_REGION.to_string()
}
/// `maxSharedReplicas` when the inventory does not say.
pub const DEFAULT_MAX_SHARED_REPLICAS: u32 = 4;
/// `contextOverhead` when the inventory does not say: 512Mi.
pub const DEFAULT_CONTEXT_OVERHEAD: u128 = 512 << 20;

fn default_max_shared() -> u32 {
    DEFAULT_MAX_SHARED_REPLICAS
}
fn default_overhead() -> String {
    format!("{}Mi", DEFAULT_CONTEXT_OVERHEAD >> 20)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct WorkloadSpec {
    name: String,
    namespace: String,
    replicas: u64,
    gpu_memory: String,
    isolation: Isolation,
    current: CurrentSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CurrentSpec {
    instance_type: String,
    #[serde(default = "one")]
    gpus_per_replica: u32,
}

fn one() -> u32 {
    1
}

/// What a workload's replicas must not share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Memory isolation: a MIG slice or whole GPUs.
    Memory,
    /// None required: time-slicing allowed too.
    None,
}

/// A validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub max_shared_replicas: u32,
    pub context_overhead: u128,
    pub workloads: Vec<Workload>,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub replicas: u64,
    /// Bytes.
    pub gpu_memory: u128,
    pub gpu_memory_text: String,
    pub isolation: Isolation,
    pub current_instance_type: String,
    pub gpus_per_replica: u32,
}

impl Inventory {
    pub fn parse(text: &str, origin: &str) -> Result<Inventory, InventoryError> {
        let err = |message: String| InventoryError {
            origin: origin.to_string(),
            message,
        };
        let file: InventoryFile = serde_norway::from_str(text).map_err(|e| err(e.to_string()))?;
        let _ = file.metadata;
        if file.api_version != API_VERSION || file.kind != KIND {
            return Err(err(format!(
                "expected apiVersion {API_VERSION}, kind {KIND}"
            )));
        }
        let spec = file.spec;
        if spec.region != catalog::PRICES_REGION {
            return Err(err(format!(
                "spec.region: prices are known for {} only, not {:?}",
                catalog::PRICES_REGION,
                spec.region
            )));
        }
        if spec.max_shared_replicas == 0 {
            return Err(err("spec.maxSharedReplicas: must be at least 1".into()));
        }
        let context_overhead = quantity::parse(&spec.context_overhead).ok_or_else(|| {
            err(format!(
                "spec.contextOverhead: {:?} is not a quantity",
                spec.context_overhead
            ))
        })?;
        let mut workloads = Vec::new();
        for (i, w) in spec.workloads.into_iter().enumerate() {
            let at = |field: &str, m: String| err(format!("spec.workloads[{i}].{field}: {m}"));
            if w.replicas == 0 {
                return Err(at("replicas", "must be at least 1".into()));
            }
            let gpu_memory = quantity::parse(&w.gpu_memory)
                .filter(|b| *b > 0)
                .ok_or_else(|| {
                    at(
                        "gpuMemory",
                        format!("{:?} is not a positive quantity", w.gpu_memory),
                    )
                })?;
            if w.current.gpus_per_replica == 0 {
                return Err(at("current.gpusPerReplica", "must be at least 1".into()));
            }
            workloads.push(Workload {
                name: w.name,
                namespace: w.namespace,
                replicas: w.replicas,
                gpu_memory,
                gpu_memory_text: w.gpu_memory,
                isolation: w.isolation,
                current_instance_type: w.current.instance_type,
                gpus_per_replica: w.current.gpus_per_replica,
            });
        }
        Ok(Inventory {
            max_shared_replicas: spec.max_shared_replicas,
            context_overhead,
            workloads,
        })
    }
}

// ---- Choices. ----

/// How a node's GPUs are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layout {
    /// `all-<profile>`: every GPU cut into the catalog's max count of this profile.
    Mig(&'static str),
    /// `timeslice-<n>`: every GPU shared by n replicas.
    Timeslice(u32),
    /// Whole GPUs, `n` per replica.
    Whole(u32),
}

impl Layout {
    pub fn name(&self) -> String {
        match self {
            Layout::Mig(p) => format!("all-{p}"),
            Layout::Timeslice(n) => format!("timeslice-{n}"),
            Layout::Whole(_) => "whole".to_string(),
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Layout::Mig(_) => "mig",
            Layout::Timeslice(_) => "timeslice",
            Layout::Whole(_) => "whole",
        }
    }

    /// Higher is stronger isolation.
    fn isolation_rank(&self) -> u8 {
        match self {
            Layout::Whole(_) => 2,
            Layout::Mig(_) => 1,
            Layout::Timeslice(_) => 0,
        }
    }

    /// Replicas per node of `it`.
    pub fn slots(&self, it: &InstanceType) -> u64 {
        let gpus = u64::from(it.gpus);
        match self {
            Layout::Mig(p) => it
                .gpu
                .mig_profile(p)
                .map_or(0, |m| gpus * u64::from(m.max_per_gpu)),
            Layout::Timeslice(n) => gpus * u64::from(*n),
            Layout::Whole(per) => gpus / u64::from(*per),
        }
    }
}

/// One way to run a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub instance: &'static InstanceType,
    pub layout: Layout,
    pub slots_per_node: u64,
    pub nodes: u64,
    pub usd_per_hour: f64,
}

impl Choice {
    fn new(instance: &'static InstanceType, layout: Layout, replicas: u64) -> Option<Choice> {
        let price = instance.usd_per_hour?;
        let slots = layout.slots(instance);
        if slots == 0 {
            return None;
        }
        let nodes = replicas.div_ceil(slots);
        Some(Choice {
            instance,
            layout,
            slots_per_node: slots,
            nodes,
            usd_per_hour: nodes as f64 * price,
        })
    }

    /// Orders by cost, then fewer nodes, then stronger isolation, then names (deterministic).
    fn better_than(&self, other: &Choice) -> bool {
        let key = |c: &Choice| {
            (
                c.nodes,
                std::cmp::Reverse(c.layout.isolation_rank()),
                c.instance.name,
                c.layout.name(),
            )
        };
        if (self.usd_per_hour - other.usd_per_hour).abs() > 1e-9 {
            return self.usd_per_hour < other.usd_per_hour;
        }
        key(self) < key(other)
    }
}

/// Every feasible choice for a workload.
pub fn options(w: &Workload, inv: &Inventory) -> Vec<Choice> {
    let mut out = Vec::new();
    for it in catalog::INSTANCE_TYPES {
        let gpu_bytes = u128::from(it.gpu.memory_mib) * MIB;
        for p in it.gpu.mig_profiles {
            if u128::from(p.memory_mib) * MIB >= w.gpu_memory {
                out.extend(Choice::new(it, Layout::Mig(p.name), w.replicas));
            }
        }
        if w.isolation == Isolation::None {
            let fit = gpu_bytes / (w.gpu_memory + inv.context_overhead);
            let n = u32::try_from(fit)
                .unwrap_or(u32::MAX)
                .min(inv.max_shared_replicas);
            if n >= 2 {
                out.extend(Choice::new(it, Layout::Timeslice(n), w.replicas));
            }
        }
        let per = w.gpus_per_replica;
        if it.gpus >= per && gpu_bytes * u128::from(per) >= w.gpu_memory {
            out.extend(Choice::new(it, Layout::Whole(per), w.replicas));
        }
    }
    out
}

/// A workload's pick, with the runner-up for the reason.
#[derive(Debug, Clone)]
pub struct Pick {
    pub choice: Choice,
    pub runner_up: Option<Choice>,
    pub reason: String,
}

fn describe(c: &Choice) -> String {
    format!(
        "{} x {} {} (${:.2}/h)",
        c.nodes,
        c.instance.name,
        c.layout.name(),
        c.usd_per_hour
    )
}

fn slots_text(n: u64) -> String {
    if n == 1 {
        "1 slot".to_string()
    } else {
        format!("{n} slots")
    }
}

pub fn pick(w: &Workload, inv: &Inventory) -> Result<Pick, String> {
    let mut best: Option<Choice> = None;
    let mut second: Option<Choice> = None;
    for c in options(w, inv) {
        match &best {
            Some(b) if !c.better_than(b) => {
                if second.as_ref().is_none_or(|s| c.better_than(s)) {
                    second = Some(c);
                }
            }
            _ => {
                second = best.take();
                best = Some(c);
            }
        }
    }
    let choice = best.ok_or_else(|| {
        format!(
            "{}/{}: no catalogued GPU holds gpuMemory {} ({})",
            w.namespace,
            w.name,
            w.gpu_memory_text,
            match w.isolation {
                Isolation::Memory => "memory isolation",
                Isolation::None => "no isolation",
            }
        )
    })?;
    let fits = match choice.layout {
        Layout::Mig(p) => {
            let mib = choice
                .instance
                .gpu
                .mig_profile(p)
                .map_or(0, |m| m.memory_mib);
            format!(
                "a {p} slice ({mib} MiB on {}) holds {}",
                choice.instance.gpu.name, w.gpu_memory_text
            )
        }
        Layout::Timeslice(n) => format!(
            "{n} replicas of {} + context overhead fit one {} ({} MiB); no isolation asked",
            w.gpu_memory_text, choice.instance.gpu.name, choice.instance.gpu.memory_mib
        ),
        Layout::Whole(per) => format!("{per} whole {} per replica", choice.instance.gpu.name),
    };
    let reason = match &second {
        Some(s) => format!(
            "{fits}; {} per node; cheapest (next: {})",
            slots_text(choice.slots_per_node),
            describe(s)
        ),
        None => format!(
            "{fits}; {} per node; the only option",
            slots_text(choice.slots_per_node)
        ),
    };
    Ok(Pick {
        choice,
        runner_up: second,
        reason,
    })
}

// ---- The plan. ----

/// Nodes of one instance type and layout, shared by the workloads that picked them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroup {
    pub instance_type: &'static str,
    pub layout: String,
    pub count: u64,
    #[serde(skip)]
    pub layout_kind: Layout,
    #[serde(skip)]
    pub replicas: u64,
    #[serde(skip)]
    pub slots_per_node: u64,
    #[serde(skip)]
    pub usd_per_hour: f64,
    #[serde(skip)]
    pub gpus: u64,
}

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
    pub instance_type: &'static str,
    #[serde(skip)]
    pub layout: Layout,
    #[serde(skip)]
    pub replicas: u64,
    #[serde(skip)]
    pub reason: String,
    #[serde(skip)]
    pub gpus_per_replica: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub before: Before,
    pub after: After,
    pub workloads: Vec<WorkloadPlan>,
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
    let mut workloads = Vec::new();
    let mut before = Before {
        usd_per_hour: 0.0,
        nodes: 0,
        gpus: 0,
        unpriced: Vec::new(),
    };
    for w in &inv.workloads {
        match catalog::instance_type(&w.current_instance_type) {
            Some(it) if it.gpus >= w.gpus_per_replica => {
                let per_node = u64::from(it.gpus / w.gpus_per_replica);
                let nodes = w.replicas.div_ceil(per_node);
                before.nodes += nodes;
                before.gpus += nodes * u64::from(it.gpus);
                match it.usd_per_hour {
                    Some(p) => before.usd_per_hour += nodes as f64 * p,
                    None => before.unpriced.push(format!("{}/{}", w.namespace, w.name)),
                }
            }
            Some(it) => errors.push(format!(
                "{}/{}: current.gpusPerReplica {} is more than {} has ({})",
                w.namespace, w.name, w.gpus_per_replica, it.name, it.gpus
            )),
            None => errors.push(format!(
                "{}/{}: current.instanceType {:?} is not a GPU instance type in the catalog",
                w.namespace, w.name, w.current_instance_type
            )),
        }
        match pick(w, inv) {
            Ok(p) => workloads.push(WorkloadPlan {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                mode: p.choice.layout.mode(),
                profile: match p.choice.layout {
                    Layout::Mig(prof) => Some(prof),
                    _ => None,
                },
                replicas_per_gpu: match p.choice.layout {
                    Layout::Timeslice(n) => Some(n),
                    _ => None,
                },
                instance_type: p.choice.instance.name,
                layout: p.choice.layout,
                replicas: w.replicas,
                reason: p.reason,
                gpus_per_replica: w.gpus_per_replica,
            }),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut groups: BTreeMap<(&'static str, Layout), u64> = BTreeMap::new();
    for w in &workloads {
        *groups.entry((w.instance_type, w.layout)).or_default() += w.replicas;
    }
    let mut after = After {
        usd_per_hour: 0.0,
        nodes: Vec::new(),
    };
    for ((name, layout), replicas) in groups {
        let it = catalog::instance_type(name).expect("picked from the catalog");
        let slots = layout.slots(it);
        let count = replicas.div_ceil(slots);
        let usd = count as f64 * it.usd_per_hour.unwrap_or(0.0);
        after.usd_per_hour += usd;
        after.nodes.push(NodeGroup {
            instance_type: name,
            layout: layout.name(),
            count,
            layout_kind: layout,
            replicas,
            slots_per_node: slots,
            usd_per_hour: usd,
            gpus: count * u64::from(it.gpus),
        });
    }
    // Sums of prices carry float noise (318.15945000000005): keep them to a millionth of a dollar.
    let round = |v: f64| (v * 1e6).round() / 1e6;
    before.usd_per_hour = round(before.usd_per_hour);
    after.usd_per_hour = round(after.usd_per_hour);
    Ok(Plan {
        before,
        after,
        workloads,
    })
}

/// The plan as the table a person reads.
pub fn table(plan: &Plan) -> String {
    let mut out = String::new();
    out.push_str(
        "WORKLOAD                         REPLICAS  CHOICE                                   WHY\n",
    );
    for w in &plan.workloads {
        let choice = format!("{} {}", w.instance_type, w.layout.name());
        out.push_str(&format!(
            "{:<32} {:>8}  {:<40} {}\n",
            format!("{}/{}", w.namespace, w.name),
            w.replicas,
            choice,
            w.reason
        ));
    }
    out.push_str("\nNODES AFTER\n");
    for g in &plan.after.nodes {
        out.push_str(&format!(
            "  {:>3} x {:<18} {:<14} {:>4} replicas in {:>4} slots  ${:>10.2}/h\n",
            g.count,
            g.instance_type,
            g.layout,
            g.replicas,
            g.count * g.slots_per_node,
            g.usd_per_hour
        ));
    }
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
            b.unpriced.join(", ")
        ));
    }
    out.push_str(&format!(
        "prices: on-demand, {} ({}); compute is not modelled (slices and shared GPUs get a fraction of the SMs): memory and isolation are\n",
        catalog::PRICES_REGION,
        catalog::PRICES_AS_OF
    ));
    out
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
