//! Budgets at admission, and the usage behind them (cluster mode): what a pod holds in its namespace
//! with the facts in force, the budget gate between the engine and audit mode, and the rows the usage
//! metrics show.

use std::sync::Arc;
use std::time::Instant;

use crate::cluster::pod_watch::{self, Counter};
use crate::cluster::usage::UsageIndex;
use crate::webhook::admission::GateInput;
use crate::webhook::server::App;
use gpu_slicer_core::budget;
use gpu_slicer_core::engine::Decision;
use gpu_slicer_core::equivalents::{self, Units, Usage};
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::spend::{self, Row};

/// What `pod` holds in `namespace` under the policy, NodePools and namespace labels in force.
pub fn usage_of(app: &App, pod: &Pod, namespace: &str) -> Usage {
    let policy = app.policy.load();
    let pools = app.pools.load();
    let labels = app
        .cluster()
        .and_then(|c| c.cached_labels(namespace))
        .unwrap_or_else(|| gpu_slicer_core::labels::name_label(namespace));
    let units = Units {
        rule: policy.rule_for(namespace, &labels),
        policy: &policy,
        pools: &pools,
    };
    equivalents::of_pod(pod, &units)
}

/// Starts the Pod watch feeding the app's usage index (cluster mode).
pub fn start_watch(app: &Arc<App>, client: kube::Client) -> Arc<UsageIndex> {
    let index = UsageIndex::new();
    app.attach_usage(index.clone());
    let weak = Arc::downgrade(app);
    let count: Counter = Arc::new(move |pod: &Pod, ns: &str| {
        weak.upgrade()
            .map_or_else(Usage::default, |app| usage_of(&app, pod, ns))
    });
    let (tx, _) = tokio::sync::watch::channel(0u64);
    let tx = app.usage_changes.get_or_init(|| tx).clone();
    pod_watch::spawn(client, index.clone(), count, move || {
        tx.send_modify(|n| *n += 1)
    });
    index
}

/// The budget gate: a pod that would take its namespace over its rule's budget is refused (a
/// `would-deny` in audit mode). Admissions reserve what they hold, so concurrent ones see each other;
/// dry runs and audit-mode rules only check.
pub fn gate(app: &App, input: GateInput<'_>, decision: Decision) -> Decision {
    let Some(rule) = input.rule else {
        return decision;
    };
    let (Some(budget), Some(asks)) = (rule.budget, decision.usage) else {
        return decision;
    };
    if !decision.allowed() || asks.held == gpu_slicer_core::gpus::Gpus::ZERO {
        return decision;
    }
    let Some(index) = app.usage_index() else {
        return budget::offline_note(decision, rule);
    };
    if !index.synced() {
        let msg = format!(
            "gpu-slicer: namespace {:?} has a GPU budget (rule {}) and the webhook has not finished reading the cluster's pods; retry in a moment",
            input.namespace, rule.name
        );
        return budget::refuse(decision, rule, msg);
    }
    let now = Instant::now();
    let fits = |holding| budget::check(rule, input.namespace, budget, holding, asks);
    let verdict = if input.dry_run || rule.mode == gpu_slicer_core::policy::Mode::Audit {
        fits(index.holding(input.namespace, now))
    } else {
        index.reserve(input.namespace, asks, now, fits).map(|_| ())
    };
    match verdict {
        Ok(()) => decision,
        Err(msg) => budget::refuse(decision, rule, msg),
    }
}

/// One row per namespace with live GPU pods or a budget: what the usage metrics show.
pub fn rows(app: &App) -> Vec<Row> {
    let Some(index) = app.usage_index() else {
        return Vec::new();
    };
    let policy = app.policy.load();
    let pools = app.pools.load();
    let mut held: std::collections::BTreeMap<String, _> = index.snapshot().into_iter().collect();
    if let Some(cluster) = app.cluster() {
        for (ns, labels) in cluster.namespaces() {
            if policy
                .rule_for(&ns, &labels)
                .is_some_and(|r| r.budget.is_some())
            {
                held.entry(ns).or_default();
            }
        }
    }
    held.iter()
        .map(|(ns, t)| {
            let labels = app
                .cluster()
                .and_then(|c| c.cached_labels(ns))
                .unwrap_or_else(|| gpu_slicer_core::labels::name_label(ns));
            let rule = policy.rule_for(ns, &labels);
            let price = rule.and_then(|r| spend::usd_per_gpu_hour(r, &pools));
            Row::new(ns, rule, t.pods, t.held, t.requested, price)
        })
        .collect()
}
