//! GPU-equivalents: one unit for what a pod holds, whatever form its GPUs take (docs/proving-savings.md,
//! "The unit").
//!
//! One GPU-equivalent is one whole GPU. A MIG slice counts its compute slices over its GPU model's
//! (`1g.10gb` on H100 = 1/7, `3g.40gb` = 3/7; on A30 over 4); a time-sliced or MPS replica counts
//! 1/replicas of its device (`shared.replicas`, `mig.timeSlicing.replicas`: a time-sliced slice is the
//! slice's fraction / replicas); a claim from one of gpu-slicer's ResourceClaimTemplates counts its
//! devices the same way (a consumable share 1/N, a memory share its fraction of the device's memory).
//! Under the MIG `single` strategy `nvidia.com/gpu` is a slice of the rule's profile.
//!
//! A pod's amount is its effective request as the scheduler computes it (per resource, the larger of the
//! app containers' sum, sidecars included, and each init container with the sidecars started before it;
//! KEP-753), plus its pod-level claims, each counted once. "Whole GPUs requested" is the number of
//! devices behind the same requests: what the pod would hold without slicing.
//!
//! Pure: no I/O, no clock. Amounts are integers of [`Gpus::UNIT`] per GPU, a multiple of every
//! replica count up to 16 and of 7 and 4, so sums of slices and shares are exact and budgets do not
//! drift; they print as decimals ([`Gpus`]'s `Display`).
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::dra`], [`crate::gpus`],
//! [`crate::nodepool`], [`crate::pod`], [`crate::policy`], [`crate::quantity`].

use std::borrow::Cow;

use crate::catalog::{self, GpuModel};
use crate::dra::{self, Gives};
use crate::gpus::Gpus;
use crate::nodepool::NodePoolIndex;
use crate::pod::Pod;
use crate::policy::dra_sharing::ConsumableShares;
use crate::policy::{Action, MIG_PREFIX, MigStrategy, Policy, Rule, WHOLE_GPU};
use crate::quantity;

/// What one pod holds and what it would hold on whole GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// GPU-equivalents held.
    pub held: Gpus,
    /// Devices behind the same requests: whole GPUs without slicing.
    pub requested: u64,
}

impl Usage {
    pub fn is_gpu(&self) -> bool {
        self.requested > 0 || self.held > Gpus::ZERO
    }
}

/// One container's GPU resources, `(resource, count)`.
#[derive(Debug, Clone, Default)]
struct ContainerAsk<'p> {
    init: bool,
    /// An init container with `restartPolicy: Always` (a sidecar, KEP-753).
    sidecar: bool,
    resources: Vec<(Cow<'p, str>, u64)>,
}

/// A pod's GPU asks: per container, then the pod-level claims from gpu-slicer's templates. The engine
/// builds it from the pod as written and rewrites it as the patch does, so the pod's amount after the
/// rewrite is known before the API server stores it.
#[derive(Debug, Clone, Default)]
pub struct Asks<'p> {
    containers: Vec<ContainerAsk<'p>>,
    templates: Vec<Cow<'p, str>>,
}

/// Whether a resource name is a GPU one gpu-slicer counts.
fn is_gpu_resource(key: &str, policy: &Policy) -> bool {
    key == WHOLE_GPU
        || key.starts_with(MIG_PREFIX)
        || key.starts_with("nvidia.com/gpu.")
        || policy.shared_resources.contains(key)
}

fn count_of(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::String(s) => quantity::parse_count(s).unwrap_or(0),
        serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

impl<'p> Asks<'p> {
    /// The GPU asks of a pod as written (limits, else requests; extended resources have both equal).
    pub fn of(pod: &'p Pod, policy: &Policy) -> Asks<'p> {
        let mut containers = Vec::new();
        for (section, _, c) in pod.all_containers() {
            let mut ask = ContainerAsk {
                init: section == crate::pod::Section::InitContainers,
                sidecar: c.restart_policy.as_deref() == Some("Always"),
                resources: Vec::new(),
            };
            if let Some(res) = &c.resources {
                let limits = res.limits.iter().flatten();
                let requests = res
                    .requests
                    .iter()
                    .flatten()
                    .filter(|(k, _)| !res.limits.as_ref().is_some_and(|l| l.contains_key(*k)));
                for (key, value) in limits.chain(requests) {
                    let n = count_of(value);
                    if n > 0 && is_gpu_resource(key, policy) {
                        ask.resources.push((Cow::Borrowed(key.as_str()), n));
                    }
                }
            }
            containers.push(ask);
        }
        let templates = pod
            .spec
            .resource_claims
            .iter()
            .flatten()
            .filter_map(|c| c.resource_claim_template_name.as_deref())
            .filter(|t| t.starts_with(dra::PREFIX))
            .map(Cow::Borrowed)
            .collect();
        Asks {
            containers,
            templates,
        }
    }

    /// The device plugin rewrite: `nvidia.com/gpu` renamed to `target` in every container.
    pub fn rename_whole(&mut self, target: &str) {
        for c in &mut self.containers {
            for (key, _) in &mut c.resources {
                if key == WHOLE_GPU {
                    *key = Cow::Owned(target.to_string());
                }
            }
        }
    }

    /// The DRA rewrite: `nvidia.com/gpu` dropped from the containers, `templates` claimed by the pod.
    pub fn claim_whole(&mut self, templates: impl IntoIterator<Item = String>) {
        for c in &mut self.containers {
            c.resources.retain(|(key, _)| key != WHOLE_GPU);
        }
        self.templates.extend(templates.into_iter().map(Cow::Owned));
    }

    /// The effective count of each resource (KEP-753: sidecars run beside the app containers and the
    /// init containers after them).
    fn effective(&self) -> Vec<(&str, u64)> {
        // A pod names one or two GPU resources: small vectors beat maps (this runs on every request).
        fn slot<'k>(v: &mut Vec<(&'k str, u64)>, key: &'k str) -> usize {
            match v.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    v.push((key, 0));
                    v.len() - 1
                }
            }
        }
        let mut app: Vec<(&str, u64)> = Vec::new();
        let mut init_peak: Vec<(&str, u64)> = Vec::new();
        let mut sidecars: Vec<(&str, u64)> = Vec::new();
        for c in &self.containers {
            for (key, n) in &c.resources {
                let key = key.as_ref();
                if !c.init {
                    let i = slot(&mut app, key);
                    app[i].1 += n;
                } else if c.sidecar {
                    let i = slot(&mut sidecars, key);
                    sidecars[i].1 += n;
                    let running = sidecars[i].1;
                    let p = slot(&mut init_peak, key);
                    init_peak[p].1 = init_peak[p].1.max(running);
                } else {
                    let running = sidecars
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(0, |(_, s)| *s)
                        + n;
                    let p = slot(&mut init_peak, key);
                    init_peak[p].1 = init_peak[p].1.max(running);
                }
            }
        }
        for (key, n) in sidecars {
            let i = slot(&mut app, key);
            app[i].1 += n;
        }
        for (key, peak) in init_peak {
            let i = slot(&mut app, key);
            app[i].1 = app[i].1.max(peak);
        }
        app
    }

    /// What these asks hold in namespace `rule`'s pools.
    pub fn usage(&self, units: &Units<'_>) -> Usage {
        let mut usage = Usage::default();
        for (key, n) in self.effective() {
            usage.held = usage.held.saturating_add(units.resource(key).times(n));
            usage.requested = usage.requested.saturating_add(n);
        }
        for template in &self.templates {
            let (each, devices) = units.template(template);
            usage.held = usage.held.saturating_add(each);
            usage.requested = usage.requested.saturating_add(devices);
        }
        usage
    }
}

/// What one device of each kind is worth in a namespace: its rule (replicas, MIG strategy, DRA mode),
/// the policy (other rules naming a shared resource) and the NodePools (the GPU model behind a slice).
pub struct Units<'a> {
    pub rule: Option<&'a Rule>,
    pub policy: &'a Policy,
    pub pools: &'a NodePoolIndex,
}

impl Units<'_> {
    /// The GPU models of the rule's NodePool, when its instance types are known.
    fn pool_gpus(&self) -> Vec<&'static GpuModel> {
        self.rule
            .map(|r| crate::nodepool::pool_gpus(r, self.pools).unwrap_or_default())
            .unwrap_or_default()
    }

    /// One `profile` slice: its compute slices over its GPU's (the pool's GPU with that profile, else
    /// the first catalogued one). An unknown profile counts as a whole GPU.
    pub fn mig(&self, profile: &str) -> Gpus {
        let base = profile.split('+').next().unwrap_or(profile);
        let model = self
            .pool_gpus()
            .into_iter()
            .chain(catalog::GPUS.iter().copied())
            .find(|g| {
                g.mig_profile(profile)
                    .or_else(|| g.mig_profile(base))
                    .is_some()
            });
        match model {
            Some(g) => {
                let slices = g
                    .mig_profile(profile)
                    .or_else(|| g.mig_profile(base))
                    .map_or(0, |p| p.compute_slices());
                Gpus::ratio(u128::from(slices), u128::from(g.compute_slices))
            }
            None => Gpus::ONE,
        }
    }

    /// Replicas of a time-sliced MIG resource: the rule's `mig.timeSlicing.replicas` where it names
    /// that resource, else any rule's that does; 1 where none says.
    fn mig_replicas(&self, key: &str, profile: &str) -> u32 {
        let of = |r: &Rule| {
            let ts = r.mig_time_slicing?;
            (r.action == Action::Mig && r.mig_resource(profile) == key)
                .then_some(ts.replicas)
                .flatten()
        };
        self.rule
            .and_then(of)
            .or_else(|| self.policy.rules.iter().find_map(of))
            .unwrap_or(1)
    }

    /// Replicas of a shared (time-sliced or MPS) resource: the rule's `shared.replicas` where it names
    /// that resource, else any rule's that does; 1 (a whole GPU, the most it can be) where none says.
    fn shared_replicas(&self, key: &str) -> u32 {
        let of = |r: &Rule| {
            (r.shared_resource.as_deref() == Some(key))
                .then_some(r.shared_replicas)
                .flatten()
        };
        self.rule
            .and_then(of)
            .or_else(|| self.policy.rules.iter().find_map(of))
            .unwrap_or(1)
    }

    /// One unit of an extended resource.
    pub fn resource(&self, key: &str) -> Gpus {
        if key == WHOLE_GPU {
            return match self.rule {
                // Strategy single: every MIG device is `nvidia.com/gpu`, of the rule's one profile.
                Some(r) if r.action == Action::Mig && r.mig_strategy == MigStrategy::Single => {
                    let profile = r.mig_profile.as_deref().unwrap_or_default();
                    self.mig(profile).shared_by(self.mig_replicas(key, profile))
                }
                _ => Gpus::ONE,
            };
        }
        if let Some(rest) = key.strip_prefix(MIG_PREFIX) {
            let profile = rest.strip_suffix(".shared").unwrap_or(rest);
            return self.mig(profile).shared_by(self.mig_replicas(key, profile));
        }
        // `nvidia.com/gpu.shared` under strategy single with renamed time-slicing is a slice too.
        if let Some(r) = self.rule
            && r.action == Action::Mig
            && r.mig_strategy == MigStrategy::Single
            && let Some(profile) = r.mig_profile.as_deref()
            && r.mig_resource(profile) == key
        {
            return self.mig(profile).shared_by(self.mig_replicas(key, profile));
        }
        Gpus::ONE.shared_by(self.shared_replicas(key))
    }

    /// A claim from gpu-slicer's template `name`: what it holds and how many devices it names.
    pub fn template(&self, name: &str) -> (Gpus, u64) {
        let known = self
            .rule
            .into_iter()
            .flat_map(dra::templates)
            .find(|t| t.name == name);
        let Some(t) = known else {
            return parse_template_name(name, |p| self.mig(p));
        };
        match &t.gives {
            Gives::Exclusive {
                profile,
                fallback,
                count,
            } => {
                // The claim may get a fallback profile: count the largest it can hold.
                let each = match profile {
                    None => Gpus::ONE,
                    Some(p) => std::iter::once(p)
                        .chain(fallback)
                        .map(|p| self.mig(p))
                        .max()
                        .unwrap_or(Gpus::ONE),
                };
                (each.times(*count), *count)
            }
            Gives::Shared { memory } => (self.share(t.mode, *memory), 1),
        }
    }

    /// One time-sliced claim under the driver's mode.
    fn share(&self, mode: ConsumableShares, memory: Option<u128>) -> Gpus {
        match (mode, memory) {
            (ConsumableShares::Shares(n), _) => Gpus::ONE.shared_by(n),
            (ConsumableShares::Memory, Some(bytes)) => {
                let device = self.device_memory(bytes);
                if device == 0 {
                    Gpus::ONE
                } else {
                    Gpus::ratio(bytes.min(device), device)
                }
            }
            // Unbounded sharing: nothing bounds what one claim takes; counted whole.
            _ => Gpus::ONE,
        }
    }

    /// Memory (bytes) of the device a memory share is cut from: the smallest GPU of the rule's pool,
    /// else the smallest catalogued GPU that holds the share.
    fn device_memory(&self, bytes: u128) -> u128 {
        let pool = self.pool_gpus();
        let candidates: Vec<&GpuModel> = if pool.is_empty() {
            catalog::GPUS
                .iter()
                .copied()
                .filter(|g| u128::from(g.memory_mib) << 20 >= bytes)
                .collect()
        } else {
            pool
        };
        candidates
            .iter()
            .map(|g| u128::from(g.memory_mib) << 20)
            .min()
            .unwrap_or(0)
    }
}

/// A template no rule in force offers (the policy changed since the pod was admitted): read from its
/// name (`gpu-slicer-gpu-x2`, `gpu-slicer-mig-1g.10gb`); a shared one counts whole.
fn parse_template_name(name: &str, mig: impl Fn(&str) -> Gpus) -> (Gpus, u64) {
    let rest = name.strip_prefix(dra::PREFIX).unwrap_or(name);
    let (base, count) = match rest.rsplit_once("-x") {
        Some((b, n)) if n.parse::<u64>().is_ok() => (b, n.parse().unwrap_or(1)),
        _ => (rest, 1),
    };
    match base.strip_prefix("mig-") {
        Some(profile) => (mig(profile).times(count), count),
        None => (Gpus::ONE.times(count), count),
    }
}

/// What `pod` holds in its namespace (the pod as stored: after any rewrite).
pub fn of_pod(pod: &Pod, units: &Units<'_>) -> Usage {
    Asks::of(pod, units.policy).usage(units)
}

/// What a pod holds, from its effective request per resource (as the scheduler counts it) and the
/// gpu-slicer claim templates it names: for readers that keep only those (`doctor`'s pod digest).
/// Resources that are not GPU ones are ignored.
pub fn of_requests<'a>(
    requests: impl IntoIterator<Item = (&'a str, u64)>,
    templates: impl IntoIterator<Item = &'a str>,
    units: &Units<'_>,
) -> Usage {
    let asks = Asks {
        containers: vec![ContainerAsk {
            init: false,
            sidecar: false,
            resources: requests
                .into_iter()
                .filter(|(key, n)| *n > 0 && is_gpu_resource(key, units.policy))
                .map(|(key, n)| (Cow::Borrowed(key), n))
                .collect(),
        }],
        templates: templates
            .into_iter()
            .filter(|t| t.starts_with(dra::PREFIX))
            .map(Cow::Borrowed)
            .collect(),
    };
    asks.usage(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_and_sums_do_not_drift() {
        let seventh = Gpus::ratio(1, 7);
        assert_eq!(seventh.to_string(), "0.142857");
        assert_eq!(seventh.times(7), Gpus::ONE);
        assert_eq!(Gpus::ratio(3, 7).to_string(), "0.428571");
        assert_eq!(Gpus::parse("2").unwrap(), Gpus::whole(2));
        assert_eq!(Gpus::parse("0.5").unwrap().to_string(), "0.5");
        assert_eq!(Gpus::parse(".25").unwrap().to_string(), "0.25");
        assert!(Gpus::parse("-1").is_err());
        assert!(Gpus::parse("1e3").is_err());
        assert!(Gpus::parse("").is_err());
        assert!(Gpus::parse("99999999999999999999").is_err());
        let parts: Gpus = (0..28).map(|_| Gpus::ratio(1, 28)).sum();
        assert_eq!(parts, Gpus::ONE);
        assert_eq!(Gpus::ONE.shared_by(3).times(3), Gpus::ONE);
    }
}
