//! What one node of an instance type offers pods: its vCPUs and memory less what Karpenter subtracts when
//! it decides what fits (aws/karpenter-provider-aws `pkg/providers/instancetype/types.go`), less a reserve
//! for the DaemonSets every GPU node runs.
//!
//! Karpenter's defaults, for an EC2NodeClass without `kubelet` settings on AL2023:
//! - VM memory overhead: `ceil(memory x vmMemoryOverheadPercent)` MiB, `vmMemoryOverheadPercent` 0.075
//!   (`memory()`; the option's default in `pkg/operator/options`);
//! - kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of the third and fourth, 0.25% of
//!   every core above four, in whole millicores (`kubeReservedResources()`, the GKE/Bottlerocket formula);
//! - kube-reserved memory: `11 MiB x max pods + 255 MiB`, max pods the VPC CNI's ENI limit
//!   (`kubeReservedResources()`, `pods()`);
//! - eviction threshold: `memory.available` 100Mi (`evictionThreshold()`).

use gpu_slicer_core::catalog::InstanceType;

const MIB: u128 = 1 << 20;

/// Karpenter's default `vmMemoryOverheadPercent`, as thousandths (0.075).
pub const VM_MEMORY_OVERHEAD_PER_MILLE: u64 = 75;
/// Karpenter's default hard eviction threshold for `memory.available`, MiB.
pub const EVICTION_MEMORY_MIB: u64 = 100;
/// kube-reserved memory per pod the node may run, MiB, and its fixed part.
pub const KUBE_RESERVED_MIB_PER_POD: u64 = 11;
pub const KUBE_RESERVED_MIB_BASE: u64 = 255;

/// The default per-node DaemonSet reserve, CPU in millicores: kube-proxy (100m, the EKS add-on's
/// request), the VPC CNI (25m), the EBS CSI node plugin and the pod identity agent (about 50m), a log
/// shipper (about 100m), and the GPU Operator's device plugin, feature discovery, DCGM exporter,
/// container toolkit, validator and MIG manager (about 200m together), rounded up.
pub const DEFAULT_RESERVE_CPU_MILLIS: u64 = 500;
/// The default per-node DaemonSet reserve, memory in bytes (1Gi): the same DaemonSets' working sets,
/// dominated by the DCGM exporter and the log shipper (a few hundred MiB each), rounded up.
pub const DEFAULT_RESERVE_MEMORY: u128 = 1 << 30;

/// What the DaemonSets on every GPU node take from the allocatable (`spec.nodeReserve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReserve {
    pub cpu_millis: u64,
    /// Bytes.
    pub memory: u128,
}

impl Default for NodeReserve {
    fn default() -> Self {
        NodeReserve {
            cpu_millis: DEFAULT_RESERVE_CPU_MILLIS,
            memory: DEFAULT_RESERVE_MEMORY,
        }
    }
}

/// CPU and memory a node offers pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_millis: u64,
    /// Bytes.
    pub memory: u128,
}

/// Karpenter's kube-reserved CPU for a node of `vcpus`, millicores.
pub fn kube_reserved_cpu_millis(vcpus: u32) -> u64 {
    let cpu = u64::from(vcpus) * 1000;
    // (start, end, per-mille x 10): 6%, 1%, 0.5%, 0.25%; each band's share truncated as Karpenter's
    // int64(r * percentage) does.
    let bands: [(u64, u64, u64); 4] = [
        (0, 1000, 600),
        (1000, 2000, 100),
        (2000, 4000, 50),
        (4000, u64::MAX, 25),
    ];
    bands
        .iter()
        .filter(|(start, _, _)| cpu >= *start)
        .map(|(start, end, rate)| (cpu.min(*end) - start) * rate / 10_000)
        .sum()
}

/// What Karpenter's instance-type reference lists as the node's allocatable `cpu` (millicores) and
/// `memory` (MiB): before any DaemonSet.
pub fn karpenter_allocatable(it: &InstanceType) -> (u64, u64) {
    let cpu = u64::from(it.vcpus) * 1000 - kube_reserved_cpu_millis(it.vcpus);
    let vm_overhead = (it.memory_mib * VM_MEMORY_OVERHEAD_PER_MILLE).div_ceil(1000);
    let kube_reserved = KUBE_RESERVED_MIB_PER_POD * u64::from(it.max_pods) + KUBE_RESERVED_MIB_BASE;
    let memory = it
        .memory_mib
        .saturating_sub(vm_overhead + kube_reserved + EVICTION_MEMORY_MIB);
    (cpu, memory)
}

/// What a node of `it` offers the planned pods: Karpenter's allocatable less the DaemonSet reserve.
pub fn allocatable(it: &InstanceType, reserve: &NodeReserve) -> Allocatable {
    let (cpu, memory_mib) = karpenter_allocatable(it);
    Allocatable {
        cpu_millis: cpu.saturating_sub(reserve.cpu_millis),
        memory: (u128::from(memory_mib) * MIB).saturating_sub(reserve.memory),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_slicer_core::catalog;

    /// Karpenter's instance-type reference (instance-types.md, AL2023): allocatable cpu (m) and memory
    /// (Mi) per catalogued instance type, as the page lists them.
    const KARPENTER_PAGE: &[(&str, u64, u64)] = &[
        ("g4dn.xlarge", 3920, 14481),
        ("g4dn.2xlarge", 7910, 29636),
        ("g4dn.4xlarge", 15890, 59946),
        ("g4dn.8xlarge", 31850, 120248),
        ("g4dn.12xlarge", 47810, 178933),
        ("g4dn.16xlarge", 63770, 241490),
        ("g4dn.metal", 95690, 355262),
        ("g5.xlarge", 3920, 14162),
        ("g5.2xlarge", 7910, 29317),
        ("g5.4xlarge", 15890, 57691),
        ("g5.8xlarge", 31850, 118312),
        ("g5.12xlarge", 47810, 173400),
        ("g5.16xlarge", 63770, 239554),
        ("g5.24xlarge", 95690, 355262),
        ("g5.48xlarge", 191450, 723299),
        ("g6.xlarge", 3920, 14162),
        ("g6.2xlarge", 7910, 29317),
        ("g6.4xlarge", 15890, 57691),
        ("g6.8xlarge", 31850, 118312),
        ("g6.12xlarge", 47810, 178933),
        ("g6.16xlarge", 63770, 234021),
        ("g6.24xlarge", 95690, 355262),
        ("g6.48xlarge", 191450, 718987),
        ("g6e.xlarge", 3920, 29317),
        ("g6e.2xlarge", 7910, 59627),
        ("g6e.4xlarge", 15890, 118312),
        ("g6e.8xlarge", 31850, 239554),
        ("g6e.12xlarge", 47810, 360157),
        ("g6e.16xlarge", 63770, 476504),
        ("g6e.24xlarge", 95690, 721682),
        ("g6e.48xlarge", 191450, 1449132),
        ("p4d.24xlarge", 95690, 1082712),
        ("p4de.24xlarge", 95690, 1082712),
        ("p5.4xlarge", 15890, 240830),
        ("p5.48xlarge", 191450, 1938410),
        ("p5e.48xlarge", 191450, 1938410),
        ("p5en.48xlarge", 191450, 1937332),
        ("p6-b200.48xlarge", 191450, 1937332),
    ];

    #[test]
    fn the_formula_reproduces_karpenters_page_for_every_catalogued_instance_type() {
        assert_eq!(KARPENTER_PAGE.len(), catalog::INSTANCE_TYPES.len());
        for (name, cpu, memory) in KARPENTER_PAGE {
            let it = catalog::instance_type(name).unwrap();
            assert_eq!(karpenter_allocatable(it), (*cpu, *memory), "{name}");
        }
    }

    #[test]
    fn the_reserve_comes_off_the_top() {
        let it = catalog::instance_type("g4dn.xlarge").unwrap();
        let a = allocatable(it, &NodeReserve::default());
        assert_eq!(a.cpu_millis, 3420);
        assert_eq!(a.memory, (14481 - 1024) * MIB);
        let none = NodeReserve {
            cpu_millis: 0,
            memory: 0,
        };
        assert_eq!(allocatable(it, &none).cpu_millis, 3920);
    }
}
