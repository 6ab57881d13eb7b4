//! `policy report --output html FILE`: one self-contained page (inline CSS and SVG, no scripts, no
//! external assets) in the planner report's look, for the people who approve a rollout. One function
//! per section of the page, in the page's order.
//!
//! Imports: [`crate::html`] (escaping, the page's start and end) and the report it renders.

use std::fmt::Write as _;

use super::{BudgetOutcome, PolicyReport, RowOutcome};
use crate::html::{PAGE_END, esc, page_start};

/// The CSS this page adds to the shared look: outcome badges, messages, budgets.
const STYLE: &str = "\
.o { padding: 0.05rem 0.4rem; border-radius: 0.3rem; color: #fff; }
.o.rewrite { background: #0a7f5a; }
.o.deny { background: #b3261e; }
.o.unchanged { background: #9aa3ad; }
.o.passthrough { background: #d4d9de; color: #1d2329; }
.msg { color: #b3261e; }
.b.over { color: #b3261e; font-weight: 600; }
th.n { text-align: right; }
";

fn color(outcome: RowOutcome) -> &'static str {
    match outcome {
        RowOutcome::Rewrite => "#0a7f5a",
        RowOutcome::Deny => "#b3261e",
        RowOutcome::Unchanged => "#9aa3ad",
        RowOutcome::Passthrough => "#d4d9de",
    }
}

/// The page. Totals carry ids (`total-rewrite`, `total-deny`, `total-unchanged`, `total-passthrough`,
/// `gpus-whole-before`, `gpus-whole-after`, `total-over-budget`) so tests can read them back.
pub fn render(report: &PolicyReport, title: &str) -> String {
    let t = &report.totals;
    let mut page = page_start(
        &format!("GPU policy report: {} rewrite, {} deny", t.rewrite, t.deny),
        STYLE,
    );
    page.push_str(&totals(report, title));
    page.push_str(&gpus(report));
    page.push_str(&by_rule(report));
    page.push_str(&workloads(report));
    page.push_str(&skipped(report));
    page.push_str(HOW_TO_READ);
    page.push_str(PAGE_END);
    page
}

/// The heading, the workloads by outcome, and the bar of them.
fn totals(report: &PolicyReport, title: &str) -> String {
    let t = &report.totals;
    format!(
        r##"<h1>GPU policy report</h1>
<p>{title}</p>
<p class="big">{workloads} GPU workloads: {rewrite} would be rewritten, {deny} denied at their next rollout</p>
<table class="totals">
<tr><th>rewrite</th><th>deny</th><th>unchanged</th><th>passthrough</th><th>without GPUs</th><th>over budget</th></tr>
<tr><td id="total-rewrite">{rewrite}</td><td id="total-deny">{deny}</td><td id="total-unchanged">{unchanged}</td><td id="total-passthrough">{passthrough}</td><td>{without}</td><td id="total-over-budget">{over_budget}</td></tr>
</table>
{bar_svg}
"##,
        title = esc(title),
        workloads = report.rows.len(),
        rewrite = t.rewrite,
        deny = t.deny,
        unchanged = t.unchanged,
        passthrough = t.passthrough,
        without = report.without_gpus,
        over_budget = report.over_budget,
        bar_svg = outcome_bar(report),
    )
}

/// One bar, split by outcome, and its legend.
fn outcome_bar(report: &PolicyReport) -> String {
    let t = &report.totals;
    let all = report.rows.len().max(1) as f64;
    let mut bar = String::new();
    let mut x = 0.0;
    for o in RowOutcome::ALL {
        let n = t.get(o);
        if n == 0 {
            continue;
        }
        let w = 720.0 * n as f64 / all;
        let _ = write!(
            bar,
            r##"<rect x="{x:.1}" y="0" width="{w:.1}" height="26" fill="{}"><title>{n} {}</title></rect>"##,
            color(o),
            o.as_str()
        );
        x += w;
    }
    let mut legend = String::new();
    for (i, o) in RowOutcome::ALL.into_iter().enumerate() {
        let lx = i * 150;
        let _ = write!(
            legend,
            r##"<rect x="{lx}" y="36" width="12" height="12" fill="{}"/><text x="{}" y="47" font-size="12">{} {}</text>"##,
            color(o),
            lx + 18,
            t.get(o),
            o.as_str()
        );
    }
    format!(
        r##"<svg width="760" height="56" role="img" aria-label="workloads by outcome">{bar}{legend}</svg>"##
    )
}

/// The GPUs of the rewritten workloads: whole GPUs before and after, and the slices after.
fn gpus(report: &PolicyReport) -> String {
    let g = &report.gpus;
    let slices = if g.slices_after.is_empty() {
        "none".to_string()
    } else {
        g.slices_after
            .iter()
            .map(|(k, n)| format!("{n} × {}", esc(k)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r##"<h2>GPUs of the rewritten workloads</h2>
<table class="totals">
<tr><th>whole GPUs today</th><th>whole GPUs after</th><th>slices after</th></tr>
<tr><td id="gpus-whole-before">{}</td><td id="gpus-whole-after">{}</td><td>{slices}</td></tr>
</table>
"##,
        g.whole_before, g.whole_after,
    )
}

/// One row per rule: its workloads by outcome.
fn by_rule(report: &PolicyReport) -> String {
    let mut rules = String::new();
    for (rule, c) in &report.by_rule {
        let _ = writeln!(
            rules,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(rule),
            c.rewrite,
            c.deny,
            c.unchanged,
            c.passthrough
        );
    }
    format!(
        "<h2>By rule</h2>\n<table>\n<tr><th>rule</th><th class=n>rewrite</th><th class=n>deny</th><th class=n>unchanged</th><th class=n>passthrough</th></tr>\n{rules}</table>\n"
    )
}

/// One row per workload: its rule, outcome, GPU-equivalents, budget, and what changes.
fn workloads(report: &PolicyReport) -> String {
    let mut rows = String::new();
    for r in &report.rows {
        let mut what = r
            .changes
            .iter()
            .map(|c| esc(c))
            .collect::<Vec<_>>()
            .join("<br>");
        if let Some(pool) = &r.node_pool {
            if !what.is_empty() {
                what.push_str("<br>");
            }
            let _ = write!(what, "NodePool {}", esc(pool));
        }
        if let Some(m) = &r.message {
            what = format!("<span class=msg>{}</span>", esc(m));
        }
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td><td>{}</td><td><span class=\"o {}\">{}</span></td><td class=n>{}</td><td class=\"b {}\">{}</td><td>{what}</td></tr>",
            esc(&r.namespace),
            esc(&r.workload()),
            r.replicas
                .map_or_else(|| "per node".into(), |n| n.to_string()),
            esc(r.rule.as_deref().unwrap_or("(defaultAction)")),
            r.mode.as_str(),
            r.outcome.as_str(),
            r.outcome.as_str(),
            r.gpu_equivalents
                .map_or_else(|| "-".into(), |g| g.to_string()),
            match r.budget.outcome {
                BudgetOutcome::Over => "over",
                _ => "ok",
            },
            esc(&r.budget.cell(r.pods())),
        );
    }
    format!(
        "<h2>Workloads</h2>\n<table>\n<tr><th>namespace</th><th>workload</th><th class=n>replicas</th><th>rule</th><th>mode</th><th>outcome</th><th class=n>GPU-equivalents</th><th>budget</th><th>what changes</th></tr>\n{rows}</table>\n"
    )
}

/// The objects that could not be used, with why; nothing where there are none.
fn skipped(report: &PolicyReport) -> String {
    if report.skipped.is_empty() {
        return String::new();
    }
    let items: String = report
        .skipped
        .iter()
        .map(|s| format!("<li>{}</li>", esc(s)))
        .collect();
    format!("<h2>Skipped</h2>\n<ul>{items}</ul>\n")
}

const HOW_TO_READ: &str = "<h2>How to read it</h2>
<ul>
<li>Each row is what the policy in <b>enforce</b> mode would do to the workload's pods when they are next created (a rollout, a restart, a scale-up); the mode column says whether the rule enforces today or only warns (audit).</li>
<li>GPUs count every replica; a DaemonSet counts one pod (it runs one per node). A pod holds the larger of its containers' sum and its largest init container.</li>
<li>GPU-equivalents: one is one whole GPU; a slice counts its share of its GPU, a shared replica 1/replicas. Where the rule sets <code>budget.gpuEquivalents</code>, each namespace is filled as an empty one would be, workload by workload in the order shown: <b>over</b> means some of its pods would be denied at admission (the figure is what the namespace holds / its budget).</li>
<li>A denied workload keeps running until its pods are recreated; fix it (or exempt its namespace) before switching its rule to enforce.</li>
</ul>
";
