//! The budget outcome of each workload in `policy report`: what each of its pods holds in
//! GPU-equivalents and, where its rule caps the namespace (`budget.gpuEquivalents`), whether its
//! replicas fit.
//!
//! A namespace is filled the way an empty one would be: its workloads in the report's order
//! (kind, then name), each workload's pods one after another, every pod admitted while the namespace's
//! total stays within the budget and denied once it would not (as the webhook does in cluster mode).
//! Pure: a function of the rows and the policy.

use serde::Serialize;

use super::Row;
use gpu_slicer_core::gpus::Gpus;
use gpu_slicer_core::policy::Policy;
use gpu_slicer_core::spend::{decimal, optional_decimal};

/// Whether a workload's replicas fit its namespace's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetOutcome {
    /// Every replica fits beside the workloads before it.
    Within,
    /// Some replicas (maybe all) would be denied for the budget.
    Over,
    /// The deciding rule sets no budget.
    NoBudget,
}

impl BudgetOutcome {
    /// The name tables and JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetOutcome::Within => "within",
            BudgetOutcome::Over => "over",
            BudgetOutcome::NoBudget => "no budget",
        }
    }
}

/// One workload's budget outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowBudget {
    pub outcome: BudgetOutcome,
    /// The rule's `budget.gpuEquivalents` (per namespace).
    #[serde(serialize_with = "optional_decimal")]
    pub budget_gpu_equivalents: Option<Gpus>,
    /// Pods of this workload admitted before the budget is reached (all of them when within; a
    /// DaemonSet counts one pod).
    pub pods_fit: u64,
    /// What the namespace holds once this workload and those before it are admitted.
    #[serde(serialize_with = "decimal")]
    pub namespace_gpu_equivalents: Gpus,
}

impl RowBudget {
    /// The cell a table shows, e.g. `within (1.5/4)`, `over: 2 of 3 pods fit (4/4)`, `no budget`.
    pub fn cell(&self, pods: u64) -> String {
        let Some(budget) = self.budget_gpu_equivalents else {
            return BudgetOutcome::NoBudget.as_str().to_string();
        };
        let use_ = format!("{}/{budget}", self.namespace_gpu_equivalents);
        match self.outcome {
            BudgetOutcome::Over => format!("over: {} of {pods} pods fit ({use_})", self.pods_fit),
            _ => format!("{} ({use_})", self.outcome.as_str()),
        }
    }
}

/// Fills each row's `gpu_equivalents` total and `budget`; returns how many workloads are over.
/// `rows` must be sorted by namespace (as [`super::build`] sorts them).
pub fn fill(rows: &mut [Row], policy: &Policy) -> u64 {
    let mut over = 0;
    let mut namespace: Option<String> = None;
    let mut held = Gpus::ZERO;
    for row in rows.iter_mut() {
        if namespace.as_deref() != Some(row.namespace.as_str()) {
            namespace = Some(row.namespace.clone());
            held = Gpus::ZERO;
        }
        let pods = row.pods();
        let each = row.gpu_equivalents_per_pod.unwrap_or(Gpus::ZERO);
        row.gpu_equivalents = row.gpu_equivalents_per_pod.map(|g| g.times(pods));
        let budget = row
            .rule
            .as_deref()
            .and_then(|name| policy.rules.iter().find(|r| r.name == name))
            .and_then(|r| r.budget);
        let pods_fit = match budget {
            Some(b) if each > Gpus::ZERO => {
                let room = b.saturating_sub(held);
                (room.units() / each.units()).min(pods)
            }
            _ => pods,
        };
        held = held.saturating_add(each.times(pods_fit));
        let outcome = match budget {
            None => BudgetOutcome::NoBudget,
            Some(_) if pods_fit < pods => BudgetOutcome::Over,
            Some(_) => BudgetOutcome::Within,
        };
        if outcome == BudgetOutcome::Over {
            over += 1;
        }
        row.budget = RowBudget {
            outcome,
            budget_gpu_equivalents: budget,
            pods_fit,
            namespace_gpu_equivalents: held,
        };
    }
    over
}

impl Default for RowBudget {
    fn default() -> RowBudget {
        RowBudget {
            outcome: BudgetOutcome::NoBudget,
            budget_gpu_equivalents: None,
            pods_fit: 0,
            namespace_gpu_equivalents: Gpus::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_say_the_outcome_and_the_namespace_use() {
        let b = |outcome, budget: Option<&str>, pods_fit, held: &str| RowBudget {
            outcome,
            budget_gpu_equivalents: budget.map(|b| Gpus::parse(b).unwrap()),
            pods_fit,
            namespace_gpu_equivalents: Gpus::parse(held).unwrap(),
        };
        assert_eq!(
            b(BudgetOutcome::Within, Some("4"), 3, "1.5").cell(3),
            "within (1.5/4)"
        );
        assert_eq!(
            b(BudgetOutcome::Over, Some("4"), 2, "4").cell(3),
            "over: 2 of 3 pods fit (4/4)"
        );
        assert_eq!(
            b(BudgetOutcome::NoBudget, None, 3, "3").cell(3),
            "no budget"
        );
    }
}
