//! What the checks build findings from: the constructors ([`finding`], [`skipped`], [`listed`]), the
//! objects a skipped check names, and the words findings share (lists of names, the command that
//! reads a node's mig-manager log).

use crate::doctor::snapshot::Read;
use crate::doctor::{Finding, Severity};

/// Where the webhook's policy is looked for (manifests/webhook).
pub(super) const POLICY_OBJECT: &str = "ConfigMap/gpu-slicer/gpu-slicer-policy";
/// The object a check that needs Karpenter's NodePools names when it is skipped.
pub(super) const KARPENTER_CRDS: &str = "CustomResourceDefinition/nodepools.karpenter.sh";
/// The object a skipped DRA check names: the API the lists come from.
const DRA_API: &str = "APIService/v1.resource.k8s.io";

pub(super) fn finding(
    check: &'static str,
    severity: Severity,
    object: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        object: object.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// The one `info` finding of a check that could not run, saying why.
pub(super) fn skipped(check: &'static str, object: &str, why: &str) -> Vec<Finding> {
    vec![finding(
        check,
        Severity::Info,
        object,
        format!("skipped: {why}"),
        "",
    )]
}

/// The objects of a resource.k8s.io list, or `check`'s "skipped" finding saying why there are none.
pub(super) fn listed<'a, T>(
    read: &'a Read<Vec<T>>,
    check: &'static str,
) -> Result<&'a [T], Vec<Finding>> {
    match read {
        Read::Found(items) => Ok(items),
        other => Err(skipped(check, DRA_API, other.why_not().unwrap_or(""))),
    }
}

/// `a, b, c`, or `none`.
pub(super) fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Up to three names and a count of the rest.
pub(super) fn some_of(names: &[String]) -> String {
    let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        format!("{shown} and {} more", names.len() - 3)
    } else {
        shown
    }
}

/// How to read the mig-manager log of one node: the pod of the GPU Operator's DaemonSet on that node
/// (`app=nvidia-mig-manager`, assets/state-mig-manager/0600_daemonset.yaml), not `logs
/// ds/nvidia-mig-manager`, which shows whichever pod kubectl picks.
pub(super) fn mig_manager_logs(node: &str) -> String {
    format!(
        "read the node's mig-manager log: `kubectl -n {ns} logs $(kubectl -n {ns} get pod -l app=nvidia-mig-manager --field-selector spec.nodeName={node} -o name)`",
        ns = crate::doctor::read::GPU_OPERATOR_NAMESPACE
    )
}
