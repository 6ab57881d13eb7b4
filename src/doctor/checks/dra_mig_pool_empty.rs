//! `dra-mig-pool-empty`: a `backend: dra`, `action: mig` rule whose nodes do not exist: its NodePool
//! has no node, or no node carries its `nodeSelector`. Karpenter cannot launch nodes for MIG claims (it
//! has no metadata for MIG devices), so the pods of the namespaces the rule covers stay Pending until
//! someone adds nodes.
//!
//! One finding per NodePool (or per rule routed by nodeSelector) names the rules and namespaces, and
//! the fix the NodePool calls for: make it static (`spec.replicas`), raise its replicas, create it, or
//! find out why its NodeClaims fail.

use std::collections::{BTreeMap, BTreeSet};

use gpu_slicer_core::nodepool::NODEPOOL_LABEL;
use gpu_slicer_core::policy::{Action, Backend, Policy, Rule};

use super::findings::{POLICY_OBJECT, finding, skipped, some_of};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, NodeInfo};
use crate::doctor::{Finding, Severity};

pub const DRA_MIG_POOL_EMPTY: &str = "dra-mig-pool-empty";

/// The check, for [`super::ALL`].
pub struct DraMigPoolEmpty;

impl Check for DraMigPoolEmpty {
    fn name(&self) -> &'static str {
        DRA_MIG_POOL_EMPTY
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        dra_mig_pool_empty(s)
    }
}

/// `backend: dra`, `action: mig` rules whose nodes do not exist: a NodePool without nodes, or a
/// `nodeSelector` no node matches. Karpenter cannot launch nodes for MIG claims (it has no metadata
/// for MIG devices), so the pods stay Pending until someone adds nodes.
pub fn dra_mig_pool_empty(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(no) => return skipped(DRA_MIG_POOL_EMPTY, POLICY_OBJECT, &no.why()),
    };
    let policy = &loaded.policy;
    let mig_rules = policy
        .rules
        .iter()
        .filter(|r| r.backend == Backend::Dra && r.action == Action::Mig);
    // NodePool -> the rules routing to it (one finding per pool).
    let mut by_pool: BTreeMap<&str, Vec<&Rule>> = BTreeMap::new();
    let mut out = Vec::new();
    for rule in mig_rules {
        if let Some(pool) = rule.node_pool.as_deref() {
            by_pool.entry(pool).or_default().push(rule);
            continue;
        }
        if rule.node_selector.is_empty() {
            continue; // unrouted: policy-cluster-mismatch reports it
        }
        let matches = |n: &&NodeInfo| {
            rule.node_selector
                .iter()
                .all(|(k, v)| n.label(k) == Some(v.as_str()))
        };
        if s.nodes.iter().any(|n| matches(&n)) {
            continue;
        }
        let selector: Vec<String> = rule
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let selector = selector.join(",");
        out.push(finding(
            DRA_MIG_POOL_EMPTY,
            Severity::Error,
            &loaded.object,
            format!(
                "rule {} (backend dra, mig; {}) routes MIG claims by nodeSelector {selector}, and no node carries those labels: Karpenter cannot launch nodes for MIG claims, so the pods stay Pending",
                rule.name,
                covering(&covered_namespaces(s, policy, rule))
            ),
            format!(
                "add nodes labelled {selector} (scale up the node group that carries them, `kubectl get nodes -l {selector}`), or correct the rule's nodeSelector"
            ),
        ));
    }
    for (pool, rules) in by_pool {
        if s.nodes
            .iter()
            .any(|n| n.label(NODEPOOL_LABEL) == Some(pool))
        {
            continue;
        }
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        let namespaces: BTreeSet<String> = rules
            .iter()
            .flat_map(|r| covered_namespaces(s, policy, r))
            .collect();
        let namespaces: Vec<String> = namespaces.into_iter().collect();
        out.push(finding(
            DRA_MIG_POOL_EMPTY,
            Severity::Error,
            format!("NodePool/{pool}"),
            format!(
                "NodePool {pool} has no nodes ({NODEPOOL_LABEL}={pool}), and backend dra rule {} routes MIG claims to it ({}): Karpenter cannot launch nodes for MIG claims (it has no metadata for MIG devices), so those pods stay Pending",
                names.join(", "),
                covering(&namespaces)
            ),
            empty_pool_fix(s, pool),
        ));
    }
    out
}

/// The existing namespaces whose rule is `rule`.
fn covered_namespaces(s: &ClusterSnapshot, policy: &Policy, rule: &Rule) -> Vec<String> {
    s.namespaces
        .iter()
        .filter(|(ns, labels)| {
            policy
                .rule_for(ns, labels)
                .is_some_and(|r| r.name == rule.name)
        })
        .map(|(ns, _)| ns.clone())
        .collect()
}

fn covering(namespaces: &[String]) -> String {
    if namespaces.is_empty() {
        "no namespace yet".into()
    } else {
        format!("namespace {}", some_of(namespaces))
    }
}

/// What to do about an empty NodePool, from what the NodePool says.
fn empty_pool_fix(s: &ClusterSnapshot, pool: &str) -> String {
    let static_pool = format!(
        "make NodePool {pool} static: set spec.replicas (Karpenter's StaticCapacity feature gate) so it keeps its nodes, as gpu-dra-mig in manifests/examples/dra/nodepools.yaml and docs/dra-backend.md do, or route the rule by nodeSelector to a managed node group"
    );
    if s.node_pools.found().is_none() {
        return format!("{static_pool} (NodePools could not be read here)");
    }
    match s.pool(pool) {
        None => format!(
            "NodePool {pool} does not exist: create it as a static pool (spec.replicas), as gpu-dra-mig in manifests/examples/dra/nodepools.yaml, or correct the rule's nodePool"
        ),
        Some(p) => match p.replicas {
            None => static_pool,
            Some(n) if n <= 0 => {
                format!("NodePool {pool} is static with spec.replicas {n}: raise spec.replicas")
            }
            Some(n) => format!(
                "NodePool {pool} asks for {n} node(s) (spec.replicas) and none has registered: check that Karpenter's StaticCapacity feature gate is on and why its NodeClaims fail (`kubectl get nodeclaims -l {NODEPOOL_LABEL}={pool}`, Karpenter's logs)"
            ),
        },
    }
}
