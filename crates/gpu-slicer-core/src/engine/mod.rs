//! The mutation engine: a pure function from (pod, namespace facts, policy, NodePools) to a decision.
//!
//! No I/O, no clock, no globals: the same inputs always give the same decision, so the server, the
//! `mutate` CLI, the tests and the benches all call [`decide`] directly.
//!
//! Idempotence (the API server may call again with our own output under `reinvocationPolicy:
//! IfNeeded`): the engine only emits operations for what is still missing — renamed requests ask for the
//! slice directly, selectors and tolerations already present are skipped — so its output decides to
//! "no operations".

pub mod mode;

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde_json::Value;

use crate::annotations::{EXCLUSIVE_ANNOTATION, GPU_MEMORY_ANNOTATION, PROFILE_ANNOTATION};
use crate::audit::{self, Change, Outcome, Record};
use crate::catalog;
use crate::dra;
use crate::dra::claims::{self, ClaimFacts, ClaimSource, ClaimVerdict};
use crate::equivalents::{Asks, Units, Usage};
use crate::nodepool::{NODEPOOL_LABEL, NodePool, NodePoolIndex};
use crate::nodepool::{pool_gpus, profile_memory_mib};
use crate::pod::{Pod, Section, Toleration};
use crate::policy::{
    Action, Backend, DefaultAction, MIG_PREFIX, MigStrategy, Mode, Policy, Rule, WHOLE_GPU,
};
use crate::quantity;

/// Kubernetes shows at most this many characters of a warning per line.
pub const MAX_WARNING_LEN: usize = 120;
/// Warnings one answer carries at most; past it, one line counts the rest (a pod with thousands of
/// containers would otherwise get a warning header per container).
pub const MAX_WARNINGS: usize = 20;

/// What the engine knows about the pod's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Namespace<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `Some(message)` when the pod is denied; the message tells the developer what to change.
    pub denied: Option<String>,
    /// RFC 6902 operations; empty when nothing changes (and always when denied).
    pub patch: Vec<PatchOperation>,
    /// Shown by kubectl as `Warning:` lines; each at most [`MAX_WARNING_LEN`] characters.
    pub warnings: Vec<String>,
    /// Present for every pod that asks for a GPU resource.
    pub audit: Option<Record>,
    /// The mode of the rule (or `defaultAction`) that decided: the decision above is always what
    /// enforce does; [`crate::engine::mode::apply`] turns it into the audit-mode answer.
    pub mode: Mode,
    /// What the pod holds once admitted (after the rewrite), for pods a rule lets through with GPUs:
    /// what a budget is checked against.
    pub usage: Option<Usage>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denied.is_none()
    }

    fn untouched() -> Decision {
        Decision {
            denied: None,
            patch: Vec::new(),
            warnings: Vec::new(),
            audit: None,
            mode: Mode::Enforce,
            usage: None,
        }
    }
}

/// How a container resource relates to GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'p> {
    /// `nvidia.com/gpu`.
    Whole,
    /// `nvidia.com/mig-<profile>`, or `nvidia.com/mig-<profile>.shared` (time-sliced slices).
    Mig(&'p str),
    /// A time-slicing / MPS replica resource a rule names.
    Shared(&'p str),
}

/// One GPU resource of one container.
#[derive(Debug)]
struct GpuUse<'p> {
    section: Section,
    index: usize,
    container: &'p str,
    key: &'p str,
    kind: Kind<'p>,
    /// The quantity as the pod wrote it (from limits, else requests).
    quantity: &'p Value,
    count: Option<u64>,
    in_limits: bool,
    in_requests: bool,
    /// The requests' quantity where it differs from the limits' (the API server refuses extended
    /// resources whose requests and limits differ; a rename must not hide that).
    requests_differ: Option<&'p Value>,
}

impl GpuUse<'_> {
    fn label(&self) -> String {
        match self.section {
            Section::Containers => self.container.to_string(),
            Section::InitContainers => format!("init:{}", self.container),
        }
    }

    fn quantity_text(&self) -> String {
        match self.quantity {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

fn classify<'p>(key: &'p str, policy: &Policy) -> Option<Kind<'p>> {
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

fn count_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => quantity::parse_count(s),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Every GPU resource the pod asks for, init containers first. A zero count asks for nothing.
fn scan<'p>(pod: &'p Pod, policy: &Policy) -> Vec<GpuUse<'p>> {
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
fn slicer_claims(pod: &Pod) -> impl Iterator<Item = (&str, &str)> {
    pod.spec.resource_claims.iter().flatten().filter_map(|c| {
        let t = c.resource_claim_template_name.as_deref()?;
        t.starts_with(dra::PREFIX).then_some((c.name.as_str(), t))
    })
}

/// Whether the pod asks, or may ask, for any GPU resource (only such pods are decided on, audited, or
/// need facts such as namespace labels): its own claims may, until their verdicts say otherwise.
pub fn asks_for_gpu(pod: &Pod, policy: &Policy) -> bool {
    !scan(pod, policy).is_empty()
        || slicer_claims(pod).next().is_some()
        || claims::own_claims(pod).next().is_some()
}

/// One of the pod's own claims that asks for GPUs, or could not be read.
#[derive(Debug)]
struct OwnClaim<'p> {
    entry: &'p str,
    source: ClaimSource<'p>,
    verdict: ClaimVerdict,
}

impl OwnClaim<'_> {
    /// `ResourceClaim "gpu" (ResourceClaimTemplate my-gpus) requests DeviceClass gpu.nvidia.com`, or
    /// why it could not be checked.
    fn describe(&self) -> String {
        let what = format!(
            "ResourceClaim {:?} ({})",
            self.entry,
            self.source.describe()
        );
        match &self.verdict {
            ClaimVerdict::Gpu { device_class } => {
                format!("{what} requests DeviceClass {device_class}")
            }
            ClaimVerdict::Unreadable(why) => {
                format!("{what} could not be checked for GPUs ({why})")
            }
            ClaimVerdict::NotGpu => what,
        }
    }
}

fn own_gpu_claims<'p>(pod: &'p Pod, facts: &ClaimFacts) -> Vec<OwnClaim<'p>> {
    claims::own_claims(pod)
        .map(|(c, source)| OwnClaim {
            entry: &c.name,
            source,
            verdict: facts.verdict(&c.name),
        })
        .filter(|c| c.verdict != ClaimVerdict::NotGpu)
        .collect()
}

/// Decides what to do with a pod being created, its own claims unread (offline: see
/// [`decide_with_claims`]).
pub fn decide(pod: &Pod, ns: Namespace<'_>, policy: &Policy, pools: &NodePoolIndex) -> Decision {
    decide_with_claims(pod, ns, &ClaimFacts::default(), policy, pools)
}

/// Decides what to do with a pod being created, given what its own ResourceClaims ask for.
pub fn decide_with_claims(
    pod: &Pod,
    ns: Namespace<'_>,
    facts: &ClaimFacts,
    policy: &Policy,
    pools: &NodePoolIndex,
) -> Decision {
    let uses = scan(pod, policy);
    let own = own_gpu_claims(pod, facts);
    if uses.is_empty() && slicer_claims(pod).next().is_none() && own.is_empty() {
        // Not a GPU pod: no rule applies, not even deny (a deny rule bans GPUs, not pods).
        return Decision::untouched();
    }
    let Some(rule) = policy.rule_for(ns.name, ns.labels) else {
        let record = |outcome, reason| Record {
            rule: None,
            action: match policy.default_action {
                DefaultAction::Passthrough => "passthrough",
                DefaultAction::Deny => "deny",
            },
            changes: Vec::new(),
            profile: None,
            node_pool: None,
            outcome,
            reason,
        };
        return match policy.default_action {
            DefaultAction::Passthrough => Decision {
                audit: Some(record(Outcome::Unchanged, None)),
                mode: policy.mode,
                ..Decision::untouched()
            },
            DefaultAction::Deny => {
                let msg = format!(
                    "gpu-slicer: no rule of the GPU policy covers namespace {:?} and its defaultAction is deny; ask the platform team for GPU access",
                    ns.name
                );
                Decision {
                    mode: policy.mode,
                    ..deny(msg, record(Outcome::Denied, None), Vec::new())
                }
            }
        };
    };
    Planner {
        pod,
        ns,
        rule,
        policy,
        pools,
        uses,
        own,
        warnings: Vec::new(),
        unsaid: 0,
    }
    .run()
}

/// A denial decided outside the engine's rules (e.g. facts that could not be read), audited like any;
/// `mode` is the mode of the rule (or the policy) it stands in for.
pub fn refuse(message: String, rule: Option<&Rule>, mode: Mode) -> Decision {
    let record = Record {
        rule: rule.map(|r| r.name.clone()),
        action: rule.map_or("unknown", |r| r.action.as_str()),
        changes: Vec::new(),
        profile: None,
        node_pool: None,
        outcome: Outcome::Denied,
        reason: None,
    };
    Decision {
        mode,
        ..deny(message, record, Vec::new())
    }
}

fn deny(message: String, mut record: Record, warnings: Vec<String>) -> Decision {
    record.outcome = Outcome::Denied;
    record.reason = Some(message.clone());
    record.changes.clear();
    Decision {
        denied: Some(message),
        patch: Vec::new(),
        warnings,
        audit: Some(record),
        mode: Mode::Enforce,
        usage: None,
    }
}

struct Planner<'a> {
    pod: &'a Pod,
    ns: Namespace<'a>,
    rule: &'a Rule,
    policy: &'a Policy,
    pools: &'a NodePoolIndex,
    uses: Vec<GpuUse<'a>>,
    /// The pod's own claims that ask for GPUs or could not be read.
    own: Vec<OwnClaim<'a>>,
    warnings: Vec<String>,
    /// Warnings past [`MAX_WARNINGS`], counted instead of said.
    unsaid: usize,
}

impl Planner<'_> {
    fn record(&self, outcome: Outcome) -> Record {
        Record {
            rule: Some(self.rule.name.clone()),
            action: self.rule.action.as_str(),
            changes: Vec::new(),
            profile: None,
            node_pool: None,
            outcome,
            reason: None,
        }
    }

    /// Adds a warning line; takes `format_args!` so each line is formatted once, into its own buffer.
    fn warn(&mut self, message: impl std::fmt::Display) {
        use std::fmt::Write as _;
        if self.warnings.len() >= MAX_WARNINGS - 1 {
            self.unsaid += 1;
            return;
        }
        let mut line = String::with_capacity(96);
        // Writing into a String cannot fail.
        let _ = write!(line, "gpu-slicer: {message}");
        self.warnings.push(audit::truncate(line, MAX_WARNING_LEN));
    }

    fn deny(mut self, message: String) -> Decision {
        let record = self.record(Outcome::Denied);
        let warnings = self.take_warnings();
        Decision {
            mode: self.rule.mode,
            ..deny(format!("gpu-slicer: {message}"), record, warnings)
        }
    }

    /// The warnings, with one line for those past [`MAX_WARNINGS`].
    fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.warnings);
        if self.unsaid > 0 {
            warnings.push(format!(
                "gpu-slicer: and {} more (the audit log and the gpu-slicer.io/rewritten annotation say all)",
                self.unsaid
            ));
        }
        warnings
    }

    fn run(mut self) -> Decision {
        let rule = self.rule;
        match rule.action {
            Action::Passthrough => {
                return Decision {
                    audit: Some(self.record(Outcome::Unchanged)),
                    mode: rule.mode,
                    ..Decision::untouched()
                };
            }
            Action::Deny => {
                let mut msg = format!(
                    "namespace {:?} may not use GPUs (policy rule {:?}); remove the nvidia.com/ resource requests",
                    self.ns.name, rule.name
                );
                for c in &self.own {
                    msg.push_str(&format!(" and the {}", c.describe()));
                }
                msg.push_str(" or ask the platform team");
                return self.deny(msg);
            }
            Action::Mig | Action::Timeslice | Action::Mps | Action::Exclusive => {}
        }

        // GPUs claimed past the rule: the rule's slices, routing and limits would not hold.
        if let Some(c) = self.own.first() {
            let fix = match c.verdict {
                ClaimVerdict::Unreadable(_) => format!(
                    "create the {} before the pod, or ask for nvidia.com/gpu instead",
                    c.source.describe()
                ),
                _ => "drop the claim and ask for nvidia.com/gpu, which gpu-slicer gives as the rule says".into(),
            };
            let msg = format!(
                "the pod's {}, outside the GPU policy: namespace {:?} gets GPUs from rule {} ({} {}); {fix}",
                c.describe(),
                self.ns.name,
                rule.name,
                rule.action.as_str(),
                rule.backend.as_str()
            );
            return self.deny(msg);
        }

        if let Some(msg) = dra::unsupported(rule) {
            return self.deny(msg);
        }
        if let Err(msg) = self.check_slicer_claims() {
            return self.deny(msg);
        }

        let opt_out = self.pod.annotation(EXCLUSIVE_ANNOTATION) == Some("true");
        if opt_out && rule.action != Action::Exclusive {
            if rule.allow_opt_out {
                let line = match &rule.node_pool {
                    // The rule's pool offers slices only: the pod must find whole GPUs elsewhere.
                    Some(pool) => format!(
                        "whole GPUs kept (opt-out, rule {}); not routed to slice NodePool {pool}",
                        rule.name
                    ),
                    None => format!(
                        "kept whole GPUs: {EXCLUSIVE_ANNOTATION} honoured by rule {}",
                        rule.name
                    ),
                };
                self.warn(line);
                let warnings = self.take_warnings();
                let usage = Asks::of(self.pod, self.policy).usage(&self.units());
                let mut patch = Vec::new();
                annotate(self.pod, None, usage, &mut patch);
                return Decision {
                    warnings,
                    patch,
                    audit: Some(self.record(Outcome::OptedOut)),
                    mode: rule.mode,
                    usage: Some(usage),
                    ..Decision::untouched()
                };
            }
            self.warn(format_args!(
                "{EXCLUSIVE_ANNOTATION} ignored: rule {} does not allow opting out",
                rule.name
            ));
        }

        // The resource whole-GPU requests become, and the MIG profile that is.
        let mut profile = None;
        let target: String = match rule.action {
            Action::Mig => {
                if !self.uses.iter().any(|u| u.kind == Kind::Whole) {
                    self.note_unused_sizing_annotations();
                    String::new()
                } else {
                    match self.choose_profile() {
                        Ok(chosen) => {
                            let resource = rule.mig_resource(&chosen);
                            profile = Some(chosen);
                            resource
                        }
                        Err(msg) => return self.deny(msg),
                    }
                }
            }
            Action::Timeslice | Action::Mps => {
                self.note_unused_sizing_annotations();
                rule.shared_resource.clone().unwrap_or_default()
            }
            _ => {
                self.note_unused_sizing_annotations();
                WHOLE_GPU.to_string()
            }
        };

        if let Err(msg) = self.check_requests(&target) {
            return self.deny(msg);
        }

        let mut patch = Vec::new();
        let mut changes = Vec::new();
        let mut asks = Asks::of(self.pod, self.policy);
        if rule.backend == Backend::Dra {
            match self.claim(profile.as_deref(), &mut patch, &mut changes) {
                Ok(templates) => asks.claim_whole(templates),
                Err(msg) => return self.deny(msg),
            }
        } else if !target.is_empty() {
            asks.rename_whole(&target);
        }
        let usage = asks.usage(&self.units());
        for u in &self.uses {
            if u.kind != Kind::Whole || rule.backend == Backend::Dra {
                continue;
            }
            changes.push(Change {
                container: u.label(),
                from: WHOLE_GPU.into(),
                to: target.clone(),
                quantity: u.quantity_text(),
            });
            if target == WHOLE_GPU {
                continue;
            }
            let index = u.index.to_string();
            for (present, field) in [(u.in_limits, "limits"), (u.in_requests, "requests")] {
                if present {
                    let at = |name| ["spec", u.section.field(), &index, "resources", field, name];
                    patch.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer(&at(WHOLE_GPU)),
                    }));
                    patch.push(add(&at(&target), u.quantity.clone()));
                }
            }
        }
        let renamed = !patch.is_empty();

        let pool = rule.node_pool.as_deref().and_then(|p| self.pools.get(p));
        if let Err(msg) = self.route(pool, &mut patch) {
            return self.deny(msg);
        }

        let outcome = if renamed {
            Outcome::Rewritten
        } else if patch.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Routed
        };
        let mut record = self.record(outcome);
        record.changes = changes;
        record.profile = profile;
        record.node_pool = rule.node_pool.clone();
        // Nothing to change (e.g. our own output, reinvoked): say nothing new.
        if !patch.is_empty() {
            for c in &record.changes {
                self.warn(ChangeLine(c, rule, record.profile.as_deref()));
            }
            if let (Some(_), Some(profile)) = (rule.mig_time_slicing, record.profile.as_deref()) {
                let memory = profile_memory_mib(rule, self.pools, profile).unwrap_or(0);
                self.warn(format_args!(
                    "{profile} slices are time-sliced: pods share a slice's {:.1} GiB of GPU memory, with no isolation",
                    memory as f64 / 1024.0
                ));
            }
            if let Some(pool) = &rule.node_pool {
                self.warn(format_args!("routed to Karpenter NodePool {pool}"));
            }
            annotate(self.pod, Some(record.summary()), usage, &mut patch);
        } else {
            // Our own output reinvoked, or a pod that already asks for what the rule gives: only
            // the GPU-equivalents annotations, where missing or not what the pod holds.
            annotate(self.pod, None, usage, &mut patch);
        }
        Decision {
            denied: None,
            patch,
            warnings: self.take_warnings(),
            audit: Some(record),
            mode: rule.mode,
            usage: Some(usage),
        }
    }

    /// What one device is worth in this namespace.
    fn units(&self) -> Units<'_> {
        Units {
            rule: Some(self.rule),
            policy: self.policy,
            pools: self.pools,
        }
    }

    fn note_unused_sizing_annotations(&mut self) {
        for key in [PROFILE_ANNOTATION, GPU_MEMORY_ANNOTATION] {
            // DRA time-slicing by memory asks for the pod's gpu-memory (dra::template_for).
            let sized_claim = key == GPU_MEMORY_ANNOTATION
                && self.rule.backend == Backend::Dra
                && self.rule.dra.shares == crate::policy::dra_sharing::ConsumableShares::Memory;
            if self.pod.annotation(key).is_some() && !sized_claim {
                let why = match self.rule.action {
                    Action::Mig => "the pod asks for MIG slices directly",
                    Action::Exclusive => "the rule gives whole GPUs",
                    _ => "shared GPUs have no memory isolation",
                };
                self.warn(format_args!(
                    "{key} ignored: {why} (rule {})",
                    self.rule.name
                ));
            }
        }
    }

    /// The MIG profile for whole-GPU requests: the developer's profile, else the smallest allowed one
    /// that holds the requested GPU memory, else the rule's default.
    fn choose_profile(&mut self) -> Result<String, String> {
        let rule = self.rule;
        let allowed = rule.allowed_profiles.join(", ");
        let memory_ask = match self.pod.annotation(GPU_MEMORY_ANNOTATION) {
            None => None,
            Some(text) => match quantity::parse(text) {
                Some(bytes) => Some((text, bytes)),
                None => {
                    return Err(format!(
                        "{GPU_MEMORY_ANNOTATION} {text:?} is not a Kubernetes quantity (e.g. 18Gi)"
                    ));
                }
            },
        };
        let memory = |profile: &str| {
            profile_memory_mib(rule, self.pools, profile).map(|m| u128::from(m) << 20)
        };
        if rule.mig_strategy == MigStrategy::Single {
            let profile = rule.mig_profile.clone().unwrap_or_default();
            if let Some(asked) = self.pod.annotation(PROFILE_ANNOTATION)
                && asked != profile
            {
                return Err(format!(
                    "{PROFILE_ANNOTATION} {asked:?}: the GPUs of namespace {:?} are {profile} MIG slices, one profile per node (rule {}, MIG strategy single); remove the annotation",
                    self.ns.name, rule.name
                ));
            }
            if let Some((text, bytes)) = memory_ask
                && memory(&profile).is_some_and(|m| m < bytes)
            {
                return Err(format!(
                    "{GPU_MEMORY_ANNOTATION} {text:?} is more than a {profile} slice holds, the only profile of namespace {:?} (rule {}, MIG strategy single){}",
                    self.ns.name,
                    rule.name,
                    smallest_holding(rule, self.pools, bytes)
                ));
            }
            return Ok(profile);
        }
        if let Some(profile) = self.pod.annotation(PROFILE_ANNOTATION) {
            if !rule.allowed_profiles.iter().any(|p| p == profile) {
                return Err(format!(
                    "{PROFILE_ANNOTATION} {profile:?} is not allowed in namespace {:?}; rule {} allows {allowed}",
                    self.ns.name, rule.name
                ));
            }
            if let Some((text, bytes)) = memory_ask
                && memory(profile).is_some_and(|m| m < bytes)
            {
                return Err(format!(
                    "{PROFILE_ANNOTATION} {profile:?} holds less than {GPU_MEMORY_ANNOTATION} {text:?}; drop one of the two"
                ));
            }
            return Ok(profile.to_string());
        }
        if let Some((text, bytes)) = memory_ask {
            let mut fitting: Vec<(u128, &String)> = rule
                .allowed_profiles
                .iter()
                .filter_map(|p| memory(p).map(|m| (m, p)))
                .filter(|(m, _)| *m >= bytes)
                .collect();
            fitting.sort();
            return match fitting.first() {
                Some((_, p)) => Ok((*p).clone()),
                None => Err(format!(
                    "no MIG profile allowed in namespace {:?} holds {GPU_MEMORY_ANNOTATION} {text:?} (rule {} allows {allowed}){}",
                    self.ns.name,
                    rule.name,
                    smallest_holding(rule, self.pools, bytes)
                )),
            };
        }
        Ok(rule.mig_profile.clone().unwrap_or_default())
    }

    /// Enforces the rule on every GPU request: counts, and slices asked for directly.
    fn check_requests(&mut self, target: &str) -> Result<(), String> {
        let rule = self.rule;
        let mut multi_mig = Vec::new();
        for u in &self.uses {
            if let Some(requests) = u.requests_differ {
                let shown = |v: &Value| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                return Err(format!(
                    "container {:?}: {} requests {} differ from its limits {}; extended resources need requests equal to limits (or limits alone)",
                    u.container,
                    u.key,
                    shown(requests),
                    u.quantity_text()
                ));
            }
            let Some(count) = u.count else {
                return Err(format!(
                    "container {:?}: {} {} is not a whole number of devices",
                    u.container,
                    u.key,
                    u.quantity_text()
                ));
            };
            let offered = match (u.kind, rule.action) {
                (Kind::Whole, _) => true,
                // DRA: GPUs come as claims only; no device plugin advertises other names.
                _ if rule.backend == Backend::Dra => false,
                // As the rule's nodes advertise them (strategy, time-slicing rename).
                (_, Action::Mig) => rule
                    .allowed_profiles
                    .iter()
                    .any(|p| rule.mig_resource(p) == u.key),
                (Kind::Shared(name), Action::Timeslice | Action::Mps) => {
                    rule.shared_resource.as_deref() == Some(name)
                }
                _ => false,
            };
            if !offered {
                let gives = match rule.action {
                    _ if rule.backend == Backend::Dra => dra_offer(rule),
                    Action::Mig => mig_offer(rule),
                    Action::Exclusive => "whole GPUs (nvidia.com/gpu)".to_string(),
                    _ => format!("{} replicas", rule.shared_resource.as_deref().unwrap_or("")),
                };
                return Err(format!(
                    "container {:?} asks for {}, which rule {} does not offer in namespace {:?} (it gives {gives}); ask for nvidia.com/gpu instead",
                    u.container, u.key, rule.name, self.ns.name
                ));
            }
            if let Some(max) = rule.max_per_container
                && count > max
            {
                let hint = match rule.action {
                    Action::Mig if rule.mig_time_slicing.is_some() => {
                        " (time-sliced slices: the device plugin rejects more than one per container)"
                            .into()
                    }
                    Action::Mig if rule.mig_strategy == MigStrategy::Single => format!(
                        " (its GPUs are {} MIG slices; a CUDA process uses only one)",
                        rule.mig_profile.as_deref().unwrap_or("")
                    ),
                    Action::Mig => format!(
                        " (ask for a bigger slice with the {PROFILE_ANNOTATION} annotation)"
                    ),
                    Action::Timeslice | Action::Mps => {
                        " (shared replicas add no compute; the device plugin rejects more than one)"
                            .into()
                    }
                    _ => String::new(),
                };
                return Err(format!(
                    "container {:?} asks for {count} {}; rule {} allows at most {max} per container in namespace {:?}{hint}",
                    u.container, u.key, rule.name, self.ns.name
                ));
            }
            if u.kind == Kind::Whole && target != WHOLE_GPU {
                let c = self
                    .pod
                    .all_containers()
                    .find(|(s, i, _)| *s == u.section && *i == u.index)
                    .map(|(_, _, c)| c);
                let clash = c.and_then(|c| c.resources.as_ref()).is_some_and(|r| {
                    [r.limits.as_ref(), r.requests.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|m| m.contains_key(target))
                });
                if clash {
                    return Err(format!(
                        "container {:?} asks for both {WHOLE_GPU} and {target}; ask for one of them",
                        u.container
                    ));
                }
            }
            if count > 1 && rule.action == Action::Mig {
                multi_mig.push(u.container);
            }
        }
        for c in multi_mig {
            self.warn(format_args!(
                "container {c:?} gets several MIG devices; a CUDA process uses only one of them"
            ));
        }
        Ok(())
    }

    /// Claims the pod already makes from gpu-slicer's templates must be ones its rule offers.
    fn check_slicer_claims(&self) -> Result<(), String> {
        let rule = self.rule;
        for (_, template) in slicer_claims(self.pod) {
            let offered = dra::templates(rule).iter().any(|t| t.name == template);
            if !offered {
                let gives = if rule.backend == Backend::Dra {
                    dra_offer(rule)
                } else {
                    format!(
                        "no claims: it uses the device plugin ({} {})",
                        rule.action.as_str(),
                        rule.backend.as_str()
                    )
                };
                return Err(format!(
                    "claim template {template} is not offered in namespace {:?}: rule {} gives {gives}; ask for nvidia.com/gpu instead",
                    self.ns.name, rule.name
                ));
            }
        }
        Ok(())
    }

    /// `backend: dra`: each whole-GPU request becomes a claim from the template that gives it (the
    /// extended resource removed from limits and requests, `resources.claims` in the container, one
    /// `spec.resourceClaims` entry per claim). App containers each get their own claim; an init
    /// container reuses an app container's claim of the same template, as the device plugin reuses
    /// init containers' devices for app containers (the pod holds the larger of the two sets).
    /// Returns the templates of the claims it adds.
    fn claim(
        &self,
        profile: Option<&str>,
        patch: &mut Vec<PatchOperation>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, String> {
        let whole: Vec<&GpuUse> = self.uses.iter().filter(|u| u.kind == Kind::Whole).collect();
        if whole.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.pod.spec.resource_claims.as_deref().unwrap_or(&[]);
        if let Some(own) = existing
            .iter()
            .find(|c| !slicer_claims(self.pod).any(|(name, _)| name == c.name))
        {
            return Err(format!(
                "the pod has its own ResourceClaim {:?} and also asks for {WHOLE_GPU}; in namespace {:?} GPUs come as claims from gpu-slicer's templates (rule {}, DRA): drop {WHOLE_GPU}, or reference one of {} in the pod's resourceClaims yourself",
                own.name,
                self.ns.name,
                self.rule.name,
                dra_offer(self.rule)
            ));
        }
        // App containers first, so init containers can reuse their claims.
        let mut ordered = whole;
        ordered.sort_by_key(|u| (u.section == Section::InitContainers, u.index));
        let mut added: Vec<(String, String)> = Vec::new();
        for u in ordered {
            let template = dra::template_for(
                self.rule,
                profile,
                u.count.unwrap_or(1),
                self.pod.annotation(GPU_MEMORY_ANNOTATION),
            )?;
            let reuse = (u.section == Section::InitContainers)
                .then(|| added.iter().find(|(_, t)| *t == template.name))
                .flatten()
                .map(|(name, _)| name.clone());
            let claim = match reuse {
                Some(name) => name,
                None => {
                    let name = match u.section {
                        Section::Containers => format!("{}{}", dra::PREFIX, u.index),
                        Section::InitContainers => format!("{}init-{}", dra::PREFIX, u.index),
                    };
                    // Our name taken already (a pod edited by hand): adding it again would make
                    // the API server refuse the pod with a duplicate name.
                    if existing.iter().any(|c| c.name == name) {
                        return Err(format!(
                            "container {:?} asks for {WHOLE_GPU} but the pod already has a claim named {name:?}; drop one of the two",
                            u.container
                        ));
                    }
                    added.push((name.clone(), template.name.clone()));
                    name
                }
            };
            let index = u.index.to_string();
            for (present, field) in [(u.in_limits, "limits"), (u.in_requests, "requests")] {
                if present {
                    patch.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer(&[
                            "spec",
                            u.section.field(),
                            &index,
                            "resources",
                            field,
                            WHOLE_GPU,
                        ]),
                    }));
                }
            }
            let has_claims = self
                .pod
                .all_containers()
                .find(|(s, i, _)| *s == u.section && *i == u.index)
                .and_then(|(_, _, c)| c.resources.as_ref())
                .is_some_and(|r| r.claims.is_some());
            let entry = serde_json::json!({ "name": claim });
            let at = ["spec", u.section.field(), &index, "resources", "claims"];
            if has_claims {
                patch.push(add(&[&at[..], &["-"]].concat(), entry));
            } else {
                patch.push(add(&at, Value::Array(vec![entry])));
            }
            changes.push(Change {
                container: u.label(),
                from: WHOLE_GPU.into(),
                to: format!("claim {} ({}, DRA)", template.name, template.describe()),
                quantity: u.quantity_text(),
            });
        }
        let templates = added.iter().map(|(_, t)| t.clone()).collect();
        let entries = added
            .into_iter()
            .map(|(name, template)| {
                serde_json::json!({ "name": name, "resourceClaimTemplateName": template })
            });
        if self.pod.spec.resource_claims.is_none() {
            patch.push(add(
                &["spec", "resourceClaims"],
                Value::Array(entries.collect()),
            ));
        } else {
            for entry in entries {
                patch.push(add(&["spec", "resourceClaims", "-"], entry));
            }
        }
        Ok(templates)
    }

    /// Node selectors and tolerations that send the pod to the rule's NodePool.
    fn route(
        &self,
        pool: Option<&NodePool>,
        patch: &mut Vec<PatchOperation>,
    ) -> Result<(), String> {
        let rule = self.rule;
        let mut wanted: Vec<(&str, &str, SelectorSource)> = Vec::new();
        if let Some(name) = rule.node_pool.as_deref() {
            wanted.push((NODEPOOL_LABEL, name, SelectorSource::RulePool(name)));
        }
        if let Some(pool) = pool {
            for (k, v) in pool.routing_labels() {
                wanted.push((k, v, SelectorSource::PoolTemplate(&pool.name)));
            }
        }
        for (k, v) in &rule.node_selector {
            wanted.push((k, v, SelectorSource::RuleSelector(&rule.name)));
        }
        let mut selector: Vec<(&str, &str)> = Vec::new();
        for (k, v, source) in &wanted {
            match selector.iter().find(|(sk, _)| sk == k) {
                Some((_, sv)) if sv == v => {}
                Some((_, sv)) => {
                    let first = wanted.iter().find(|(wk, _, _)| wk == k).map(|w| &w.2);
                    return Err(format!(
                        "policy inconsistency in rule {}: {} says {k}={sv} but {source} says {k}={v}; tell the platform team",
                        rule.name,
                        first.unwrap_or(source)
                    ));
                }
                None => selector.push((k, v)),
            }
        }
        let existing = self.pod.spec.node_selector.as_ref();
        let mut missing = Vec::new();
        for (k, v) in selector {
            match existing.and_then(|m| m.get(k)) {
                Some(have) if have == v => {}
                Some(have) => {
                    return Err(format!(
                        "the pod's nodeSelector {k}={have} conflicts with rule {}, which sends GPU pods in namespace {:?} to {k}={v}; remove that selector",
                        rule.name, self.ns.name
                    ));
                }
                None => missing.push((k, v)),
            }
        }
        if existing.is_none() && !missing.is_empty() {
            let map: serde_json::Map<String, Value> = missing
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            patch.push(add(&["spec", "nodeSelector"], Value::Object(map)));
        } else {
            for (k, v) in missing {
                patch.push(add(
                    &["spec", "nodeSelector", k],
                    Value::String(v.to_string()),
                ));
            }
        }

        let needs = rule.tolerations.iter().cloned().chain(
            pool.into_iter()
                .flat_map(|p| p.taints.iter().map(|t| t.toleration())),
        );
        let existing: &[Toleration] = self.pod.spec.tolerations.as_deref().unwrap_or(&[]);
        let mut missing: Vec<Toleration> = Vec::new();
        for need in needs {
            if !existing
                .iter()
                .chain(missing.iter())
                .any(|t| t.covers(&need))
            {
                missing.push(need);
            }
        }
        if self.pod.spec.tolerations.is_none() && !missing.is_empty() {
            let list = missing
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect();
            patch.push(add(&["spec", "tolerations"], Value::Array(list)));
        } else {
            for t in &missing {
                patch.push(add(
                    &["spec", "tolerations", "-"],
                    serde_json::to_value(t).unwrap_or(Value::Null),
                ));
            }
        }
        Ok(())
    }
}

/// Where a node selector the pod needs comes from; named only when two of them disagree.
enum SelectorSource<'a> {
    RulePool(&'a str),
    PoolTemplate(&'a str),
    RuleSelector(&'a str),
}

impl std::fmt::Display for SelectorSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectorSource::RulePool(name) => write!(f, "nodePool {name}"),
            SelectorSource::PoolTemplate(pool) => write!(f, "NodePool {pool} template label"),
            SelectorSource::RuleSelector(rule) => write!(f, "rule {rule} nodeSelector"),
        }
    }
}

/// The warning line for one container's change (with the MIG profile, where the rule chose one).
struct ChangeLine<'a>(&'a Change, &'a Rule, Option<&'a str>);

impl std::fmt::Display for ChangeLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ChangeLine(c, rule, profile) = self;
        if c.from != c.to {
            return write!(
                f,
                "{}: {} {} -> {} (rule {})",
                c.container, c.from, c.quantity, c.to, rule.name
            );
        }
        match rule.action {
            // Strategy single: the slice keeps the whole GPU's resource name.
            Action::Mig if rule.mig_time_slicing.is_some() => write!(
                f,
                "{}: {} {} is a time-sliced share of a {} MIG slice (rule {})",
                c.container,
                c.from,
                c.quantity,
                profile.unwrap_or(""),
                rule.name
            ),
            Action::Mig => write!(
                f,
                "{}: {} {} is a {} MIG slice (rule {})",
                c.container,
                c.from,
                c.quantity,
                profile.unwrap_or(""),
                rule.name
            ),
            Action::Timeslice => write!(
                f,
                "{}: {} {} is a time-sliced replica (rule {})",
                c.container, c.from, c.quantity, rule.name
            ),
            Action::Mps => write!(
                f,
                "{}: {} {} is an MPS replica (rule {})",
                c.container, c.from, c.quantity, rule.name
            ),
            _ => write!(
                f,
                "{} keeps {} whole GPU(s) (rule {})",
                c.container, c.quantity, rule.name
            ),
        }
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// The JSON Pointer to `tokens` (unescaped), built in one allocation: patches are built on every
/// admission.
fn pointer(tokens: &[&str]) -> PointerBuf {
    // Room for the separators and a few escapes (`/` and `~` take two characters). The empty string
    // is the root pointer; `push_back` encodes each token into the reserved room, with no re-parse.
    let room = tokens.iter().map(|t| t.len() + 1).sum::<usize>() + 8;
    let mut path = PointerBuf::parse(String::with_capacity(room)).unwrap_or_default();
    for token in tokens {
        path.push_back(*token);
    }
    path
}

/// Records the rewrite (`summary`, when there is one) and what the pod holds on the pod itself; the
/// GPU-equivalents annotations only where missing or different, so a reinvocation adds nothing (an
/// `add` replaces an existing value, RFC 6902 4.1).
fn annotate(pod: &Pod, summary: Option<String>, usage: Usage, patch: &mut Vec<PatchOperation>) {
    let mut wanted: Vec<(&str, String)> = Vec::with_capacity(3);
    if let Some(summary) = summary {
        wanted.push((crate::annotations::REWRITTEN_ANNOTATION, summary));
    }
    for (key, value) in [
        (
            crate::annotations::EQUIVALENTS_ANNOTATION,
            usage.held.to_string(),
        ),
        (
            crate::annotations::REQUESTED_ANNOTATION,
            usage.requested.to_string(),
        ),
    ] {
        if pod.annotation(key) != Some(value.as_str()) {
            wanted.push((key, value));
        }
    }
    if wanted.is_empty() {
        return;
    }
    let map = || {
        Value::Object(
            wanted
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
                .collect(),
        )
    };
    match &pod.metadata {
        // No metadata at all (never from an API server, but a patch must apply to what it was given).
        None => patch.push(add(
            &["metadata"],
            serde_json::json!({ "annotations": map() }),
        )),
        Some(meta) if meta.annotations.is_none() => {
            patch.push(add(&["metadata", "annotations"], map()))
        }
        Some(_) => {
            for (key, value) in &wanted {
                patch.push(add(
                    &["metadata", "annotations", key],
                    Value::String(value.clone()),
                ));
            }
        }
    }
}

/// What a `dra` rule offers, for denials: its templates.
fn dra_offer(rule: &Rule) -> String {
    let names: Vec<String> = dra::templates(rule).into_iter().map(|t| t.name).collect();
    format!("claims from templates {}", names.join(", "))
}

/// What a `mig` rule offers, for denials: the profiles, and the resource names when they are not the
/// mixed strategy's own.
fn mig_offer(rule: &Rule) -> String {
    let profiles = rule.allowed_profiles.join(", ");
    let names: Vec<String> = rule
        .allowed_profiles
        .iter()
        .map(|p| rule.mig_resource(p))
        .collect();
    let plain = rule
        .allowed_profiles
        .iter()
        .zip(&names)
        .all(|(p, n)| n.strip_prefix(MIG_PREFIX) == Some(p.as_str()));
    let kind = if rule.mig_time_slicing.is_some() {
        "time-sliced MIG slices"
    } else {
        "MIG slices"
    };
    if plain {
        format!("{kind} {profiles}")
    } else {
        let mut names = names;
        names.dedup();
        format!("{kind} {profiles} as {}", names.join(", "))
    }
}

/// `; the smallest MIG profile that holds it is <p>` (on the rule's GPUs), or that none does, for
/// denials of a `gpu-slicer.io/gpu-memory` no allowed profile holds.
fn smallest_holding(rule: &Rule, pools: &NodePoolIndex, bytes: u128) -> String {
    let gpus = pool_gpus(rule, pools).unwrap_or_else(|| catalog::GPUS.to_vec());
    let best = gpus
        .iter()
        .flat_map(|g| g.mig_profiles.iter())
        .filter(|p| u128::from(p.memory_mib) << 20 >= bytes)
        .filter_map(|p| Some((profile_memory_mib(rule, pools, p.name)?, p.name)))
        .filter(|(m, _)| u128::from(*m) << 20 >= bytes)
        .min();
    match best {
        Some((_, name)) => format!("; the smallest MIG profile that holds it is {name}"),
        None => "; no MIG profile of these GPUs holds it: ask for a whole GPU".into(),
    }
}
