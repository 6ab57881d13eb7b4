//! `gpu-slicer usage --from-cluster`: per namespace, the rule, pods, GPU-equivalents held, whole GPUs
//! asked, $/h now and without slicing, saving and budget use, with totals; as a table, JSON, CSV or a
//! self-contained HTML page. Read-only: every list paginated through [`crate::cluster::kubeapi`], each
//! pod projected as its page arrives (the Pod watch's lean type), so a large cluster's pods never sit
//! in memory at once.
//!
//! Imports: the core, [`crate::terminal`], [`crate::html`], [`crate::cluster`] and
//! [`crate::policy_source`]; never its peers (planner, doctor, report) or the CLI.

pub mod html;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::Api;
use serde::Serialize;

use crate::cluster::kubeapi::{self, ApiError, Listed};
use crate::cluster::pod_watch::WatchedPod;
use crate::terminal::escape_controls;
use gpu_slicer_core::equivalents::{self, Units};
use gpu_slicer_core::gpus::Gpus;
use gpu_slicer_core::nodepool::{NodePool, NodePoolIndex};
use gpu_slicer_core::policy::Policy;
use gpu_slicer_core::spend::{self, Row};

/// The report: one row per namespace with live GPU pods, and the totals.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub namespaces: Vec<Row>,
    pub totals: Row,
}

/// What the report is built from, read from a cluster.
pub struct ClusterFacts {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Live GPU pods per namespace: `(pods, held, requested)`, counted when listed.
    pub pods: Vec<WatchedPod>,
    pub pools: NodePoolIndex,
}

/// Reads namespaces, pods (live GPU pods only kept) and NodePools.
pub async fn read(client: &Client) -> Result<ClusterFacts, ApiError> {
    let namespaces = match kubeapi::list_all::<Namespace>(client).await? {
        Listed::Found(list) => list
            .into_iter()
            .filter_map(|ns| Some((ns.metadata.name?, ns.metadata.labels.unwrap_or_default())))
            .collect(),
        Listed::Missing => BTreeMap::new(),
    };
    let api = Api::<WatchedPod>::all(client.clone());
    let keep = |p: WatchedPod| {
        let gpu = p.live()
            && (p.spec.resource_claims.is_some()
                || p.spec
                    .containers
                    .iter()
                    .chain(&p.spec.init_containers)
                    .any(|c| c.resources.is_some()));
        gpu.then_some(p)
    };
    let pods = kubeapi::list_pages(&api, "listing pods", keep)
        .await?
        .unwrap_or_default();
    let pools = match kubeapi::list_dynamic(client, &kubeapi::nodepools()).await? {
        Listed::Found(list) => NodePoolIndex::new(
            list.iter()
                .filter_map(|o| NodePool::from_object(&serde_json::to_value(o).ok()?).ok()),
        ),
        Listed::Missing => NodePoolIndex::default(),
    };
    Ok(ClusterFacts {
        namespaces,
        pods,
        pools,
    })
}

/// Builds the report: each pod counted under its namespace's rule, priced by the rule's NodePool.
pub fn build(facts: ClusterFacts, policy: &Policy) -> Usage {
    let mut per_ns: BTreeMap<String, (u64, Gpus, u64)> = BTreeMap::new();
    for pod in facts.pods {
        let Some(ns) = pod.metadata.namespace.clone() else {
            continue;
        };
        let fallback = gpu_slicer_core::labels::name_label(&ns);
        let labels = facts.namespaces.get(&ns).unwrap_or(&fallback);
        let units = Units {
            rule: policy.rule_for(&ns, labels),
            policy,
            pools: &facts.pools,
        };
        let usage = equivalents::of_pod(&pod.view(), &units);
        if usage.is_gpu() {
            let e = per_ns.entry(ns).or_default();
            e.0 += 1;
            e.1 = e.1.saturating_add(usage.held);
            e.2 += usage.requested;
        }
    }
    let namespaces: Vec<Row> = per_ns
        .into_iter()
        .map(|(ns, (pods, held, requested))| {
            let fallback = gpu_slicer_core::labels::name_label(&ns);
            let labels = facts.namespaces.get(&ns).unwrap_or(&fallback);
            let rule = policy.rule_for(&ns, labels);
            let price = rule.and_then(|r| spend::usd_per_gpu_hour(r, &facts.pools));
            Row::new(&ns, rule, pods, held, requested, price)
        })
        .collect();
    let totals = spend::totals(&namespaces);
    Usage { namespaces, totals }
}

fn opt_money(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn budget_use(r: &Row) -> String {
    match (r.budget_gpu_equivalents, r.budget_use()) {
        (Some(b), Some(pct)) => format!("{} / {b} ({pct:.0}%)", r.gpu_equivalents),
        (Some(b), None) => format!("{} / {b}", r.gpu_equivalents),
        _ => "-".into(),
    }
}

fn cells(r: &Row) -> [String; 9] {
    [
        r.namespace.clone(),
        r.rule.clone(),
        r.pods.to_string(),
        r.gpu_equivalents.to_string(),
        r.requested_gpus.to_string(),
        opt_money(r.usd_per_hour),
        opt_money(r.usd_per_hour_without_slicing),
        opt_money(r.saving()),
        budget_use(r),
    ]
}

const HEADER: [&str; 9] = [
    "NAMESPACE",
    "RULE",
    "PODS",
    "GPU-EQ",
    "GPUS-ASKED",
    "USD/H",
    "USD/H-WHOLE",
    "SAVING/H",
    "BUDGET",
];

/// A text table; names from the cluster have their control characters escaped.
pub fn table(u: &Usage) -> String {
    let mut rows: Vec<[String; 9]> = vec![HEADER.map(String::from)];
    rows.extend(
        u.namespaces
            .iter()
            .map(|r| cells(r).map(|c| escape_controls(&c).into_owned())),
    );
    let mut total = cells(&u.totals);
    total[0] = "TOTAL".into();
    rows.push(total);
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// CSV (RFC 4180: fields with commas, quotes or line breaks quoted), totals last.
pub fn csv(u: &Usage) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from(
        "namespace,rule,pods,gpuEquivalents,requestedGpus,usdPerHour,usdPerHourWithoutSlicing,savingUsdPerHour,budgetGpuEquivalents\n",
    );
    let mut total = u.totals.clone();
    total.namespace = "TOTAL".into();
    for r in u.namespaces.iter().chain(std::iter::once(&total)) {
        let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
        let line = [
            field(&r.namespace),
            field(&r.rule),
            r.pods.to_string(),
            r.gpu_equivalents.to_string(),
            r.requested_gpus.to_string(),
            num(r.usd_per_hour),
            num(r.usd_per_hour_without_slicing),
            num(r.saving()),
            r.budget_gpu_equivalents
                .map_or(String::new(), |b| b.to_string()),
        ];
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}
