//! Warnings: the kubectl warning line for each change.

use crate::audit::Change;
use crate::policy::{Action, Rule};

/// The warning line for one container's change (with the MIG profile, where the rule chose one).
pub(super) struct ChangeLine<'a>(
    pub(super) &'a Change,
    pub(super) &'a Rule,
    pub(super) Option<&'a str>,
);

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
