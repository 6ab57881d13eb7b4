//! Choosing, one workload at a time: the GPU layouts its replicas fit on each catalogued instance type
//! (MIG slices, time-shared slices or GPUs, whole GPUs, as its isolation allows), how many replicas a
//! node holds by GPU slots, vCPU and memory ([`Fit`]), and the cheapest of those ([`pick`]), with the
//! reason a reader sees.
//!
//! Imports: the core's catalog, [`super::inventory`] (the workload) and [`super::allocatable`] (what a
//! node offers). Packing and the plan build on the choices made here; nothing here knows of them.

use serde::Serialize;

use super::allocatable;
use super::inventory::{Inventory, Isolation, MIB, Workload, cpu_text, memory_text};
use gpu_slicer_core::catalog::{self, InstanceType};

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
    pub(crate) fn new(w: &Workload, inv: &Inventory, it: &InstanceType, layout: &Layout) -> Fit {
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

/// The cheapest choice for a workload, and why; an error where no catalogued instance type holds it.
pub fn pick(w: &Workload, inv: &Inventory) -> Result<Pick, String> {
    let (best, second) = best_two(options(w, inv));
    let choice = best.ok_or_else(|| no_option(w))?;
    let by_gpu_alone = if w.cpu_millis.is_some() || w.memory.is_some() {
        best_two(options_by(w, inv, false))
            .0
            .filter(|g| (g.instance.name, g.layout) != (choice.instance.name, choice.layout))
    } else {
        None
    };
    let fits = fits_text(w, &choice);
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
        reason.push_str(&hosts_changed_it(w, inv, g));
    }
    Ok(Pick {
        choice,
        runner_up: second,
        by_gpu_alone,
        reason,
    })
}

/// Why a workload has no choice at all.
fn no_option(w: &Workload) -> String {
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
}

/// The reason's first part: how one replica fits the chosen layout's GPU memory.
fn fits_text(w: &Workload, choice: &Choice) -> String {
    let gpu = choice.instance.gpu;
    let slice_mib = |p: &str| gpu.mig_profile(p).map_or(0, |m| m.memory_mib);
    match choice.layout {
        Layout::Mig(p) => format!(
            "a {p} slice ({} MiB on {}) holds {}",
            slice_mib(p),
            gpu.name,
            w.gpu_memory_text
        ),
        Layout::MigTimeslice(p, n) => format!(
            "{n} replicas of {} + context overhead time-share one {p} slice ({} MiB on {}); no isolation asked",
            w.gpu_memory_text,
            slice_mib(p),
            gpu.name
        ),
        Layout::Timeslice(n) => format!(
            "{n} replicas of {} + context overhead fit one {} ({} MiB); no isolation asked",
            w.gpu_memory_text, gpu.name, gpu.memory_mib
        ),
        Layout::Whole(per) => format!("{per} whole {} per replica", gpu.name),
    }
}

/// The hosts changed the choice: what GPU slots alone would have planned, and why it fails.
fn hosts_changed_it(w: &Workload, inv: &Inventory, g: &Choice) -> String {
    let real = Fit::new(w, inv, g.instance, &g.layout);
    let holds = match real.per_node() {
        0 => "none".to_string(),
        n => n.to_string(),
    };
    format!(
        "; by GPU slots alone: {} at {} per node, but a {} holds {holds} by {}",
        describe(g),
        g.fit.gpu,
        g.instance.name,
        real.binding().label()
    )
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
