//! Budgets: a rule's `budget.gpuEquivalents` caps what each namespace it matches holds (its pods that
//! are not finished and not being deleted). Pure: the caller says what the namespace holds.
//!
//! Cluster mode counts a namespace from a Pod watch plus the admissions still in flight
//! (`crate::cluster::usage`); offline there is nothing to count, so a budget is said, not checked.
//!
//! Imports (of this crate): [`crate::engine`], [`crate::equivalents`], [`crate::gpus`],
//! [`crate::policy`].

use crate::engine::{self, Decision};
use crate::equivalents::Usage;
use crate::gpus::Gpus;
use crate::policy::Rule;

/// What a namespace holds when a pod asks: pods the watch sees, and admissions not yet seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holding {
    pub pods: Gpus,
    pub in_flight: Gpus,
}

impl Holding {
    pub fn total(&self) -> Gpus {
        self.pods.saturating_add(self.in_flight)
    }
}

/// Whether a pod asking `asks` fits namespace `namespace`'s budget under `rule`: `Err` is the denial
/// message, saying the budget, what the namespace holds, what the pod asks, and what to do.
pub fn check(
    rule: &Rule,
    namespace: &str,
    budget: Gpus,
    holding: Holding,
    asks: Usage,
) -> Result<(), String> {
    let after = holding.total().saturating_add(asks.held);
    if asks.held == Gpus::ZERO || after <= budget {
        return Ok(());
    }
    let in_flight = if holding.in_flight > Gpus::ZERO {
        format!(" ({} of it pods being admitted now)", holding.in_flight)
    } else {
        String::new()
    };
    let room = budget.saturating_sub(holding.total());
    Err(format!(
        "gpu-slicer: namespace {namespace:?} is over its GPU budget: rule {} allows {budget} GPU-equivalents per namespace, its running and pending pods hold {}{in_flight}, and this pod asks for {} ({} GPU(s) as written), which leaves {room} free; delete or scale down pods in {namespace:?} (kubectl get pods -n {namespace} -o custom-columns=NAME:.metadata.name,GPU-EQ:.metadata.annotations.gpu-slicer\\.io/gpu-equivalents), ask for a smaller slice, or ask the platform team to raise budget.gpuEquivalents of rule {}",
        rule.name,
        holding.total(),
        asks.held,
        asks.requested,
        rule.name
    ))
}

/// The decision with the pod refused for its budget (in the rule's mode: audit makes it a
/// `would-deny`); its warnings are kept.
pub fn refuse(decision: Decision, rule: &Rule, message: String) -> Decision {
    let mut refused = engine::refuse(message, Some(rule), rule.mode);
    refused.warnings = decision.warnings;
    refused.usage = decision.usage;
    refused
}

/// Offline (`mutate`, `serve --offline`): the budget cannot be known; the developer is told so.
pub fn offline_note(mut decision: Decision, rule: &Rule) -> Decision {
    if let Some(budget) = rule.budget
        && decision.allowed()
        && decision.usage.is_some_and(|u| u.held > Gpus::ZERO)
    {
        decision.warnings.push(format!(
            "gpu-slicer: rule {} caps each namespace at {budget} GPU-equivalents; not checked here (no pod watch offline)",
            rule.name
        ));
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn rule() -> Rule {
        Policy::parse(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: team, action: exclusive, budget: {gpuEquivalents: \"2\"}}\n",
            "p.yaml",
        )
        .unwrap()
        .rules
        .remove(0)
    }

    #[test]
    fn a_pod_that_fits_passes_and_one_that_does_not_is_told_why() {
        let r = rule();
        let budget = r.budget.unwrap();
        let one = Usage {
            held: Gpus::ONE,
            requested: 1,
        };
        let holding = |n| Holding {
            pods: Gpus::whole(n),
            in_flight: Gpus::ZERO,
        };
        assert!(check(&r, "a", budget, holding(1), one).is_ok());
        let msg = check(&r, "a", budget, holding(2), one).unwrap_err();
        for part in [
            "namespace \"a\" is over its GPU budget",
            "allows 2 GPU-equivalents",
            "hold 2",
            "asks for 1",
            "leaves 0 free",
            "raise budget.gpuEquivalents of rule team",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        // Sevenths add up to exactly one: the seventh slice fits a budget of 1.
        let seventh = Usage {
            held: Gpus::ratio(1, 7),
            requested: 1,
        };
        let six = Holding {
            pods: Gpus::ratio(6, 7),
            in_flight: Gpus::ZERO,
        };
        assert!(check(&r, "a", Gpus::ONE, six, seventh).is_ok());
        let in_flight = Holding {
            pods: Gpus::ONE,
            in_flight: Gpus::ONE,
        };
        let msg = check(&r, "a", budget, in_flight, seventh).unwrap_err();
        assert!(msg.contains("(1 of it pods being admitted now)"), "{msg}");
    }
}
