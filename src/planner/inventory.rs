//! The inventory: the workloads to plan, read from an `Inventory` file ([`Inventory::parse`]) or built
//! from a cluster's objects ([`super::cluster`]), each checked once here so the rest of the planner
//! takes them as given; and the quantities as the inventory writes them (`3500m`, `10Gi`).
//!
//! Imports: the core's catalog and quantities, and [`super::allocatable`] (the node reserve). Nothing
//! else of the planner: every other part of it reads what this file defines.

use serde::{Deserialize, Serialize};

use super::allocatable::NodeReserve;
use gpu_slicer_core::catalog;
use gpu_slicer_core::quantity;

pub const API_VERSION: &str = "gpu-slicer.io/v1alpha1";
pub const KIND: &str = "Inventory";
pub(crate) const MIB: u128 = 1 << 20;

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

// ---- The validated inventory. ----

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
        let workloads = spec
            .workloads
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                workload(w).map_err(|(field, m)| err(format!("spec.workloads[{i}].{field}: {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let node_reserve = node_reserve(spec.node_reserve).map_err(err)?;
        Ok(Inventory {
            max_shared_replicas: spec.max_shared_replicas,
            context_overhead,
            node_reserve,
            workloads,
        })
    }
}

/// One workload of the file, checked; an error names the field (under `spec.workloads[i]`) and what is
/// wrong with it.
fn workload(w: WorkloadSpec) -> Result<Workload, (&'static str, String)> {
    if w.replicas == 0 {
        return Err(("replicas", "must be at least 1".into()));
    }
    let gpu_memory = quantity::parse(&w.gpu_memory)
        .filter(|b| *b > 0)
        .ok_or_else(|| {
            (
                "gpuMemory",
                format!("{:?} is not a positive quantity", w.gpu_memory),
            )
        })?;
    if w.current.gpus_per_replica == 0 {
        return Err(("current.gpusPerReplica", "must be at least 1".into()));
    }
    let cpu_millis = match &w.cpu {
        Some(t) => Some(
            parse_cpu(t)
                .filter(|m| *m > 0)
                .ok_or_else(|| ("cpu", format!("{t:?} is not a positive CPU quantity")))?,
        ),
        None => None,
    };
    let memory = match &w.memory {
        Some(t) => Some(
            quantity::parse(t)
                .filter(|b| *b > 0)
                .ok_or_else(|| ("memory", format!("{t:?} is not a positive quantity")))?,
        ),
        None => None,
    };
    Ok(Workload {
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
    })
}

/// `spec.nodeReserve`, the defaults where it does not say.
fn node_reserve(spec: Option<NodeReserveSpec>) -> Result<NodeReserve, String> {
    let mut node_reserve = NodeReserve::default();
    if let Some(r) = spec {
        if let Some(t) = r.cpu {
            node_reserve.cpu_millis = parse_cpu(&t)
                .ok_or_else(|| format!("spec.nodeReserve.cpu: {t:?} is not a CPU quantity"))?;
        }
        if let Some(t) = r.memory {
            node_reserve.memory = quantity::parse(&t)
                .ok_or_else(|| format!("spec.nodeReserve.memory: {t:?} is not a quantity"))?;
        }
    }
    Ok(node_reserve)
}

// ---- Quantities as the inventory writes them. ----

/// Parses a CPU quantity into millicores (`"3"`, `"3500m"`); `None` if it is not one.
pub fn parse_cpu(s: &str) -> Option<u64> {
    quantity::parse_milli(s).and_then(|m| u64::try_from(m).ok())
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
