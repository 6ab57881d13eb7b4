//! The DRA backend's knowledge: which ResourceClaimTemplate a `backend: dra` rule hands a container, what
//! those templates say (device class, CEL selector, count), and the DeviceClasses that map renamed
//! extended resources onto the NVIDIA DRA driver's devices (Kubernetes 1.36, `extendedResourceName`).
//!
//! Pure data, like the catalog: the engine names templates with it, `gpu-slicer dra templates` prints
//! them, and cluster mode keeps them in the namespaces that need them.
//!
//! NVIDIA DRA driver facts honoured here (kubernetes-sigs/dra-driver-nvidia-gpu, formerly
//! NVIDIA/k8s-dra-driver-gpu; its docs `concepts/gpu-allocation.md`, `reference/resourceslice-attributes.md`,
//! `concepts/gpu-sharing.md`): whole GPUs are DeviceClass `gpu.nvidia.com`, MIG devices `mig.nvidia.com`,
//! both published by driver `gpu.nvidia.com` with attribute `type` (`gpu` | `mig`) and, for MIG devices,
//! `profile` (e.g. `1g.10gb`). Pods whose claims come from a template never share a device unless the
//! driver runs with `ConsumableShares` (consumable capacity, KEP-5075; `DRAConsumableCapacity` is on by
//! default in Kubernetes 1.36): it then publishes `allowMultipleAllocations` devices with a `shares`
//! capacity, and a claim that requests one share gets a time-sliced share of a GPU. Karpenter 1.15
//! plans that (EC2NodeClass annotation `karpenter.k8s.aws/nvidia-consumable-capacity`), and whole
//! GPUs; it has no metadata for MIG devices. MPS cannot be shared per pod (the driver refuses MPS
//! with consumable shares), nor can time-slicing on MIG devices (the driver documents
//! `MigDeviceConfig` time-slicing as having no effect).

use serde_json::{Value, json};

use crate::policy::{Action, Backend, MIG_PREFIX, Policy, Rule, WHOLE_GPU};

/// The NVIDIA DRA driver's name, and the attribute domain of its devices.
pub const DRIVER: &str = "gpu.nvidia.com";
/// DeviceClass of whole GPUs.
pub const GPU_CLASS: &str = "gpu.nvidia.com";
/// DeviceClass of MIG devices.
pub const MIG_CLASS: &str = "mig.nvidia.com";
/// Prefix of every template and DeviceClass gpu-slicer makes, and of the pod-level claim names it adds.
pub const PREFIX: &str = "gpu-slicer-";
/// Label on every object gpu-slicer manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "gpu-slicer");
/// The request name inside every template (containers reference the claim, not the request).
pub const REQUEST: &str = "gpu";
/// Most GPUs one EKS instance carries (p4d, p5, p6): the largest count an unlimited rule's templates
/// cover.
pub const MAX_GPUS_PER_NODE: u64 = 8;

/// The capacity a shared-GPU claim consumes: one of the driver's consumable shares.
pub const SHARES: &str = "shares";

/// One ResourceClaimTemplate a rule can reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `gpu-slicer-mig-1g.10gb`, `gpu-slicer-gpu-x2`, `gpu-slicer-gpu-shared`, ...
    pub name: String,
    pub device_class: &'static str,
    /// `Some(profile)` for MIG devices.
    pub profile: Option<String>,
    pub count: u64,
    /// One consumable share of a GPU (time-slicing across pods) rather than the whole device.
    pub shared: bool,
}

impl Template {
    /// What the template gives, for warnings and the audit trail: `mig 1g.10gb`, `2 whole GPUs`.
    pub fn describe(&self) -> String {
        match (&self.profile, self.count) {
            _ if self.shared => "time-sliced GPU share".to_string(),
            (Some(p), 1) => format!("mig {p}"),
            (Some(p), n) => format!("{n} x mig {p}"),
            (None, 1) => "whole GPU".to_string(),
            (None, n) => format!("{n} whole GPUs"),
        }
    }

    /// The ResourceClaimTemplate object (resource.k8s.io/v1) for `namespace`.
    pub fn object(&self, namespace: &str, rule: &str) -> Value {
        let mut request = json!({
            "deviceClassName": self.device_class,
            "allocationMode": "ExactCount",
            "count": self.count,
        });
        if let Some(profile) = &self.profile {
            request["selectors"] = json!([{"cel": {"expression": profile_selector(profile)}}]);
        }
        if self.shared {
            // Explicit, so a cluster whose driver does not publish shares fails to allocate the claim
            // (the pod stays Pending with the reason) instead of silently taking a whole GPU.
            request["capacity"] = json!({"requests": {SHARES: "1"}});
        }
        json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
                "annotations": {"gpu-slicer.io/rule": rule, "gpu-slicer.io/gives": self.describe()},
            },
            "spec": {"spec": {"devices": {"requests": [{"name": REQUEST, "exactly": request}]}}},
        })
    }
}

/// The CEL expression that picks MIG devices of one profile.
fn profile_selector(profile: &str) -> String {
    format!("device.attributes['{DRIVER}'].profile == '{profile}'")
}

/// The template a container asking for `count` devices gets under a `dra` rule: a MIG device of
/// `profile` (`mig` rules) or whole GPUs (`exclusive`).
pub fn template(profile: Option<&str>, count: u64) -> Template {
    let base = match profile {
        Some(p) => format!("{PREFIX}mig-{p}"),
        None => format!("{PREFIX}gpu"),
    };
    Template {
        name: if count == 1 {
            base
        } else {
            format!("{base}-x{count}")
        },
        device_class: if profile.is_some() {
            MIG_CLASS
        } else {
            GPU_CLASS
        },
        profile: profile.map(str::to_string),
        count,
        shared: false,
    }
}

/// The template a `timeslice` rule's containers get: one consumable share of a whole GPU.
pub fn shared_template() -> Template {
    Template {
        name: format!("{PREFIX}gpu-shared"),
        device_class: GPU_CLASS,
        profile: None,
        count: 1,
        shared: true,
    }
}

/// The template for one container's ask under `rule` (`profile` for `mig` rules).
pub fn template_for(rule: &Rule, profile: Option<&str>, count: u64) -> Template {
    match rule.action {
        Action::Timeslice => shared_template(),
        _ => template(profile, count),
    }
}

/// Every template a `dra` rule can reference: each allowed profile (or whole GPUs) for each count up to
/// the rule's `maxPerContainer`. Empty for rules the DRA backend does not serve.
pub fn templates(rule: &Rule) -> Vec<Template> {
    if rule.backend != Backend::Dra {
        return Vec::new();
    }
    let max = rule.max_per_container.unwrap_or(MAX_GPUS_PER_NODE);
    match rule.action {
        Action::Mig => rule
            .allowed_profiles
            .iter()
            .flat_map(|p| (1..=max).map(move |n| template(Some(p), n)))
            .collect(),
        Action::Exclusive => (1..=max).map(|n| template(None, n)).collect(),
        Action::Timeslice => vec![shared_template()],
        _ => Vec::new(),
    }
}

/// Why a `dra` rule's action cannot be served by per-pod claims, if it cannot. MPS across pods needs
/// one ResourceClaim that all of them reference (a template gives each pod a claim, and so a device,
/// of its own), and the driver refuses MPS where consumable shares would let claims share a GPU;
/// time-slicing configured on MIG devices has no effect (the driver's MIG guide).
pub fn unsupported(rule: &Rule) -> Option<String> {
    if rule.backend != Backend::Dra {
        return None;
    }
    let why = match rule.action {
        Action::Mps => {
            "MPS GPUs cannot be served with backend dra: MPS across pods needs one ResourceClaim that all of them reference, and the NVIDIA DRA driver refuses MPS where claims share GPUs through consumable shares"
        }
        Action::Mig if rule.mig_time_slicing.is_some() => {
            "time-sliced MIG cannot be served with backend dra: the NVIDIA DRA driver documents time-slicing on MIG devices as having no effect, and Karpenter has no metadata for MIG devices"
        }
        _ => return None,
    };
    Some(format!(
        "{why}; use backend devicePlugin for rule {}",
        rule.name
    ))
}

/// The DeviceClasses that let pods keep asking for a resource the policy renames to, served by the
/// NVIDIA DRA driver (Kubernetes 1.36 `DeviceClass.spec.extendedResourceName`): one per MIG resource
/// of a `devicePlugin` rule. Shared resources (`.shared`, time-slicing, MPS) have no such mapping:
/// the second element lists them with the reason.
pub fn device_classes(policy: &Policy) -> (Vec<Value>, Vec<String>) {
    let mut classes = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for rule in &policy.rules {
        if rule.backend != Backend::DevicePlugin {
            continue;
        }
        let resources: Vec<(String, Option<&str>)> = match rule.action {
            Action::Mig => rule
                .allowed_profiles
                .iter()
                .map(|p| (rule.mig_resource(p), Some(p.as_str())))
                .collect(),
            Action::Timeslice | Action::Mps => rule
                .shared_resource
                .iter()
                .map(|r| (r.clone(), None))
                .collect(),
            _ => Vec::new(),
        };
        for (resource, profile) in resources {
            if !seen.insert(resource.clone()) {
                continue;
            }
            match profile {
                Some(p) if resource.strip_prefix(MIG_PREFIX) == Some(p) => {
                    classes.push(device_class(&resource, p))
                }
                _ if resource == WHOLE_GPU => {}
                _ => skipped.push(format!(
                    "{resource} (rule {}): a shared device has no DeviceClass mapping; each pod's claim would hold the device alone",
                    rule.name
                )),
            }
        }
    }
    (classes, skipped)
}

fn device_class(resource: &str, profile: &str) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {
            "name": format!("{PREFIX}mig-{profile}"),
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "spec": {
            "selectors": [{"cel": {"expression": format!(
                "device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig' && {}",
                profile_selector(profile)
            )}}],
            "extendedResourceName": resource,
        },
    })
}

/// The rule's templates for `namespace`, as objects.
pub fn template_objects(rule: &Rule, namespace: &str) -> Vec<Value> {
    templates(rule)
        .iter()
        .map(|t| t.object(namespace, &rule.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Rule {
        let text = format!(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {yaml}\n"
        );
        Policy::parse(&text, "p.yaml").unwrap().rules.remove(0)
    }

    #[test]
    fn templates_cover_each_profile_and_count_the_rule_allows() {
        let r = rule(
            "{name: a, action: mig, backend: dra, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb]}}",
        );
        let names: Vec<_> = templates(&r).into_iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            vec!["gpu-slicer-mig-1g.10gb", "gpu-slicer-mig-2g.20gb"]
        );
        let r = rule("{name: a, action: exclusive, backend: dra, maxPerContainer: 2}");
        let t = templates(&r);
        assert_eq!(t[1].name, "gpu-slicer-gpu-x2");
        assert_eq!(t[1].describe(), "2 whole GPUs");
        assert_eq!(
            templates(&rule("{name: a, action: exclusive, backend: dra}")).len(),
            8
        );
        assert!(templates(&rule("{name: a, action: exclusive}")).is_empty());
    }

    #[test]
    fn sharing_across_pods_is_refused_with_the_reason() {
        let r = rule("{name: a, action: mps, backend: dra}");
        assert!(
            unsupported(&r)
                .unwrap()
                .contains("one ResourceClaim that all of them reference")
        );
        let r = rule("{name: a, action: timeslice, backend: dra}");
        assert!(unsupported(&r).is_none());
        let t = templates(&r);
        assert_eq!(t.len(), 1);
        let obj = t[0].object("ns", "a");
        assert_eq!(
            obj["spec"]["spec"]["devices"]["requests"][0]["exactly"]["capacity"],
            json!({"requests": {"shares": "1"}})
        );
        assert!(
            unsupported(&rule(
                "{name: a, action: mig, backend: dra, mig: {profile: 1g.10gb}}"
            ))
            .is_none()
        );
    }
}
