//! The checks: each a pure function of a [`ClusterSnapshot`] and [`Options`] (the clock is an input),
//! returning findings. A check that cannot run (Karpenter or the policy absent) says so in one `info`
//! finding under its own ID, so a silent check always means "looked, found nothing".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gpu_slicer_core::labels;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;

use super::snapshot::{
    ClusterSnapshot, INITIALIZED_LABEL, MIG_CONFIG_STATE_LABEL, NoPolicy, NodeInfo, OverlayInfo,
    PodInfo,
};
use super::{Finding, Severity};
use gpu_slicer_core::check;
use gpu_slicer_core::gpu_operator::DeviceMigStrategy;
use gpu_slicer_core::karpenter::{DEVICE_PLUGIN_CONFIG_LABEL, MIG_CONFIG_LABEL};
use gpu_slicer_core::nodepool::{
    INSTANCE_TYPE_LABEL, NODEPOOL_LABEL, NodePool, NodePoolIndex, Requirement,
};
use gpu_slicer_core::policy::{Action, DefaultAction, MIG_PREFIX, WHOLE_GPU};

pub const NODECLAIM_RESOURCE_NOT_REGISTERED: &str = "nodeclaim-resource-not-registered";
pub const OVERLAY_CAPACITY_DRIFT: &str = "overlay-capacity-drift";
pub const OVERLAY_MATCHES_NOTHING: &str = "overlay-matches-nothing";
pub const OVERLAY_WEIGHT_CONFLICT: &str = "overlay-weight-conflict";
pub const POD_SLICE_UNSCHEDULABLE: &str = "pod-slice-unschedulable";
pub const POD_NOT_REWRITTEN: &str = "pod-not-rewritten";
pub const MIG_CONFIG_FAILED: &str = "mig-config-failed";
pub const WEBHOOK_NOT_CONFIGURED: &str = "webhook-not-configured";
pub const POLICY_CLUSTER_MISMATCH: &str = "policy-cluster-mismatch";
pub use super::budget_checks::NAMESPACE_OVER_BUDGET;
pub use super::dra_checks::{
    DRA_DEVICE_PLUGIN_OVERLAP, DRA_MIG_POOL_EMPTY, DRA_TEMPLATE_NAME_TAKEN,
};

/// Every check ID, in the order of the table (part of the contract).
pub const ALL: &[&str] = &[
    NODECLAIM_RESOURCE_NOT_REGISTERED,
    OVERLAY_CAPACITY_DRIFT,
    OVERLAY_MATCHES_NOTHING,
    OVERLAY_WEIGHT_CONFLICT,
    POD_SLICE_UNSCHEDULABLE,
    POD_NOT_REWRITTEN,
    MIG_CONFIG_FAILED,
    WEBHOOK_NOT_CONFIGURED,
    POLICY_CLUSTER_MISMATCH,
    DRA_DEVICE_PLUGIN_OVERLAP,
    DRA_MIG_POOL_EMPTY,
    DRA_TEMPLATE_NAME_TAKEN,
    NAMESPACE_OVER_BUDGET,
];

/// The shipped webhook registration: what a healthy one looks like.
const SHIPPED_WEBHOOK: &str =
    include_str!("../../manifests/webhook/base/mutatingwebhookconfiguration.yaml");

/// What the checks need besides the snapshot.
#[derive(Debug, Clone)]
pub struct Options {
    /// The time of the read.
    pub now: Timestamp,
    /// How long a NodeClaim may wait for its resources, or mig-manager stay `pending`, before it is
    /// reported (`--stuck-after`, default 10m).
    pub stuck_after: Duration,
}

impl Options {
    /// `--stuck-after`'s default.
    pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(600);

    fn older_than_stuck(&self, since: Option<Timestamp>) -> bool {
        // Unknown start: report (a condition without a time has been there since before we looked).
        since.is_none_or(|t| {
            self.now.as_second() - t.as_second() >= self.stuck_after.as_secs() as i64
        })
    }

    fn age(&self, since: Timestamp) -> String {
        human(Duration::from_secs(
            (self.now.as_second() - since.as_second()).max(0) as u64,
        ))
    }
}

/// `3h12m`, `14m`, `40s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// Runs every check.
pub fn run_all(s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    out.extend(nodeclaim_resource_not_registered(s, o));
    out.extend(overlay_capacity_drift(s));
    out.extend(overlay_matches_nothing(s));
    out.extend(overlay_weight_conflict(s));
    out.extend(pod_slice_unschedulable(s));
    out.extend(pod_not_rewritten(s));
    out.extend(mig_config_failed(s, o));
    out.extend(webhook_not_configured(s));
    out.extend(policy_cluster_mismatch(s));
    out.extend(super::dra_checks::run_all(s));
    out.extend(super::budget_checks::namespace_over_budget(s));
    out
}

pub(super) fn finding(
    check: &'static str,
    severity: Severity,
    object: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        check,
        severity,
        object: object.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

pub(super) fn skipped(check: &'static str, object: &str, why: &str) -> Vec<Finding> {
    vec![finding(
        check,
        Severity::Info,
        object,
        format!("skipped: {why}"),
        "",
    )]
}

const KARPENTER_CRDS: &str = "CustomResourceDefinition/nodepools.karpenter.sh";
/// Where the webhook's policy is looked for (manifests/webhook).
pub(super) const POLICY_OBJECT: &str = "ConfigMap/gpu-slicer/gpu-slicer-policy";

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Up to three names and a count of the rest.
pub(super) fn some_of(names: &[String]) -> String {
    let shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 3 {
        format!("{shown} and {} more", names.len() - 3)
    } else {
        shown
    }
}

// ---- nodeclaim-resource-not-registered ----

/// The resource in Karpenter's message `Resource "nvidia.com/mig-1g.10gb" was requested but not
/// registered` (karpenter `pkg/controllers/nodeclaim/lifecycle/initialization.go`).
fn resource_in_message(message: &str) -> Option<&str> {
    let rest = &message[message.find('"')? + 1..];
    Some(&rest[..rest.find('"')?])
}

/// NodeClaims whose `Initialized` condition has stayed not True with reason `ResourceNotRegistered`
/// for longer than `--stuck-after`: Karpenter has no initialization timeout, so they wait until
/// `expireAfter` while attracting the pending pods.
pub fn nodeclaim_resource_not_registered(s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
    let claims = match &s.node_claims {
        super::snapshot::Read::Found(c) => c,
        other => {
            return skipped(
                NODECLAIM_RESOURCE_NOT_REGISTERED,
                "CustomResourceDefinition/nodeclaims.karpenter.sh",
                other.why_not().unwrap_or(""),
            );
        }
    };
    let mut out = Vec::new();
    for claim in claims {
        let Some(cond) = claim.condition("Initialized") else {
            continue;
        };
        if cond.status == "True"
            || cond.reason != "ResourceNotRegistered"
            || !o.older_than_stuck(cond.last_transition)
        {
            continue;
        }
        let resource = resource_in_message(&cond.message).unwrap_or("(unnamed)");
        let since = cond
            .last_transition
            .map_or(String::new(), |t| format!(" for {}", o.age(t)));
        let node = claim.node_name.as_deref().and_then(|n| s.node(n));
        let delete = format!(
            "then `kubectl delete nodeclaim {}` (Karpenter never gives up on it by itself; it is replaced only at expireAfter)",
            claim.name
        );
        let (cause, fix) = match node {
            None => (
                format!(
                    "its node {} is not in the cluster",
                    claim
                        .node_name
                        .as_deref()
                        .unwrap_or("(status.nodeName unset)")
                ),
                format!("check the node's kubelet and the instance; {delete}"),
            ),
            Some(node) => {
                let (cause, fix) = likely_cause(s, node, resource);
                (cause, format!("{fix}; {delete}"))
            }
        };
        let on = claim
            .node_name
            .as_deref()
            .map_or(String::new(), |n| format!(" on node {n}"));
        let pool = claim
            .node_pool
            .as_deref()
            .map_or(String::new(), |p| format!(" (NodePool {p})"));
        out.push(finding(
            NODECLAIM_RESOURCE_NOT_REGISTERED,
            Severity::Error,
            format!("NodeClaim/{}", claim.name),
            format!(
                "Initialized={} (ResourceNotRegistered){since}: {resource} was requested but never registered{on}{pool}; likely cause: {cause}",
                cond.status
            ),
            fix,
        ));
    }
    out
}

/// The most likely reason `node` does not advertise `resource`, read from its labels and what it
/// advertises instead, and the correction.
fn likely_cause(s: &ClusterSnapshot, node: &NodeInfo, resource: &str) -> (String, String) {
    let advertises = node.advertised();
    let mig_config = node.label(MIG_CONFIG_LABEL);
    let plugin_config = node.label(DEVICE_PLUGIN_CONFIG_LABEL);
    let pool = node.label(NODEPOOL_LABEL).and_then(|p| s.pool(p));
    let pool_hint = pool.map_or("the NodePool's template".to_string(), |p| {
        format!("NodePool {}'s template", p.name)
    });
    let mig_logs = mig_manager_logs(&node.name);
    match node.label(MIG_CONFIG_STATE_LABEL) {
        Some("failed") => {
            return (
                format!(
                    "{MIG_CONFIG_STATE_LABEL}=failed: mig-manager could not apply {MIG_CONFIG_LABEL}={} (node advertises {advertises})",
                    mig_config.unwrap_or("?")
                ),
                format!(
                    "{mig_logs}; correct {MIG_CONFIG_LABEL} in {pool_hint} to a config that exists for this GPU"
                ),
            );
        }
        Some("pending") if resource.starts_with(MIG_PREFIX) => {
            return (
                format!(
                    "{MIG_CONFIG_STATE_LABEL}=pending: mig-manager has not applied {MIG_CONFIG_LABEL}={} (node advertises {advertises})",
                    mig_config.unwrap_or("?")
                ),
                format!("{mig_logs}; relabel the node to another config and back"),
            );
        }
        _ => {}
    }
    let ops = s.gpu_operator.found();
    if let (Some(name), Some(ops)) = (plugin_config, ops)
        && ops.device_plugin_known
        && !ops.configs.device_plugin.contains_key(name)
    {
        let known = list(ops.configs.device_plugin.keys());
        return (
            format!(
                "{DEVICE_PLUGIN_CONFIG_LABEL}={name} names no device plugin config (the GPU Operator's ConfigMap has: {known}), so the plugin does not start with a sharing config"
            ),
            format!(
                "set {DEVICE_PLUGIN_CONFIG_LABEL} in {pool_hint} to one of {known}, or add {name} to the ConfigMap"
            ),
        );
    }
    if resource.starts_with(MIG_PREFIX) {
        let whole = node.offers(WHOLE_GPU);
        let slices: Vec<&String> = node
            .allocatable
            .iter()
            .filter(|(k, n)| k.starts_with(MIG_PREFIX) && **n > 0)
            .map(|(k, _)| k)
            .collect();
        if mig_config.is_none() {
            return (
                format!(
                    "the node has no {MIG_CONFIG_LABEL} label, so mig-manager leaves its GPUs whole (node advertises {advertises})"
                ),
                format!("add {MIG_CONFIG_LABEL} to {pool_hint}"),
            );
        }
        if slices.is_empty() && whole > 0 {
            let plugin_name = plugin_config.unwrap_or("default");
            let effective = ops.and_then(|o| o.configs.mig_strategy(plugin_config));
            let why = match effective {
                Some(e) if e.strategy == DeviceMigStrategy::Single => format!(
                    "{} is single, which advertises slices as nvidia.com/gpu",
                    e.source
                ),
                _ => "the device plugin advertises slices as nvidia.com/gpu (the single MIG strategy), or MIG is off".to_string(),
            };
            return (
                format!(
                    "the node advertises {WHOLE_GPU} x{whole} where {resource} was expected: {why}"
                ),
                format!(
                    "set the MIG strategy to mixed (ClusterPolicy spec.mig.strategy, and flags.migStrategy of device plugin config {plugin_name})"
                ),
            );
        }
        if !slices.is_empty() {
            return (
                format!(
                    "{MIG_CONFIG_LABEL}={} makes other slices: the node advertises {advertises}",
                    mig_config.unwrap_or("?")
                ),
                format!(
                    "use a MIG config that makes {} in {pool_hint}, or regenerate the NodeOverlays (`gpu-slicer karpenter overlays`)",
                    resource.trim_start_matches(MIG_PREFIX)
                ),
            );
        }
    } else if resource == WHOLE_GPU {
        let slices = node
            .allocatable
            .iter()
            .any(|(k, n)| k.starts_with(MIG_PREFIX) && *n > 0);
        if slices {
            return (
                format!(
                    "the node advertises its MIG slices under their own names ({advertises}) where {WHOLE_GPU} was expected: its device plugin runs the mixed strategy, and a pool for a rule with mig.strategy single needs single"
                ),
                format!(
                    "run the single strategy on this pool's nodes (flags.migStrategy: single in device plugin config {}; a ClusterPolicy spec.mig.strategy outranks it), or set mig.strategy: mixed on the policy rule",
                    plugin_config.unwrap_or("default")
                ),
            );
        }
    } else {
        if plugin_config.is_none() {
            return (
                format!(
                    "the node has no {DEVICE_PLUGIN_CONFIG_LABEL} label, so the device plugin runs its default config, which shares nothing (node advertises {advertises})"
                ),
                format!("add {DEVICE_PLUGIN_CONFIG_LABEL} to {pool_hint}"),
            );
        }
        if let Some(base) = resource.strip_suffix(".shared")
            && node.offers(base) > 0
        {
            return (
                format!(
                    "the node advertises {base} x{} instead of {resource}: the device plugin config it runs ({}) does not rename (renameByDefault: false)",
                    node.offers(base),
                    plugin_config.unwrap_or("?")
                ),
                format!(
                    "set renameByDefault: true in device plugin config {}",
                    plugin_config.unwrap_or("?")
                ),
            );
        }
    }
    (
        format!("the node advertises {advertises}, not {resource}"),
        format!(
            "correct the node's {MIG_CONFIG_LABEL} / {DEVICE_PLUGIN_CONFIG_LABEL} labels in {pool_hint}, or the resource name the pods ask for"
        ),
    )
}

// ---- NodeOverlay matching ----

/// Labels of an instance type that overlays may select on but doctor cannot evaluate: assumed to match.
fn instance_type_label(key: &str) -> bool {
    key.starts_with("karpenter.k8s.aws/")
        || key.starts_with("topology.kubernetes.io/")
        || matches!(
            key,
            "kubernetes.io/arch" | "kubernetes.io/os" | "karpenter.sh/capacity-type"
        )
}

/// Whether a requirement admits a label value (`None`: the label is absent).
fn admits(r: &Requirement, value: Option<&str>) -> bool {
    labels::admits(&r.operator, &r.values, value)
}

/// What an overlay can match: per NodePool, the instance types (`None`: any the pool may launch).
type Targets = BTreeMap<String, Option<BTreeSet<String>>>;

/// The NodePools and instance types `overlay` can apply to. Overlay requirements see only
/// `karpenter.sh/nodepool`, the NodePool's template labels and the instance type's labels
/// (DESIGN.md "Karpenter"); a key that is none of these never matches.
fn targets(overlay: &OverlayInfo, pools: &[NodePool]) -> Targets {
    let mut out = Targets::new();
    'pools: for pool in pools {
        let mut types: Option<BTreeSet<String>> = pool
            .instance_types()
            .map(|t| t.into_iter().map(String::from).collect());
        for r in &overlay.requirements {
            if r.key == INSTANCE_TYPE_LABEL {
                match &mut types {
                    Some(t) => t.retain(|it| admits(r, Some(it))),
                    // The pool does not pin its types: an `In` narrows to those named.
                    None if r.operator == "In" => {
                        types = Some(r.values.iter().cloned().collect());
                    }
                    None => {}
                }
                continue;
            }
            let value = if r.key == NODEPOOL_LABEL {
                Some(pool.name.as_str())
            } else if let Some(v) = pool.template_labels.get(&r.key) {
                Some(v.as_str())
            } else if instance_type_label(&r.key) {
                continue;
            } else {
                None
            };
            if !admits(r, value) {
                continue 'pools;
            }
        }
        if types.as_ref().is_some_and(BTreeSet::is_empty) {
            continue;
        }
        out.insert(pool.name.clone(), types);
    }
    out
}

/// Whether two overlays' targets share a NodePool and instance type.
fn overlap(a: &Targets, b: &Targets) -> Option<(String, Option<String>)> {
    for (pool, ta) in a {
        let Some(tb) = b.get(pool) else { continue };
        match (ta, tb) {
            (Some(x), Some(y)) => {
                if let Some(t) = x.intersection(y).next() {
                    return Some((pool.clone(), Some(t.clone())));
                }
            }
            (Some(x), None) | (None, Some(x)) => {
                return Some((pool.clone(), x.iter().next().cloned()));
            }
            (None, None) => return Some((pool.clone(), None)),
        }
    }
    None
}

fn karpenter_parts<'a>(
    s: &'a ClusterSnapshot,
    check: &'static str,
) -> Result<(&'a [NodePool], &'a [OverlayInfo]), Vec<Finding>> {
    let pools = match &s.node_pools {
        super::snapshot::Read::Found(p) => p,
        other => {
            return Err(skipped(
                check,
                KARPENTER_CRDS,
                other.why_not().unwrap_or(""),
            ));
        }
    };
    let overlays = match &s.node_overlays {
        super::snapshot::Read::Found(o) => o,
        other => {
            return Err(skipped(
                check,
                "CustomResourceDefinition/nodeoverlays.karpenter.sh",
                other.why_not().unwrap_or(""),
            ));
        }
    };
    Ok((pools, overlays))
}

/// Levenshtein distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

// ---- overlay-matches-nothing ----

/// NodeOverlays that can apply to no NodePool / instance type: Karpenter still reports them Ready.
pub fn overlay_matches_nothing(s: &ClusterSnapshot) -> Vec<Finding> {
    let (pools, overlays) = match karpenter_parts(s, OVERLAY_MATCHES_NOTHING) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let mut out = Vec::new();
    for o in overlays {
        if !targets(o, pools).is_empty() {
            continue;
        }
        let (why, fix) = why_no_match(o, pools);
        out.push(finding(
            OVERLAY_MATCHES_NOTHING,
            Severity::Warning,
            format!("NodeOverlay/{}", o.name),
            format!(
                "matches no NodePool and instance type, so its capacity applies nowhere (Karpenter still reports it Ready): {why}"
            ),
            fix,
        ));
    }
    out
}

fn why_no_match(o: &OverlayInfo, pools: &[NodePool]) -> (String, String) {
    let mut names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    for r in &o.requirements {
        if r.key == NODEPOOL_LABEL && r.operator == "In" {
            let missing: Vec<&String> = r
                .values
                .iter()
                .filter(|v| !names.contains(&v.as_str()))
                .collect();
            if missing.len() == r.values.len() {
                let guess = missing
                    .first()
                    .and_then(|m| closest(m, names.iter().copied()));
                return (
                    format!(
                        "{NODEPOOL_LABEL} In [{}] names no NodePool (NodePools: {})",
                        list(&r.values),
                        list(&names)
                    ),
                    match guess {
                        Some(g) => format!("use the NodePool name {g} (did you mean it?)"),
                        None => format!("use one of the NodePool names: {}", list(&names)),
                    },
                );
            }
        }
    }
    for r in &o.requirements {
        if r.key != NODEPOOL_LABEL
            && r.key != INSTANCE_TYPE_LABEL
            && !instance_type_label(&r.key)
            && !pools.iter().any(|p| p.template_labels.contains_key(&r.key))
        {
            return (
                format!(
                    "requirement key {} is neither {NODEPOOL_LABEL}, a NodePool template label, nor an instance-type label (overlays do not see a NodePool's spec.requirements)",
                    r.key
                ),
                format!(
                    "select on {NODEPOOL_LABEL} and {INSTANCE_TYPE_LABEL} instead of {}",
                    r.key
                ),
            );
        }
    }
    if let Some(r) = o
        .requirements
        .iter()
        .find(|r| r.key == INSTANCE_TYPE_LABEL && r.operator == "In")
    {
        let named: Vec<&NodePool> = pools
            .iter()
            .filter(|p| {
                o.requirements
                    .iter()
                    .filter(|q| q.key == NODEPOOL_LABEL)
                    .all(|q| admits(q, Some(&p.name)))
            })
            .collect();
        let allowed: BTreeSet<&str> = named
            .iter()
            .filter_map(|p| p.instance_types())
            .flatten()
            .collect();
        return (
            format!(
                "{INSTANCE_TYPE_LABEL} In [{}], but the NodePool(s) it selects ({}) allow only {}",
                list(&r.values),
                list(named.iter().map(|p| p.name.as_str())),
                list(&allowed)
            ),
            format!(
                "use an instance type the NodePool allows: {}",
                list(&allowed)
            ),
        );
    }
    (
        "its requirements admit no NodePool's template labels".into(),
        format!(
            "select on {NODEPOOL_LABEL} and {INSTANCE_TYPE_LABEL}; regenerate with `gpu-slicer karpenter overlays`"
        ),
    )
}

// ---- overlay-weight-conflict ----

/// Two overlays that can match the same NodePool and instance type, set the same capacity key and
/// share a weight: Karpenter marks them conflicting and applies neither.
pub fn overlay_weight_conflict(s: &ClusterSnapshot) -> Vec<Finding> {
    let (pools, overlays) = match karpenter_parts(s, OVERLAY_WEIGHT_CONFLICT) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let all: Vec<(&OverlayInfo, Targets)> =
        overlays.iter().map(|o| (o, targets(o, pools))).collect();
    let mut by_weight: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, (o, _)) in all.iter().enumerate() {
        by_weight.entry(o.weight).or_default().push(i);
    }
    let mut out = Vec::new();
    for (weight, idx) in by_weight {
        for (n, &i) in idx.iter().enumerate() {
            for &j in &idx[n + 1..] {
                let ((a, ta), (b, tb)) = (&all[i], &all[j]);
                let keys: Vec<&String> = a
                    .capacity
                    .keys()
                    .filter(|k| b.capacity.contains_key(*k))
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                let Some((pool, it)) = overlap(ta, tb) else {
                    continue;
                };
                let at = match it {
                    Some(t) => format!("NodePool {pool}, instance type {t}"),
                    None => format!("NodePool {pool}"),
                };
                out.push(finding(
                    OVERLAY_WEIGHT_CONFLICT,
                    Severity::Error,
                    format!("NodeOverlay/{}", a.name),
                    format!(
                        "NodeOverlay {} and NodeOverlay {} both have weight {weight}, both set {} and can both match {at}: Karpenter drops both",
                        a.name,
                        b.name,
                        list(&keys)
                    ),
                    "give them distinct weights (generated overlays use 1000-9999; regenerate with `gpu-slicer karpenter overlays`), or delete one",
                ));
            }
        }
    }
    out
}

// ---- overlay-capacity-drift ----

/// Initialized nodes whose advertised resources differ from what the overlay for their NodePool and
/// instance type promises: Karpenter then launches too few nodes (promise too high) or too many.
pub fn overlay_capacity_drift(s: &ClusterSnapshot) -> Vec<Finding> {
    let (pools, overlays) = match karpenter_parts(s, OVERLAY_CAPACITY_DRIFT) {
        Ok(p) => p,
        Err(skip) => return skip,
    };
    let targets: Vec<(&OverlayInfo, Targets)> =
        overlays.iter().map(|o| (o, targets(o, pools))).collect();
    // (overlay, pool, instance type, resource, promised, advertised) -> nodes
    type Drift = (String, String, String, String, u64, u64);
    let mut drift: BTreeMap<Drift, Vec<String>> = BTreeMap::new();
    for node in &s.nodes {
        if node.label(INITIALIZED_LABEL) != Some("true") {
            continue;
        }
        let (Some(pool), Some(it)) = (node.label(NODEPOOL_LABEL), node.label(INSTANCE_TYPE_LABEL))
        else {
            continue;
        };
        // Per capacity key the highest weight wins (the NodeOverlay CRD's `weight`).
        let mut promised: BTreeMap<&str, (i64, &str, u64)> = BTreeMap::new();
        for (o, t) in &targets {
            let applies = t
                .get(pool)
                .is_some_and(|types| types.as_ref().is_none_or(|ts| ts.contains(it)));
            if !applies {
                continue;
            }
            for (k, v) in &o.capacity {
                let e = promised.entry(k).or_insert((o.weight, &o.name, *v));
                if o.weight > e.0 {
                    *e = (o.weight, &o.name, *v);
                }
            }
        }
        for (key, (_, overlay, want)) in promised {
            let have = node.offers(key);
            if have != want {
                drift
                    .entry((
                        overlay.to_string(),
                        pool.to_string(),
                        it.to_string(),
                        key.to_string(),
                        want,
                        have,
                    ))
                    .or_default()
                    .push(node.name.clone());
            }
        }
    }
    drift
        .into_iter()
        .map(|((overlay, pool, it, key, want, have), nodes)| {
            let effect = if want > have {
                "Karpenter counts on more than there is and launches too few nodes"
            } else {
                "Karpenter counts on less than there is and launches too many nodes"
            };
            finding(
                OVERLAY_CAPACITY_DRIFT,
                Severity::Error,
                format!("NodeOverlay/{overlay}"),
                format!(
                    "promises {key}: {want} per {it} node of NodePool {pool}, but {} initialized node(s) advertise {have} ({}): {effect}",
                    nodes.len(),
                    some_of(&nodes)
                ),
                format!(
                    "regenerate the overlays (`gpu-slicer karpenter overlays --policy ... --nodepools ... --gpu-operator ...`) if the node is right, or fix the node's MIG / device plugin config ({MIG_CONFIG_LABEL}, {DEVICE_PLUGIN_CONFIG_LABEL}) if the overlay is"
                ),
            )
        })
        .collect()
}

// ---- pod-slice-unschedulable ----

/// Whether a pod's node selector and tolerations let it onto nodes of `pool`.
fn pool_admits(pool: &NodePool, pod: &PodInfo) -> Result<(), String> {
    for (k, v) in &pod.node_selector {
        let ok = if k == NODEPOOL_LABEL {
            v == &pool.name
        } else if let Some(have) = pool.template_labels.get(k) {
            have == v
        } else if let Some(r) = pool.requirements.iter().find(|r| &r.key == k) {
            admits(r, Some(v))
        } else {
            true // a label Karpenter may still satisfy (instance type labels): not judged here
        };
        if !ok {
            return Err(format!("nodeSelector {k}={v}"));
        }
    }
    for taint in &pool.taints {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        let need = taint.toleration();
        if !pod.tolerations.iter().any(|t| t.covers(&need)) {
            return Err(format!(
                "taint {}{}:{} not tolerated",
                taint.key,
                taint
                    .value
                    .as_deref()
                    .filter(|v| !v.is_empty())
                    .map_or(String::new(), |v| format!("={v}")),
                taint.effect
            ));
        }
    }
    Ok(())
}

/// Pending pods asking for a MIG or shared resource that nothing can offer: no node advertises it and
/// no overlay gives it to a NodePool the pod's selectors and tolerations admit.
pub fn pod_slice_unschedulable(s: &ClusterSnapshot) -> Vec<Finding> {
    let shared: BTreeSet<&str> = s
        .policy
        .as_ref()
        .map(|p| {
            p.policy
                .shared_resources
                .iter()
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default();
    let is_slice =
        |r: &str| r.starts_with(MIG_PREFIX) || r.ends_with(".shared") || shared.contains(r);
    let pools: &[NodePool] = s.node_pools.found().map_or(&[], Vec::as_slice);
    let overlays: &[OverlayInfo] = s.node_overlays.found().map_or(&[], Vec::as_slice);
    let targets: Vec<(&OverlayInfo, Targets)> =
        overlays.iter().map(|o| (o, targets(o, pools))).collect();
    let advertised: BTreeSet<&str> = s
        .nodes
        .iter()
        .flat_map(|n| {
            n.allocatable
                .iter()
                .filter(|(_, c)| **c > 0)
                .map(|(k, _)| k.as_str())
        })
        .collect();
    let karpenter = s.node_pools.why_not().map_or(String::new(), |why| {
        format!("; Karpenter's NodePools could not be read ({why}), so only existing nodes count")
    });
    // (group, resource) -> (pods, message, fix)
    let mut groups: BTreeMap<(String, String), (Vec<&PodInfo>, String, String)> = BTreeMap::new();
    for pod in &s.pods {
        if pod.phase != "Pending" || pod.node_name.is_some() {
            continue;
        }
        for resource in pod.gpu_requests.keys().filter(|r| is_slice(r)) {
            if advertised.contains(resource.as_str()) {
                continue;
            }
            let mut admitted = Vec::new();
            let mut refused = Vec::new();
            for pool in pools {
                match pool_admits(pool, pod) {
                    Ok(()) => admitted.push(pool),
                    Err(why) => refused.push(format!("{} ({why})", pool.name)),
                }
            }
            let offered = admitted.iter().any(|pool| {
                targets.iter().any(|(o, t)| {
                    t.contains_key(&pool.name) && o.capacity.get(resource).is_some_and(|n| *n > 0)
                })
            });
            if offered {
                continue;
            }
            let key = (pod.group(), resource.clone());
            if let Some(g) = groups.get_mut(&key) {
                g.0.push(pod);
                continue;
            }
            let (message, fix) = if admitted.is_empty() {
                (
                    format!(
                        "asks for {resource}; no node advertises it and no NodePool admits the pod (NodePools: {}){karpenter}",
                        list(&refused)
                    ),
                    "route the pod to the NodePool that offers the slice (nodeSelector karpenter.sh/nodepool, its template labels) and tolerate its taints: a policy rule with nodePool does this for new pods; check the pod's namespace rule".to_string(),
                )
            } else {
                let names: Vec<&str> = admitted.iter().map(|p| p.name.as_str()).collect();
                (
                    format!(
                        "asks for {resource}; no node advertises it and no NodeOverlay gives it to the NodePool(s) the pod can use ({}){karpenter}",
                        list(&names)
                    ),
                    format!(
                        "apply NodeOverlays giving {resource} to NodePool {} (`gpu-slicer karpenter overlays --policy ... --nodepools ...`, feature gate NodeOverlay on), or give the NodePool the {MIG_CONFIG_LABEL} / {DEVICE_PLUGIN_CONFIG_LABEL} template label that makes it",
                        names[0]
                    ),
                )
            };
            groups.insert(key, (vec![pod], message, fix));
        }
    }
    groups
        .into_iter()
        .map(|((group, _), (pods, message, fix))| {
            let more = if pods.len() > 1 {
                format!(" ({} pending pods of {group})", pods.len())
            } else {
                String::new()
            };
            finding(
                POD_SLICE_UNSCHEDULABLE,
                Severity::Error,
                pods[0].object(),
                format!("Pending: {message}{more}"),
                fix,
            )
        })
        .collect()
}

// ---- pod-not-rewritten ----

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    labels::selector_admits(
        sel.match_labels.iter().flatten(),
        sel.match_expressions.iter().flatten().map(|e| {
            (
                e.key.as_str(),
                e.operator.as_str(),
                e.values.as_deref().unwrap_or_default(),
            )
        }),
        labels,
    )
}

/// Pods still asking for whole GPUs, without `gpu-slicer.io/rewritten`, in namespaces whose rule
/// slices: admitted while the webhook was down (`failurePolicy: Ignore`) or bypassed.
pub fn pod_not_rewritten(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(no) => return skipped(POD_NOT_REWRITTEN, POLICY_OBJECT, &no.why()),
    };
    let webhooks = gpu_slicer_webhooks(s);
    let mut groups: BTreeMap<String, (Vec<&PodInfo>, String)> = BTreeMap::new();
    let empty = BTreeMap::new();
    for pod in &s.pods {
        if matches!(pod.phase.as_str(), "Succeeded" | "Failed")
            || pod.rewritten
            || !pod.gpu_requests.contains_key(WHOLE_GPU)
        {
            continue;
        }
        let labels = s.namespaces.get(&pod.namespace).unwrap_or(&empty);
        let Some(rule) = loaded.policy.rule_for(&pod.namespace, labels) else {
            continue;
        };
        // Under `backend: dra` every GPU action turns nvidia.com/gpu into a claim.
        let slices = matches!(rule.action, Action::Mig | Action::Timeslice | Action::Mps)
            || (rule.backend == gpu_slicer_core::policy::Backend::Dra
                && rule.action == Action::Exclusive);
        // A rule whose resource is nvidia.com/gpu itself (a shared resource without rename, MIG's
        // single strategy) keeps the request: such pods are indistinguishable here.
        let keeps_whole = rule.shared_resource.as_deref() == Some(WHOLE_GPU)
            || (rule.action == Action::Mig
                && rule
                    .mig_profile
                    .as_deref()
                    .is_some_and(|p| rule.mig_resource(p) == WHOLE_GPU));
        if !slices || keeps_whole {
            continue;
        }
        if pod.opted_out && rule.allow_opt_out {
            continue;
        }
        let mut ns_labels = labels.clone();
        ns_labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| pod.namespace.clone());
        let excluded = !webhooks.is_empty()
            && webhooks.iter().all(|(_, w)| {
                w.namespace_selector
                    .as_ref()
                    .is_some_and(|sel| !selector_matches(sel, &ns_labels))
            });
        let note = if excluded {
            format!(
                "; namespace {} is excluded by the webhook's namespaceSelector, so the webhook never sees its pods",
                pod.namespace
            )
        } else {
            String::new()
        };
        let detail = format!(
            "rule {} ({}) covers namespace {}{note}",
            rule.name,
            rule.action.as_str(),
            pod.namespace
        );
        groups
            .entry(pod.group())
            .or_insert_with(|| (Vec::new(), detail))
            .0
            .push(pod);
    }
    groups
        .into_iter()
        .map(|(group, (pods, detail))| {
            let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            let restart = match &pods[0].owner {
                Some((kind, name)) if kind == "ReplicaSet" => format!(
                    "`kubectl -n {} rollout restart deployment/{}`",
                    pods[0].namespace,
                    name.rsplit_once('-').map_or(name.as_str(), |(d, _)| d)
                ),
                Some((kind, name)) => format!(
                    "restart {} {}/{name} (its new pods pass through the webhook)",
                    kind, pods[0].namespace
                ),
                None => "delete and recreate the pod".into(),
            };
            finding(
                POD_NOT_REWRITTEN,
                Severity::Warning,
                pods[0].object(),
                format!(
                    "{} pod(s) of {group} ({}) ask for {WHOLE_GPU} and carry no gpu-slicer.io/rewritten annotation, but {detail}: admitted while the webhook was down or bypassed, they hold whole GPUs",
                    pods.len(),
                    some_of(&names)
                ),
                format!(
                    "{restart}; keep the webhook's failurePolicy Fail and check its health (`kubectl -n gpu-slicer get pods`, /readyz)"
                ),
            )
        })
        .collect()
}

// ---- mig-config-failed ----

/// How to read the mig-manager log of one node: the pod of the GPU Operator's DaemonSet on that node
/// (`app=nvidia-mig-manager`, assets/state-mig-manager/0600_daemonset.yaml), not `logs
/// ds/nvidia-mig-manager`, which shows whichever pod kubectl picks.
fn mig_manager_logs(node: &str) -> String {
    format!(
        "read the node's mig-manager log: `kubectl -n {ns} logs $(kubectl -n {ns} get pod -l app=nvidia-mig-manager --field-selector spec.nodeName={node} -o name)`",
        ns = super::read::GPU_OPERATOR_NAMESPACE
    )
}

/// Nodes where mig-manager failed, has been pending too long, or applied another layout than their
/// NodePool's template asks for.
pub fn mig_config_failed(s: &ClusterSnapshot, o: &Options) -> Vec<Finding> {
    let mut out = Vec::new();
    for node in &s.nodes {
        let logs = mig_manager_logs(&node.name);
        let config = node.label(MIG_CONFIG_LABEL);
        let object = format!("Node/{}", node.name);
        match node.label(MIG_CONFIG_STATE_LABEL) {
            Some("failed") => out.push(finding(
                MIG_CONFIG_FAILED,
                Severity::Error,
                &object,
                format!(
                    "{MIG_CONFIG_STATE_LABEL}=failed: mig-manager could not apply {MIG_CONFIG_LABEL}={}; the node advertises {}",
                    config.unwrap_or("?"),
                    node.advertised()
                ),
                format!(
                    "{logs}; check that the config exists for this GPU, then relabel the node (`kubectl label node {} {MIG_CONFIG_LABEL}=all-disabled --overwrite`, then back) or replace it",
                    node.name
                ),
            )),
            Some("pending") if o.older_than_stuck(node.created) => out.push(finding(
                MIG_CONFIG_FAILED,
                Severity::Error,
                &object,
                format!(
                    "{MIG_CONFIG_STATE_LABEL}=pending on a node created {} ago: mig-manager has not applied {MIG_CONFIG_LABEL}={}",
                    node.created.map_or("long".into(), |t| o.age(t)),
                    config.unwrap_or("?")
                ),
                format!("{logs}; relabel the node to another config and back, or replace it"),
            )),
            _ => {}
        }
        let Some(pool) = node.label(NODEPOOL_LABEL).and_then(|p| s.pool(p)) else {
            continue;
        };
        let want = pool
            .template_labels
            .get(MIG_CONFIG_LABEL)
            .map(String::as_str);
        if want.is_some() && want != config {
            out.push(finding(
                MIG_CONFIG_FAILED,
                Severity::Error,
                &object,
                format!(
                    "{MIG_CONFIG_LABEL}={} on the node, but NodePool {}'s template says {}: the node's slices are not the ones pods are routed here for",
                    config.unwrap_or("(unset)"),
                    pool.name,
                    want.unwrap_or("")
                ),
                format!(
                    "relabel: `kubectl label node {} {MIG_CONFIG_LABEL}={} --overwrite`, or replace the node",
                    node.name,
                    want.unwrap_or("")
                ),
            ));
        }
    }
    out
}

// ---- webhook-not-configured ----

/// The webhooks that call gpu-slicer, with their configuration's name.
fn gpu_slicer_webhooks(s: &ClusterSnapshot) -> Vec<(&str, &MutatingWebhook)> {
    let Some(configs) = s.webhooks.found() else {
        return Vec::new();
    };
    configs
        .iter()
        .flat_map(|c| {
            let name = c.metadata.name.as_deref().unwrap_or("");
            c.webhooks
                .iter()
                .flatten()
                .filter(|w| {
                    w.name.ends_with("gpu-slicer.io")
                        || w.client_config
                            .service
                            .as_ref()
                            .is_some_and(|svc| svc.name == "gpu-slicer")
                        || w.client_config
                            .url
                            .as_deref()
                            .is_some_and(|u| u.contains("gpu-slicer"))
                })
                .map(move |w| (name, w))
        })
        .collect()
}

/// What the shipped registration has: the namespaces it excludes and its matchConditions' names.
fn shipped_webhook() -> (Vec<String>, Vec<String>) {
    let doc: serde_json::Value = serde_norway::from_str(SHIPPED_WEBHOOK).unwrap_or_default();
    let w = &doc["webhooks"][0];
    let excluded = w["namespaceSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .flat_map(|e| e["values"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let conditions = w["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    (excluded, conditions)
}

/// No registration calls gpu-slicer, or it lacks what the shipped one has (`matchConditions`, the
/// namespace exclusions, pod CREATE), or it fails open while the policy denies.
pub fn webhook_not_configured(s: &ClusterSnapshot) -> Vec<Finding> {
    const FIX: &str = "apply manifests/webhook (`kubectl apply -k manifests/webhook/overlays/cert-manager`, or plain-certs)";
    if let Some(why) = s.webhooks.why_not() {
        return skipped(
            WEBHOOK_NOT_CONFIGURED,
            "MutatingWebhookConfiguration/gpu-slicer",
            why,
        );
    }
    let hooks = gpu_slicer_webhooks(s);
    if hooks.is_empty() {
        return vec![finding(
            WEBHOOK_NOT_CONFIGURED,
            Severity::Error,
            "MutatingWebhookConfiguration/gpu-slicer",
            "no MutatingWebhookConfiguration calls gpu-slicer (service gpu-slicer or a webhook named *.gpu-slicer.io): GPU pods are admitted unchanged",
            FIX,
        )];
    }
    let (excluded, conditions) = shipped_webhook();
    let denies = s.policy.as_ref().ok().is_some_and(|p| {
        p.policy.default_action == DefaultAction::Deny
            || p.policy.rules.iter().any(|r| r.action == Action::Deny)
    });
    let mut out = Vec::new();
    for (config, w) in hooks {
        let object = format!("MutatingWebhookConfiguration/{config}");
        let mut problem = |message: String| {
            out.push(finding(
                WEBHOOK_NOT_CONFIGURED,
                Severity::Error,
                &object,
                format!("webhook {}: {message}", w.name),
                FIX,
            ));
        };
        let pods_create = w.rules.iter().flatten().any(|r| {
            let has =
                |v: &Option<Vec<String>>, x: &str| v.iter().flatten().any(|s| s == x || s == "*");
            has(&r.operations, "CREATE") && has(&r.resources, "pods") && has(&r.api_groups, "")
        });
        if !pods_create {
            problem("its rules do not cover CREATE of pods, so it never sees new pods".into());
        }
        let have: Vec<&str> = w
            .match_conditions
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        let missing: Vec<&String> = conditions
            .iter()
            .filter(|c| !have.contains(&c.as_str()))
            .collect();
        if !missing.is_empty() {
            problem(format!(
                "lacks the matchConditions of the shipped manifest ({}): every pod creation calls the webhook, so an outage blocks non-GPU pods too",
                list(&missing)
            ));
        }
        let not_excluded: Vec<&String> = excluded
            .iter()
            .filter(|ns| {
                let labels =
                    BTreeMap::from([("kubernetes.io/metadata.name".to_string(), ns.to_string())]);
                w.namespace_selector
                    .as_ref()
                    .is_none_or(|sel| selector_matches(sel, &labels))
            })
            .collect();
        if !not_excluded.is_empty() {
            problem(format!(
                "its namespaceSelector does not exclude {} as the shipped manifest does: the webhook's own pods (and kube-system's) then depend on it",
                list(&not_excluded)
            ));
        }
        if w.failure_policy.as_deref() == Some("Ignore") && denies {
            problem(
                "failurePolicy is Ignore while the policy denies GPU pods: during an outage denied pods are admitted, unchanged".into(),
            );
        }
    }
    out
}

// ---- policy-cluster-mismatch ----

/// `policy check` against the live NodePools and GPU Operator configs; also says which policy was
/// used.
pub fn policy_cluster_mismatch(s: &ClusterSnapshot) -> Vec<Finding> {
    let loaded = match &s.policy {
        Ok(p) => p,
        Err(NoPolicy::Invalid { object, message }) => {
            return vec![finding(
                POLICY_CLUSTER_MISMATCH,
                Severity::Error,
                object,
                format!("the webhook's policy does not load: {message}"),
                "correct the policy (`gpu-slicer policy check FILE`) and re-apply manifests/policy; until then the webhook keeps its last good policy, or cannot start",
            )];
        }
        Err(no) => return skipped(POLICY_CLUSTER_MISMATCH, POLICY_OBJECT, &no.why()),
    };
    let mut out = vec![finding(
        POLICY_CLUSTER_MISMATCH,
        Severity::Info,
        &loaded.object,
        format!(
            "policy read from {} ({} rules)",
            loaded.source,
            loaded.policy.rules.len()
        ),
        "",
    )];
    let ops = s.gpu_operator.found();
    if let Some(why) = s.gpu_operator.why_not() {
        out.extend(skipped(
            POLICY_CLUSTER_MISMATCH,
            "CustomResourceDefinition/clusterpolicies.nvidia.com",
            &format!(
                "{why} (MIG configs checked against the GPU Operator's defaults; device plugin configs not checked)"
            ),
        ));
    }
    let pools = match &s.node_pools {
        super::snapshot::Read::Found(p) => p,
        other => {
            out.extend(skipped(
                POLICY_CLUSTER_MISMATCH,
                KARPENTER_CRDS,
                &format!(
                    "{} (the policy is not checked against NodePools)",
                    other.why_not().unwrap_or("")
                ),
            ));
            return out;
        }
    };
    let index = NodePoolIndex::new(pools.iter().cloned());
    // DRA rules' device classes are checked against the cluster's when it serves DRA.
    let classes: Option<std::collections::BTreeSet<String>> = s
        .device_classes
        .found()
        .map(|names| names.iter().cloned().collect());
    let report = check::check_with_device_classes(
        &loaded.policy,
        &loaded.source,
        Some(&index),
        ops.map(|o| &o.configs),
        classes.as_ref(),
    );
    for e in report.errors {
        out.push(finding(
            POLICY_CLUSTER_MISMATCH,
            Severity::Error,
            &loaded.object,
            e,
            "correct the rule or the NodePool / GPU Operator config the message names; the same check runs offline as `gpu-slicer policy check FILE --nodepools DIR --gpu-operator DIR`",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::snapshot::{GpuOperator, LoadedPolicy, NodeClaimInfo, Read};
    use gpu_slicer_core::gpu_operator::GpuOperatorConfigs;
    use gpu_slicer_core::policy::Policy;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    fn repo(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    const NOW: &str = "2026-12-04T03:00:00Z";

    fn options() -> Options {
        Options {
            now: NOW.parse().unwrap(),
            stuck_after: Options::DEFAULT_STUCK_AFTER,
        }
    }

    /// `minutes` before [`NOW`].
    fn ago(minutes: i64) -> String {
        let now: Timestamp = NOW.parse().unwrap();
        Timestamp::from_second(now.as_second() - minutes * 60)
            .unwrap()
            .to_string()
    }

    /// An initialized gpu-mig node on p5.48xlarge with the all-balanced layout applied.
    fn mig_node(name: &str) -> Value {
        json!({
            "metadata": {"name": name, "creationTimestamp": ago(120), "labels": {
                "karpenter.sh/nodepool": "gpu-mig", "karpenter.sh/initialized": "true",
                "node.kubernetes.io/instance-type": "p5.48xlarge",
                "nvidia.com/mig.config": "all-balanced", "nvidia.com/mig.config.state": "success"}},
            "status": {"allocatable": {"cpu": "191450m", "memory": "2002Gi", "nvidia.com/gpu": "0",
                "nvidia.com/mig-1g.10gb": "16", "nvidia.com/mig-2g.20gb": "8", "nvidia.com/mig-3g.40gb": "8"}}
        })
    }

    fn node(v: Value) -> NodeInfo {
        NodeInfo::from_node(serde_json::from_value::<Node>(v).unwrap())
    }

    fn pod(v: Value) -> PodInfo {
        PodInfo::from_pod(serde_json::from_value::<Pod>(v).unwrap())
    }

    /// A pod of a Deployment's ReplicaSet asking for `resources`.
    fn gpu_pod(ns: &str, name: &str, phase: &str, resources: Value, extra: Value) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": ns,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llm-7d9c8b6f5", "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "main", "resources": {"limits": resources.clone(), "requests": resources}}]},
            "status": {"phase": phase}
        });
        for (k, v) in extra.as_object().unwrap() {
            if k == "annotations" {
                p["metadata"]["annotations"] = v.clone();
            } else {
                p["spec"][k] = v.clone();
            }
        }
        p
    }

    fn routed() -> Value {
        json!({"nodeSelector": {"karpenter.sh/nodepool": "gpu-mig", "nvidia.com/mig.config": "all-balanced"},
               "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
               "annotations": {"gpu-slicer.io/rewritten": "main: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb 1 (rule inference-mig)"}})
    }

    fn claim(name: &str, node: &str, initialized: Value) -> NodeClaimInfo {
        NodeClaimInfo::from_value(&json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name, "creationTimestamp": ago(60), "labels": {
                "karpenter.sh/nodepool": "gpu-mig", "node.kubernetes.io/instance-type": "p5.48xlarge"}},
            "status": {"nodeName": node, "conditions": [
                {"type": "Launched", "status": "True", "reason": "Launched", "message": "", "lastTransitionTime": ago(60)},
                {"type": "Registered", "status": "True", "reason": "Registered", "message": "", "lastTransitionTime": ago(58)},
                initialized]}
        }))
    }

    fn initialized() -> Value {
        json!({"type": "Initialized", "status": "True", "reason": "Initialized", "message": "", "lastTransitionTime": ago(55)})
    }

    fn not_registered(resource: &str, minutes: i64) -> Value {
        json!({"type": "Initialized", "status": "Unknown", "reason": "ResourceNotRegistered",
               "message": format!("Resource \"{resource}\" was requested but not registered"),
               "lastTransitionTime": ago(minutes)})
    }

    fn shipped_overlays() -> Vec<OverlayInfo> {
        let text = std::fs::read_to_string(repo("manifests/karpenter/nodeoverlays.yaml")).unwrap();
        gpu_slicer_core::yaml::documents(&text)
            .unwrap()
            .iter()
            .map(OverlayInfo::from_value)
            .collect()
    }

    fn shipped_webhook_config()
    -> k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration {
        let v: Value = serde_norway::from_str(SHIPPED_WEBHOOK).unwrap();
        serde_json::from_value(v).unwrap()
    }

    /// A healthy cluster: the shipped NodePools, overlays, GPU Operator configs, webhook and policy,
    /// one initialized MIG node, a running sliced pod and a pending one the node can take.
    fn healthy() -> ClusterSnapshot {
        let pools = crate::input::nodepools(&repo("manifests/karpenter")).unwrap();
        ClusterSnapshot {
            nodes: vec![node(mig_node("ip-10-0-1-5.ec2.internal"))],
            pods: vec![
                pod(gpu_pod(
                    "ml-inference",
                    "llm-7d9c8b6f5-abcde",
                    "Running",
                    json!({"nvidia.com/mig-1g.10gb": "1"}),
                    routed(),
                )),
                pod(gpu_pod(
                    "ml-inference",
                    "llm-7d9c8b6f5-fghij",
                    "Pending",
                    json!({"nvidia.com/mig-1g.10gb": "1"}),
                    routed(),
                )),
            ],
            namespaces: [("ml-inference", json!({})), ("sandbox", json!({}))]
                .into_iter()
                .map(|(n, _)| {
                    (
                        n.to_string(),
                        BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_string(),
                            n.to_string(),
                        )]),
                    )
                })
                .collect(),
            node_pools: Read::Found(pools.iter().cloned().collect()),
            node_claims: Read::Found(vec![claim(
                "gpu-mig-x7k2p",
                "ip-10-0-1-5.ec2.internal",
                initialized(),
            )]),
            node_overlays: Read::Found(shipped_overlays()),
            webhooks: Read::Found(vec![shipped_webhook_config()]),
            policy: Ok(LoadedPolicy {
                policy: crate::policy_source::example(),
                source: "ConfigMap gpu-slicer/gpu-slicer-policy (key policy.yaml)".into(),
                object: "ConfigMap/gpu-slicer/gpu-slicer-policy".into(),
            }),
            gpu_operator: Read::Found(GpuOperator {
                cluster_policy: "cluster-policy".into(),
                configs: crate::input::gpu_operator_configs(&repo("manifests/gpu-operator"))
                    .unwrap(),
                device_plugin_known: true,
            }),
            device_classes: Read::Found(vec!["gpu.nvidia.com".into(), "mig.nvidia.com".into()]),
            resource_slices: Read::Found(Vec::new()),
            claim_templates: Read::Found(Vec::new()),
        }
    }

    fn problems(findings: &[Finding]) -> Vec<&Finding> {
        findings
            .iter()
            .filter(|f| f.severity != Severity::Info)
            .collect()
    }

    fn only<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
        let p = problems(findings);
        assert_eq!(p.len(), 1, "{findings:#?}");
        assert_eq!(p[0].check, check);
        p[0]
    }

    #[test]
    fn dra_rules_are_checked_against_the_clusters_device_classes_and_pods() {
        let mut s = healthy();
        let policy = Policy::parse(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: train-dra, namespaces: [train-dra], action: exclusive, backend: dra}\n",
            "p.yaml",
        )
        .unwrap();
        if let Ok(loaded) = &mut s.policy {
            loaded.policy = policy;
        }
        s.device_classes = Read::Found(vec!["mig.nvidia.com".into()]);
        s.pods.push(pod(gpu_pod(
            "train-dra",
            "trainer-0",
            "Pending",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        let findings = run_all(&s, &options());
        let mismatch = findings
            .iter()
            .find(|f| f.check == POLICY_CLUSTER_MISMATCH && f.severity == Severity::Error)
            .expect("the missing DeviceClass is reported");
        assert!(
            mismatch
                .message
                .contains("DeviceClass gpu.nvidia.com is not among"),
            "{mismatch:#?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| f.check == POD_NOT_REWRITTEN && f.object.contains("train-dra")),
            "{findings:#?}"
        );
    }

    #[test]
    fn a_healthy_cluster_is_silent_in_every_check() {
        let findings = run_all(&healthy(), &options());
        assert!(problems(&findings).is_empty(), "{findings:#?}");
        // The one info line says which policy was used.
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(
            findings[0]
                .message
                .contains("ConfigMap gpu-slicer/gpu-slicer-policy")
        );
        assert_eq!(findings[0].object, "ConfigMap/gpu-slicer/gpu-slicer-policy");
    }

    #[test]
    fn every_check_id_is_the_contracts() {
        assert_eq!(ALL.len(), 13);
        for id in ALL {
            assert!(
                id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{id}"
            );
        }
    }

    #[test]
    fn a_nodeclaim_stuck_on_an_unregistered_slice_names_the_resource_node_cause_and_delete() {
        let mut s = healthy();
        let mut n = mig_node("ip-10-0-1-9.ec2.internal");
        n["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("failed");
        n["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        n["status"]["allocatable"] = json!({"nvidia.com/gpu": "8"});
        s.nodes.push(node(n));
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 45),
        )]);
        let all = run_all(&s, &options());
        let f: Vec<_> = all
            .iter()
            .filter(|f| f.check == NODECLAIM_RESOURCE_NOT_REGISTERED)
            .collect();
        assert_eq!(f.len(), 1, "{all:#?}");
        let f = f[0];
        assert_eq!(f.severity, Severity::Error);
        assert_eq!(f.object, "NodeClaim/gpu-mig-q8w4z");
        for want in [
            "nvidia.com/mig-1g.10gb",
            "ip-10-0-1-9.ec2.internal",
            "mig.config.state=failed",
            "for 45m",
        ] {
            assert!(f.message.contains(want), "{want}: {}", f.message);
        }
        assert!(
            f.fix.contains("kubectl delete nodeclaim gpu-mig-q8w4z"),
            "{}",
            f.fix
        );
        assert!(
            f.fix.contains(
                "-l app=nvidia-mig-manager --field-selector spec.nodeName=ip-10-0-1-9.ec2.internal"
            ),
            "{}",
            f.fix
        );
    }

    #[test]
    fn a_nodeclaim_on_a_single_strategy_node_blames_the_strategy() {
        let mut s = healthy();
        let mut n = mig_node("ip-10-0-1-9.ec2.internal");
        n["status"]["allocatable"] = json!({"nvidia.com/gpu": "56"});
        s.nodes = vec![node(n)];
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 30),
        )]);
        let f = run_all(&s, &options());
        let f = f
            .iter()
            .find(|f| f.check == NODECLAIM_RESOURCE_NOT_REGISTERED)
            .unwrap();
        assert!(f.message.contains("single MIG strategy"), "{}", f.message);
        assert!(f.message.contains("nvidia.com/gpu x56"), "{}", f.message);
        assert!(f.fix.contains("mixed"), "{}", f.fix);
    }

    #[test]
    fn the_effective_mig_strategy_is_named_where_it_comes_from() {
        let mut s = healthy();
        let mut configs = GpuOperatorConfigs::from_documents([(
            "the cluster".to_string(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "device-plugin-config"},
                   "data": {"mig-single": "version: v1\nflags:\n  migStrategy: single\n"}}),
        )])
        .unwrap();
        configs.operator_mig_strategy = None;
        s.gpu_operator = Read::Found(GpuOperator {
            cluster_policy: "cluster-policy".into(),
            configs,
            device_plugin_known: true,
        });
        let mut n = mig_node("ip-10-0-1-9.ec2.internal");
        n["metadata"]["labels"]["nvidia.com/device-plugin.config"] = json!("mig-single");
        n["status"]["allocatable"] = json!({"nvidia.com/gpu": "56"});
        s.nodes = vec![node(n)];
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 30),
        )]);
        let f = nodeclaim_resource_not_registered(&s, &options());
        assert!(
            f[0].message
                .contains("flags.migStrategy of device plugin config mig-single is single"),
            "{}",
            f[0].message
        );
        // The other way round: a single-strategy pool's node that runs mixed.
        s.nodes = vec![node(mig_node("ip-10-0-1-9.ec2.internal"))];
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-9.ec2.internal",
            not_registered("nvidia.com/gpu", 30),
        )]);
        let f = nodeclaim_resource_not_registered(&s, &options());
        assert!(
            f[0].message.contains("runs the mixed strategy"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].fix.contains("flags.migStrategy: single"),
            "{}",
            f[0].fix
        );
    }

    #[test]
    fn pods_of_a_single_strategy_rule_keep_nvidia_com_gpu_and_are_not_reported() {
        let mut s = healthy();
        let policy = Policy::parse(
            "apiVersion: gpu-slicer.io/v1alpha1
kind: SlicingPolicy
spec:
  rules:
  - name: single-mig
    namespaces: [ml-inference]
    action: mig
    mig: {profile: 1g.10gb, strategy: single}
",
            "inline",
        )
        .unwrap();
        s.policy = Ok(LoadedPolicy {
            policy,
            source: "--policy inline".into(),
            object: "SlicingPolicy/inline".into(),
        });
        s.pods.push(pod(gpu_pod(
            "ml-inference",
            "x",
            "Running",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        assert!(pod_not_rewritten(&s).is_empty());
    }

    #[test]
    fn a_shared_resource_node_with_an_unknown_device_plugin_config_is_named() {
        let mut s = healthy();
        s.nodes = vec![node(json!({
            "metadata": {"name": "ip-10-0-2-7.ec2.internal", "labels": {
                "karpenter.sh/nodepool": "gpu-timeslice", "node.kubernetes.io/instance-type": "g6.xlarge",
                "nvidia.com/device-plugin.config": "timeslice-44"}},
            "status": {"allocatable": {"nvidia.com/gpu": "1"}}
        }))];
        s.node_claims = Read::Found(vec![claim(
            "gpu-timeslice-abc12",
            "ip-10-0-2-7.ec2.internal",
            not_registered("nvidia.com/gpu.shared", 30),
        )]);
        let f = nodeclaim_resource_not_registered(&s, &options());
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("device-plugin.config=timeslice-44 names no device plugin config"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn a_nodeclaim_waiting_less_than_stuck_after_is_not_reported() {
        let mut s = healthy();
        s.node_claims = Read::Found(vec![claim(
            "gpu-mig-q8w4z",
            "ip-10-0-1-5.ec2.internal",
            not_registered("nvidia.com/mig-1g.10gb", 3),
        )]);
        assert!(nodeclaim_resource_not_registered(&s, &options()).is_empty());
        let mut o = options();
        o.stuck_after = Duration::from_secs(60);
        assert_eq!(nodeclaim_resource_not_registered(&s, &o).len(), 1);
    }

    #[test]
    fn overlay_capacity_drift_gives_both_numbers_either_way() {
        let mut s = healthy();
        let mut n = mig_node("ip-10-0-1-6.ec2.internal");
        n["status"]["allocatable"]["nvidia.com/mig-1g.10gb"] = json!("56");
        s.nodes.push(node(n));
        let f = run_all(&s, &options());
        let f = only(&f, OVERLAY_CAPACITY_DRIFT);
        assert_eq!(f.object, "NodeOverlay/gpu-slicer-gpu-mig-p5.48xlarge");
        assert!(
            f.message.contains("nvidia.com/mig-1g.10gb: 16"),
            "{}",
            f.message
        );
        assert!(f.message.contains("advertise 56"), "{}", f.message);
        assert!(f.message.contains("too many"), "{}", f.message);
        assert!(f.fix.contains("gpu-slicer karpenter overlays"));
        // The other way: the node offers fewer than promised.
        s.nodes.pop();
        let mut n = mig_node("ip-10-0-1-7.ec2.internal");
        n["status"]["allocatable"]["nvidia.com/mig-3g.40gb"] = json!("4");
        s.nodes.push(node(n));
        let f = overlay_capacity_drift(&s);
        assert_eq!(f.len(), 1);
        assert!(f[0].message.contains("nvidia.com/mig-3g.40gb: 8 per p5.48xlarge node of NodePool gpu-mig, but 1 initialized node(s) advertise 4 (ip-10-0-1-7.ec2.internal)"), "{}", f[0].message);
        assert!(f[0].message.contains("too few"), "{}", f[0].message);
    }

    #[test]
    fn an_overlay_with_a_misspelt_nodepool_matches_nothing_and_says_which_was_meant() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        o[0].name = "gpu-mgi-p4de".into();
        o[0].requirements[0].values = vec!["gpu-mgi".into()];
        o[0].weight = 42;
        s.node_overlays = Read::Found(o);
        let f = run_all(&s, &options());
        let f = only(&f, OVERLAY_MATCHES_NOTHING);
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.object, "NodeOverlay/gpu-mgi-p4de");
        assert!(
            f.message.contains("[gpu-mgi] names no NodePool"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("gpu-mig"), "{}", f.fix);
    }

    #[test]
    fn an_overlay_on_an_instance_type_the_pool_does_not_allow_matches_nothing() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        o[0].requirements[1].values = vec!["p5e.48xlarge".into()];
        s.node_overlays = Read::Found(o);
        let f = overlay_matches_nothing(&s);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message
                .contains("allow only p4de.24xlarge, p5.48xlarge"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn an_overlay_selecting_on_a_nodepool_requirement_key_matches_nothing() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        // capacity-type is an instance-type label (may match); a key only in the NodePool's
        // spec.requirements is not visible to overlays.
        o[0].requirements.push(Requirement {
            key: "example.com/team".into(),
            operator: "In".into(),
            values: vec!["ml".into()],
        });
        o[1].requirements.push(Requirement {
            key: "karpenter.sh/capacity-type".into(),
            operator: "In".into(),
            values: vec!["on-demand".into()],
        });
        s.node_overlays = Read::Found(o);
        let f = overlay_matches_nothing(&s);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].object, "NodeOverlay/gpu-slicer-gpu-mig-p4de.24xlarge");
        assert!(
            f[0].message
                .contains("requirement key example.com/team is neither"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn two_same_weight_overlays_on_one_pool_and_type_conflict() {
        let mut s = healthy();
        let mut o = shipped_overlays();
        let mut copy = o[1].clone();
        copy.name = "hand-written-p5".into();
        copy.capacity = BTreeMap::from([("nvidia.com/mig-1g.10gb".to_string(), 56)]);
        o.push(copy);
        s.node_overlays = Read::Found(o);
        let f = run_all(&s, &options());
        let f = only(&f, OVERLAY_WEIGHT_CONFLICT);
        assert!(f.message.contains("weight 1972"), "{}", f.message);
        assert!(
            f.message.contains("nvidia.com/mig-1g.10gb"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("NodePool gpu-mig, instance type p5.48xlarge"),
            "{}",
            f.message
        );
        // Distinct weights: no conflict (the higher one wins).
        let mut o = shipped_overlays();
        let mut copy = o[1].clone();
        copy.name = "hand-written-p5".into();
        copy.weight = 10;
        o.push(copy);
        s.node_overlays = Read::Found(o);
        assert!(overlay_weight_conflict(&s).is_empty());
    }

    #[test]
    fn a_pending_pod_whose_slice_no_pool_offers_is_unschedulable() {
        let mut s = healthy();
        s.nodes.clear();
        // Overlays for gpu-mig removed: Karpenter does not know the pool offers slices.
        let o: Vec<OverlayInfo> = shipped_overlays()
            .into_iter()
            .filter(|o| !o.name.contains("gpu-mig"))
            .collect();
        s.node_overlays = Read::Found(o);
        s.node_claims = Read::Found(Vec::new());
        s.pods.retain(|p| p.phase == "Pending");
        let mut second = s.pods[0].clone();
        second.name = "llm-7d9c8b6f5-zzzzz".into();
        s.pods.push(second);
        let f = run_all(&s, &options());
        let f = only(&f, POD_SLICE_UNSCHEDULABLE);
        assert_eq!(f.object, "Pod/ml-inference/llm-7d9c8b6f5-fghij");
        assert!(
            f.message
                .contains("no NodeOverlay gives it to the NodePool(s) the pod can use (gpu-mig)"),
            "{}",
            f.message
        );
        assert!(
            f.message
                .contains("2 pending pods of ReplicaSet ml-inference/llm-7d9c8b6f5"),
            "{}",
            f.message
        );
        assert!(f.fix.contains("NodePool gpu-mig"), "{}", f.fix);
    }

    #[test]
    fn a_pending_pod_that_tolerates_no_pool_says_so() {
        let mut s = healthy();
        s.nodes.clear();
        s.node_claims = Read::Found(Vec::new());
        s.pods = vec![pod(gpu_pod(
            "ml-inference",
            "bare",
            "Pending",
            json!({"nvidia.com/mig-1g.10gb": "1"}),
            json!({}),
        ))];
        let f = pod_slice_unschedulable(&s);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].message.contains("no NodePool admits the pod"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].message
                .contains("gpu-mig (taint nvidia.com/gpu:NoSchedule not tolerated)"),
            "{}",
            f[0].message
        );
    }

    #[test]
    fn gpu_pods_that_bypassed_the_webhook_are_reported_once_per_owner() {
        let mut s = healthy();
        for name in ["llm-7d9c8b6f5-aaaaa", "llm-7d9c8b6f5-bbbbb"] {
            s.pods.push(pod(gpu_pod(
                "ml-inference",
                name,
                "Running",
                json!({"nvidia.com/gpu": "1"}),
                json!({}),
            )));
        }
        // Not covered by a slicing rule (deny), or finished: not reported.
        s.pods.push(pod(gpu_pod(
            "sandbox",
            "x",
            "Running",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        s.pods.push(pod(gpu_pod(
            "ml-inference",
            "done",
            "Succeeded",
            json!({"nvidia.com/gpu": "1"}),
            json!({}),
        )));
        let f = run_all(&s, &options());
        let f = only(&f, POD_NOT_REWRITTEN);
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.message
                .starts_with("2 pod(s) of ReplicaSet ml-inference/llm-7d9c8b6f5"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("rule inference-mig (mig)"),
            "{}",
            f.message
        );
        assert!(
            f.fix.contains("rollout restart deployment/llm"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn mig_manager_failed_pending_or_off_template_nodes_are_reported() {
        let mut s = healthy();
        let mut failed = mig_node("failed-node");
        failed["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("failed");
        failed["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        let mut pending = mig_node("pending-node");
        pending["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("pending");
        pending["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        let mut fresh = mig_node("fresh-node");
        fresh["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("pending");
        fresh["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        fresh["metadata"]["creationTimestamp"] = json!(ago(2));
        let mut other = mig_node("relabelled-node");
        other["metadata"]["labels"]["nvidia.com/mig.config"] = json!("all-1g.10gb");
        other["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
        s.nodes.extend([failed, pending, fresh, other].map(node));
        let f = mig_config_failed(&s, &options());
        let objects: Vec<&str> = f.iter().map(|f| f.object.as_str()).collect();
        assert_eq!(
            objects,
            [
                "Node/failed-node",
                "Node/pending-node",
                "Node/relabelled-node"
            ],
            "{f:#?}"
        );
        // The node's own mig-manager pod, not `logs ds/...` (an arbitrary pod of the DaemonSet).
        assert!(
            f[0].fix
                .contains("--field-selector spec.nodeName=failed-node -o name)`"),
            "{}",
            f[0].fix
        );
        assert!(!f[0].fix.contains("ds/"), "{}", f[0].fix);
        assert!(
            f[1].message.contains("pending on a node created 2h0m ago"),
            "{}",
            f[1].message
        );
        assert!(
            f[2].message
                .contains("NodePool gpu-mig's template says all-balanced"),
            "{}",
            f[2].message
        );
        assert!(
            f[2].fix
                .contains("nvidia.com/mig.config=all-balanced --overwrite"),
            "{}",
            f[2].fix
        );
    }

    #[test]
    fn a_missing_or_weakened_webhook_registration_is_reported() {
        let mut s = healthy();
        s.webhooks = Read::Found(Vec::new());
        let f = run_all(&s, &options());
        assert!(
            only(&f, WEBHOOK_NOT_CONFIGURED)
                .message
                .contains("no MutatingWebhookConfiguration calls gpu-slicer")
        );

        let mut weak = shipped_webhook_config();
        let w = &mut weak.webhooks.as_mut().unwrap()[0];
        w.match_conditions = None;
        w.namespace_selector = None;
        w.failure_policy = Some("Ignore".into());
        s.webhooks = Read::Found(vec![weak]);
        let f = webhook_not_configured(&s);
        let messages: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(f.len(), 3, "{messages:#?}");
        assert!(messages[0].contains(
            "lacks the matchConditions of the shipped manifest (requests-nvidia-resource)"
        ));
        assert!(messages[1].contains("does not exclude kube-system, gpu-slicer"));
        assert!(messages[2].contains("failurePolicy is Ignore while the policy denies"));
        assert!(
            f.iter()
                .all(|f| f.object == "MutatingWebhookConfiguration/gpu-slicer"
                    && f.fix.contains("manifests/webhook"))
        );
    }

    #[test]
    fn policy_check_runs_against_the_live_nodepools() {
        let mut s = healthy();
        let Read::Found(pools) = &mut s.node_pools else {
            unreachable!()
        };
        let mig = pools.iter_mut().find(|p| p.name == "gpu-mig").unwrap();
        mig.template_labels
            .insert(MIG_CONFIG_LABEL.into(), "all-1g.10gb".into());
        let f = policy_cluster_mismatch(&s);
        let errors: Vec<_> = f.iter().filter(|f| f.severity == Severity::Error).collect();
        assert!(!errors.is_empty());
        assert!(
            errors[0]
                .message
                .contains("profile 2g.20gb is not in MIG config all-1g.10gb"),
            "{}",
            errors[0].message
        );
        assert_eq!(errors[0].object, "ConfigMap/gpu-slicer/gpu-slicer-policy");

        s.policy = Err(NoPolicy::Invalid {
            object: "ConfigMap/gpu-slicer/gpu-slicer-policy".into(),
            message: "spec.rules[0].mig.profile: \"1g.7gb\" is not a MIG profile".into(),
        });
        let f = policy_cluster_mismatch(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Error);
        assert!(f[0].message.contains("1g.7gb"));
    }

    #[test]
    fn without_karpenter_or_the_gpu_operator_checks_say_they_were_skipped_and_why() {
        let mut s = healthy();
        let why = "Karpenter is not installed (no karpenter.sh/v1 NodePool CRD)";
        s.node_pools = Read::Missing(why.into());
        s.node_claims = Read::Missing(why.into());
        s.node_overlays = Read::Missing(why.into());
        s.gpu_operator = Read::Missing("the GPU Operator is not installed".into());
        let f = run_all(&s, &options());
        assert!(problems(&f).is_empty(), "{f:#?}");
        for check in [
            NODECLAIM_RESOURCE_NOT_REGISTERED,
            OVERLAY_CAPACITY_DRIFT,
            OVERLAY_MATCHES_NOTHING,
            OVERLAY_WEIGHT_CONFLICT,
            POLICY_CLUSTER_MISMATCH,
        ] {
            assert!(
                f.iter().any(|x| x.check == check
                    && x.message.starts_with("skipped: ")
                    && x.message.contains("not installed")),
                "{check}: {f:#?}"
            );
        }
        s.policy = Err(NoPolicy::Absent(
            "no policy: ConfigMap gpu-slicer/gpu-slicer-policy does not exist".into(),
        ));
        let f = pod_not_rewritten(&s);
        assert!(f[0].message.starts_with("skipped: no policy"), "{f:#?}");
    }

    #[test]
    fn karpenters_message_names_the_resource() {
        assert_eq!(
            resource_in_message(
                "Resource \"nvidia.com/mig-1g.10gb\" was requested but not registered"
            ),
            Some("nvidia.com/mig-1g.10gb")
        );
        assert_eq!(resource_in_message("no quotes"), None);
    }
}
