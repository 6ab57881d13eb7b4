//! The GPU catalog: NVIDIA GPU models, their MIG profiles, and the EKS instance types that carry them.
//!
//! Data only. Every figure names its source so a reviewer can check it:
//! - MIG profiles and the maximum instances per GPU: NVIDIA MIG User Guide, "Supported MIG Profiles"
//!   (docs.nvidia.com/datacenter/tesla/mig-user-guide), cross-checked by a test against the GPU Operator's
//!   default mig-parted config (`../shared/reference/gpu-operator-default-mig-parted-config.yaml`).
//! - Profile memory in MiB for A100 and H100: what `nvidia-smi mig -lgip` reports (GiB with two decimals),
//!   e.g. 2g.20gb on A100-80GB = 19.50 GiB = 19968 MiB. For H200 and B200, where no such capture is at hand,
//!   the profile name's nominal decimal gigabytes converted down to MiB (conservative: sizing by it never
//!   picks a slice that is too small by the name's own figure).
//! - Instance types: Karpenter's instance-type reference (labels `karpenter.k8s.aws/instance-gpu-*`) and
//!   its generated on-demand pricing for us-east-1 (generated 2026-07-20), as in
//!   `../shared/reference/eks-gpu-instances.csv`.
//! - vCPUs, memory and max pods per instance type: the same instance-type reference
//!   (aws/karpenter-provider-aws `website/content/en/docs/reference/instance-types.md`, labels
//!   `karpenter.k8s.aws/instance-cpu` and `karpenter.k8s.aws/instance-memory`, resource `pods` for the
//!   AL2023 AMI family), as of [`SIZES_AS_OF`]; a test recomputes that page's allocatable `cpu` and
//!   `memory` from them (`crate::plan::allocatable`).
//!
//! Imports: nothing of this crate (the lowest layer).

/// Date of the on-demand prices below (Karpenter's generated pricing table, us-east-1).
pub const PRICES_AS_OF: &str = "2026-07-20";
/// Region of the on-demand prices below.
pub const PRICES_REGION: &str = "us-east-1";
/// Where and when the vCPU, memory and max-pods figures below were read: Karpenter's generated
/// instance-type reference (AL2023, ENI-limited pod density) at this commit of aws/karpenter-provider-aws.
pub const SIZES_AS_OF: &str =
    "instance-types.md at aws/karpenter-provider-aws 0c5e7d81, read 2026-12-04";

/// One MIG profile of one GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigProfile {
    /// The profile name as the device plugin's mixed strategy advertises it (`nvidia.com/mig-<name>`).
    pub name: &'static str,
    /// Usable GPU memory of one instance, MiB.
    pub memory_mib: u64,
    /// How many instances of this profile alone fit on one GPU.
    pub max_per_gpu: u32,
}

/// One GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuModel {
    /// Catalog key, e.g. `H100-80GB`.
    pub name: &'static str,
    /// Memory of the whole GPU, MiB (Karpenter's `karpenter.k8s.aws/instance-gpu-memory`).
    pub memory_mib: u64,
    /// PCI device IDs in mig-parted's `device-filter` form (`0x<device><vendor>`).
    pub pci_ids: &'static [&'static str],
    /// MIG profiles, smallest first; empty for GPUs without MIG.
    pub mig_profiles: &'static [MigProfile],
    /// Compute slices (GPCs a MIG layout can hand out) of the whole GPU: 7 on A100, H100, H200 and
    /// B200, 4 on A30 (NVIDIA MIG User Guide, "Supported MIG Profiles": a profile's `<n>g` is its
    /// share of these); 0 for GPUs without MIG. A slice counts `<n>` / this GPU-equivalents.
    pub compute_slices: u32,
}

impl GpuModel {
    pub fn supports_mig(&self) -> bool {
        !self.mig_profiles.is_empty()
    }

    pub fn mig_profile(&self, name: &str) -> Option<&'static MigProfile> {
        self.mig_profiles.iter().find(|p| p.name == name)
    }
}

impl MigProfile {
    /// The profile's compute slices: the `<n>` of `<n>g.<memory>gb` (`3g.40gb` -> 3).
    pub fn compute_slices(&self) -> u32 {
        self.name
            .split_once('g')
            .and_then(|(n, _)| n.parse().ok())
            .unwrap_or(0)
    }
}

const fn p(name: &'static str, memory_mib: u64, max_per_gpu: u32) -> MigProfile {
    MigProfile {
        name,
        memory_mib,
        max_per_gpu,
    }
}

// nvidia-smi mig -lgip on A100-SXM4-40GB: 4.75 / 9.62 / 9.62 / 19.50 / 19.50 / 39.25 GiB.
pub const A100_40GB: GpuModel = GpuModel {
    name: "A100-40GB",
    memory_mib: 40960,
    pci_ids: &["0x20B010DE", "0x20B110DE"],
    mig_profiles: &[
        p("1g.5gb", 4864, 7),
        p("1g.10gb", 9856, 4),
        p("2g.10gb", 9856, 3),
        p("3g.20gb", 19968, 2),
        p("4g.20gb", 19968, 1),
        p("7g.40gb", 40192, 1),
    ],
    compute_slices: 7,
};

// nvidia-smi mig -lgip on A100-SXM4-80GB: 9.50 / 19.50 / 19.50 / 39.25 / 39.25 / 78.75 GiB.
pub const A100_80GB: GpuModel = GpuModel {
    name: "A100-80GB",
    memory_mib: 81920,
    pci_ids: &["0x20B210DE", "0x20B510DE"],
    mig_profiles: &[
        p("1g.10gb", 9728, 7),
        p("1g.20gb", 19968, 4),
        p("2g.20gb", 19968, 3),
        p("3g.40gb", 40192, 2),
        p("4g.40gb", 40192, 1),
        p("7g.80gb", 80640, 1),
    ],
    compute_slices: 7,
};

// nvidia-smi mig -lgip on H100-SXM5-80GB: 9.75 / 19.62 / 19.62 / 39.50 / 39.50 / 79.25 GiB.
pub const H100_80GB: GpuModel = GpuModel {
    name: "H100-80GB",
    memory_mib: 81920,
    pci_ids: &["0x233010DE", "0x233110DE", "0x232210DE"],
    mig_profiles: &[
        p("1g.10gb", 9984, 7),
        p("1g.20gb", 20096, 4),
        p("2g.20gb", 20096, 3),
        p("3g.40gb", 40448, 2),
        p("4g.40gb", 40448, 1),
        p("7g.80gb", 81152, 1),
    ],
    compute_slices: 7,
};

// Nominal: 18 GB = 17166 MiB, 35 GB = 33378 MiB, 71 GB = 67711 MiB, 141 GB = 134466 MiB.
pub const H200_141GB: GpuModel = GpuModel {
    name: "H200-141GB",
    memory_mib: 144384,
    pci_ids: &["0x233510DE"],
    mig_profiles: &[
        p("1g.18gb", 17166, 7),
        p("1g.35gb", 33378, 4),
        p("2g.35gb", 33378, 3),
        p("3g.71gb", 67711, 2),
        p("4g.71gb", 67711, 1),
        p("7g.141gb", 134466, 1),
    ],
    compute_slices: 7,
};

// Nominal: 23 GB = 21934 MiB, 45 GB = 42915 MiB, 90 GB = 85830 MiB, 180 GB = 171661 MiB.
pub const B200: GpuModel = GpuModel {
    name: "B200",
    memory_mib: 183359,
    pci_ids: &["0x290110DE"],
    mig_profiles: &[
        p("1g.23gb", 21934, 7),
        p("1g.45gb", 42915, 4),
        p("2g.45gb", 42915, 3),
        p("3g.90gb", 85830, 2),
        p("4g.90gb", 85830, 1),
        p("7g.180gb", 171661, 1),
    ],
    compute_slices: 7,
};

// A30-24GB: four compute slices (MIG User Guide: 1g.6gb x4, 2g.12gb x2, 4g.24gb x1, as the GPU
// Operator's all-<profile> configs say). Nominal: 6 GB = 5722 MiB, 12 GB = 11444 MiB, 24 GB = 22888 MiB.
// No EKS instance type carries it; catalogued for on-premises and hybrid nodes, and for GPU-equivalents.
pub const A30: GpuModel = GpuModel {
    name: "A30-24GB",
    memory_mib: 24576,
    pci_ids: &["0x20B710DE"],
    mig_profiles: &[
        p("1g.6gb", 5722, 4),
        p("2g.12gb", 11444, 2),
        p("4g.24gb", 22888, 1),
    ],
    compute_slices: 4,
};

// GPUs without MIG: memory from Karpenter's `karpenter.k8s.aws/instance-gpu-memory`.
pub const T4: GpuModel = GpuModel {
    name: "T4",
    memory_mib: 16384,
    pci_ids: &[],
    mig_profiles: &[],
    compute_slices: 0,
};
pub const A10G: GpuModel = GpuModel {
    name: "A10G",
    memory_mib: 22888,
    pci_ids: &[],
    mig_profiles: &[],
    compute_slices: 0,
};
pub const L4: GpuModel = GpuModel {
    name: "L4",
    memory_mib: 22888,
    pci_ids: &[],
    mig_profiles: &[],
    compute_slices: 0,
};
pub const L40S: GpuModel = GpuModel {
    name: "L40S",
    memory_mib: 45776,
    pci_ids: &[],
    mig_profiles: &[],
    compute_slices: 0,
};

/// Every GPU model the catalog knows.
pub const GPUS: &[&GpuModel] = &[
    &A100_40GB,
    &A100_80GB,
    &H100_80GB,
    &H200_141GB,
    &B200,
    &A30,
    &T4,
    &A10G,
    &L4,
    &L40S,
];

/// One EC2 GPU instance type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceType {
    pub name: &'static str,
    pub gpu: &'static GpuModel,
    pub gpus: u32,
    /// Karpenter's `karpenter.k8s.aws/instance-gpu-name` label value.
    pub gpu_name_label: &'static str,
    /// On-demand $/hour in [`PRICES_REGION`] as of [`PRICES_AS_OF`]; `None` where Karpenter's table has none.
    pub usd_per_hour: Option<f64>,
    /// vCPUs (`karpenter.k8s.aws/instance-cpu`).
    pub vcpus: u32,
    /// Memory, MiB (`karpenter.k8s.aws/instance-memory`, EC2's `MemoryInfo.SizeInMiB`).
    pub memory_mib: u64,
    /// Max pods with the VPC CNI's ENI-limited density (Karpenter's `pods` resource on AL2023); the
    /// kubelet's kube-reserved memory grows with it.
    pub max_pods: u32,
}

const fn it(
    name: &'static str,
    gpu: &'static GpuModel,
    gpu_name_label: &'static str,
    gpus: u32,
    usd_per_hour: Option<f64>,
    (vcpus, memory_mib, max_pods): (u32, u64, u32),
) -> InstanceType {
    InstanceType {
        name,
        gpu,
        gpus,
        gpu_name_label,
        usd_per_hour,
        vcpus,
        memory_mib,
        max_pods,
    }
}

/// EKS GPU instance types (Karpenter's instance-type reference and pricing table, us-east-1, 2026-07-20):
/// name, GPU, GPU label, GPUs, $/hour, (vCPUs, memory MiB, max pods).
pub const INSTANCE_TYPES: &[InstanceType] = &[
    it("g4dn.xlarge", &T4, "t4", 1, Some(0.526), (4, 16384, 29)),
    it("g4dn.2xlarge", &T4, "t4", 1, Some(0.752), (8, 32768, 29)),
    it("g4dn.4xlarge", &T4, "t4", 1, Some(1.204), (16, 65536, 29)),
    it("g4dn.8xlarge", &T4, "t4", 1, Some(2.176), (32, 131072, 58)),
    it(
        "g4dn.12xlarge",
        &T4,
        "t4",
        4,
        Some(3.912),
        (48, 196608, 234),
    ),
    it("g4dn.16xlarge", &T4, "t4", 1, Some(4.352), (64, 262144, 58)),
    it("g4dn.metal", &T4, "t4", 8, Some(7.824), (96, 393216, 737)),
    it("g5.xlarge", &A10G, "a10g", 1, Some(1.006), (4, 16384, 58)),
    it("g5.2xlarge", &A10G, "a10g", 1, Some(1.212), (8, 32768, 58)),
    it(
        "g5.4xlarge",
        &A10G,
        "a10g",
        1,
        Some(1.624),
        (16, 65536, 234),
    ),
    it(
        "g5.8xlarge",
        &A10G,
        "a10g",
        1,
        Some(2.448),
        (32, 131072, 234),
    ),
    it(
        "g5.12xlarge",
        &A10G,
        "a10g",
        4,
        Some(5.672),
        (48, 196608, 737),
    ),
    it(
        "g5.16xlarge",
        &A10G,
        "a10g",
        1,
        Some(4.096),
        (64, 262144, 234),
    ),
    it(
        "g5.24xlarge",
        &A10G,
        "a10g",
        4,
        Some(8.144),
        (96, 393216, 737),
    ),
    it(
        "g5.48xlarge",
        &A10G,
        "a10g",
        8,
        Some(16.288),
        (192, 786432, 345),
    ),
    it("g6.xlarge", &L4, "l4", 1, Some(0.8048), (4, 16384, 58)),
    it("g6.2xlarge", &L4, "l4", 1, Some(0.9776), (8, 32768, 58)),
    it("g6.4xlarge", &L4, "l4", 1, Some(1.3232), (16, 65536, 234)),
    it("g6.8xlarge", &L4, "l4", 1, Some(2.0144), (32, 131072, 234)),
    it("g6.12xlarge", &L4, "l4", 4, Some(4.6016), (48, 196608, 234)),
    it("g6.16xlarge", &L4, "l4", 1, Some(3.3968), (64, 262144, 737)),
    it("g6.24xlarge", &L4, "l4", 4, Some(6.6752), (96, 393216, 737)),
    it(
        "g6.48xlarge",
        &L4,
        "l4",
        8,
        Some(13.3504),
        (192, 786432, 737),
    ),
    it("g6e.xlarge", &L40S, "l40s", 1, Some(1.861), (4, 32768, 58)),
    it(
        "g6e.2xlarge",
        &L40S,
        "l40s",
        1,
        Some(2.24208),
        (8, 65536, 58),
    ),
    it(
        "g6e.4xlarge",
        &L40S,
        "l40s",
        1,
        Some(3.00424),
        (16, 131072, 234),
    ),
    it(
        "g6e.8xlarge",
        &L40S,
        "l40s",
        1,
        Some(4.52856),
        (32, 262144, 234),
    ),
    it(
        "g6e.12xlarge",
        &L40S,
        "l40s",
        4,
        Some(10.49264),
        (48, 393216, 292),
    ),
    it(
        "g6e.16xlarge",
        &L40S,
        "l40s",
        1,
        Some(7.57719),
        (64, 524288, 737),
    ),
    it(
        "g6e.24xlarge",
        &L40S,
        "l40s",
        4,
        Some(15.06559),
        (96, 786432, 492),
    ),
    it(
        "g6e.48xlarge",
        &L40S,
        "l40s",
        8,
        Some(30.13118),
        (192, 1572864, 492),
    ),
    it(
        "p4d.24xlarge",
        &A100_40GB,
        "a100",
        8,
        Some(21.957642),
        (96, 1179648, 737),
    ),
    it(
        "p4de.24xlarge",
        &A100_80GB,
        "a100",
        8,
        Some(27.44705),
        (96, 1179648, 737),
    ),
    it(
        "p5.4xlarge",
        &H100_80GB,
        "h100",
        1,
        Some(6.88),
        (16, 262144, 118),
    ),
    it(
        "p5.48xlarge",
        &H100_80GB,
        "h100",
        8,
        Some(55.04),
        (192, 2097152, 100),
    ),
    it(
        "p5e.48xlarge",
        &H200_141GB,
        "h200",
        8,
        None,
        (192, 2097152, 100),
    ),
    it(
        "p5en.48xlarge",
        &H200_141GB,
        "h200",
        8,
        Some(63.296),
        (192, 2097152, 198),
    ),
    it(
        "p6-b200.48xlarge",
        &B200,
        "b200",
        8,
        Some(113.9328),
        (192, 2097152, 198),
    ),
];

/// Looks up an instance type by its EC2 name.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

/// Looks up a GPU model by its PCI device ID (`0x233010DE`, case-insensitive).
pub fn gpu_by_pci_id(id: &str) -> Option<&'static GpuModel> {
    GPUS.iter()
        .copied()
        .find(|g| g.pci_ids.iter().any(|p| p.eq_ignore_ascii_case(id)))
}

/// Whether any catalogued GPU has a MIG profile of this name.
/// The most devices one catalogued instance type offers: whole GPUs (`None`), or MIG devices of one
/// profile (each GPU cut into that profile alone). 0 for a profile no catalogued GPU has.
pub fn max_devices_per_node(profile: Option<&str>) -> u64 {
    INSTANCE_TYPES
        .iter()
        .map(|t| {
            let per_gpu = match profile {
                None => 1,
                Some(p) => t.gpu.mig_profile(p).map_or(0, |m| m.max_per_gpu),
            };
            u64::from(t.gpus) * u64::from(per_gpu)
        })
        .max()
        .unwrap_or(0)
}

pub fn is_known_mig_profile(name: &str) -> bool {
    GPUS.iter().any(|g| g.mig_profile(name).is_some())
}

/// The least memory a profile of this name has on any catalogued GPU, in MiB: what a pod can rely on
/// when the policy does not pin the GPU model. `None` for an unknown profile.
pub fn mig_profile_min_memory_mib(name: &str) -> Option<u64> {
    GPUS.iter()
        .filter_map(|g| g.mig_profile(name))
        .map(|p| p.memory_mib)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_types_are_unique_and_priced_where_karpenter_prices_them() {
        for (i, a) in INSTANCE_TYPES.iter().enumerate() {
            assert!(
                INSTANCE_TYPES[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
            if a.name != "p5e.48xlarge" {
                assert!(a.usd_per_hour.is_some(), "{} has no price", a.name);
            }
        }
    }

    #[test]
    fn profile_memory_rounds_as_the_design_says() {
        // DESIGN.md: 2g.20gb is 19968 MiB on A100-80GB, so 20Gi (20480 MiB) needs 3g.40gb.
        assert_eq!(A100_80GB.mig_profile("2g.20gb").unwrap().memory_mib, 19968);
        assert_eq!(mig_profile_min_memory_mib("2g.20gb"), Some(19968));
        assert!(mig_profile_min_memory_mib("3g.40gb").unwrap() >= 20480);
        assert_eq!(mig_profile_min_memory_mib("1g.7gb"), None);
    }

    #[test]
    fn mig_gpus_have_their_compute_slices_at_most() {
        for g in GPUS {
            assert_eq!(g.supports_mig(), g.compute_slices > 0, "{}", g.name);
            for prof in g.mig_profiles {
                let compute = prof.compute_slices();
                assert!(compute >= 1, "{} {}", g.name, prof.name);
                assert!(
                    compute * prof.max_per_gpu <= g.compute_slices,
                    "{} {}",
                    g.name,
                    prof.name
                );
                assert!(prof.memory_mib <= g.memory_mib, "{} {}", g.name, prof.name);
            }
        }
    }
}
