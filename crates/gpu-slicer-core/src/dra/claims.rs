//! The pod's own DRA claims: what the edge learned of them, and which ones ask for GPUs.
//!
//! A pod can get GPUs without any `nvidia.com/` resource: `spec.resourceClaims` naming a ResourceClaim
//! or ResourceClaimTemplate of its own whose requests use an NVIDIA DeviceClass. Left unchecked, that
//! walks around every rule (a `deny` namespace gets GPUs, a `mig` namespace gets whole ones). The
//! engine cannot read those objects (it reads nothing); the server reads them in cluster mode and hands
//! the verdicts in as [`ClaimFacts`]. A claim nobody could read is treated as a GPU claim, with the
//! reason: isolation is not decided on a guess.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::dra;
use crate::pod::{Pod, PodResourceClaim};

/// What one of the pod's claims asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// It requests devices of this GPU DeviceClass.
    Gpu { device_class: String },
    /// Its requests use no GPU DeviceClass (a NIC, an FPGA, ...).
    NotGpu,
    /// It could not be read; the reason says why.
    Unreadable(String),
}

/// Verdicts on the pod's own claims, keyed by the entry's name in `spec.resourceClaims`. An entry with
/// no verdict was not looked up (offline): unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimFacts {
    verdicts: BTreeMap<String, ClaimVerdict>,
}

impl ClaimFacts {
    pub fn insert(&mut self, entry: &str, verdict: ClaimVerdict) {
        self.verdicts.insert(entry.to_string(), verdict);
    }

    pub fn verdict(&self, entry: &str) -> ClaimVerdict {
        self.verdicts.get(entry).cloned().unwrap_or_else(|| {
            ClaimVerdict::Unreadable("not read: the webhook has no cluster access".into())
        })
    }
}

/// The object an entry of `spec.resourceClaims` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimSource<'p> {
    Template(&'p str),
    Claim(&'p str),
}

impl ClaimSource<'_> {
    pub fn describe(&self) -> String {
        match self {
            ClaimSource::Template(t) => format!("ResourceClaimTemplate {t}"),
            ClaimSource::Claim(c) => format!("ResourceClaim {c}"),
        }
    }
}

/// The pod's claims that gpu-slicer did not make (not from a `gpu-slicer-` template), with what each
/// points at. An entry that names neither is left to the API server, which refuses it.
pub fn own_claims(pod: &Pod) -> impl Iterator<Item = (&PodResourceClaim, ClaimSource<'_>)> {
    pod.spec.resource_claims.iter().flatten().filter_map(|c| {
        if let Some(t) = c.resource_claim_template_name.as_deref() {
            return (!t.starts_with(dra::PREFIX)).then_some((c, ClaimSource::Template(t)));
        }
        c.resource_claim_name
            .as_deref()
            .map(|n| (c, ClaimSource::Claim(n)))
    })
}

/// The DeviceClass names a claim spec (`ResourceClaim.spec`, or a template's `spec.spec`) requests:
/// `devices.requests[].exactly.deviceClassName` and each `firstAvailable[].deviceClassName`.
pub fn device_classes(claim_spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let requests = claim_spec
        .pointer("/devices/requests")
        .and_then(Value::as_array);
    for r in requests.into_iter().flatten() {
        let exact = r
            .pointer("/exactly/deviceClassName")
            .and_then(Value::as_str);
        let alternatives = r
            .get("firstAvailable")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("deviceClassName").and_then(Value::as_str));
        for class in exact.into_iter().chain(alternatives) {
            if !out.iter().any(|c| c == class) {
                out.push(class.to_string());
            }
        }
    }
    out
}

/// Whether a DeviceClass hands out NVIDIA GPUs: a class named for the NVIDIA driver
/// (`gpu.nvidia.com`, `mig.nvidia.com`, `vfio.gpu.nvidia.com`, ...: the driver's own classes end in
/// `nvidia.com`), one whose CEL selectors name that driver, or one that maps an `nvidia.com/` extended
/// resource (`extendedResourceName`, Kubernetes 1.34+). `spec` is the DeviceClass's `spec`, if read.
pub fn is_gpu_class(name: &str, spec: Option<&Value>) -> bool {
    if name.ends_with("nvidia.com") {
        return true;
    }
    let Some(spec) = spec else { return false };
    let maps_nvidia = spec
        .get("extendedResourceName")
        .and_then(Value::as_str)
        .is_some_and(|r| r.starts_with("nvidia.com/"));
    let selects_nvidia = spec
        .get("selectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.pointer("/cel/expression").and_then(Value::as_str))
        .any(|cel| cel.contains("nvidia.com"));
    maps_nvidia || selects_nvidia
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classes_come_from_exact_and_first_available_requests() {
        let spec = json!({"devices": {"requests": [
            {"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 1}},
            {"name": "any", "firstAvailable": [
                {"name": "big", "deviceClassName": "mig.nvidia.com"},
                {"name": "nic", "deviceClassName": "rdma.example.com"},
                {"name": "again", "deviceClassName": "gpu.nvidia.com"}
            ]}
        ]}});
        assert_eq!(
            device_classes(&spec),
            ["gpu.nvidia.com", "mig.nvidia.com", "rdma.example.com"]
        );
        assert!(device_classes(&json!({})).is_empty());
    }

    #[test]
    fn gpu_classes_by_name_selector_or_extended_resource() {
        assert!(is_gpu_class("gpu.nvidia.com", None));
        assert!(is_gpu_class("vfio.gpu.nvidia.com", None));
        assert!(!is_gpu_class("rdma.example.com", None));
        let custom = json!({"selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].productName == 'H100'"}}]});
        assert!(is_gpu_class("big-gpus", Some(&custom)));
        let mapped = json!({"extendedResourceName": "nvidia.com/gpu"});
        assert!(is_gpu_class("team-gpus", Some(&mapped)));
        let nic =
            json!({"selectors": [{"cel": {"expression": "device.driver == 'rdma.example.com'"}}]});
        assert!(!is_gpu_class("nics", Some(&nic)));
    }

    #[test]
    fn own_claims_skip_gpu_slicers_templates() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"resourceClaims": [
            {"name": "a", "resourceClaimTemplateName": "gpu-slicer-mig-1g.10gb"},
            {"name": "b", "resourceClaimTemplateName": "my-gpus"},
            {"name": "c", "resourceClaimName": "shared-gpu"}
        ]}}))
        .unwrap();
        let own: Vec<_> = own_claims(&pod)
            .map(|(c, s)| (c.name.as_str(), s))
            .collect();
        assert_eq!(
            own,
            [
                ("b", ClaimSource::Template("my-gpus")),
                ("c", ClaimSource::Claim("shared-gpu"))
            ]
        );
        assert!(matches!(
            ClaimFacts::default().verdict("b"),
            ClaimVerdict::Unreadable(_)
        ));
    }
}
