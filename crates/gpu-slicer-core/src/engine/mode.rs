//! Audit mode: the engine decides exactly as in enforce; [`apply`] then turns that decision into the
//! answer audit mode gives — allowed, no patch, and warnings saying what enforce would have done —
//! with the audit record's outcome `would-rewrite`, `would-route` or `would-deny`.
//!
//! One pure function shared by the server, `mutate` and `policy report`, so the three cannot drift.
//! In enforce it returns the decision untouched, without allocating: the enforce request path pays
//! one comparison.

use crate::audit::{self, Outcome, Record};
use crate::engine::{Decision, MAX_WARNING_LEN};
use crate::policy::Mode;

/// What every audit-mode warning starts with, so developers and log searches tell them apart.
pub const WARNING_PREFIX: &str = "gpu-slicer (audit): ";

/// The answer for the decision's mode: the decision itself in enforce; in audit, allowed with no
/// patch, `would ...` warnings and a `would-*` outcome. Decisions that change nothing (no GPU, a
/// passthrough, an opt-out, a pod already as the rule wants it) are the same in both modes.
pub fn apply(mut decision: Decision) -> Decision {
    if decision.mode == Mode::Enforce {
        return decision;
    }
    let Some(mut record) = decision.audit.take() else {
        return decision;
    };
    let would = match record.outcome {
        Outcome::Rewritten => Outcome::WouldRewrite,
        Outcome::Routed => Outcome::WouldRoute,
        Outcome::Denied => Outcome::WouldDeny,
        _ => {
            decision.audit = Some(record);
            return decision;
        }
    };
    decision.warnings = match decision.denied.take() {
        // The engine's other lines came with the denial; the denial is what the developer must fix.
        Some(message) => wrap(&format!(
            "would deny: {}",
            message.strip_prefix("gpu-slicer: ").unwrap_or(&message)
        )),
        None => would_change(&record, would),
    };
    record.outcome = would;
    decision.patch.clear();
    decision.audit = Some(record);
    decision
}

/// The decision for `mode` whatever its rule says (`mutate --mode`): [`apply`] with the mode replaced.
pub fn apply_as(mut decision: Decision, mode: Mode) -> Decision {
    decision.mode = mode;
    apply(decision)
}

/// `would rewrite <container>: <from> <n> -> <to> (rule R)` per renamed request, and the routing.
fn would_change(record: &Record, would: Outcome) -> Vec<String> {
    let rule = record.rule_name();
    let mut lines = Vec::with_capacity(record.changes.len() + 1);
    for c in &record.changes {
        let line = if c.from != c.to {
            format!(
                "{WARNING_PREFIX}would rewrite {}: {} {} -> {} (rule {rule})",
                c.container, c.from, c.quantity, c.to
            )
        } else if let Some(profile) = &record.profile {
            // MIG strategy single: the name stays, the device becomes a slice.
            format!(
                "{WARNING_PREFIX}would give {} a {profile} MIG slice for {} {} (rule {rule})",
                c.container, c.from, c.quantity
            )
        } else {
            continue;
        };
        lines.push(audit::truncate(line, MAX_WARNING_LEN));
    }
    let route = match &record.node_pool {
        Some(pool) => {
            format!("{WARNING_PREFIX}would route to Karpenter NodePool {pool} (rule {rule})")
        }
        None if would == Outcome::WouldRoute || lines.is_empty() => {
            format!("{WARNING_PREFIX}would add node selectors or tolerations (rule {rule})")
        }
        None => return lines,
    };
    lines.push(audit::truncate(route, MAX_WARNING_LEN));
    lines
}

/// `text` as warning lines of at most [`MAX_WARNING_LEN`] characters, each with [`WARNING_PREFIX`],
/// broken between words: a denial message is longer than one line, and cutting it would lose the
/// part that says what to change.
fn wrap(text: &str) -> Vec<String> {
    let room = MAX_WARNING_LEN - WARNING_PREFIX.len();
    let mut lines = Vec::new();
    let mut line = String::with_capacity(MAX_WARNING_LEN);
    for word in text.split(' ') {
        let used = line.len() - line.len().min(WARNING_PREFIX.len());
        if !line.is_empty() && used + 1 + word.len() > room {
            lines.push(std::mem::take(&mut line));
        }
        if line.is_empty() {
            line.push_str(WARNING_PREFIX);
        } else {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    // A single word longer than a line (never in our messages) is cut rather than sent whole.
    lines
        .into_iter()
        .map(|l| audit::truncate(l, MAX_WARNING_LEN))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_wrap_between_words_under_the_limit() {
        let text = format!("would deny: {}", "word ".repeat(60).trim_end());
        let lines = wrap(&text);
        assert!(lines.len() > 2);
        for l in &lines {
            assert!(
                l.starts_with(WARNING_PREFIX) && l.len() <= MAX_WARNING_LEN,
                "{l}"
            );
            assert!(!l.ends_with(' '));
        }
        let joined: Vec<&str> = lines
            .iter()
            .map(|l| l.strip_prefix(WARNING_PREFIX).unwrap_or(l))
            .collect();
        assert_eq!(joined.join(" "), text);
        assert_eq!(
            wrap("would deny: short"),
            ["gpu-slicer (audit): would deny: short"]
        );
    }
}
