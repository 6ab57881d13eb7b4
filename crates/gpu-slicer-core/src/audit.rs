//! The audit trail: one record per decision that touches a GPU, shown four ways — a JSON log line
//! (target `gpu_slicer::audit`), the response's `auditAnnotations`, kubectl warnings, and the pod
//! annotation `gpu-slicer.io/rewritten`.
//!
//! Imports: nothing of this crate (the lowest layer).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// Log target of audit lines; route it separately with `RUST_LOG=gpu_slicer::audit=info`.
pub const TARGET: &str = "gpu_slicer::audit";

/// What became of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// GPU requests renamed (and routed).
    Rewritten,
    /// Requests kept, only routing (node selectors, tolerations) added.
    Routed,
    /// Nothing to change: passthrough, or the pod already says what the rule wants.
    Unchanged,
    /// The developer kept whole GPUs with `gpu-slicer.io/exclusive`, and the rule allows it.
    OptedOut,
    Denied,
    /// Audit mode: enforce would have rewritten the GPU requests; the pod was left as it was.
    #[serde(rename = "would-rewrite")]
    WouldRewrite,
    /// Audit mode: enforce would have added routing only (node selectors, tolerations).
    #[serde(rename = "would-route")]
    WouldRoute,
    /// Audit mode: enforce would have denied the pod; it was allowed.
    #[serde(rename = "would-deny")]
    WouldDeny,
}

impl Outcome {
    /// The name in audit lines, `auditAnnotations` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Rewritten => "rewritten",
            Outcome::Routed => "routed",
            Outcome::Unchanged => "unchanged",
            Outcome::OptedOut => "optedOut",
            Outcome::Denied => "denied",
            Outcome::WouldRewrite => "would-rewrite",
            Outcome::WouldRoute => "would-route",
            Outcome::WouldDeny => "would-deny",
        }
    }
}

/// One container resource as it was and as it became.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `main`, or `init:warmup` for an init container.
    pub container: String,
    pub from: String,
    pub to: String,
    pub quantity: String,
}

/// What the engine decided, for the audit trail. Request facts (uid, user, dry run) are added by the
/// admission layer in [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The matching rule; `None` when the policy's `defaultAction` applied.
    pub rule: Option<String>,
    pub action: &'static str,
    pub changes: Vec<Change>,
    /// The MIG profile whole-GPU requests were given, for `mig` rules (under the `single` strategy
    /// the resource name alone does not say it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub node_pool: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Record {
    /// The matching rule's name, or `(defaultAction)` when the policy's default applied.
    pub fn rule_name(&self) -> &str {
        self.rule.as_deref().unwrap_or("(defaultAction)")
    }

    /// One line saying what happened, used for the pod annotation and `auditAnnotations`.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        let mut s = String::with_capacity(128);
        let _ = write!(s, "rule={} action={}", self.rule_name(), self.action);
        for (i, c) in self.changes.iter().enumerate() {
            // A pod with thousands of containers must not get an annotation near the API server's
            // 256 KiB limit for all of them: the audit log line keeps every change.
            if s.len() > MAX_SUMMARY_LEN {
                let _ = write!(
                    s,
                    "; and {} more containers (the audit log lists them)",
                    self.changes.len() - i
                );
                break;
            }
            let _ = if c.from == c.to
                && let Some(profile) = &self.profile
            {
                write!(
                    s,
                    "; {}: {} {} as MIG {profile}",
                    c.container, c.from, c.quantity
                )
            } else if c.from == c.to {
                write!(s, "; {}: {} {} kept", c.container, c.from, c.quantity)
            } else {
                write!(
                    s,
                    "; {}: {} {} -> {}",
                    c.container, c.from, c.quantity, c.to
                )
            };
        }
        if let Some(pool) = &self.node_pool {
            let _ = write!(s, "; nodePool={pool}");
        }
        s
    }

    /// `auditAnnotations` for the API server's audit log. Keys have no `/` (the API server prefixes
    /// `<webhook name>/` and drops keys that already contain one) and at most 63 characters.
    pub fn audit_annotations(&self) -> BTreeMap<&'static str, Cow<'_, str>> {
        let mut out = BTreeMap::new();
        out.insert("rule", Cow::Borrowed(self.rule_name()));
        out.insert("action", Cow::Borrowed(self.action));
        out.insert("outcome", Cow::Borrowed(self.outcome.as_str()));
        if !self.changes.is_empty() || self.node_pool.is_some() {
            out.insert("rewrites", Cow::Owned(self.summary()));
        }
        if let Some(reason) = &self.reason {
            out.insert("reason", Cow::Borrowed(reason.as_str()));
        }
        out
    }
}

/// The summary (pod annotation, `rewrites` audit annotation) lists changes up to about this many bytes.
pub const MAX_SUMMARY_LEN: usize = 2048;

/// The request's owner, e.g. `ReplicaSet/llm-server-84f7f4dd45`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

/// A full audit entry: the engine's record plus who asked, for what, and whether it was a dry run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub uid: String,
    pub namespace: String,
    /// The pod's name, or its `generateName` for controller-made pods.
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub user: String,
    pub dry_run: bool,
    #[serde(flatten)]
    pub record: Record,
}

impl Entry {
    /// The owner as `Kind/name`, empty for a bare pod.
    pub fn owner_text(&self) -> String {
        self.owner
            .as_ref()
            .map_or_else(String::new, |o| format!("{}/{}", o.kind, o.name))
    }

    /// The entry as one JSON log line (with its newline), in the shape of the JSON log's other lines:
    /// `timestamp`, `level`, `message`, the fields, `target`.
    pub fn json_line(&self, at: time::OffsetDateTime) -> Vec<u8> {
        #[derive(Serialize)]
        struct Line<'a> {
            timestamp: String,
            level: &'static str,
            message: &'static str,
            uid: &'a str,
            namespace: &'a str,
            pod: &'a str,
            owner: String,
            user: &'a str,
            dry_run: bool,
            rule: &'a str,
            action: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            profile: &'a str,
            changes: &'a [Change],
            node_pool: &'a str,
            outcome: &'static str,
            reason: &'a str,
            target: &'static str,
        }
        // RFC 3339 in UTC with microseconds, as tracing-subscriber writes the other lines.
        const TIMESTAMP: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        let r = &self.record;
        let line = Line {
            timestamp: at
                .to_offset(time::UtcOffset::UTC)
                .format(TIMESTAMP)
                .unwrap_or_default(),
            level: "INFO",
            message: AUDIT_MESSAGE,
            uid: &self.uid,
            namespace: &self.namespace,
            pod: &self.pod,
            owner: self.owner_text(),
            user: &self.user,
            dry_run: self.dry_run,
            rule: r.rule_name(),
            action: r.action,
            profile: r.profile.as_deref().unwrap_or(""),
            changes: &r.changes,
            node_pool: r.node_pool.as_deref().unwrap_or(""),
            outcome: r.outcome.as_str(),
            reason: r.reason.as_deref().unwrap_or(""),
            target: TARGET,
        };
        let mut out = Vec::with_capacity(512);
        // Serializing plain strings into memory cannot fail.
        let _ = serde_json::to_writer(&mut out, &line);
        out.push(b'\n');
        out
    }
}

/// The `message` of every audit line.
pub const AUDIT_MESSAGE: &str = "admission decision";

/// Cuts a message to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One whole GPU of `container` rewritten to a 1g.10gb slice by rule `inference-mig`.
    fn mig_record(container: &str) -> Record {
        Record {
            rule: Some("inference-mig".into()),
            action: "mig",
            changes: vec![Change {
                container: container.into(),
                from: "nvidia.com/gpu".into(),
                to: "nvidia.com/mig-1g.10gb".into(),
                quantity: "1".into(),
            }],
            profile: Some("1g.10gb".into()),
            node_pool: Some("gpu-mig".into()),
            outcome: Outcome::Rewritten,
            reason: None,
        }
    }

    #[test]
    fn summary_and_annotations_say_what_changed() {
        let r = mig_record("init:warmup");
        assert_eq!(
            r.summary(),
            "rule=inference-mig action=mig; init:warmup: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb; nodePool=gpu-mig"
        );
        let a = r.audit_annotations();
        assert!(a.keys().all(|k| !k.contains('/') && k.len() <= 63));
        assert_eq!(a["outcome"], "rewritten");
    }

    #[test]
    fn the_json_line_has_the_shape_of_the_other_log_lines() {
        let entry = Entry {
            uid: "a48821b6".into(),
            namespace: "ml-inference".into(),
            pod: "llm-server-84f7f4dd45-".into(),
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "llm-server-84f7f4dd45".into(),
            }),
            user: "system:serviceaccount:kube-system:replicaset-controller".into(),
            dry_run: false,
            record: mig_record("vllm"),
        };
        let at = time::macros::datetime!(2026-11-26 06:26:12.701761 UTC);
        let line = String::from_utf8(entry.json_line(at)).unwrap();
        assert_eq!(
            line,
            concat!(
                r#"{"timestamp":"2026-11-26T06:26:12.701761Z","level":"INFO","message":"admission decision","#,
                r#""uid":"a48821b6","namespace":"ml-inference","pod":"llm-server-84f7f4dd45-","#,
                r#""owner":"ReplicaSet/llm-server-84f7f4dd45","#,
                r#""user":"system:serviceaccount:kube-system:replicaset-controller","dry_run":false,"#,
                r#""rule":"inference-mig","action":"mig","profile":"1g.10gb","#,
                r#""changes":[{"container":"vllm","from":"nvidia.com/gpu","to":"nvidia.com/mig-1g.10gb","quantity":"1"}],"#,
                r#""node_pool":"gpu-mig","outcome":"rewritten","reason":"","target":"gpu_slicer::audit"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abcdef".into(), 10), "abcdef");
        assert_eq!(truncate("abcdefghij".into(), 8), "abcde...");
        let t = truncate("ééééé".into(), 6);
        assert!(t.len() <= 6 && t.ends_with("..."));
    }
}
