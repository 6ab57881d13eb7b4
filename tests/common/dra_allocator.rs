//! A test model of the kube-scheduler's DRA allocation with consumable capacity (KEP-5075), against
//! devices shaped as the NVIDIA DRA driver publishes them. It is a model for tests, not product code:
//! it implements what gpu-slicer's templates rely on and panics on anything else (an unknown CEL form),
//! so a template that says something the model does not understand fails the test instead of passing.
//!
//! Rules modelled, with their sources:
//! - Device shapes: `reference/resourceslice-attributes.md` of kubernetes-sigs/dra-driver-nvidia-gpu
//!   (full GPU: `memory`; MIG slice: `memory`, `multiprocessors`, `copyEngines`, `decoders`,
//!   `encoders`, `jpegEngines`, `ofaEngines`; attributes `type`, `profile`).
//! - The driver's modes: `cmd/gpu-kubelet-plugin/consumable_shares.go` ([`apply_mode`]).
//! - KEP-5075 / `DeviceCapacity` API docs: a device without `allowMultipleAllocations` goes to one
//!   claim; with it, "the device can be allocated more than once, and all of its capacity is
//!   consumable": per capacity a claim consumes its `capacity.requests` value rounded up to the
//!   request policy's valid range, else the policy's `default`, else the whole capacity; the sum over
//!   claims may not exceed the capacity's value. A request for a capacity the device lacks, or above
//!   its value, does not match the device.
//! - `firstAvailable` (KEP-4816): subrequests are tried in order; the first that can be satisfied wins.
//! - Gate `DRAConsumableCapacity` off: the API server drops `allowMultipleAllocations`, request
//!   policies and claims' `capacity.requests` ([`gate_off`], [`Allocator::gate_off`]).

#![allow(dead_code)]

use std::collections::BTreeMap;

use gpu_slicer_core::policy::dra_sharing::ConsumableShares;
use gpu_slicer_core::quantity;
use serde_json::Value;

const MI: u128 = 1 << 20;
const GI: u128 = 1 << 30;

#[derive(Debug, Clone)]
pub struct RequestPolicy {
    pub default: u128,
    pub min: u128,
    pub max: u128,
    pub step: u128,
}

#[derive(Debug, Clone)]
pub struct Capacity {
    pub value: u128,
    pub policy: Option<RequestPolicy>,
}

#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub driver: String,
    pub attributes: BTreeMap<String, String>,
    pub capacity: BTreeMap<String, Capacity>,
    pub allow_multiple_allocations: bool,
}

fn cap(value: u128) -> Capacity {
    Capacity {
        value,
        policy: None,
    }
}

/// A full GPU as the driver publishes it (`type: gpu`, capacity `memory`).
pub fn full_gpu(name: &str, memory_mib: u128) -> Device {
    Device {
        name: name.into(),
        driver: "gpu.nvidia.com".into(),
        attributes: [
            ("type".to_string(), "gpu".to_string()),
            ("productName".into(), "NVIDIA H100 80GB HBM3".into()),
        ]
        .into(),
        capacity: [("memory".to_string(), cap(memory_mib * MI))].into(),
        allow_multiple_allocations: false,
    }
}

/// A MIG slice as the driver publishes it (`type: mig`, `profile`, memory, multiprocessors and
/// engines: the latter have no request policy in any mode).
pub fn mig_slice(name: &str, profile: &str, memory_mib: u128, multiprocessors: u128) -> Device {
    let mut d = full_gpu(name, memory_mib);
    d.attributes.insert("type".into(), "mig".into());
    d.attributes.insert("profile".into(), profile.into());
    for (k, v) in [
        ("multiprocessors", multiprocessors),
        ("copyEngines", 1),
        ("decoders", 0),
        ("encoders", 0),
        ("jpegEngines", 0),
        ("ofaEngines", 0),
    ] {
        d.capacity.insert(k.into(), cap(v));
    }
    d
}

/// A MIG slice that publishes only `memory` (and, in integer mode, `shares`): the case where a plain
/// claim is not exclusive by accident of other capacities.
pub fn bare_mig_slice(name: &str, profile: &str, memory_mib: u128) -> Device {
    let mut d = full_gpu(name, memory_mib);
    d.attributes.insert("type".into(), "mig".into());
    d.attributes.insert("profile".into(), profile.into());
    d
}

/// `applyConsumableShares` of `consumable_shares.go`, for full GPUs and MIG devices alike.
pub fn apply_mode(mut d: Device, mode: ConsumableShares) -> Device {
    if mode == ConsumableShares::Disabled {
        return d;
    }
    d.allow_multiple_allocations = true;
    let Some(memory) = d.capacity.get_mut("memory") else {
        return d;
    };
    let max = memory.value / MI * MI;
    memory.value = max;
    let (default, min) = match mode {
        ConsumableShares::Memory => (max, MI),
        _ => (0, 0),
    };
    memory.policy = Some(RequestPolicy {
        default,
        min,
        max,
        step: MI,
    });
    if let ConsumableShares::Shares(n) = mode {
        let n = u128::from(n);
        d.capacity.insert(
            "shares".into(),
            Capacity {
                value: n,
                policy: Some(RequestPolicy {
                    default: 1,
                    min: 1,
                    max: n,
                    step: 1,
                }),
            },
        );
    }
    d
}

/// What the API server keeps of a device when `DRAConsumableCapacity` is off.
pub fn gate_off(mut d: Device) -> Device {
    d.allow_multiple_allocations = false;
    for c in d.capacity.values_mut() {
        c.policy = None;
    }
    d
}

/// The DeviceClasses the driver's chart installs (`gpu.nvidia.com`, `mig.nvidia.com`): their CEL.
pub fn class_selector(class: &str) -> String {
    let kind = if class == "mig.nvidia.com" {
        "mig"
    } else {
        "gpu"
    };
    format!(
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == '{kind}'"
    )
}

/// Evaluates the CEL forms gpu-slicer's templates and the driver's classes use; panics on any other.
pub fn cel(expression: &str, d: &Device) -> bool {
    expression
        .split(" && ")
        .all(|atom| atom_holds(atom.trim(), d))
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('\'')
}

fn atom_holds(atom: &str, d: &Device) -> bool {
    if atom == "device.allowMultipleAllocations" {
        return d.allow_multiple_allocations;
    }
    if atom == "!device.allowMultipleAllocations" {
        return !d.allow_multiple_allocations;
    }
    if let Some(v) = atom.strip_prefix("device.driver == ") {
        return d.driver == unquote(v);
    }
    if let Some(rest) = atom.strip_prefix("device.attributes['gpu.nvidia.com'].")
        && let Some((name, value)) = rest.split_once(" == ")
    {
        return d.attributes.get(name).map(String::as_str) == Some(unquote(value));
    }
    if atom == "'gpu.nvidia.com' in device.capacity" {
        return d.driver == "gpu.nvidia.com";
    }
    if let Some(name) = atom.strip_suffix(" in device.capacity['gpu.nvidia.com']") {
        return d.capacity.contains_key(unquote(name));
    }
    if let Some(rest) = atom.strip_prefix("device.capacity['gpu.nvidia.com'].")
        && let Some((name, cmp)) = rest.split_once(".compareTo(quantity(")
        && let Some(q) = cmp.strip_suffix(")) == 0")
    {
        let c = d
            .capacity
            .get(name)
            .unwrap_or_else(|| panic!("CEL error: no capacity {name} (allocation would abort)"));
        return Some(c.value) == quantity::parse(unquote(q));
    }
    panic!("the allocator model does not know the CEL form {atom:?}");
}

/// One allocated device: its name, what the claim consumes of it (multi-allocatable devices only),
/// and the subrequest that won (`firstAvailable`).
#[derive(Debug, Clone)]
pub struct Allocation {
    pub device: String,
    pub consumed: BTreeMap<String, u128>,
    pub subrequest: Option<String>,
}

/// The devices of one node and the claims allocated on them.
#[derive(Debug, Clone)]
pub struct Allocator {
    pub devices: Vec<Device>,
    /// Per device: each holding claim's consumption (empty map for an exclusive hold).
    held: Vec<Vec<BTreeMap<String, u128>>>,
    /// `DRAConsumableCapacity` off: claims' capacity requests are dropped.
    gate_off: bool,
}

impl Allocator {
    pub fn new(devices: Vec<Device>) -> Allocator {
        let held = vec![Vec::new(); devices.len()];
        Allocator {
            devices,
            held,
            gate_off: false,
        }
    }

    /// The same node with the gate off (devices as the API server keeps them, requests dropped).
    pub fn gate_off(devices: Vec<Device>) -> Allocator {
        let mut a = Allocator::new(devices.into_iter().map(gate_off).collect());
        a.gate_off = true;
        a
    }

    /// How many claims hold device `name`.
    pub fn holders(&self, name: &str) -> usize {
        self.devices
            .iter()
            .position(|d| d.name == name)
            .map_or(0, |i| self.held[i].len())
    }

    /// Allocates a claim made from `template` (a ResourceClaimTemplate object), as the scheduler
    /// would; `None` when it cannot be satisfied (the pod stays Pending).
    pub fn allocate(&mut self, template: &Value) -> Option<Vec<Allocation>> {
        let requests = template["spec"]["spec"]["devices"]["requests"]
            .as_array()
            .expect("requests");
        let mut all = Vec::new();
        for request in requests {
            let got = if let Some(exactly) = request.get("exactly") {
                self.allocate_one(exactly, None)
            } else {
                let subs = request["firstAvailable"]
                    .as_array()
                    .expect("firstAvailable");
                // KEP-4816: in order, the first subrequest that can be satisfied.
                subs.iter()
                    .find_map(|s| self.allocate_one(s, s["name"].as_str().map(str::to_string)))
            };
            all.extend(got?);
        }
        Some(all)
    }

    fn allocate_one(&mut self, req: &Value, sub: Option<String>) -> Option<Vec<Allocation>> {
        let class = req["deviceClassName"].as_str().expect("deviceClassName");
        let mut selectors = vec![class_selector(class)];
        for s in req["selectors"].as_array().into_iter().flatten() {
            selectors.push(s["cel"]["expression"].as_str().expect("cel").to_string());
        }
        let asked: BTreeMap<String, u128> = if self.gate_off {
            BTreeMap::new()
        } else {
            req["capacity"]["requests"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        quantity::parse(v.as_str().expect("q")).expect("q"),
                    )
                })
                .collect()
        };
        let count = req["count"].as_u64().unwrap_or(1) as usize;
        let mut picked = Vec::new();
        for i in 0..self.devices.len() {
            if picked.len() == count {
                break;
            }
            let d = &self.devices[i];
            if !selectors.iter().all(|s| cel(s, d)) {
                continue;
            }
            if let Some(consumed) = self.fits(i, &asked) {
                picked.push((i, consumed));
            }
        }
        if picked.len() < count {
            return None;
        }
        Some(
            picked
                .into_iter()
                .map(|(i, consumed)| {
                    self.held[i].push(consumed.clone());
                    Allocation {
                        device: self.devices[i].name.clone(),
                        consumed,
                        subrequest: sub.clone(),
                    }
                })
                .collect(),
        )
    }

    /// What a claim asking `asked` would consume of device `i`, if it fits there.
    fn fits(&self, i: usize, asked: &BTreeMap<String, u128>) -> Option<BTreeMap<String, u128>> {
        let d = &self.devices[i];
        for (name, amount) in asked {
            if d.capacity.get(name).is_none_or(|c| *amount > c.value) {
                return None;
            }
        }
        if !d.allow_multiple_allocations {
            return self.held[i].is_empty().then(BTreeMap::new);
        }
        let mut consumed = BTreeMap::new();
        for (name, c) in &d.capacity {
            let amount = match (asked.get(name), &c.policy) {
                (Some(a), Some(p)) => round_up(*a, p)?,
                (Some(a), None) => *a,
                (None, Some(p)) => p.default,
                (None, None) => c.value,
            };
            let used: u128 = self.held[i].iter().filter_map(|h| h.get(name)).sum();
            if used + amount > c.value {
                return None;
            }
            consumed.insert(name.clone(), amount);
        }
        Some(consumed)
    }
}

/// A request rounded up to the policy's valid range (KEP-5075); `None` above its max.
fn round_up(asked: u128, p: &RequestPolicy) -> Option<u128> {
    let v = if asked <= p.min {
        p.min
    } else {
        p.min + (asked - p.min).div_ceil(p.step) * p.step
    };
    (v <= p.max).then_some(v)
}

/// One H100 node as the driver publishes it in `mode`: two full GPUs (81559Mi, what NVML reports for
/// an 80 GB H100).
pub fn two_gpus(mode: ConsumableShares) -> Vec<Device> {
    (0..2)
        .map(|i| apply_mode(full_gpu(&format!("gpu-{i}"), 81559), mode))
        .collect()
}

pub const GIB: u128 = GI;
