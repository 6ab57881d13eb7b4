//! What gpu-slicer knows about GPUs, the NVIDIA GPU Operator and DRA driver, and Karpenter: the catalog,
//! NodePools, NodeOverlays, device plugin and mig-parted configs, DRA templates, and `policy check`.

pub mod catalog;
pub mod check;
pub mod dra;
pub mod dra_check;
pub mod gpu_operator;
pub mod karpenter;
pub mod nodepool;
pub mod replicas_check;
