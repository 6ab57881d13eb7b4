//! `plan --html FILE`: one self-contained page (inline CSS and SVG, no scripts, no external assets) a
//! CTO can forward: cost before and after, nodes per layout, slot usage per GPU, and the assumptions.
//! One function per section of the page, in the page's order.
//!
//! Imports: [`crate::html`] (escaping, the page's start and end), the core's catalog, and the
//! planner's plan and inventory (its quantities). It reads a plan and decides nothing.

use super::assemble::{HOURS_PER_MONTH, Plan};
use super::choose::Layout;
use super::inventory::{cpu_text, memory_text};
use crate::html::{PAGE_END, esc, page_start};
use gpu_slicer_core::catalog;

fn money(v: f64) -> String {
    format!("{v:.2}")
}

/// Dollars with thousands separators, for the monthly figures a reader compares at a glance.
fn dollars(v: f64) -> String {
    let cents = (v.abs() * 100.0).round() as u128;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!(
        "{}{grouped}.{:02}",
        if v < 0.0 { "-" } else { "" },
        cents % 100
    )
}

/// The page. Totals carry ids (`before-usd-per-hour`, `after-usd-per-hour`, `before-nodes`,
/// `after-nodes`, `saving-usd-per-month`) so tests can read them back.
pub fn render(plan: &Plan) -> String {
    let title = format!(
        "GPU plan: ${}/month instead of ${}",
        dollars(plan.after.usd_per_hour * HOURS_PER_MONTH),
        dollars(plan.before.usd_per_hour * HOURS_PER_MONTH)
    );
    let mut page = page_start(&title, "");
    page.push_str(&totals(plan));
    page.push_str(&node_groups(plan));
    page.push_str(&slot_usage(plan));
    page.push_str(&workloads(plan));
    page.push_str(&assumptions(plan));
    page.push_str(PAGE_END);
    page
}

/// The heading, the saving, before against after, and the cost bars.
fn totals(plan: &Plan) -> String {
    let before = plan.before.usd_per_hour;
    let after = plan.after.usd_per_hour;
    let saving = before - after;
    let pct = if before > 0.0 {
        saving / before * 100.0
    } else {
        0.0
    };
    format!(
        r##"<h1>GPU sharing plan</h1>
<p class="big">Saving ${saving_month}/month ({pct:.1}%)</p>
<table class="totals">
<tr><th></th><th>nodes</th><th>GPUs</th><th>$/hour</th><th>$/month</th></tr>
<tr><td>before</td><td id="before-nodes">{before_nodes}</td><td>{before_gpus}</td><td id="before-usd-per-hour">{before_hour}</td><td>{before_month}</td></tr>
<tr><td>after</td><td id="after-nodes">{after_nodes}</td><td>{after_gpus}</td><td id="after-usd-per-hour">{after_hour}</td><td>{after_month}</td></tr>
<tr><td>saving</td><td></td><td></td><td>{saving_hour}</td><td id="saving-usd-per-month">{saving_month}</td></tr>
</table>
{cost_svg}
"##,
        after_month = dollars(after * HOURS_PER_MONTH),
        before_month = dollars(before * HOURS_PER_MONTH),
        saving_month = dollars(saving * HOURS_PER_MONTH),
        saving_hour = money(saving),
        before_nodes = plan.before.nodes,
        before_gpus = plan.before.gpus,
        before_hour = money(before),
        after_nodes = plan.after_node_count(),
        after_gpus = plan.after_gpus(),
        after_hour = money(after),
        cost_svg = cost_bars(before, after),
    )
}

/// Before and after as two bars, in $/month.
fn cost_bars(before: f64, after: f64) -> String {
    let top = before.max(after).max(1e-9);
    let bar = |y: u32, label: &str, v: f64, color: &str| {
        let w = 520.0 * v / top;
        format!(
            r##"<text x="0" y="{}" font-size="13">{label}</text><rect x="80" y="{y}" width="{w:.1}" height="26" fill="{color}"/><text x="{:.1}" y="{}" font-size="13">${}/month</text>"##,
            y + 18,
            86.0 + w,
            y + 18,
            dollars(v * HOURS_PER_MONTH)
        )
    };
    format!(
        r##"<svg width="760" height="80" role="img" aria-label="cost before and after">{}{}</svg>"##,
        bar(6, "before", before, "#9aa3ad"),
        bar(44, "after", after, "#0a7f5a")
    )
}

/// The nodes after: one row per instance type and layout.
fn node_groups(plan: &Plan) -> String {
    let mut rows = String::new();
    for g in &plan.after.nodes {
        let per_gpu = match g.layout_kind {
            Layout::Mig(p) => catalog::instance_type(g.instance_type)
                .and_then(|t| t.gpu.mig_profile(p))
                .map_or(String::new(), |m| format!("{} x {p}", m.max_per_gpu)),
            Layout::MigTimeslice(p, n) => catalog::instance_type(g.instance_type)
                .and_then(|t| t.gpu.mig_profile(p))
                .map_or(String::new(), |m| {
                    format!("{} x {p}, each time-shared by {n}", m.max_per_gpu)
                }),
            Layout::Timeslice(n) => format!("{n} time-sliced replicas"),
            Layout::Whole(per) => format!("whole ({per} per replica)"),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>${}</td></tr>\n",
            esc(g.instance_type),
            esc(&g.layout),
            esc(&per_gpu),
            g.count,
            g.gpus,
            g.replicas,
            money(g.usd_per_hour)
        ));
    }
    format!(
        "<h2>Nodes after</h2>\n<table>\n<tr><th>instance type</th><th>layout</th><th>per GPU</th><th>nodes</th><th>GPUs</th><th>replicas</th><th>$/hour</th></tr>\n{rows}</table>\n"
    )
}

/// Slot usage per node group: replicas / slots, drawn as one bar per group.
fn slot_usage(plan: &Plan) -> String {
    let mut usage = String::new();
    for (i, g) in plan.after.nodes.iter().enumerate() {
        let slots = g.count * g.slots_per_node;
        let used = if slots > 0 {
            g.replicas as f64 / slots as f64
        } else {
            0.0
        };
        let y = i as u32 * 30 + 4;
        usage.push_str(&format!(
            r##"<text x="0" y="{}" font-size="12">{} {}</text><rect x="300" y="{y}" width="300" height="20" fill="#e6e9ec"/><rect x="300" y="{y}" width="{:.1}" height="20" fill="#0a7f5a"/><text x="610" y="{}" font-size="12">{} of {} slots ({:.0}%)</text>"##,
            y + 15,
            esc(g.instance_type),
            esc(&g.layout),
            300.0 * used,
            y + 15,
            g.replicas,
            slots,
            used * 100.0
        ));
    }
    format!(
        r##"<h2>Slot usage</h2>
<svg width="760" height="{}" role="img" aria-label="slot usage per node group">{usage}</svg>
"##,
        plan.after.nodes.len() as u32 * 30 + 8
    )
}

/// One row per workload: its requests, what it runs on, how many a node holds, and why.
fn workloads(plan: &Plan) -> String {
    let mut rows = String::new();
    for (i, w) in plan.workloads.iter().enumerate() {
        let requests = match (w.cpu_millis, w.memory_bytes) {
            (None, None) => "not given: host not checked".to_string(),
            (c, m) => format!(
                "{} vCPU, {}",
                c.map_or("-".into(), cpu_text),
                m.map_or("-".into(), |m| memory_text(u128::from(m)))
            ),
        };
        rows.push_str(&format!(
            "<tr><td>{}/{}</td><td class=n>{}</td><td>{}</td><td>{} {}</td><td id=\"per-node-{i}\">{} by {}</td><td>{}</td></tr>\n",
            esc(&w.namespace),
            esc(&w.name),
            w.replicas,
            esc(&requests),
            esc(w.instance_type),
            esc(&w.layout.name()),
            w.replicas_per_node,
            w.binding_resource.label(),
            esc(&w.reason)
        ));
    }
    format!(
        "<h2>Workloads</h2>\n<table>\n<tr><th>workload</th><th>replicas</th><th>requests per replica</th><th>runs on</th><th>replicas per node, limited by</th><th>why</th></tr>\n{rows}</table>\n"
    )
}

/// What the figures assume, then what the plan could not price or check.
fn assumptions(plan: &Plan) -> String {
    let warnings: String = plan
        .warnings
        .iter()
        .map(|w| format!("<li>{}</li>", esc(w)))
        .collect();
    let unpriced = if plan.before.unpriced.is_empty() {
        String::new()
    } else {
        format!(
            "<li>No on-demand price for the current placement of {}; left out of “before”.</li>",
            esc(&plan.before.unpriced.join(", "))
        )
    };
    format!(
        r##"<h2>Assumptions</h2>
<ul>
<li>On-demand prices, {region}, as of {asof} (Karpenter's generated pricing); {hours} hours a month.</li>
<li>GPU memory is modelled: a MIG slice's real memory, or a whole GPU's, must hold each replica's peak GPU memory; a time-sliced replica also loses its CUDA context overhead.</li>
<li>Hosts are modelled: a node holds as many replicas as its GPU slots, its allocatable vCPU and its allocatable memory all allow. Allocatable is the instance's size less what Karpenter subtracts (VM overhead 7.5% of memory, kube-reserved CPU and memory, the 100Mi eviction threshold) less {reserve_cpu} vCPU and {reserve_mem} per node for DaemonSets (GPU Operator, CNI, kube-proxy, logging). Instance sizes: {sizes}.</li>
<li>Isolation is modelled: workloads that ask for memory isolation get a MIG slice or whole GPUs, never time-slicing.</li>
<li>Compute is not modelled: a slice gets a fraction of the GPU's compute and time-sliced replicas share it; check latency-critical workloads under load.</li>
<li>A node runs one layout on all its GPUs; workloads that picked the same instance type and layout share nodes, packed so that no node exceeds its GPU slots, vCPU or memory.</li>
<li>“Before” is each workload's current placement on whole GPUs, as it runs today, within the same host limits.</li>
{unpriced}
{warnings}
</ul>
"##,
        region = catalog::PRICES_REGION,
        asof = catalog::PRICES_AS_OF,
        hours = HOURS_PER_MONTH,
        reserve_cpu = cpu_text(plan.node_reserve.cpu_millis),
        reserve_mem = memory_text(u128::from(plan.node_reserve.memory_bytes)),
        sizes = esc(catalog::SIZES_AS_OF),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dollars_group_thousands() {
        assert_eq!(super::dollars(184888.094), "184,888.09");
        assert_eq!(super::dollars(999.995), "1,000.00");
        assert_eq!(super::dollars(-1234.5), "-1,234.50");
        assert_eq!(super::dollars(0.0), "0.00");
    }
}
