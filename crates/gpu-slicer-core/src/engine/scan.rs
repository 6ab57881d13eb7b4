//! Scanning the pod: which containers ask for which GPU resources (whole GPUs, slices, shared
//! replicas), in requests and limits, and whether the pod asks for GPUs at all.

use serde_json::Value;

use crate::dra;
use crate::pod::{Pod, Section};
use crate::policy::{MIG_PREFIX, Policy, WHOLE_GPU};
use crate::quantity;

/// How a container resource relates to GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind<'p> {
    /// `nvidia.com/gpu`.
    Whole,
    /// `nvidia.com/mig-<profile>`, or `nvidia.com/mig-<profile>.shared` (time-sliced slices).
    Mig(&'p str),
    /// A time-slicing / MPS replica resource a rule names.
    Shared(&'p str),
}

/// One GPU resource of one container.
#[derive(Debug)]
pub(super) struct GpuUse<'p> {
    pub(super) section: Section,
    pub(super) index: usize,
    pub(super) container: &'p str,
    pub(super) key: &'p str,
    pub(super) kind: Kind<'p>,
    /// The quantity as the pod wrote it (from limits, else requests).
    pub(super) quantity: &'p Value,
    pub(super) count: Option<u64>,
    pub(super) in_limits: bool,
    pub(super) in_requests: bool,
    /// The requests' quantity where it differs from the limits' (the API server refuses extended
    /// resources whose requests and limits differ; a rename must not hide that).
    pub(super) requests_differ: Option<&'p Value>,
}

impl GpuUse<'_> {
    pub(super) fn label(&self) -> String {
        match self.section {
            Section::Containers => self.container.to_string(),
            Section::InitContainers => format!("init:{}", self.container),
        }
    }

    pub(super) fn quantity_text(&self) -> String {
        match self.quantity {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

pub(super) fn classify<'p>(key: &'p str, policy: &Policy) -> Option<Kind<'p>> {
    if key == WHOLE_GPU {
        Some(Kind::Whole)
    } else if let Some(profile) = key.strip_prefix(MIG_PREFIX) {
        Some(Kind::Mig(
            profile.strip_suffix(".shared").unwrap_or(profile),
        ))
    } else if policy.shared_resources.contains(key) || key.starts_with("nvidia.com/gpu.") {
        Some(Kind::Shared(key))
    } else {
        None
    }
}

pub(super) fn count_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => quantity::parse_count(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Every GPU resource the pod asks for, init containers first. A zero count asks for nothing.
pub(super) fn scan<'p>(pod: &'p Pod, policy: &Policy) -> Vec<GpuUse<'p>> {
    let mut uses = Vec::new();
    for (section, index, c) in pod.all_containers() {
        let Some(res) = &c.resources else { continue };
        let limits = res.limits.as_ref();
        let requests = res.requests.as_ref();
        let keys = limits.into_iter().flat_map(|m| m.keys()).chain(
            requests
                .into_iter()
                .flat_map(|m| m.keys())
                .filter(|k| !limits.is_some_and(|l| l.contains_key(*k))),
        );
        for key in keys {
            let Some(kind) = classify(key, policy) else {
                continue;
            };
            let in_limits = limits.is_some_and(|m| m.contains_key(key));
            let in_requests = requests.is_some_and(|m| m.contains_key(key));
            let quantity = limits
                .and_then(|m| m.get(key))
                .or_else(|| requests.and_then(|m| m.get(key)));
            let Some(quantity) = quantity else { continue };
            let count = count_of(quantity);
            if count == Some(0) {
                continue;
            }
            let requests_differ = match (
                limits.and_then(|m| m.get(key)),
                requests.and_then(|m| m.get(key)),
            ) {
                // Written alike (the common case) is equal without parsing either.
                (Some(l), Some(r))
                    if l != r && (count_of(l) != count_of(r) || count_of(l).is_none()) =>
                {
                    Some(r)
                }
                _ => None,
            };
            uses.push(GpuUse {
                section,
                index,
                container: &c.name,
                key,
                kind,
                quantity,
                count,
                in_limits,
                in_requests,
                requests_differ,
            });
        }
    }
    uses
}

/// The pod's claims made from gpu-slicer's ResourceClaimTemplates (our own output, or a pod that
/// names such a template itself): GPU asks too, enforced against the rule.
pub(super) fn slicer_claims(pod: &Pod) -> impl Iterator<Item = (&str, &str)> {
    pod.spec.resource_claims.iter().flatten().filter_map(|c| {
        let t = c.resource_claim_template_name.as_deref()?;
        t.starts_with(dra::PREFIX).then_some((c.name.as_str(), t))
    })
}
