//! `policy-cluster-mismatch`: `gpu-slicer policy check` run against the live cluster: the webhook's
//! policy against the NodePools, the GPU Operator's MIG and device plugin configs and, where the
//! cluster serves DRA, its DeviceClasses. A rule that names a NodePool, MIG config, profile or device
//! class the cluster lacks routes pods where they cannot run.
//!
//! An error finding quotes `policy check`'s message (or why the policy does not load) and says to
//! correct the rule or the config it names. One `info` finding always says which policy was used.

use std::collections::BTreeSet;

use gpu_slicer_core::check;
use gpu_slicer_core::nodepool::NodePoolIndex;

use super::findings::{KARPENTER_CRDS, POLICY_OBJECT, finding, skipped};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, Read};
use crate::doctor::{Finding, Severity};
use crate::policy_source::NoPolicy;

pub const POLICY_CLUSTER_MISMATCH: &str = "policy-cluster-mismatch";

/// The check, for [`super::ALL`].
pub struct PolicyClusterMismatch;

impl Check for PolicyClusterMismatch {
    fn name(&self) -> &'static str {
        POLICY_CLUSTER_MISMATCH
    }

    fn run(&self, s: &ClusterSnapshot, _: &Options) -> Vec<Finding> {
        policy_cluster_mismatch(s)
    }
}

/// `policy check` against the live NodePools and GPU Operator configs; also says which policy was
/// used.
pub fn policy_cluster_mismatch(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(NoPolicy::Invalid { object, message }) => {
            return vec![finding(
                POLICY_CLUSTER_MISMATCH,
                Severity::Error,
                object,
                format!("the webhook's policy does not load: {message}"),
                "correct the policy (`gpu-slicer policy check FILE`) and re-apply manifests/policy; until then the webhook keeps its last good policy, or cannot start",
            )];
        }
        Err(no) => return skipped(POLICY_CLUSTER_MISMATCH, POLICY_OBJECT, &no.why()),
    };
    let mut out = vec![finding(
        POLICY_CLUSTER_MISMATCH,
        Severity::Info,
        &loaded.object,
        format!(
            "policy read from {} ({} rules)",
            loaded.source,
            loaded.policy.rules.len()
        ),
        "",
    )];
    let ops = s.gpu_operator.found();
    if let Some(why) = s.gpu_operator.why_not() {
        out.extend(skipped(
            POLICY_CLUSTER_MISMATCH,
            "CustomResourceDefinition/clusterpolicies.nvidia.com",
            &format!(
                "{why} (MIG configs checked against the GPU Operator's defaults; device plugin configs not checked)"
            ),
        ));
    }
    let pools = match &s.node_pools {
        Read::Found(p) => p,
        other => {
            out.extend(skipped(
                POLICY_CLUSTER_MISMATCH,
                KARPENTER_CRDS,
                &format!(
                    "{} (the policy is not checked against NodePools)",
                    other.why_not().unwrap_or("")
                ),
            ));
            return out;
        }
    };
    let index = NodePoolIndex::new(pools.iter().cloned());
    // DRA rules' device classes are checked against the cluster's when it serves DRA.
    let classes: Option<BTreeSet<String>> = s
        .device_classes
        .found()
        .map(|names| names.iter().cloned().collect());
    let report = check::check_with_device_classes(
        &loaded.policy,
        &loaded.source,
        Some(&index),
        ops.map(|o| &o.configs),
        classes.as_ref(),
    );
    for e in report.errors {
        out.push(finding(
            POLICY_CLUSTER_MISMATCH,
            Severity::Error,
            &loaded.object,
            e,
            "correct the rule or the NodePool / GPU Operator config the message names; the same check runs offline as `gpu-slicer policy check FILE --nodepools DIR --gpu-operator DIR`",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use crate::doctor::snapshot::Read;
    use gpu_slicer_core::karpenter::MIG_CONFIG_LABEL;

    #[test]
    fn policy_check_runs_against_the_live_nodepools() {
        let mut s = healthy();
        let Read::Found(pools) = &mut s.node_pools else {
            unreachable!()
        };
        let mig = pools.iter_mut().find(|p| p.name == "gpu-mig").unwrap();
        mig.template_labels
            .insert(MIG_CONFIG_LABEL.into(), "all-1g.10gb".into());
        let f = policy_cluster_mismatch(&s);
        let errors: Vec<_> = f.iter().filter(|f| f.severity == Severity::Error).collect();
        assert!(!errors.is_empty());
        assert!(
            errors[0]
                .message
                .contains("profile 2g.20gb is not in MIG config all-1g.10gb"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].object, "ConfigMap/gpu-slicer/gpu-slicer-policy");

        s.policy = Err(NoPolicy::Invalid {
            object: "ConfigMap/gpu-slicer/gpu-slicer-policy".into(),
            message: "spec.rules[0].mig.profile: \"1g.7gb\" is not a MIG profile".into(),
        });
        let f = policy_cluster_mismatch(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.contains("1g.7gb"));
    }
}
