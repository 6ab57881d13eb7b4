//! The mutation engine: a pure function from (pod, namespace facts, policy, NodePools) to a decision.
//!
//! No I/O, no clock, no globals: the same inputs always give the same decision, so the server, the
//! `mutate` CLI, the tests and the benches all call [`decide`] directly.
//!
//! Idempotence (the API server may call again with our own output under `reinvocationPolicy:
//! IfNeeded`): the engine only emits operations for what is still missing — renamed requests ask for the
//! slice directly, selectors and tolerations already present are skipped — so its output decides to
//! "no operations".
//!
//! Imports (of this crate): [`crate::annotations`], [`crate::audit`], [`crate::catalog`],
//! [`crate::dra`], [`crate::equivalents`], [`crate::nodepool`], [`crate::pod`], [`crate::policy`],
//! [`crate::quantity`].

pub mod mode;

mod dra_claim;
mod rename;
mod routing;
mod scan;
mod sizing;
mod warnings;

use std::collections::BTreeMap;

use json_patch::PatchOperation;

use crate::annotations::EXCLUSIVE_ANNOTATION;
use crate::audit::{self, Change, Outcome, Record};
use crate::dra;
use crate::dra::claims::{self, ClaimFacts, ClaimVerdict};
use crate::equivalents::{Asks, Units, Usage};
use crate::nodepool::NodePoolIndex;
use crate::nodepool::profile_memory_mib;
use crate::pod::Pod;
use crate::policy::{Action, DefaultAction, Mode, Policy, Rule, WHOLE_GPU};
use dra_claim::{OwnClaim, own_gpu_claims};
use rename::annotate;
use scan::{GpuUse, Kind, slicer_claims};
use warnings::ChangeLine;

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

/// Whether the pod asks, or may ask, for any GPU resource (only such pods are decided on, audited, or
/// need facts such as namespace labels): its own claims may, until their verdicts say otherwise.
pub fn asks_for_gpu(pod: &Pod, policy: &Policy) -> bool {
    !scan::scan(pod, policy).is_empty()
        || slicer_claims(pod).next().is_some()
        || claims::own_claims(pod).next().is_some()
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
    let uses = scan::scan(pod, policy);
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
    Decider {
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

/// One decision in progress: a pod under the rule that matched it, with what the scan found and the
/// warnings said so far. Its methods, in this module and beside it, are the steps of [`decide`].
struct Decider<'a> {
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

impl Decider<'_> {
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

    fn deny(&mut self, message: String) -> Decision {
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
        if let Some(settled) = self.settle_before_sizing() {
            return settled;
        }
        // The resource whole-GPU requests become, and the MIG profile that is.
        let (target, profile) = match self.target() {
            Ok(t) => t,
            Err(msg) => return self.deny(msg),
        };
        if let Err(msg) = self.check_requests(&target) {
            return self.deny(msg);
        }
        let mut patch = Vec::new();
        let mut changes = Vec::new();
        let usage = match self.rewrite(&target, profile.as_deref(), &mut patch, &mut changes) {
            Ok(usage) => usage,
            Err(msg) => return self.deny(msg),
        };
        let renamed = !patch.is_empty();
        let pool = self
            .rule
            .node_pool
            .as_deref()
            .and_then(|p| self.pools.get(p));
        if let Err(msg) = self.route(pool, &mut patch) {
            return self.deny(msg);
        }
        self.finish(renamed, patch, changes, profile, usage)
    }

    /// Decisions made before any sizing: passthrough and deny rules, GPUs claimed past the rule,
    /// what the DRA backend cannot give, gpu-slicer claims that no longer match, and opt-outs.
    fn settle_before_sizing(&mut self) -> Option<Decision> {
        let rule = self.rule;
        match rule.action {
            Action::Passthrough => {
                return Some(Decision {
                    audit: Some(self.record(Outcome::Unchanged)),
                    mode: rule.mode,
                    ..Decision::untouched()
                });
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
                return Some(self.deny(msg));
            }
            Action::Mig | Action::Timeslice | Action::Mps | Action::Exclusive => {}
        }
        if let Some(msg) = self.claimed_past_the_rule() {
            return Some(self.deny(msg));
        }
        if let Some(msg) = dra::unsupported(rule) {
            return Some(self.deny(msg));
        }
        if let Err(msg) = self.check_slicer_claims() {
            return Some(self.deny(msg));
        }
        self.opt_out()
    }

    /// GPUs claimed past the rule: the rule's slices, routing and limits would not hold.
    fn claimed_past_the_rule(&self) -> Option<String> {
        let c = self.own.first()?;
        let rule = self.rule;
        let fix = match c.verdict {
            ClaimVerdict::Unreadable(_) => format!(
                "create the {} before the pod, or ask for nvidia.com/gpu instead",
                c.source.describe()
            ),
            _ => {
                "drop the claim and ask for nvidia.com/gpu, which gpu-slicer gives as the rule says"
                    .into()
            }
        };
        Some(format!(
            "the pod's {}, outside the GPU policy: namespace {:?} gets GPUs from rule {} ({} {}); {fix}",
            c.describe(),
            self.ns.name,
            rule.name,
            rule.action.as_str(),
            rule.backend.as_str()
        ))
    }

    /// `gpu-slicer.io/exclusive: "true"`: whole GPUs kept where the rule allows it (the decision),
    /// else a warning that it is ignored.
    fn opt_out(&mut self) -> Option<Decision> {
        let rule = self.rule;
        let opt_out = self.pod.annotation(EXCLUSIVE_ANNOTATION) == Some("true");
        if !opt_out || rule.action == Action::Exclusive {
            return None;
        }
        if !rule.allow_opt_out {
            self.warn(format_args!(
                "{EXCLUSIVE_ANNOTATION} ignored: rule {} does not allow opting out",
                rule.name
            ));
            return None;
        }
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
        Some(Decision {
            warnings,
            patch,
            audit: Some(self.record(Outcome::OptedOut)),
            mode: rule.mode,
            usage: Some(usage),
            ..Decision::untouched()
        })
    }

    /// The resource whole-GPU requests become (empty: none to rename) and the MIG profile that is.
    fn target(&mut self) -> Result<(String, Option<String>), String> {
        let rule = self.rule;
        Ok(match rule.action {
            Action::Mig => {
                if !self.uses.iter().any(|u| u.kind == Kind::Whole) {
                    self.note_unused_sizing_annotations();
                    (String::new(), None)
                } else {
                    let chosen = self.choose_profile()?;
                    (rule.mig_resource(&chosen), Some(chosen))
                }
            }
            Action::Timeslice | Action::Mps => {
                self.note_unused_sizing_annotations();
                (rule.shared_resource.clone().unwrap_or_default(), None)
            }
            _ => {
                self.note_unused_sizing_annotations();
                (WHOLE_GPU.to_string(), None)
            }
        })
    }

    /// The record, the warnings for what changed, and the annotations: the decision.
    fn finish(
        mut self,
        renamed: bool,
        mut patch: Vec<PatchOperation>,
        changes: Vec<Change>,
        profile: Option<String>,
        usage: Usage,
    ) -> Decision {
        let rule = self.rule;
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
}
