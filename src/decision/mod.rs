//! The pure core: from a pod, its namespace, the policy and the NodePools to a decision. Nothing here
//! reads a file, a clock or the network.

pub mod audit;
pub mod budget;
pub mod claims;
pub mod dra_sharing;
pub mod engine;
pub mod equivalents;
pub mod mode;
pub mod pod;
pub mod policy;
pub mod quantity;
pub mod spend;
