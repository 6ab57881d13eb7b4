//! `policy report`: what the policy would do to each existing workload at its next rollout.
//!
//! Reading ([`read`]: manifests or a cluster's lists, into workloads and the pods they would create)
//! is kept apart from building ([`build`]: a pure function of the workloads, the policy, the NodePools
//! and namespace labels that runs the engine on each pod). The rows show what **enforce** would do,
//! whatever the rule's mode, with the mode beside it: the report is what a platform team reads before
//! switching a rule from audit to enforce.
//!
//! Imports: the core, [`crate::input`], [`crate::terminal`], [`crate::html`], [`crate::cluster`] and
//! [`crate::policy_source`]; never its peers (planner, doctor, usage) or the CLI.

pub mod budget;
pub mod cluster;
pub mod html;
pub mod read;

use std::collections::BTreeMap;

use serde::Serialize;

use gpu_slicer_core::audit::{Outcome, Record};
use gpu_slicer_core::engine::{self, Namespace};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::{Mode, Policy, WHOLE_GPU};
use gpu_slicer_core::quantity;
use gpu_slicer_core::spend::optional_decimal;

pub use budget::{BudgetOutcome, RowBudget};
pub use read::Workload;

/// What enforce would do to a workload's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowOutcome {
    /// Requests renamed and/or the pod routed to a NodePool.
    Rewrite,
    /// The pod would be refused at its next rollout.
    Deny,
    /// A rule applies and changes nothing (the pod already asks for what it gives, or opts out).
    Unchanged,
    /// A `passthrough` rule or `defaultAction: passthrough`: the policy leaves it alone.
    Passthrough,
}

impl RowOutcome {
    /// Every outcome, in the order tables and totals show them.
    pub const ALL: [RowOutcome; 4] = [
        RowOutcome::Rewrite,
        RowOutcome::Deny,
        RowOutcome::Unchanged,
        RowOutcome::Passthrough,
    ];

    /// The name tables and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            RowOutcome::Rewrite => "rewrite",
            RowOutcome::Deny => "deny",
            RowOutcome::Unchanged => "unchanged",
            RowOutcome::Passthrough => "passthrough",
        }
    }
}

/// One workload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    /// `None` for a DaemonSet: one pod per matching node.
    pub replicas: Option<u64>,
    /// The deciding rule; `None` when `defaultAction` applied.
    pub rule: Option<String>,
    /// The rule's (or the policy's) mode today: in `audit`, the outcome is only warned about.
    pub mode: Mode,
    pub outcome: RowOutcome,
    /// Per container, e.g. `vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb`.
    pub changes: Vec<String>,
    /// The Karpenter NodePool the pods would be routed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_pool: Option<String>,
    /// For `deny`: the message the developer would get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `rewrite`: whole GPUs per pod before, and what each pod holds after (resource -> count;
    /// `nvidia.com/gpu` where whole GPUs are kept).
    pub gpus_before: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gpus_after: BTreeMap<String, u64>,
    /// GPU-equivalents one pod holds once admitted (after the rewrite); absent where the pod is
    /// denied or the policy passes it through.
    #[serde(
        serialize_with = "optional_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_equivalents_per_pod: Option<gpu_slicer_core::gpus::Gpus>,
    /// The same over every pod of the workload (a DaemonSet counts one).
    #[serde(
        serialize_with = "optional_decimal",
        skip_serializing_if = "Option::is_none"
    )]
    pub gpu_equivalents: Option<gpu_slicer_core::gpus::Gpus>,
    /// Whether the workload's pods fit its namespace's budget ([`budget`]).
    pub budget: RowBudget,
    /// Where the workload was read from.
    pub origin: String,
}

impl Row {
    /// `Kind/name`.
    pub fn workload(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    /// Pods the totals count: replicas, and one for a DaemonSet (per node).
    pub fn pods(&self) -> u64 {
        self.replicas.unwrap_or(1)
    }
}

/// Workloads per outcome (for the whole report, or one rule).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Workloads whose pods would be rewritten or routed.
    pub rewrite: u64,
    /// Workloads whose pods would be denied.
    pub deny: u64,
    /// Workloads a rule covers and leaves as they are.
    pub unchanged: u64,
    /// Workloads the policy passes through.
    pub passthrough: u64,
}

impl Counts {
    fn add(&mut self, outcome: RowOutcome) {
        *self.get_mut(outcome) += 1;
    }

    fn get_mut(&mut self, outcome: RowOutcome) -> &mut u64 {
        match outcome {
            RowOutcome::Rewrite => &mut self.rewrite,
            RowOutcome::Deny => &mut self.deny,
            RowOutcome::Unchanged => &mut self.unchanged,
            RowOutcome::Passthrough => &mut self.passthrough,
        }
    }

    /// The count of one outcome.
    pub fn get(&self, outcome: RowOutcome) -> u64 {
        match outcome {
            RowOutcome::Rewrite => self.rewrite,
            RowOutcome::Deny => self.deny,
            RowOutcome::Unchanged => self.unchanged,
            RowOutcome::Passthrough => self.passthrough,
        }
    }
}

/// GPUs of the rewritten workloads, over all their pods (a DaemonSet counts one pod).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gpus {
    /// Whole GPUs the rewritten workloads hold today.
    pub whole_before: u64,
    /// Whole GPUs they would still hold (`exclusive` rules, routed only).
    pub whole_after: u64,
    /// Slices they would take instead, by resource.
    pub slices_after: BTreeMap<String, u64>,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// One row per workload whose pods ask for a GPU resource, by namespace and workload.
    pub rows: Vec<Row>,
    /// Workloads by outcome.
    pub totals: Counts,
    /// Workloads by rule (`(defaultAction)` for the policy's default) and outcome.
    pub by_rule: BTreeMap<String, Counts>,
    pub gpus: Gpus,
    /// Workloads whose pods would not all fit their namespace's budget.
    pub over_budget: u64,
    /// Workloads read whose pods ask for no GPU (not shown).
    pub without_gpus: u64,
    /// Objects that could not be used, with why.
    pub skipped: Vec<String>,
}

impl PolicyReport {
    /// Whether any workload would be denied (`--fail-on deny`).
    pub fn any_denied(&self) -> bool {
        self.totals.deny > 0
    }
}

/// Namespace labels as the engine sees them: the API server's `kubernetes.io/metadata.name`, the
/// labels known for the namespace, then `extra` (`--namespace-label`, for every namespace).
fn labels_for(
    ns: &str,
    known: &BTreeMap<String, BTreeMap<String, String>>,
    extra: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut labels = gpu_slicer_core::labels::name_label(ns);
    if let Some(l) = known.get(ns) {
        labels.extend(l.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    labels.extend(extra.iter().cloned());
    labels
}

/// Runs the engine (as enforce) on each workload's pod and tallies the answers.
pub fn build(
    read: read::Read,
    policy: &Policy,
    pools: &NodePoolIndex,
    extra_labels: &[(String, String)],
) -> PolicyReport {
    let mut rows = Vec::new();
    let mut skipped = read.skipped;
    let mut without_gpus = 0;
    for w in read.workloads {
        let pod: Pod = match serde_json::from_value(w.pod.clone()) {
            Ok(p) => p,
            Err(e) => {
                skipped.push(format!(
                    "{} {}/{} ({}): its pod template does not read as a pod: {e}",
                    w.kind, w.namespace, w.name, w.origin
                ));
                continue;
            }
        };
        let labels = labels_for(&w.namespace, &read.namespace_labels, extra_labels);
        let decision = engine::decide(
            &pod,
            Namespace {
                name: &w.namespace,
                labels: &labels,
            },
            policy,
            pools,
        );
        let Some(record) = decision.audit else {
            without_gpus += 1;
            continue;
        };
        let outcome = match record.outcome {
            Outcome::Denied => RowOutcome::Deny,
            Outcome::Rewritten | Outcome::Routed => RowOutcome::Rewrite,
            _ if record.action == "passthrough" => RowOutcome::Passthrough,
            _ => RowOutcome::Unchanged,
        };
        let (gpus_before, gpus_after) = gpus_of(&record);
        rows.push(Row {
            changes: change_lines(&record, outcome),
            node_pool: record
                .node_pool
                .clone()
                .filter(|_| outcome == RowOutcome::Rewrite),
            message: decision.denied,
            rule: record.rule,
            mode: decision.mode,
            outcome,
            gpus_before,
            gpus_after: if outcome == RowOutcome::Rewrite {
                gpus_after
            } else {
                BTreeMap::new()
            },
            gpu_equivalents_per_pod: decision.usage.map(|u| u.held),
            gpu_equivalents: None,
            budget: RowBudget::default(),
            namespace: w.namespace,
            kind: w.kind,
            name: w.name,
            replicas: w.replicas,
            origin: w.origin,
        });
    }
    rows.sort_by(|a, b| (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name)));
    let over_budget = budget::fill(&mut rows, policy);

    let mut totals = Counts::default();
    let mut by_rule: BTreeMap<String, Counts> = BTreeMap::new();
    let mut gpus = Gpus::default();
    for r in &rows {
        totals.add(r.outcome);
        by_rule
            .entry(
                r.rule
                    .clone()
                    .unwrap_or_else(|| "(defaultAction)".to_string()),
            )
            .or_default()
            .add(r.outcome);
        if r.outcome == RowOutcome::Rewrite {
            let pods = r.pods();
            gpus.whole_before += r.gpus_before * pods;
            let kept = r.gpus_after.get(WHOLE_GPU).copied().unwrap_or(0);
            gpus.whole_after += kept * pods;
            for (resource, n) in &r.gpus_after {
                if resource != WHOLE_GPU {
                    *gpus.slices_after.entry(resource.clone()).or_default() += n * pods;
                }
            }
        }
    }
    PolicyReport {
        rows,
        totals,
        by_rule,
        gpus,
        over_budget,
        without_gpus,
        skipped,
    }
}

/// What changes, per container, as the audit record says it.
fn change_lines(record: &Record, outcome: RowOutcome) -> Vec<String> {
    if outcome != RowOutcome::Rewrite {
        return Vec::new();
    }
    let mut lines: Vec<String> = record
        .changes
        .iter()
        .map(|c| {
            if c.from != c.to {
                format!("{}: {} {} -> {}", c.container, c.from, c.quantity, c.to)
            } else if let Some(p) = &record.profile {
                format!("{}: {} {} as MIG {p}", c.container, c.from, c.quantity)
            } else {
                format!("{}: {} {} kept", c.container, c.from, c.quantity)
            }
        })
        .collect();
    if lines.is_empty() {
        lines.push("routing only (node selectors, tolerations)".into());
    }
    lines
}

/// Whole GPUs one pod holds before, and what it holds after (resource -> count): the pod's effective
/// request, as the scheduler counts it — the larger of the containers' sum and the largest init
/// container. Under MIG strategy `single` a slice keeps the name `nvidia.com/gpu`; it is counted as
/// `mig-<profile>` so it is not mistaken for a whole GPU.
fn gpus_of(record: &Record) -> (u64, BTreeMap<String, u64>) {
    let mut before = (0u64, 0u64);
    let mut after: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in &record.changes {
        let n = quantity::parse_count(&c.quantity).unwrap_or(0);
        let init = c.container.starts_with("init:");
        let to = match (&record.profile, c.from == c.to) {
            (Some(p), true) => format!("{}{p}", gpu_slicer_core::policy::MIG_PREFIX),
            _ => c.to.clone(),
        };
        let slot = after.entry(to).or_default();
        if init {
            before.1 = before.1.max(n);
            slot.1 = slot.1.max(n);
        } else {
            before.0 += n;
            slot.0 += n;
        }
    }
    let after = after
        .into_iter()
        .map(|(k, (main, init))| (k, main.max(init)))
        .filter(|(_, n)| *n > 0)
        .collect();
    (before.0.max(before.1), after)
}

/// The report as a terminal table, then the totals.
pub fn table(report: &PolicyReport) -> String {
    use crate::terminal::escape_controls;
    use std::fmt::Write as _;
    let mut rows: Vec<[String; 9]> = vec![[
        "NAMESPACE".into(),
        "WORKLOAD".into(),
        "REPLICAS".into(),
        "RULE".into(),
        "MODE".into(),
        "OUTCOME".into(),
        "GPU-EQ".into(),
        "BUDGET".into(),
        "CHANGES".into(),
    ]];
    for r in &report.rows {
        let mut what = r.changes.join("; ");
        if let Some(pool) = &r.node_pool {
            if !what.is_empty() {
                what.push_str("; ");
            }
            let _ = write!(what, "NodePool {pool}");
        }
        if let Some(m) = &r.message {
            what = m.clone();
        }
        // Names and messages come from the manifests or the cluster: escaped, so they cannot drive
        // the terminal.
        rows.push(
            [
                r.namespace.clone(),
                r.workload(),
                r.replicas
                    .map_or_else(|| "per node".into(), |n| n.to_string()),
                r.rule.clone().unwrap_or_else(|| "(defaultAction)".into()),
                r.mode.as_str().into(),
                r.outcome.as_str().into(),
                r.gpu_equivalents
                    .map_or_else(|| "-".into(), |g| g.to_string()),
                r.budget.cell(r.pods()),
                what,
            ]
            .map(|cell| escape_controls(&cell).into_owned()),
        );
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (w, cell) in widths.iter().zip(row.iter()) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        line.push_str(&row[8]);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out);
    let t = &report.totals;
    let _ = writeln!(
        out,
        "{} workloads with GPUs: {} rewrite, {} deny, {} unchanged, {} passthrough ({} without GPUs not shown)",
        report.rows.len(),
        t.rewrite,
        t.deny,
        t.unchanged,
        t.passthrough,
        report.without_gpus
    );
    for (rule, c) in &report.by_rule {
        let _ = writeln!(
            out,
            "  rule {}: {} rewrite, {} deny, {} unchanged, {} passthrough",
            escape_controls(rule),
            c.rewrite,
            c.deny,
            c.unchanged,
            c.passthrough
        );
    }
    if report.over_budget > 0 {
        let _ = writeln!(
            out,
            "{} workload(s) over their namespace's GPU budget: their extra pods would be denied (filled in the order above)",
            report.over_budget
        );
    }
    let g = &report.gpus;
    if t.rewrite > 0 {
        let slices: Vec<String> = g
            .slices_after
            .iter()
            .map(|(k, n)| format!("{n} x {}", escape_controls(k)))
            .collect();
        let _ = writeln!(
            out,
            "GPUs of the rewritten workloads: {} whole GPUs today -> {} whole GPUs{}{}",
            g.whole_before,
            g.whole_after,
            if slices.is_empty() { "" } else { " + " },
            slices.join(" + ")
        );
    }
    for s in &report.skipped {
        let _ = writeln!(out, "skipped: {}", escape_controls(s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_slicer_core::audit::Change;

    fn change(container: &str, from: &str, to: &str, q: &str) -> Change {
        Change {
            container: container.into(),
            from: from.into(),
            to: to.into(),
            quantity: q.into(),
        }
    }

    #[test]
    fn gpus_count_as_the_scheduler_does() {
        let record = Record {
            rule: Some("r".into()),
            action: "mig",
            changes: vec![
                change("init:warm", WHOLE_GPU, "nvidia.com/mig-1g.10gb", "2"),
                change("a", WHOLE_GPU, "nvidia.com/mig-1g.10gb", "1"),
                change("b", WHOLE_GPU, "nvidia.com/mig-1g.10gb", "1"),
            ],
            profile: Some("1g.10gb".into()),
            node_pool: None,
            outcome: Outcome::Rewritten,
            reason: None,
        };
        let (before, after) = gpus_of(&record);
        assert_eq!(before, 2);
        assert_eq!(
            after,
            BTreeMap::from([("nvidia.com/mig-1g.10gb".into(), 2)])
        );

        // Strategy single: the name stays, the device is a slice.
        let single = Record {
            changes: vec![change("a", WHOLE_GPU, WHOLE_GPU, "1")],
            ..record
        };
        let (before, after) = gpus_of(&single);
        assert_eq!(before, 1);
        assert_eq!(
            after,
            BTreeMap::from([("nvidia.com/mig-1g.10gb".into(), 1)])
        );
    }
}
