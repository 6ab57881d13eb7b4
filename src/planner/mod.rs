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
//!
//! Its parts, each deciding one thing, lowest first (each imports only parts above it):
//! - [`allocatable`]: what one node of an instance type offers pods;
//! - [`inventory`]: the workloads to plan, read from a file, and [`cluster`]: the same built from a
//!   cluster's objects;
//! - [`choose`]: per workload, the layouts it fits, how many replicas a node holds, the cheapest;
//! - [`pack`](mod@pack): the workloads that picked the same instance type and layout, packed onto
//!   shared nodes;
//! - [`assemble`]: the plan: picks, node groups, before and after, warnings;
//! - the renderers, which read a plan and decide nothing: [`text`] (the table), [`html`] (the page),
//!   [`emit`] (the configs that make it real).
//!
//! Imports: the core, [`crate::input`], [`crate::terminal`], [`crate::html`] and [`crate::cluster`];
//! never its peers (doctor, report, usage) or the CLI.

pub mod allocatable;
pub mod assemble;
pub mod choose;
pub mod cluster;
pub mod emit;
pub mod html;
pub mod inventory;
pub mod pack;
pub mod text;
