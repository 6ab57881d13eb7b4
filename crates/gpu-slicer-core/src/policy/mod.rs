//! The policy file (`SlicingPolicy`): its format, its validation, and rule matching.
//!
//! Parsed strictly (unknown fields are errors) and validated once, at load; the engine then only reads
//! a [`Policy`], which cannot be half-valid.
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::gpus`], [`crate::labels`],
//! [`crate::pod`], [`crate::quantity`].

pub mod dra_sharing;
mod validate;

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::labels::LabelSelector;
use crate::pod::Toleration;
use dra_sharing::{DraSettings, PolicyDraSpec, RuleDraSpec};
use validate::validate_rule;

pub const API_VERSION: &str = "gpu-slicer.io/v1alpha1";
pub const KIND: &str = "SlicingPolicy";
/// The resource name the device plugin advertises for whole GPUs.
pub const WHOLE_GPU: &str = "nvidia.com/gpu";
/// Prefix of MIG resources under the device plugin's `mixed` strategy.
pub const MIG_PREFIX: &str = "nvidia.com/mig-";

/// A policy that failed to load, with the field or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// What a rule does to GPU pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Mig,
    Timeslice,
    Mps,
    Exclusive,
    Deny,
    Passthrough,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Mig => "mig",
            Action::Timeslice => "timeslice",
            Action::Mps => "mps",
            Action::Exclusive => "exclusive",
            Action::Deny => "deny",
            Action::Passthrough => "passthrough",
        }
    }

    fn is_shared(self) -> bool {
        matches!(self, Action::Timeslice | Action::Mps)
    }
}

/// Whether decisions are carried out (`enforce`) or only reported (`audit`): a rollout starts in
/// audit, where the webhook decides exactly as in enforce but answers "allowed, no patch" and says
/// what it would have done (warnings `gpu-slicer (audit): would ...`, outcomes `would-rewrite`,
/// `would-deny`), like Kyverno's `Audit` and Gatekeeper's `dryrun`/`warn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rewrite, route and deny (the default).
    #[default]
    Enforce,
    /// Decide as enforce, then allow the pod unchanged and say what enforce would do.
    Audit,
}

impl Mode {
    /// The name as the policy file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }

    fn is_enforce(&self) -> bool {
        *self == Mode::Enforce
    }
}

/// How a rule's GPUs reach the pod: the device plugin's extended resources, or a Dynamic Resource
/// Allocation claim (the NVIDIA DRA driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Backend {
    #[default]
    DevicePlugin,
    Dra,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::DevicePlugin => "devicePlugin",
            Backend::Dra => "dra",
        }
    }
}

/// What happens to GPU pods in namespaces that no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    #[default]
    Passthrough,
    Deny,
}

// ---- The file format (DESIGN.md "Policy file"). ----

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// The mode of every rule that does not set its own, and of `defaultAction`.
    #[serde(default, skip_serializing_if = "Mode::is_enforce")]
    pub mode: Mode,
    #[serde(default)]
    pub default_action: DefaultAction,
    /// The backend of rules that do not set one.
    #[serde(default)]
    pub default_backend: Backend,
    /// How the cluster's NVIDIA DRA driver shares devices (its `consumableShares`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dra: Option<PolicyDraSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    pub action: Action,
    /// Overrides `spec.mode` for this rule (switch to enforce rule by rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `devicePlugin` or `dra`; `spec.defaultBackend` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedSpec>,
    /// `backend: dra`: the driver mode of the rule's pools, and a timeslice claim's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dra: Option<RuleDraSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_container: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<TolerationSpec>,
    #[serde(default)]
    pub allow_opt_out: bool,
    /// The most GPU-equivalents each matching namespace may hold (cluster mode enforces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MigSpec {
    pub profile: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_profiles: Vec<String>,
    /// The device plugin's MIG strategy on the rule's nodes (what its slices are called).
    #[serde(default, skip_serializing_if = "MigStrategy::is_mixed")]
    pub strategy: MigStrategy,
    /// Set when the nodes' device plugin config time-slices the MIG devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_slicing: Option<MigTimeSlicing>,
    /// `backend: dra`: larger profiles a claim takes, in order, when its own is not free.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
}

/// How the NVIDIA device plugin advertises MIG devices (its `flags.migStrategy`, or the GPU Operator's
/// `mig.strategy`, which overrides it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigStrategy {
    /// Each profile as its own resource, `nvidia.com/mig-<profile>`: several profiles per node.
    #[default]
    Mixed,
    /// Every MIG device as `nvidia.com/gpu`: one profile per node (the only MIG mode of Bottlerocket's
    /// NVIDIA variant).
    Single,
}

impl MigStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            MigStrategy::Mixed => "mixed",
            MigStrategy::Single => "single",
        }
    }

    fn is_mixed(&self) -> bool {
        *self == MigStrategy::Mixed
    }
}

/// `mig.timeSlicing`: the node's device plugin config time-slices the MIG devices, as written there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MigTimeSlicing {
    /// `true`: the plugin advertises `<resource>.shared` (its `renameByDefault`).
    pub rename_by_default: bool,
    /// Pods per slice (that config's `replicas`): a pod holds the slice's GPU-equivalents / replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SharedSpec {
    pub resource_name: String,
    /// Pods per GPU (the device plugin config's `replicas`): a pod holds 1/replicas GPU-equivalents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// A rule's `budget`: the most GPU-equivalents each matching namespace's live pods may hold.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// A decimal (`"2"`, `"0.5"`); YAML numbers are read too.
    #[serde(deserialize_with = "decimal_text")]
    pub gpu_equivalents: String,
}

/// A decimal written as a string or a YAML number.
fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::Int(n) => n.to_string(),
        Raw::Float(f) => f.to_string(),
        Raw::Text(s) => s,
    })
}

/// A toleration as written in a rule, strictly parsed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TolerationSpec {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub operator: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub effect: Option<String>,
    #[serde(default)]
    pub toleration_seconds: Option<i64>,
}

// ---- The validated policy. ----

/// A validated rule, ready for matching.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// The rule's own mode, else the policy's.
    pub mode: Mode,
    /// Extended resources (`devicePlugin`) or a ResourceClaim (`dra`).
    pub backend: Backend,
    pub namespace_selector: Option<LabelSelector>,
    /// `mig`: the default profile.
    pub mig_profile: Option<String>,
    /// `mig`: the profiles pods may have, default first, then smallest memory first.
    pub allowed_profiles: Vec<String>,
    /// `mig`: how the device plugin names the slices.
    pub mig_strategy: MigStrategy,
    /// `mig`: the device plugin time-slices each slice among several pods.
    pub mig_time_slicing: Option<MigTimeSlicing>,
    /// `timeslice` / `mps`: the resource the device plugin advertises for a replica.
    pub shared_resource: Option<String>,
    /// `timeslice` / `mps`: pods per GPU (`shared.replicas`), for GPU-equivalents.
    pub shared_replicas: Option<u32>,
    /// `budget.gpuEquivalents`: the most each matching namespace may hold.
    pub budget: Option<crate::gpus::Gpus>,
    /// Largest count one container may ask for; `None` is no limit.
    pub max_per_container: Option<u64>,
    pub node_pool: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub allow_opt_out: bool,
    /// `backend: dra`: the driver's sharing mode, a timeslice claim's memory, MIG fallbacks.
    pub dra: DraSettings,
    /// The rule as written, for `policy check` and generators.
    pub spec: RuleSpec,
}

impl Rule {
    /// Whether the rule needs namespace labels to decide (it has a `namespaceSelector`).
    pub fn uses_labels(&self) -> bool {
        self.namespace_selector.is_some()
    }

    /// The resource a container asks for to get one `profile` slice on this rule's nodes, exactly as the
    /// device plugin advertises it: `mixed` names the profile, `single` calls every slice
    /// `nvidia.com/gpu`, and time-slicing with `renameByDefault` appends `.shared`.
    pub fn mig_resource(&self, profile: &str) -> String {
        mig_resource(self.mig_strategy, self.mig_time_slicing, profile)
    }
}

/// See [`Rule::mig_resource`].
pub fn mig_resource(
    strategy: MigStrategy,
    time_slicing: Option<MigTimeSlicing>,
    profile: &str,
) -> String {
    let base = match strategy {
        MigStrategy::Mixed => format!("{MIG_PREFIX}{profile}"),
        MigStrategy::Single => WHOLE_GPU.to_string(),
    };
    match time_slicing {
        Some(MigTimeSlicing {
            rename_by_default: true,
            ..
        }) => format!("{base}.shared"),
        _ => base,
    }
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `spec.mode`: the mode of `defaultAction` decisions and of rules that set none.
    pub mode: Mode,
    pub default_action: DefaultAction,
    pub rules: Vec<Rule>,
    /// Every resource name a `timeslice`/`mps` rule or a time-sliced `mig` rule uses: pods asking for
    /// these are GPU pods too.
    pub shared_resources: BTreeSet<String>,
    names: NameIndex,
}

/// Every rule's namespace globs in one set, so one pass over a namespace name finds all the rules whose
/// names match (a 200-rule policy costs about what a 5-rule one does).
#[derive(Debug, Clone)]
struct NameIndex {
    set: GlobSet,
    /// The rule each glob of `set` belongs to.
    rule_of_glob: Vec<usize>,
}

impl NameIndex {
    fn build(rules: &[Rule]) -> Result<NameIndex, (String, String)> {
        let mut builder = GlobSetBuilder::new();
        let mut rule_of_glob = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for (j, pattern) in rule.spec.namespaces.iter().enumerate() {
                let glob = Glob::new(pattern)
                    .map_err(|e| (format!("spec.rules[{i}].namespaces[{j}]"), e.to_string()))?;
                builder.add(glob);
                rule_of_glob.push(i);
            }
        }
        let set = builder
            .build()
            .map_err(|e| ("spec.rules".to_string(), e.to_string()))?;
        Ok(NameIndex { set, rule_of_glob })
    }
}

impl Policy {
    /// Parses and validates policy YAML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = serde_norway::from_str(text).map_err(|e| PolicyError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        Policy::from_file(file).map_err(|(field, message)| PolicyError::Invalid {
            path: origin.to_string(),
            field,
            message,
        })
    }

    /// Validates a parsed file. Errors are `(field path, message)`.
    pub fn from_file(file: PolicyFile) -> Result<Policy, (String, String)> {
        if file.api_version != API_VERSION {
            return Err((
                "apiVersion".into(),
                format!("must be {API_VERSION:?}, not {:?}", file.api_version),
            ));
        }
        if file.kind != KIND {
            return Err((
                "kind".into(),
                format!("must be {KIND:?}, not {:?}", file.kind),
            ));
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.spec.rules.len());
        let shares = file
            .spec
            .dra
            .as_ref()
            .map(|d| d.consumable_shares)
            .unwrap_or_default();
        for (i, spec) in file.spec.rules.into_iter().enumerate() {
            let at = |field: &str| {
                if field.is_empty() {
                    format!("spec.rules[{i}]")
                } else {
                    format!("spec.rules[{i}].{field}")
                }
            };
            if !names.insert(spec.name.clone()) {
                return Err((
                    at("name"),
                    format!(
                        "{:?} is used by an earlier rule; rule names must be unique",
                        spec.name
                    ),
                ));
            }
            rules.push(
                validate_rule(spec, file.spec.mode, file.spec.default_backend, shares)
                    .map_err(|(f, m)| (at(&f), m))?,
            );
        }
        let shared_resources = rules
            .iter()
            .flat_map(|r| {
                let sliced = r
                    .allowed_profiles
                    .iter()
                    .filter(|_| r.mig_time_slicing.is_some())
                    .map(|p| r.mig_resource(p));
                r.shared_resource.clone().into_iter().chain(sliced)
            })
            .filter(|name| name != WHOLE_GPU)
            .collect();
        let names = NameIndex::build(&rules)?;
        Ok(Policy {
            mode: file.spec.mode,
            default_action: file.spec.default_action,
            rules,
            shared_resources,
            names,
        })
    }

    /// The rules whose namespace names match, in policy order (rules without names match every one).
    fn named(&self, namespace: &str) -> impl Iterator<Item = &Rule> {
        let mut hits: Vec<usize> = self
            .names
            .set
            .matches(namespace)
            .into_iter()
            .map(|g| self.names.rule_of_glob[g])
            .collect();
        hits.sort_unstable();
        hits.dedup();
        self.rules
            .iter()
            .enumerate()
            .filter(move |(i, r)| r.spec.namespaces.is_empty() || hits.binary_search(i).is_ok())
            .map(|(_, r)| r)
    }

    /// Puts the whole policy in `mode`, whatever its rules say (`mutate --mode`, a dry run).
    pub fn force_mode(&mut self, mode: Mode) {
        self.mode = mode;
        for rule in &mut self.rules {
            rule.mode = mode;
        }
    }

    /// The rules in audit mode, by name.
    pub fn audited_rules(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter(|r| r.mode == Mode::Audit)
            .map(|r| r.name.as_str())
    }

    /// Whether deciding for this namespace depends on its labels: the first rule whose names match
    /// selects on labels. (If it does not, it decides whatever the labels are.)
    pub fn needs_labels(&self, namespace: &str) -> bool {
        self.named(namespace).next().is_some_and(Rule::uses_labels)
    }

    /// The first rule that matches the namespace, if any.
    pub fn rule_for(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Option<&Rule> {
        self.named(namespace).find(|r| {
            r.namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(labels))
        })
    }
}

#[cfg(test)]
mod tests;
