//! The policy file (`SlicingPolicy`): its format, its validation, and rule matching.
//!
//! Parsed strictly (unknown fields are errors) and validated once, at load; the engine then only reads
//! a [`Policy`], which cannot be half-valid.

pub mod dra_sharing;

use std::collections::{BTreeMap, BTreeSet};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::catalog;
pub use crate::labels::{LabelSelector, LabelSelectorRequirement, SelectorOperator};
use crate::pod::Toleration;
use dra_sharing::{DraSettings, PolicyDraSpec, RuleDraSpec};

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

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A qualified name as Kubernetes label keys and resource names use it: `[prefix/]name`.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain)
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || (is_qualified_name(s) && !s.contains('/'))
}

/// `<compute>g.<memory>gb`, optionally with `+me` etc. as mig-parted names them.
fn is_profile_syntax(s: &str) -> bool {
    let base = s.split('+').next().unwrap_or("");
    let Some((compute, memory)) = base.split_once("g.") else {
        return false;
    };
    let Some(memory) = memory.strip_suffix("gb") else {
        return false;
    };
    !compute.is_empty()
        && compute.bytes().all(|b| b.is_ascii_digit())
        && !memory.is_empty()
        && memory.bytes().all(|b| b.is_ascii_digit())
}

fn check_profile(field: &str, profile: &str) -> Result<(), (String, String)> {
    if !is_profile_syntax(profile) {
        return Err((
            field.into(),
            format!(
                "{profile:?} is not a MIG profile name (expected <compute>g.<memory>gb, e.g. 1g.10gb)"
            ),
        ));
    }
    if !catalog::is_known_mig_profile(profile) {
        return Err((
            field.into(),
            format!(
                "{profile:?} is not a MIG profile of any GPU gpu-slicer knows (A100, A30, H100, H200, B200)"
            ),
        ));
    }
    Ok(())
}

fn validate_rule(
    spec: RuleSpec,
    policy_mode: Mode,
    default_backend: Backend,
    dra_shares: dra_sharing::ConsumableShares,
) -> Result<Rule, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    if !is_dns_label(&spec.name) {
        return err(
            "name",
            format!(
                "{:?} must be a DNS label (lowercase letters, digits, '-'; it names the rule in audit records)",
                spec.name
            ),
        );
    }
    for (j, pattern) in spec.namespaces.iter().enumerate() {
        let field = format!("namespaces[{j}]");
        if pattern.is_empty() {
            return err(&field, "must not be empty".into());
        }
        // Checked here for a message that names the field; NameIndex compiles them all into one set.
        Glob::new(pattern).map_err(|e| {
            (
                field.clone(),
                format!("{pattern:?} is not a valid glob: {e}"),
            )
        })?;
    }
    if let Some(sel) = &spec.namespace_selector {
        for k in sel.match_labels.keys() {
            if !is_qualified_name(k) {
                return err(
                    "namespaceSelector.matchLabels",
                    format!("{k:?} is not a valid label key"),
                );
            }
        }
        for (j, e) in sel.match_expressions.iter().enumerate() {
            let field = format!("namespaceSelector.matchExpressions[{j}]");
            let needs_values = matches!(e.operator, SelectorOperator::In | SelectorOperator::NotIn);
            if needs_values == e.values.is_empty() {
                return err(
                    &field,
                    if needs_values {
                        "operator In/NotIn needs values".into()
                    } else {
                        "operator Exists/DoesNotExist takes no values".into()
                    },
                );
            }
        }
    }

    let action = spec.action;
    if spec.mig.is_some() && action != Action::Mig {
        return err(
            "mig",
            format!("only allowed with action mig, not {}", action.as_str()),
        );
    }
    if spec.shared.is_some() && !action.is_shared() {
        return err(
            "shared",
            format!(
                "only allowed with action timeslice or mps, not {}",
                action.as_str()
            ),
        );
    }
    if action == Action::Passthrough && spec.mode.is_some() {
        // Passthrough changes nothing, so there is nothing to audit or enforce.
        return err("mode", "has no effect with action passthrough".into());
    }
    let routes = !matches!(action, Action::Deny | Action::Passthrough);
    if !routes {
        for (set, field) in [
            (spec.node_pool.is_some(), "nodePool"),
            (!spec.node_selector.is_empty(), "nodeSelector"),
            (!spec.tolerations.is_empty(), "tolerations"),
            (spec.max_per_container.is_some(), "maxPerContainer"),
            (spec.allow_opt_out, "allowOptOut"),
            (spec.backend.is_some(), "backend"),
            (spec.dra.is_some(), "dra"),
        ] {
            if set {
                return err(
                    field,
                    format!("has no effect with action {}", action.as_str()),
                );
            }
        }
    }

    let backend = spec.backend.unwrap_or(default_backend);
    let (mut mig_profile, mut allowed_profiles) = (None, Vec::new());
    let (mut mig_strategy, mut mig_time_slicing) = (MigStrategy::Mixed, None);
    if action == Action::Mig {
        let Some(mig) = &spec.mig else {
            return err(
                "mig",
                "action mig needs a mig section with a default profile".into(),
            );
        };
        check_profile("mig.profile", &mig.profile)?;
        for (j, prof) in mig.allowed_profiles.iter().enumerate() {
            check_profile(&format!("mig.allowedProfiles[{j}]"), prof)?;
        }
        if !mig.allowed_profiles.is_empty() && !mig.allowed_profiles.contains(&mig.profile) {
            return err(
                "mig.profile",
                format!("{:?} must be one of mig.allowedProfiles", mig.profile),
            );
        }
        if mig.strategy == MigStrategy::Single
            && let Some(other) = mig.allowed_profiles.iter().find(|p| **p != mig.profile)
        {
            return err(
                "mig.allowedProfiles",
                format!(
                    "{other:?}: under strategy single every slice of a node is one profile ({:?}, mig.profile); route other profiles with another rule and NodePool, or use strategy mixed",
                    mig.profile
                ),
            );
        }
        if mig.time_slicing.is_some() && spec.max_per_container.is_some_and(|n| n > 1) {
            return err(
                "maxPerContainer",
                "must be 1 with mig.timeSlicing: a time-sliced slice is one device per container (the device plugin's failRequestsGreaterThanOne)".into(),
            );
        }
        mig_strategy = mig.strategy;
        mig_time_slicing = mig.time_slicing;
        mig_profile = Some(mig.profile.clone());
        allowed_profiles = if mig.allowed_profiles.is_empty() {
            vec![mig.profile.clone()]
        } else {
            let mut all = mig.allowed_profiles.clone();
            all.dedup();
            all
        };
    }

    let mut shared_resource = None;
    let mut shared_replicas = None;
    // With backend dra a shared GPU is a claim, not a renamed resource: `shared` is optional there.
    if action.is_shared() && (backend == Backend::DevicePlugin || spec.shared.is_some()) {
        let Some(shared) = &spec.shared else {
            return err(
                "shared",
                format!(
                    "action {} needs shared.resourceName (e.g. nvidia.com/gpu.shared)",
                    action.as_str()
                ),
            );
        };
        let name = &shared.resource_name;
        if !is_qualified_name(name) || !name.contains('/') || name.starts_with("kubernetes.io/") {
            return err(
                "shared.resourceName",
                format!(
                    "{name:?} is not an extended resource name (<domain>/<name>, e.g. nvidia.com/gpu.shared)"
                ),
            );
        }
        if name.starts_with(MIG_PREFIX) {
            return err(
                "shared.resourceName",
                format!("{name:?} is a MIG resource, not a shared one"),
            );
        }
        shared_resource = Some(name.clone());
        shared_replicas = shared.replicas;
    }
    for (replicas, field) in [
        (shared_replicas, "shared.replicas"),
        (
            mig_time_slicing.and_then(|t| t.replicas),
            "mig.timeSlicing.replicas",
        ),
    ] {
        if replicas == Some(0) {
            return err(
                field,
                "must be at least 1 (the device plugin config's replicas)".into(),
            );
        }
    }
    let budget = match &spec.budget {
        None => None,
        Some(_) if !routes => {
            return err(
                "budget",
                format!("has no effect with action {}", action.as_str()),
            );
        }
        Some(b) => Some(
            crate::gpus::Gpus::parse(&b.gpu_equivalents)
                .map_err(|m| ("budget.gpuEquivalents".to_string(), m))?,
        ),
    };

    if spec.max_per_container == Some(0) {
        return err("maxPerContainer", "must be at least 1".into());
    }
    let max_per_container = match (spec.max_per_container, action) {
        (Some(n), _) => Some(u64::from(n)),
        (None, Action::Exclusive) => None,
        (None, _) => Some(1),
    };
    // Under DRA every count up to maxPerContainer is a template of its own in every namespace the
    // rule matches: an unbounded one is an OOM, or a flood of objects into etcd. More than one node
    // holds can never be scheduled anyway.
    if backend == Backend::Dra
        && let Some(n) = max_per_container
    {
        let (bound, what) = match action {
            Action::Mig => {
                let most = allowed_profiles
                    .iter()
                    .map(|p| catalog::max_devices_per_node(Some(p)))
                    .max()
                    .unwrap_or(0);
                (most, "MIG devices of its profiles")
            }
            _ => (catalog::max_devices_per_node(None), "GPUs"),
        };
        if n > bound {
            return err(
                "maxPerContainer",
                format!(
                    "{n} is more than one node holds under backend: dra (at most {bound} {what} on any EKS GPU instance gpu-slicer knows); DRA rules get one ResourceClaimTemplate per count"
                ),
            );
        }
    }
    if let Some(pool) = &spec.node_pool
        && !is_dns_subdomain(pool)
    {
        return err("nodePool", format!("{pool:?} is not a valid NodePool name"));
    }
    for (k, v) in &spec.node_selector {
        if !is_qualified_name(k) {
            return err("nodeSelector", format!("{k:?} is not a valid label key"));
        }
        if !is_label_value(v) {
            return err(
                "nodeSelector",
                format!("{k}: {v:?} is not a valid label value"),
            );
        }
    }
    if let Some(pool) = &spec.node_pool
        && let Some(other) = spec.node_selector.get("karpenter.sh/nodepool")
        && other != pool
    {
        return err(
            "nodeSelector",
            format!("karpenter.sh/nodepool: {other:?} contradicts nodePool {pool:?}"),
        );
    }
    let mut tolerations = Vec::with_capacity(spec.tolerations.len());
    for (j, t) in spec.tolerations.iter().enumerate() {
        let field = format!("tolerations[{j}]");
        let op = t.operator.as_deref().unwrap_or("Equal");
        if !matches!(op, "Equal" | "Exists") {
            return err(&field, format!("operator {op:?} must be Equal or Exists"));
        }
        if op == "Exists" && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
            return err(&field, "operator Exists takes no value".into());
        }
        if t.key.as_deref().unwrap_or("").is_empty() && op != "Exists" {
            return err(&field, "an empty key needs operator Exists".into());
        }
        if let Some(e) = &t.effect
            && !matches!(
                e.as_str(),
                "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
            )
        {
            return err(
                &field,
                format!("effect {e:?} must be NoSchedule, PreferNoSchedule or NoExecute"),
            );
        }
        tolerations.push(Toleration {
            key: t.key.clone(),
            operator: Some(op.to_string()),
            value: t.value.clone().filter(|_| op == "Equal"),
            effect: t.effect.clone().filter(|e| !e.is_empty()),
            toleration_seconds: t.toleration_seconds,
        });
    }

    if backend == Backend::Dra && mig_strategy == MigStrategy::Single {
        return err(
            "mig.strategy",
            "single names device plugin resources; with backend dra the claim selects the MIG profile itself: drop mig.strategy".into(),
        );
    }
    let dra = dra_sharing::validate(&spec, backend, dra_shares)?;
    Ok(Rule {
        name: spec.name.clone(),
        action,
        mode: spec.mode.unwrap_or(policy_mode),
        backend,
        namespace_selector: spec.namespace_selector.clone(),
        mig_profile,
        allowed_profiles,
        mig_strategy,
        mig_time_slicing,
        shared_resource,
        shared_replicas,
        budget,
        max_per_container,
        node_pool: spec.node_pool.clone(),
        node_selector: spec.node_selector.clone(),
        tolerations,
        allow_opt_out: spec.allow_opt_out,
        dra,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Policy, String> {
        Policy::parse(yaml, "p.yaml").map_err(|e| e.to_string())
    }

    fn with_rule(rule: &str) -> String {
        format!(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n{}",
            rule.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        )
    }

    #[test]
    fn the_example_policy_is_valid() {
        let p = Policy::parse(
            include_str!("../../../../manifests/policy/policy.yaml"),
            "example",
        )
        .unwrap();
        let actions: BTreeSet<_> = p.rules.iter().map(|r| r.action.as_str()).collect();
        for a in ["mig", "timeslice", "mps", "exclusive", "deny"] {
            assert!(actions.contains(a), "example has no {a} rule");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "- name: a\n  action: mig\n  mig: {profile: 1g.7gb}",
                "p.yaml: spec.rules[0].mig.profile: \"1g.7gb\" is not a MIG profile of any GPU",
            ),
            (
                "- name: a\n  action: mig\n  mig: {profile: big}",
                "spec.rules[0].mig.profile: \"big\" is not a MIG profile name",
            ),
            (
                "- name: a\n  action: mig",
                "spec.rules[0].mig: action mig needs a mig section",
            ),
            (
                "- name: a\n  action: timeslice",
                "spec.rules[0].shared: action timeslice needs shared.resourceName",
            ),
            (
                "- name: a\n  action: mps\n  shared: {resourceName: gpu}",
                "spec.rules[0].shared.resourceName: \"gpu\" is not an extended resource name",
            ),
            (
                "- name: a\n  action: deny\n- name: a\n  action: deny",
                "spec.rules[1].name: \"a\" is used by an earlier rule",
            ),
            (
                "- name: a\n  namespaces: [\"team-[\"]\n  action: deny",
                "spec.rules[0].namespaces[0]: \"team-[\" is not a valid glob",
            ),
            (
                "- name: a\n  action: mig\n  mig: {profile: 1g.10gb, allowedProfiles: [2g.20gb]}",
                "spec.rules[0].mig.profile: \"1g.10gb\" must be one of mig.allowedProfiles",
            ),
            (
                "- name: a\n  action: deny\n  nodePool: x",
                "spec.rules[0].nodePool: has no effect with action deny",
            ),
            (
                "- name: a\n  action: exclusive\n  maxPerContainer: 0",
                "spec.rules[0].maxPerContainer: must be at least 1",
            ),
            // Issue 24: 4294967295 templates per namespace (1e8 took dra templates to 18.4 GB).
            (
                "- name: a\n  action: exclusive\n  backend: dra\n  nodePool: p\n  maxPerContainer: 4294967295",
                "spec.rules[0].maxPerContainer: 4294967295 is more than one node holds under backend: dra (at most 8 GPUs",
            ),
            (
                "- name: a\n  action: mig\n  backend: dra\n  nodePool: p\n  mig: {profile: 1g.10gb}\n  maxPerContainer: 57",
                "spec.rules[0].maxPerContainer: 57 is more than one node holds under backend: dra (at most 56 MIG devices",
            ),
            (
                "- name: a\n  action: exclusive\n  tolerations: [{key: k, operator: Exists, value: v}]",
                "spec.rules[0].tolerations[0]: operator Exists takes no value",
            ),
            (
                "- name: Bad_Name\n  action: deny",
                "spec.rules[0].name: \"Bad_Name\" must be a DNS label",
            ),
            (
                "- name: a\n  action: mig\n  shared: {resourceName: nvidia.com/gpu.shared}\n  mig: {profile: 1g.10gb}",
                "spec.rules[0].shared: only allowed with action timeslice or mps",
            ),
        ];
        for (rule, want) in cases {
            let got = parse(&with_rule(rule)).unwrap_err();
            assert!(got.contains(want), "{rule}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let got = parse(&with_rule("- name: a\n  action: deny\n  nodepool: x")).unwrap_err();
        assert!(got.contains("unknown field `nodepool`"), "{got}");
        let got = parse(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec: {defaultAction: allow}",
        )
        .unwrap_err();
        assert!(
            got.contains("defaultAction") || got.contains("allow"),
            "{got}"
        );
        let got = parse("apiVersion: v1\nkind: SlicingPolicy\nspec: {}").unwrap_err();
        assert!(got.contains("apiVersion: must be"), "{got}");
    }

    #[test]
    fn rules_match_on_names_and_labels_first_match_wins() {
        let p = parse(&with_rule(
            "- name: by-label\n  namespaces: [\"team-*\"]\n  namespaceSelector: {matchLabels: {gpu: mig}}\n  action: deny\n\
             - name: by-name\n  namespaces: [\"team-*\"]\n  action: exclusive\n\
             - name: expr\n  namespaceSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [prod]}]}\n  action: passthrough",
        ))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let name =
            |ns: &str, l: &[(&str, &str)]| p.rule_for(ns, &labels(l)).map(|r| r.name.clone());
        assert_eq!(
            name("team-a", &[("gpu", "mig")]).as_deref(),
            Some("by-label")
        );
        assert_eq!(name("team-a", &[]).as_deref(), Some("by-name"));
        assert_eq!(name("other", &[]).as_deref(), Some("expr"));
        assert_eq!(name("other", &[("tier", "prod")]), None);
        assert_eq!(
            p.rules[1].max_per_container, None,
            "exclusive defaults to no limit"
        );
    }

    #[test]
    fn mig_rules_default_to_one_per_container_and_their_own_profile() {
        let p = parse(&with_rule(
            "- name: a\n  action: mig\n  mig: {profile: 1g.10gb}",
        ))
        .unwrap();
        assert_eq!(p.rules[0].max_per_container, Some(1));
        assert_eq!(p.rules[0].allowed_profiles, vec!["1g.10gb".to_string()]);
    }

    #[test]
    fn mode_defaults_to_enforce_and_a_rule_overrides_the_policy() {
        let p = parse(&with_rule("- name: a\n  action: deny")).unwrap();
        assert_eq!((p.mode, p.rules[0].mode), (Mode::Enforce, Mode::Enforce));

        let p = parse(
            concat!(
                "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  mode: audit\n  rules:\n",
                "  - {name: a, action: deny}\n",
                "  - {name: b, action: deny, mode: enforce}\n",
                "  - {name: c, action: exclusive, mode: audit}\n",
            ),
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Audit);
        let modes: Vec<_> = p.rules.iter().map(|r| r.mode).collect();
        assert_eq!(modes, [Mode::Audit, Mode::Enforce, Mode::Audit]);
        assert_eq!(p.audited_rules().collect::<Vec<_>>(), ["a", "c"]);

        let mut forced = p.clone();
        forced.force_mode(Mode::Enforce);
        assert_eq!(forced.mode, Mode::Enforce);
        assert!(forced.rules.iter().all(|r| r.mode == Mode::Enforce));

        let p = parse(&with_rule("- name: a\n  action: deny\n  mode: audit")).unwrap();
        assert_eq!((p.mode, p.rules[0].mode), (Mode::Enforce, Mode::Audit));
    }

    #[test]
    fn mode_is_parsed_strictly() {
        let got = parse(&with_rule("- name: a\n  action: deny\n  mode: dryrun")).unwrap_err();
        assert!(got.contains("dryrun") && got.contains("audit"), "{got}");
        let got =
            parse("apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec: {mode: warn}")
                .unwrap_err();
        assert!(got.contains("warn") && got.contains("enforce"), "{got}");
        let got = parse(&with_rule(
            "- name: a\n  action: passthrough\n  mode: audit",
        ))
        .unwrap_err();
        assert!(
            got.contains("spec.rules[0].mode: has no effect with action passthrough"),
            "{got}"
        );
    }
}
