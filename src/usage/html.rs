//! `usage --output html`: one self-contained page (inline CSS and SVG, no scripts, no external assets)
//! for the finance review, in the planner report's look: per namespace, $/hour now against without
//! slicing as a bar chart, then the table. Totals carry ids (`usd-per-hour`,
//! `usd-per-hour-without-slicing`, `gpu-equivalents`) so tests can read them back.

use super::{Usage, budget_use, opt_money};
use crate::html::esc;
use gpu_slicer_core::catalog;

/// One pair of bars per namespace (held GPU-equivalents and whole GPUs asked, in $/hour where priced,
/// else in GPUs).
fn chart(u: &Usage) -> String {
    let priced = u.namespaces.iter().all(|r| r.usd_per_hour.is_some());
    let value = |r: &gpu_slicer_core::spend::Row, whole: bool| -> f64 {
        match (priced, whole) {
            (true, false) => r.usd_per_hour.unwrap_or(0.0),
            (true, true) => r.usd_per_hour_without_slicing.unwrap_or(0.0),
            (false, false) => r.gpu_equivalents.as_f64(),
            (false, true) => r.requested_gpus as f64,
        }
    };
    let max = u
        .namespaces
        .iter()
        .map(|r| value(r, true).max(value(r, false)))
        .fold(0.0, f64::max)
        .max(1e-9);
    let (row_h, width, label_w) = (34.0, 640.0, 160.0);
    let height = row_h * u.namespaces.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg role=\"img\" aria-label=\"cost per namespace\" width=\"{width}\" height=\"{height}\">"
    );
    for (i, r) in u.namespaces.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let bar = |v: f64| (v / max) * (width - label_w - 70.0);
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 12.0,
            esc(&r.namespace)
        ));
        for (j, (whole, class)) in [(true, "before"), (false, "after")].iter().enumerate() {
            let v = value(r, *whole);
            let yy = y + j as f64 * 13.0;
            svg.push_str(&format!(
                "<rect class=\"{class}\" x=\"{label_w}\" y=\"{yy}\" width=\"{:.1}\" height=\"11\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{v:.2}</text>",
                bar(v),
                label_w + bar(v) + 4.0,
                yy + 9.0
            ));
        }
    }
    let unit = if priced { "$/hour" } else { "GPUs" };
    svg.push_str(&format!(
        "<text x=\"{label_w}\" y=\"{}\" font-size=\"11\"><tspan class=\"legend-before\">■</tspan> whole GPUs asked ({unit})  <tspan class=\"legend-after\">■</tspan> held with slicing ({unit})</text></svg>",
        height - 6.0
    ));
    svg
}

/// The page.
pub fn render(u: &Usage) -> String {
    let mut rows = String::new();
    for r in &u.namespaces {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.namespace),
            esc(&r.rule),
            r.pods,
            r.gpu_equivalents,
            r.requested_gpus,
            opt_money(r.usd_per_hour),
            opt_money(r.usd_per_hour_without_slicing),
            opt_money(r.saving()),
            esc(&budget_use(r))
        ));
    }
    let t = &u.totals;
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>GPU usage per namespace</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,td:nth-child(2),th{{text-align:left}}
.before,.legend-before{{fill:#c0392b;color:#c0392b}}.after,.legend-after{{fill:#27ae60;color:#27ae60}}.total{{font-weight:bold}}
</style></head><body><h1>GPU usage per namespace</h1>
<p>One GPU-equivalent is one whole GPU: a MIG slice counts its compute over its GPU's, a shared replica 1/replicas. Prices: on-demand, {region}, as of {asof}; each NodePool at the lowest $/GPU of its instance types.</p>
<p class=\"total\">Now <span id=\"usd-per-hour\">{now}</span> $/hour for <span id=\"gpu-equivalents\">{held}</span> GPU-equivalents; without slicing <span id=\"usd-per-hour-without-slicing\">{whole}</span> $/hour for {asked} GPUs; saving {saving} $/hour.</p>
{chart}
<table><thead><tr><th>namespace</th><th>rule</th><th>pods</th><th>GPU-equivalents</th><th>GPUs asked</th><th>$/h now</th><th>$/h without slicing</th><th>saving $/h</th><th>budget</th></tr></thead><tbody>{rows}</tbody>
<tfoot><tr class=\"total\"><td>total</td><td></td><td>{pods}</td><td>{held}</td><td>{asked}</td><td>{now}</td><td>{whole}</td><td>{saving}</td><td></td></tr></tfoot></table></body></html>\n",
        region = catalog::PRICES_REGION,
        asof = catalog::PRICES_AS_OF,
        now = opt_money(t.usd_per_hour),
        held = t.gpu_equivalents,
        whole = opt_money(t.usd_per_hour_without_slicing),
        asked = t.requested_gpus,
        saving = opt_money(t.saving()),
        pods = t.pods,
        chart = chart(u),
    )
}
