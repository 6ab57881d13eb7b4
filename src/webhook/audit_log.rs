//! The audit log line: where each admission's [`Entry`] is written (target `gpu_slicer::audit`), with
//! the clock's time. The record itself is the core's ([`gpu_slicer_core::audit`]).

use std::sync::OnceLock;

use gpu_slicer_core::audit::{AUDIT_MESSAGE, Entry, TARGET};

/// Writes the entry on the audit target: as one JSON line straight to the log writer when logs
/// are JSON (see [`send_json_lines_to`]), else as a `tracing` event.
pub fn emit(entry: &Entry) {
    // The fields below cost allocations: skip them when audit lines are filtered out.
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    if let Some(write) = JSON_LINES.get() {
        write(&entry.json_line(time::OffsetDateTime::now_utc()));
        return;
    }
    let r = &entry.record;
    let owner = entry.owner_text();
    let changes = serde_json::to_string(&r.changes).unwrap_or_default();
    tracing::info!(
        target: TARGET,
        uid = %entry.uid,
        namespace = %entry.namespace,
        pod = %entry.pod,
        owner = owner.as_str(),
        user = %entry.user,
        dry_run = entry.dry_run,
        rule = r.rule_name(),
        action = r.action,
        profile = r.profile.as_deref().unwrap_or(""),
        changes = %changes,
        node_pool = r.node_pool.as_deref().unwrap_or(""),
        outcome = r.outcome.as_str(),
        reason = r.reason.as_deref().unwrap_or(""),
        "{AUDIT_MESSAGE}"
    );
}

type LineWriter = Box<dyn Fn(&[u8]) + Send + Sync>;

static JSON_LINES: OnceLock<LineWriter> = OnceLock::new();

/// Sends audit lines, as JSON, to `write` (one call per complete line) instead of through `tracing`.
/// `tracing`'s JSON layer turns every field into a `serde_json::Value` before writing; serializing
/// the entry directly costs a fraction of that, on every admission (BENCHMARKS.md). The `RUST_LOG`
/// filter still decides whether audit lines are written. Set once, by the log set-up of `serve`.
pub fn send_json_lines_to(write: LineWriter) {
    let _ = JSON_LINES.set(write);
}
