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
//!
//! Imports (of this crate): [`crate::annotations`], [`crate::pod`], [`crate::policy`],
//! [`crate::quantity`].

pub mod claims;

use serde_json::{Value, json};

use crate::annotations::GPU_MEMORY_ANNOTATION;
use crate::policy::dra_sharing::{ConsumableShares, is_larger};
use crate::policy::{Action, Backend, MIG_PREFIX, Policy, Rule, WHOLE_GPU};
use crate::quantity;

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

/// The capacity the driver's integer mode publishes: `N` shares per device (`consumable_shares.go`).
pub const SHARES: &str = "shares";
/// The capacity every device publishes: its memory, in bytes (memory and unlimited modes consume it).
pub const MEMORY: &str = "memory";
/// Memory mode: the sizes (GiB) of the time-sliced templates a namespace gets besides the rule's
/// `dra.memory`; a pod's `gpu-slicer.io/gpu-memory` takes the smallest that holds it. A fixed ladder,
/// because a pod can only reference a template that exists (no per-pod claim specs).
pub const MEMORY_STEPS_GIB: [u64; 17] = [
    1, 2, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 141, 180,
];
const GIB: u128 = 1 << 30;
const MIB: u128 = 1 << 20;

/// What one ResourceClaimTemplate gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gives {
    /// `count` devices held alone: whole GPUs (`profile: None`) or MIG devices of `profile`, else of
    /// each `fallback` in order (`firstAvailable`).
    Exclusive {
        profile: Option<String>,
        fallback: Vec<String>,
        count: u64,
    },
    /// A time-sliced share of one GPU: one share (integer mode), `memory` bytes (memory mode), or
    /// nothing bounded (unlimited mode).
    Shared { memory: Option<u128> },
}

/// One ResourceClaimTemplate a rule can reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `gpu-slicer-mig-1g.10gb`, `gpu-slicer-gpu-x2`, `gpu-slicer-gpu-shared`, `gpu-slicer-gpu-shared-8gi`
    pub name: String,
    pub gives: Gives,
    /// The mode of the driver that serves the claim: it decides what the claim must say.
    pub mode: ConsumableShares,
}

impl Template {
    /// The DeviceClass its devices come from: `mig.nvidia.com` or `gpu.nvidia.com`.
    pub fn device_class(&self) -> &'static str {
        if self.profile().is_some() {
            MIG_CLASS
        } else {
            GPU_CLASS
        }
    }

    /// The MIG profile asked for first, if a MIG device.
    pub fn profile(&self) -> Option<&str> {
        match &self.gives {
            Gives::Exclusive { profile, .. } => profile.as_deref(),
            Gives::Shared { .. } => None,
        }
    }

    /// What the template gives, for warnings and the audit trail: `mig 1g.10gb`, `2 whole GPUs`.
    pub fn describe(&self) -> String {
        match &self.gives {
            Gives::Shared { .. } if self.mode == ConsumableShares::Unlimited => {
                "time-sliced GPU share, unbounded sharing".to_string()
            }
            Gives::Shared { memory: Some(m) } => {
                format!("time-sliced GPU share of {}", memory_text(*m))
            }
            Gives::Shared { memory: None } => "time-sliced GPU share".to_string(),
            Gives::Exclusive {
                profile,
                fallback,
                count,
            } => {
                let base = match (profile, count) {
                    (Some(p), 1) => format!("mig {p}"),
                    (Some(p), n) => format!("{n} x mig {p}"),
                    (None, 1) => "whole GPU".to_string(),
                    (None, n) => format!("{n} whole GPUs"),
                };
                if fallback.is_empty() {
                    base
                } else {
                    format!("{base}, else {}", fallback.join(", else "))
                }
            }
        }
    }

    /// The ResourceClaimTemplate object (resource.k8s.io/v1) for `namespace`.
    pub fn object(&self, namespace: &str, rule: &str) -> Value {
        let request = match &self.gives {
            Gives::Exclusive {
                profile: Some(first),
                fallback,
                count,
            } if !fallback.is_empty() => {
                // firstAvailable (GA in 1.36): the scheduler takes the first subrequest it can
                // satisfy, in order, so the rule's profile wins wherever one is free.
                let alternatives: Vec<Value> = std::iter::once(first)
                    .chain(fallback)
                    .map(|p| {
                        let mut sub = exclusive_request(Some(p), *count, self.mode);
                        sub["name"] = json!(subrequest_name(p));
                        sub
                    })
                    .collect();
                json!({"name": REQUEST, "firstAvailable": alternatives})
            }
            Gives::Exclusive { profile, count, .. } => {
                json!({"name": REQUEST, "exactly": exclusive_request(profile.as_deref(), *count, self.mode)})
            }
            Gives::Shared { memory } => {
                json!({"name": REQUEST, "exactly": shared_request(*memory, self.mode)})
            }
        };
        json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": {MANAGED_BY.0: MANAGED_BY.1},
                "annotations": {"gpu-slicer.io/rule": rule, "gpu-slicer.io/gives": self.describe()},
            },
            "spec": {"spec": {"devices": {"requests": [request]}}},
        })
    }
}

/// A subrequest name (a DNS label): `mig-1g-10gb` for `1g.10gb`, `mig-1g-10gb-me` for `1g.10gb+me`.
fn subrequest_name(profile: &str) -> String {
    format!("mig-{}", profile.replace(['.', '+'], "-"))
}

/// `8Gi`, else `512Mi` (memory rounded up to the driver's 1Mi request step).
pub fn memory_text(bytes: u128) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{}Gi", bytes / GIB)
    } else {
        format!("{}Mi", bytes.div_ceil(MIB))
    }
}

/// A request for `count` devices that no other claim may share, in the driver's `mode`
/// (docs/dra-backend.md, "Action x mode"):
/// - `disabled`: the selector `!device.allowMultipleAllocations` (Kubernetes 1.36 CEL). The driver
///   publishes no device as multi-allocatable in this mode, so the selector matches them all; if the
///   driver is in fact sharing, the claim stays Pending instead of taking a share.
/// - `<N>`: the claim asks for all `N` shares, and only devices that have exactly `N`, so nothing is
///   left for another claim (each needs at least 1, the request policy's minimum).
/// - `memory`: no capacity request: the claim consumes each capacity's default, which the driver sets
///   to the whole memory in this mode, and another claim needs at least 1Mi.
/// - `unlimited`: refused by policy validation (nothing can stop other claims sharing the device).
fn exclusive_request(profile: Option<&str>, count: u64, mode: ConsumableShares) -> Value {
    let mut selectors = Vec::new();
    if let Some(p) = profile {
        selectors.push(cel(&profile_selector(p)));
    }
    let mut request = json!({
        "deviceClassName": if profile.is_some() { MIG_CLASS } else { GPU_CLASS },
        "allocationMode": "ExactCount",
        "count": count,
    });
    match mode {
        ConsumableShares::Disabled => selectors.push(cel("!device.allowMultipleAllocations")),
        ConsumableShares::Shares(n) => {
            selectors.push(cel(&format!(
                "{} && device.capacity['{DRIVER}'].{SHARES}.compareTo(quantity('{n}')) == 0",
                has_capacity(SHARES)
            )));
            request["capacity"] = json!({"requests": {SHARES: n.to_string()}});
        }
        ConsumableShares::Memory | ConsumableShares::Unlimited => {}
    }
    if !selectors.is_empty() {
        request["selectors"] = Value::Array(selectors);
    }
    request
}

/// A request for one time-sliced share of a whole GPU: one share (`<N>`), `memory` (memory mode), or
/// nothing (unlimited: the claim consumes the memory default, 0). The capacity is written out, so a
/// device that does not publish it (a driver without ConsumableShares) does not match and the pod
/// stays Pending with the reason, instead of silently holding a whole GPU.
fn shared_request(memory: Option<u128>, mode: ConsumableShares) -> Value {
    let mut request = json!({
        "deviceClassName": GPU_CLASS,
        "allocationMode": "ExactCount",
        "count": 1,
    });
    match (mode, memory) {
        (ConsumableShares::Shares(_), _) => {
            request["capacity"] = json!({"requests": {SHARES: "1"}});
        }
        (ConsumableShares::Memory, Some(m)) => {
            request["capacity"] = json!({"requests": {MEMORY: memory_text(m)}});
        }
        _ => {
            request["selectors"] = json!([cel("device.allowMultipleAllocations")]);
        }
    }
    request
}

fn cel(expression: &str) -> Value {
    json!({"cel": {"expression": expression}})
}

/// CEL: the device publishes capacity `name` (reading a missing key is an error that aborts the
/// claim's allocation, so it is tested first).
fn has_capacity(name: &str) -> String {
    format!("'{DRIVER}' in device.capacity && '{name}' in device.capacity['{DRIVER}']")
}

/// The CEL expression that picks MIG devices of one profile.
fn profile_selector(profile: &str) -> String {
    format!("device.attributes['{DRIVER}'].profile == '{profile}'")
}

/// The template a container asking for `count` devices gets: MIG devices of `profile` (then each of
/// `fallback`), or whole GPUs.
fn exclusive(
    profile: Option<&str>,
    fallback: Vec<String>,
    count: u64,
    mode: ConsumableShares,
) -> Template {
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
        gives: Gives::Exclusive {
            profile: profile.map(str::to_string),
            fallback,
            count,
        },
        mode,
    }
}

/// A time-sliced template: `gpu-slicer-gpu-shared`, or per memory size in memory mode.
fn shared(memory: Option<u128>, mode: ConsumableShares) -> Template {
    let name = match memory {
        Some(m) => format!("{PREFIX}gpu-shared-{}", memory_text(m).to_lowercase()),
        None => format!("{PREFIX}gpu-shared"),
    };
    Template {
        name,
        gives: Gives::Shared { memory },
        mode,
    }
}

/// The fallbacks of `profile` under `rule`: those larger than it, in the rule's order.
fn fallback_for(rule: &Rule, profile: &str) -> Vec<String> {
    rule.dra
        .fallback
        .iter()
        .filter(|f| is_larger(f, profile))
        .cloned()
        .collect()
}

/// The memory sizes of a memory-mode timeslice rule's templates: the ladder and the rule's default.
fn memory_sizes(rule: &Rule) -> Vec<u128> {
    let mut sizes: Vec<u128> = MEMORY_STEPS_GIB
        .iter()
        .map(|g| u128::from(*g) * GIB)
        .chain(rule.dra.memory)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

/// The template for one container's ask under `rule`: `profile` for `mig` rules, `gpu_memory` (the
/// pod's `gpu-slicer.io/gpu-memory`) for time-slicing in memory mode, where it wins over the rule's
/// `dra.memory`. An error says why no template fits.
pub fn template_for(
    rule: &Rule,
    profile: Option<&str>,
    count: u64,
    gpu_memory: Option<&str>,
) -> Result<Template, String> {
    let mode = rule.dra.shares;
    if rule.action != Action::Timeslice {
        let fallback = profile.map(|p| fallback_for(rule, p)).unwrap_or_default();
        return Ok(exclusive(profile, fallback, count, mode));
    }
    if mode != ConsumableShares::Memory {
        return Ok(shared(None, mode));
    }
    let ask = match gpu_memory {
        None => rule.dra.memory,
        Some(text) => Some(quantity::parse(text).filter(|b| *b > 0).ok_or_else(|| {
            format!("{GPU_MEMORY_ANNOTATION} {text:?} is not a Kubernetes quantity (e.g. 18Gi)")
        })?),
    };
    let Some(ask) = ask else {
        // Policy validation requires dra.memory in memory mode; kept as an error, never a default.
        return Err(format!(
            "rule {} shares GPUs by memory but says no dra.memory; set {GPU_MEMORY_ANNOTATION}",
            rule.name
        ));
    };
    match memory_sizes(rule).into_iter().find(|s| *s >= ask) {
        Some(size) => Ok(shared(Some(size), mode)),
        None => Err(format!(
            "{GPU_MEMORY_ANNOTATION} {} is more than the largest time-sliced GPU share gpu-slicer offers ({}Gi, rule {}); ask for less, or use a rule with action exclusive",
            gpu_memory.unwrap_or_default(),
            MEMORY_STEPS_GIB[MEMORY_STEPS_GIB.len() - 1],
            rule.name
        )),
    }
}

/// Every template a `dra` rule can reference: each allowed profile (or whole GPUs) for each count up to
/// the rule's `maxPerContainer`, or its time-sliced share(s). Empty for rules the DRA backend does not
/// serve.
pub fn templates(rule: &Rule) -> Vec<Template> {
    if rule.backend != Backend::Dra {
        return Vec::new();
    }
    let mode = rule.dra.shares;
    let max = rule.max_per_container.unwrap_or(MAX_GPUS_PER_NODE);
    match rule.action {
        Action::Mig => rule
            .allowed_profiles
            .iter()
            .flat_map(|p| {
                (1..=max).map(move |n| exclusive(Some(p), fallback_for(rule, p), n, mode))
            })
            .collect(),
        Action::Exclusive => (1..=max)
            .map(|n| exclusive(None, Vec::new(), n, mode))
            .collect(),
        Action::Timeslice if mode == ConsumableShares::Memory => memory_sizes(rule)
            .into_iter()
            .map(|m| shared(Some(m), mode))
            .collect(),
        Action::Timeslice => vec![shared(None, mode)],
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
        let r = rule("{name: a, action: timeslice, backend: dra, dra: {consumableShares: \"4\"}}");
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
