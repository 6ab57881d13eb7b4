//! `mig-config-failed`: nodes where the GPU Operator's mig-manager failed to apply the node's
//! `nvidia.com/mig.config` (`nvidia.com/mig.config.state=failed`), has stayed `pending` longer than
//! `--stuck-after`, or where the node's MIG config is not the one its NodePool's template asks for. The
//! node then offers other slices than the pods routed to it need (or none).
//!
//! A finding names the node and the config, and the fix: the node's own mig-manager log, then a
//! relabel (or replacing the node).

use gpu_slicer_core::karpenter::MIG_CONFIG_LABEL;
use gpu_slicer_core::nodepool::NODEPOOL_LABEL;

use super::findings::{finding, mig_manager_logs};
use super::{Check, Options};
use crate::doctor::snapshot::{ClusterSnapshot, MIG_CONFIG_STATE_LABEL};
use crate::doctor::{Finding, Severity};

pub const MIG_CONFIG_FAILED: &str = "mig-config-failed";

/// The check, for [`super::ALL`].
pub struct MigConfigFailed;

impl Check for MigConfigFailed {
    fn name(&self) -> &'static str {
        MIG_CONFIG_FAILED
    }

    fn run(&self, s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
        mig_config_failed(s, o)
    }
}

/// Nodes where mig-manager failed, has been pending too long, or applied another layout than their
/// NodePool's template asks for.
pub fn mig_config_failed(s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    for node in &s.nodes {
        let logs = mig_manager_logs(&node.name);
        let config = node.label(MIG_CONFIG_LABEL);
        let object = format!("Node/{}", node.name);
        match node.label(MIG_CONFIG_STATE_LABEL) {
            Some("failed") => out.push(finding(
                MIG_CONFIG_FAILED,
                Severity::Error,
                &object,
                format!(
                    "{MIG_CONFIG_STATE_LABEL}=failed: mig-manager could not apply {MIG_CONFIG_LABEL}={}; the node advertises {}",
                    config.unwrap_or("?"),
                    node.advertised()
                ),
                format!(
                    "{logs}; check that the config exists for this GPU, then relabel the node (`kubectl label node {} {MIG_CONFIG_LABEL}=all-disabled --overwrite`, then back) or replace it",
                    node.name
                ),
            )),
            Some("pending") if o.older_than_stuck(node.created) => out.push(finding(
                MIG_CONFIG_FAILED,
                Severity::Error,
                &object,
                format!(
                    "{MIG_CONFIG_STATE_LABEL}=pending on a node created {} ago: mig-manager has not applied {MIG_CONFIG_LABEL}={}",
                    node.created.map_or("long".into(), |t| o.age(t)),
                    config.unwrap_or("?")
                ),
                format!("{logs}; relabel the node to another config and back, or replace it"),
            )),
            _ => {}
        }
        let Some(pool) = node.label(NODEPOOL_LABEL).and_then(|p| s.pool(p)) else {
            continue;
        };
        let want = pool
            .template_labels
            .get(MIG_CONFIG_LABEL)
            .map(String::as_str);
        if want.is_some() && want != config {
            out.push(finding(
                MIG_CONFIG_FAILED,
                Severity::Error,
                &object,
                format!(
                    "{MIG_CONFIG_LABEL}={} on the node, but NodePool {}'s template says {}: the node's slices are not the ones pods are routed here for",
                    config.unwrap_or("(unset)"),
                    pool.name,
                    want.unwrap_or("")
                ),
                format!(
                    "relabel: `kubectl label node {} {MIG_CONFIG_LABEL}={} --overwrite`, or replace the node",
                    node.name,
                    want.unwrap_or("")
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::fixtures::*;
    use serde_json::json;

    #[test]
    fn mig_manager_failed_pending_or_off_template_nodes_are_reported() {
        let mut s = healthy();
        let mut failed = mig_node("failed-node");
        failed["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("failed");
        failed["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        let mut pending = mig_node("pending-node");
        pending["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("pending");
        pending["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        let mut fresh = mig_node("fresh-node");
        fresh["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("pending");
        fresh["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        fresh["metadata"]["creationTimestamp"] = json!(ago(2));
        let mut other = mig_node("relabelled-node");
        other["metadata"]["labels"]["nvidia.com/mig.config"] = json!("all-1g.10gb");
        other["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        s.nodes.extend([failed, pending, fresh, other].map(node));
        let f = mig_config_failed(&s, &options());
        let objects: Vec<&str> = f.iter().map(|f| f.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                "Node/failed-node",
                "Node/pending-node",
                "Node/relabelled-node"
            ],
            "{f:#?}"
        );
        // The node's own mig-manager pod, not `logs ds/...` (an arbitrary pod of the DaemonSet).
        assert!(
            f[0].fix
                .contains("--field-selector spec.nodeName=failed-node -o name)`"),
            "{}",
            f[0].fix
        );
        assert!(!f[0].fix.contains("ds/"), "{}", f[0].fix);
        assert!(
            f[1].message.contains("pending on a node created 2h0m ago"),
            "{}",
            f[1].message
        );
        assert!(
            f[2].message
                .contains("NodePool gpu-mig's template says all-balanced"),
            "{}",
            f[2].message
        );
        assert!(
            f[2].fix
                .contains("nvidia.com/mig.config=all-balanced --overwrite"),
            "{}",
            f[2].fix
        );
    }
}
