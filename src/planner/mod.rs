//! `gpu-slicer plan`: what slicing saves, and the configs that get there.
//!
//! The model (docs/cost-planner.md states it for readers):
//! - per workload, every priced catalog instance type offers: a MIG profile whose real memory holds the
//!   replica's `gpuMemory`, laid out uniformly (`all-<profile>`, the catalog's max count per GPU); for
//!   `isolation: none` also such a layout with every slice time-shared by as many replicas as its
//!   memory holds (`all-<profile>-x<n>`, capped as time-slicing is); a
//!   time-sliced GPU (only `isolation: none`) with `min(maxSharedReplicas, floor(gpuMemory of the GPU /
//!   (gpuMemory + contextOverhead)))` replicas; or whole GPUs (`gpusPerReplica` of them, whose memory
//!   together holds `gpuMemory`);
//! - a node is one instance type with one layout on all its GPUs; GPU slots per node = GPUs x replicas
//!   per GPU (whole: GPUs / gpusPerReplica); replicas per node = min(GPU slots, floor(allocatable vCPU /
//!   the replica's cpu), floor(allocatable memory / the replica's memory)), allocatable as Karpenter
//!   computes it less a DaemonSet reserve ([`allocatable`]);
//! - cost = ceil(replicas / replicas per node) x on-demand $/hour; the cheapest wins, ties broken by
//!   fewer nodes, then stronger isolation (whole, then MIG, then time-slicing), then name;
//! - workloads that picked the same instance type and layout share nodes: first-fit decreasing over
//!   GPU slots, vCPU and memory together, so no node holds more than its allocatable; before = each
//!   workload's `current` placement on whole GPUs, as it runs today (within the same host limits);
//! - compute is not modelled (a slice gets a fraction of the GPU's SMs; time-sliced replicas share
//!   them); GPU memory, isolation and the hosts' vCPU and memory are.

pub mod allocatable;
pub mod cluster;
pub mod emit;
pub mod html;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use allocatable::{Allocatable, NodeReserve};
use gpu_slicer_core::catalog::{self, InstanceType};
use gpu_slicer_core::quantity;

pub const API_VERSION: &str = "gpu-slicer.io/v1alpha1";
pub const KIND: &str = "Inventory";
/// Hours in a month, for $/month.
pub const HOURS_PER_MONTH: f64 = 730.0;
const MIB: u128 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;

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
    #[serde(default)]
    node_reserve: Option<NodeReserveSpec>,
    workloads: Vec<WorkloadSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeReserveSpec {
    cpu: Option<String>,
    memory: Option<String>,
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
    #[serde(default)]
    cpu: Option<String>,
    #[serde(default)]
    memory: Option<String>,
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
    /// What every GPU node's DaemonSets take (`spec.nodeReserve`, `--node-reserve-*`).
    pub node_reserve: NodeReserve,
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
    /// CPU one replica requests, millicores; `None`: not given, not checked.
    pub cpu_millis: Option<u64>,
    /// Memory one replica requests, bytes; `None`: not given, not checked.
    pub memory: Option<u128>,
}

impl Workload {
    /// Whether both host resources are known, so the plan checked them.
    pub fn host_checked(&self) -> bool {
        self.cpu_millis.is_some() && self.memory.is_some()
    }
}

/// Parses a CPU quantity into millicores (`"3"`, `"3500m"`); `None` if it is not one.
pub fn parse_cpu(s: &str) -> Option<u64> {
    quantity::parse_milli(s).and_then(|m| u64::try_from(m).ok())
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
            let cpu_millis =
                match &w.cpu {
                    Some(t) => Some(parse_cpu(t).filter(|m| *m > 0).ok_or_else(|| {
                        at("cpu", format!("{t:?} is not a positive CPU quantity"))
                    })?),
                    None => None,
                };
            let memory =
                match &w.memory {
                    Some(t) => Some(quantity::parse(t).filter(|b| *b > 0).ok_or_else(|| {
                        at("memory", format!("{t:?} is not a positive quantity"))
                    })?),
                    None => None,
                };
            workloads.push(Workload {
                name: w.name,
                namespace: w.namespace,
                replicas: w.replicas,
                gpu_memory,
                gpu_memory_text: w.gpu_memory,
                isolation: w.isolation,
                current_instance_type: w.current.instance_type,
                gpus_per_replica: w.current.gpus_per_replica,
                cpu_millis,
                memory,
            });
        }
        let mut node_reserve = NodeReserve::default();
        if let Some(r) = spec.node_reserve {
            if let Some(t) = r.cpu {
                node_reserve.cpu_millis = parse_cpu(&t).ok_or_else(|| {
                    err(format!("spec.nodeReserve.cpu: {t:?} is not a CPU quantity"))
                })?;
            }
            if let Some(t) = r.memory {
                node_reserve.memory = quantity::parse(&t).ok_or_else(|| {
                    err(format!("spec.nodeReserve.memory: {t:?} is not a quantity"))
                })?;
            }
        }
        Ok(Inventory {
            max_shared_replicas: spec.max_shared_replicas,
            context_overhead,
            node_reserve,
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
    /// `all-<profile>-x<n>`: cut as `Mig`, and every slice time-shared by n replicas (the device
    /// plugin's time-slicing on `nvidia.com/mig-<profile>`, mixed strategy, renamed `.shared`).
    MigTimeslice(&'static str, u32),
    /// `timeslice-<n>`: every GPU shared by n replicas.
    Timeslice(u32),
    /// Whole GPUs, `n` per replica.
    Whole(u32),
}

impl Layout {
    pub fn name(&self) -> String {
        match self {
            Layout::Mig(p) => format!("all-{p}"),
            Layout::MigTimeslice(p, n) => format!("all-{p}-x{n}"),
            Layout::Timeslice(n) => format!("timeslice-{n}"),
            Layout::Whole(_) => "whole".to_string(),
        }
    }

    /// The mig-parted config (`nvidia.com/mig.config`) the layout's nodes need, if any.
    pub fn mig_config(&self) -> Option<String> {
        match self {
            Layout::Mig(p) | Layout::MigTimeslice(p, _) => Some(format!("all-{p}")),
            _ => None,
        }
    }

    /// The device plugin config (`nvidia.com/device-plugin.config`) the layout's nodes need, if any.
    pub fn plugin_config(&self) -> Option<String> {
        match self {
            Layout::MigTimeslice(p, n) => Some(format!("mig-{p}-x{n}")),
            Layout::Timeslice(n) => Some(format!("timeslice-{n}")),
            _ => None,
        }
    }

    pub fn mode(&self) -> &'static str {
        match self {
            Layout::Mig(_) => "mig",
            Layout::MigTimeslice(..) => "mig-timeslice",
            Layout::Timeslice(_) => "timeslice",
            Layout::Whole(_) => "whole",
        }
    }

    /// Higher is stronger isolation. A time-shared slice bounds its replicas against the other
    /// slices, not against each other: between a MIG slice and a time-sliced GPU.
    fn isolation_rank(&self) -> u8 {
        match self {
            Layout::Whole(_) => 3,
            Layout::Mig(_) => 2,
            Layout::MigTimeslice(..) => 1,
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
            Layout::MigTimeslice(p, n) => it
                .gpu
                .mig_profile(p)
                .map_or(0, |m| gpus * u64::from(m.max_per_gpu) * u64::from(*n)),
            Layout::Timeslice(n) => gpus * u64::from(*n),
            Layout::Whole(per) => gpus / u64::from(*per),
        }
    }
}

/// The resource that limits how many replicas a node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    /// GPU slots (MIG slices, time-slice replicas, whole GPUs).
    Gpu,
    /// Allocatable vCPU.
    Cpu,
    /// Allocatable memory.
    Memory,
}

impl Binding {
    /// How the reason column and the report name it.
    pub fn label(&self) -> &'static str {
        match self {
            Binding::Gpu => "GPU slots",
            Binding::Cpu => "vCPU",
            Binding::Memory => "memory",
        }
    }
}

/// How many replicas of one workload a node holds, by each resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    /// By the layout's GPU slots.
    pub gpu: u64,
    /// By allocatable vCPU; `None` when the workload gives no cpu.
    pub cpu: Option<u64>,
    /// By allocatable memory; `None` when the workload gives no memory.
    pub memory: Option<u64>,
}

impl Fit {
    fn new(w: &Workload, inv: &Inventory, it: &InstanceType, layout: &Layout) -> Fit {
        let alloc = allocatable::allocatable(it, &inv.node_reserve);
        Fit {
            gpu: layout.slots(it),
            cpu: w.cpu_millis.map(|c| alloc.cpu_millis / c.max(1)),
            memory: w
                .memory
                .map(|m| u64::try_from(alloc.memory / m.max(1)).unwrap_or(u64::MAX)),
        }
    }

    /// Replicas per node: the least of the three.
    pub fn per_node(&self) -> u64 {
        self.gpu
            .min(self.cpu.unwrap_or(u64::MAX))
            .min(self.memory.unwrap_or(u64::MAX))
    }

    /// The resource that sets [`Fit::per_node`]; GPU slots on a tie (the layout was sized for them).
    pub fn binding(&self) -> Binding {
        let n = self.per_node();
        if self.gpu == n {
            Binding::Gpu
        } else if self.cpu == Some(n) {
            Binding::Cpu
        } else {
            Binding::Memory
        }
    }

    /// `4 slots by GPU memory, 1 by vCPU, 1 by memory`.
    fn text(&self, layout: &Layout) -> String {
        let by_gpu = match layout {
            Layout::Mig(_) => "MIG slices",
            Layout::MigTimeslice(..) | Layout::Timeslice(_) => "GPU memory",
            Layout::Whole(_) => "GPUs",
        };
        let mut out = format!("{} by {by_gpu}", slots_text(self.gpu));
        if let Some(c) = self.cpu {
            out.push_str(&format!(", {c} by vCPU"));
        }
        if let Some(m) = self.memory {
            out.push_str(&format!(", {m} by memory"));
        }
        out
    }
}

/// One way to run a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub instance: &'static InstanceType,
    pub layout: Layout,
    pub fit: Fit,
    /// Replicas per node (`fit.per_node()`).
    pub slots_per_node: u64,
    pub nodes: u64,
    pub usd_per_hour: f64,
}

impl Choice {
    fn new(
        instance: &'static InstanceType,
        layout: Layout,
        fit: Fit,
        replicas: u64,
    ) -> Option<Choice> {
        let price = instance.usd_per_hour?;
        let slots = fit.per_node();
        if slots == 0 {
            return None;
        }
        let nodes = replicas.div_ceil(slots);
        Some(Choice {
            instance,
            layout,
            fit,
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

/// The GPU layouts a workload's replicas fit on an instance type, by GPU memory and isolation alone.
fn layouts(w: &Workload, inv: &Inventory, it: &InstanceType) -> Vec<Layout> {
    let mut out = Vec::new();
    let gpu_bytes = u128::from(it.gpu.memory_mib) * MIB;
    // Time-shared replicas per device: as many as its memory holds with their context overhead, up
    // to maxSharedReplicas; fewer than two is not sharing.
    let shared = |device_bytes: u128| {
        let n = u32::try_from(device_bytes / (w.gpu_memory + inv.context_overhead))
            .unwrap_or(u32::MAX)
            .min(inv.max_shared_replicas);
        (n >= 2).then_some(n)
    };
    for p in it.gpu.mig_profiles {
        let slice = u128::from(p.memory_mib) * MIB;
        if slice >= w.gpu_memory {
            out.push(Layout::Mig(p.name));
        }
        if w.isolation == Isolation::None
            && let Some(n) = shared(slice)
        {
            out.push(Layout::MigTimeslice(p.name, n));
        }
    }
    if w.isolation == Isolation::None
        && let Some(n) = shared(gpu_bytes)
    {
        out.push(Layout::Timeslice(n));
    }
    let per = w.gpus_per_replica;
    if it.gpus >= per && gpu_bytes * u128::from(per) >= w.gpu_memory {
        out.push(Layout::Whole(per));
    }
    out
}

/// Every feasible choice for a workload: its GPU layouts on every priced instance type, with as many
/// replicas per node as the GPU slots and the node's allocatable vCPU and memory allow.
pub fn options(w: &Workload, inv: &Inventory) -> Vec<Choice> {
    options_by(w, inv, true)
}

/// `host: false` sizes by the GPU slots alone: what the planner chose before it knew the hosts, to say
/// when the hosts change the choice.
fn options_by(w: &Workload, inv: &Inventory, host: bool) -> Vec<Choice> {
    let mut out = Vec::new();
    for it in catalog::INSTANCE_TYPES {
        for layout in layouts(w, inv, it) {
            let mut fit = Fit::new(w, inv, it, &layout);
            if !host {
                fit.cpu = None;
                fit.memory = None;
            }
            out.extend(Choice::new(it, layout, fit, w.replicas));
        }
    }
    out
}

/// The best two of some choices.
fn best_two(choices: Vec<Choice>) -> (Option<Choice>, Option<Choice>) {
    let mut best: Option<Choice> = None;
    let mut second: Option<Choice> = None;
    for c in choices {
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
    (best, second)
}

/// A workload's pick, with the runner-up for the reason.
#[derive(Debug, Clone)]
pub struct Pick {
    pub choice: Choice,
    pub runner_up: Option<Choice>,
    /// What GPU slots alone would have picked, where that differs from `choice`.
    pub by_gpu_alone: Option<Choice>,
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
    let (best, second) = best_two(options(w, inv));
    let choice = best.ok_or_else(|| {
        let isolation = match w.isolation {
            Isolation::Memory => "memory isolation",
            Isolation::None => "no isolation",
        };
        if w.cpu_millis.is_none() && w.memory.is_none() {
            return format!(
                "{}/{}: no catalogued GPU holds gpuMemory {} ({isolation})",
                w.namespace, w.name, w.gpu_memory_text
            );
        }
        format!(
            "{}/{}: no catalogued instance type holds one replica of gpuMemory {} ({isolation}), cpu {} and memory {} on one node (allocatable: after kube-reserved, the eviction threshold and the node reserve)",
            w.namespace,
            w.name,
            w.gpu_memory_text,
            w.cpu_millis.map_or("-".into(), cpu_text),
            w.memory.map_or("-".into(), memory_text)
        )
    })?;
    let by_gpu_alone = if w.cpu_millis.is_some() || w.memory.is_some() {
        best_two(options_by(w, inv, false))
            .0
            .filter(|g| (g.instance.name, g.layout) != (choice.instance.name, choice.layout))
    } else {
        None
    };
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
        Layout::MigTimeslice(p, n) => {
            let mib = choice
                .instance
                .gpu
                .mig_profile(p)
                .map_or(0, |m| m.memory_mib);
            format!(
                "{n} replicas of {} + context overhead time-share one {p} slice ({mib} MiB on {}); no isolation asked",
                w.gpu_memory_text, choice.instance.gpu.name
            )
        }
        Layout::Timeslice(n) => format!(
            "{n} replicas of {} + context overhead fit one {} ({} MiB); no isolation asked",
            w.gpu_memory_text, choice.instance.gpu.name, choice.instance.gpu.memory_mib
        ),
        Layout::Whole(per) => format!("{per} whole {} per replica", choice.instance.gpu.name),
    };
    let per_node = if choice.fit.cpu.is_some() || choice.fit.memory.is_some() {
        format!(
            "per node {}: {}",
            choice.fit.text(&choice.layout),
            choice.slots_per_node
        )
    } else {
        format!("{} per node", slots_text(choice.slots_per_node))
    };
    let mut reason = match &second {
        Some(s) => format!("{fits}; {per_node}; cheapest (next: {})", describe(s)),
        None => format!("{fits}; {per_node}; the only option"),
    };
    if let Some(g) = &by_gpu_alone {
        // The hosts changed the choice: say what GPU slots alone would have planned, and why it fails.
        let real = Fit::new(w, inv, g.instance, &g.layout);
        let holds = match real.per_node() {
            0 => "none".to_string(),
            n => n.to_string(),
        };
        reason.push_str(&format!(
            "; by GPU slots alone: {} at {} per node, but a {} holds {holds} by {}",
            describe(g),
            g.fit.gpu,
            g.instance.name,
            real.binding().label()
        ));
    }
    Ok(Pick {
        choice,
        runner_up: second,
        by_gpu_alone,
        reason,
    })
}

/// `3`, `3500m`.
pub fn cpu_text(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// `10Gi`, `1536Mi`, or bytes.
pub fn memory_text(bytes: u128) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else if bytes.is_multiple_of(MIB) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

// ---- The plan. ----

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
        let id = format!("{}/{}", w.namespace, w.name);
        if !w.host_checked() {
            let missing = match (w.cpu_millis, w.memory) {
                (None, None) => "cpu and memory",
                (None, Some(_)) => "cpu",
                _ => "memory",
            };
            warnings.push(format!(
                "{id}: no {missing} per replica given, so the plan did not check it against the nodes' allocatable (it may place more replicas on a node than the node can run)"
            ));
        }
        match catalog::instance_type(&w.current_instance_type) {
            Some(it) if it.gpus >= w.gpus_per_replica => {
                // Today's placement within the same host limits as the plan's, so both sides compare.
                let fit = Fit::new(w, inv, it, &Layout::Whole(w.gpus_per_replica));
                let mut per_node = fit.per_node();
                if per_node == 0 {
                    // It runs there today, so the model's reserve or the requests are off: say so and
                    // count today's nodes by GPUs alone rather than refuse the plan.
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
                    None => before.unpriced.push(id.clone()),
                }
            }
            Some(it) => errors.push(format!(
                "{id}: current.gpusPerReplica {} is more than {} has ({})",
                w.gpus_per_replica, it.name, it.gpus
            )),
            None => errors.push(format!(
                "{id}: current.instanceType {:?} is not a GPU instance type in the catalog",
                w.current_instance_type
            )),
        }
        match pick(w, inv) {
            Ok(p) => workloads.push(WorkloadPlan {
                name: w.name.clone(),
                namespace: w.namespace.clone(),
                mode: p.choice.layout.mode(),
                profile: match p.choice.layout {
                    Layout::Mig(prof) | Layout::MigTimeslice(prof, _) => Some(prof),
                    _ => None,
                },
                replicas_per_gpu: match p.choice.layout {
                    Layout::Timeslice(n) => Some(n),
                    _ => None,
                },
                replicas_per_slice: match p.choice.layout {
                    Layout::MigTimeslice(_, n) => Some(n),
                    _ => None,
                },
                instance_type: p.choice.instance.name,
                replicas_per_node: p.choice.slots_per_node,
                binding_resource: p.choice.fit.binding(),
                host_resources_checked: w.host_checked(),
                cpu_millis: w.cpu_millis,
                memory_bytes: w.memory.map(|m| u64::try_from(m).unwrap_or(u64::MAX)),
                layout: p.choice.layout,
                replicas: w.replicas,
                reason: p.reason,
                gpus_per_replica: w.gpus_per_replica,
                fit: p.choice.fit,
            }),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut groups: BTreeMap<(&'static str, Layout), Vec<Item>> = BTreeMap::new();
    for (i, (w, wp)) in inv.workloads.iter().zip(&workloads).enumerate() {
        groups
            .entry((wp.instance_type, wp.layout))
            .or_default()
            .push((
                i,
                w.replicas,
                w.cpu_millis.unwrap_or(0),
                w.memory.unwrap_or(0),
            ));
    }
    let mut after = After {
        usd_per_hour: 0.0,
        nodes: Vec::new(),
    };
    for ((name, layout), items) in groups {
        let Some(it) = catalog::instance_type(name) else {
            return Err(vec![format!("{name}: not in the catalog")]);
        };
        let slots = layout.slots(it);
        let alloc = allocatable::allocatable(it, &inv.node_reserve);
        let loads = pack(&items, slots, alloc).map_err(|e| vec![format!("{name}: {e}")])?;
        let count = loads.len() as u64;
        let usd = count as f64 * it.usd_per_hour.unwrap_or(0.0);
        after.usd_per_hour += usd;
        after.nodes.push(NodeGroup {
            instance_type: name,
            layout: layout.name(),
            count,
            allocatable_per_node: ResourcesJson {
                cpu_millis: alloc.cpu_millis,
                memory_bytes: u64::try_from(alloc.memory).unwrap_or(u64::MAX),
            },
            layout_kind: layout,
            replicas: items.iter().map(|i| i.1).sum(),
            slots_per_node: slots,
            usd_per_hour: usd,
            gpus: count * u64::from(it.gpus),
            loads,
            allocatable: alloc,
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
        warnings,
        node_reserve: ResourcesJson {
            cpu_millis: inv.node_reserve.cpu_millis,
            memory_bytes: u64::try_from(inv.node_reserve.memory).unwrap_or(u64::MAX),
        },
    })
}

/// The plan as the table a person reads.
pub fn table(plan: &Plan) -> String {
    use crate::terminal::escape_controls;
    let mut out = String::new();
    out.push_str(
        "WORKLOAD                         REPLICAS  CHOICE                                   WHY\n",
    );
    // Names and reasons come from the inventory or the cluster: escaped, so they cannot drive the
    // terminal.
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
    out.push_str("\nNODES AFTER                                                                   FULLEST NODE: vCPU, GiB requested / allocatable\n");
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
