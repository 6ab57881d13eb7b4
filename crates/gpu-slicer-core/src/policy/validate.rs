//! Validating a rule as written ([`RuleSpec`]) into a [`Rule`]: each part of a rule checked by the
//! function named for it, every error naming the field (`spec.rules[i].<field>: why`).

use globset::Glob;

use super::*;
use crate::labels::SelectorOperator;
use crate::pod::Toleration;

/// What a `mig` section gives a rule.
struct MigParts {
    profile: Option<String>,
    allowed_profiles: Vec<String>,
    strategy: MigStrategy,
    time_slicing: Option<MigTimeSlicing>,
}

fn check_name_and_namespaces(spec: &RuleSpec) -> Result<(), (String, String)> {
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
    Ok(())
}

/// Fields that only some actions take; returns whether the action routes the pod (a GPU rule).
fn check_action_fields(spec: &RuleSpec) -> Result<bool, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
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
    Ok(routes)
}

fn validate_mig(spec: &RuleSpec) -> Result<MigParts, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    let action = spec.action;
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
    Ok(MigParts {
        profile: mig_profile,
        allowed_profiles,
        strategy: mig_strategy,
        time_slicing: mig_time_slicing,
    })
}

/// `shared` (timeslice, mps): the renamed resource and its replicas.
fn validate_shared(
    spec: &RuleSpec,
    backend: Backend,
    mig_time_slicing: Option<MigTimeSlicing>,
) -> Result<(Option<String>, Option<u32>), (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    let action = spec.action;
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
    Ok((shared_resource, shared_replicas))
}

fn validate_budget(
    spec: &RuleSpec,
    routes: bool,
) -> Result<Option<crate::gpus::Gpus>, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    let action = spec.action;
    Ok(match &spec.budget {
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
    })
}

/// `maxPerContainer`: 1 by default (whole GPUs: unbounded); under DRA at most what one node holds.
fn validate_max_per_container(
    spec: &RuleSpec,
    backend: Backend,
    allowed_profiles: &[String],
) -> Result<Option<u64>, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    let action = spec.action;
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
    Ok(max_per_container)
}

/// `nodePool`, `nodeSelector` and `tolerations`: the routing, with tolerations in the pod's shape.
fn validate_routing(spec: &RuleSpec) -> Result<Vec<Toleration>, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
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
    Ok(tolerations)
}

pub(super) fn validate_rule(
    spec: RuleSpec,
    policy_mode: Mode,
    default_backend: Backend,
    dra_shares: dra_sharing::ConsumableShares,
) -> Result<Rule, (String, String)> {
    let err = |f: &str, m: String| Err((f.to_string(), m));
    check_name_and_namespaces(&spec)?;
    let routes = check_action_fields(&spec)?;
    let action = spec.action;
    let backend = spec.backend.unwrap_or(default_backend);
    let MigParts {
        profile: mig_profile,
        allowed_profiles,
        strategy: mig_strategy,
        time_slicing: mig_time_slicing,
    } = validate_mig(&spec)?;
    let (shared_resource, shared_replicas) = validate_shared(&spec, backend, mig_time_slicing)?;
    let budget = validate_budget(&spec, routes)?;
    let max_per_container = validate_max_per_container(&spec, backend, &allowed_profiles)?;
    let tolerations = validate_routing(&spec)?;
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
