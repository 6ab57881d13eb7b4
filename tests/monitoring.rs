//! `manifests/monitoring`: the Grafana dashboard, the PrometheusRule and the ServiceMonitor.
//!
//! - every PromQL expression (dashboard panels, template variables, alert rules) names only metrics
//!   on [`CONTRACT`] (issue 23's GPU-equivalent metrics) or [`EXISTING`] (what the webhook exports
//!   today, checked against `Metrics::new().encode()` and the metric tables in the README and
//!   docs/deploying.md), so a renamed metric fails here instead of leaving a panel empty;
//! - the dashboard ConfigMap the kustomization renders is the JSON file, byte for byte;
//! - the PrometheusRule has what Alertmanager and the docs rely on. No PrometheusRule or
//!   ServiceMonitor CRD schema is in ../shared/schemas, so their structure is checked by hand here
//!   (the fields the Prometheus Operator's `Rule` and `Endpoint` types define);
//! - with `promtool` (Debian package `prometheus`; `.ci/run` installs it) every expression parses
//!   and the alerts fire, and stay quiet, as `tests/data/monitoring/alerts.test.yaml` says. Without
//!   promtool those two tests print why and pass.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{kustomize, repo};
use gpu_slicer::cluster::watch::{LookupLabel, ResourceLabel};
use gpu_slicer::webhook::metrics::{AdmissionLabels, AuditLabels, ErrorLabels};
use serde_json::{Value, json};

/// Issue 23's contract: gauges, labelled `namespace` and `rule`, cluster mode only.
const CONTRACT: &[&str] = &[
    "gpu_slicer_gpu_equivalents",
    "gpu_slicer_requested_gpus",
    "gpu_slicer_budget_gpu_equivalents",
    "gpu_slicer_cost_usd_per_hour",
    "gpu_slicer_saving_usd_per_hour",
];

/// What the webhook exports besides the contract's, as scraped (counters with `_total`, the
/// histogram as its three series).
const EXISTING: &[&str] = &[
    "gpu_slicer_admissions_total",
    "gpu_slicer_audit_would_total",
    "gpu_slicer_patches_total",
    "gpu_slicer_denials_total",
    "gpu_slicer_bad_requests_total",
    "gpu_slicer_admission_duration_seconds_bucket",
    "gpu_slicer_admission_duration_seconds_sum",
    "gpu_slicer_admission_duration_seconds_count",
    "gpu_slicer_policy_rules",
    "gpu_slicer_policy_generation",
    "gpu_slicer_policy_reload_errors_total",
    "gpu_slicer_policy_last_reload_success_timestamp_seconds",
    "gpu_slicer_certificate_expiry_timestamp_seconds",
    "gpu_slicer_cache_synced",
    "gpu_slicer_cache_objects",
    "gpu_slicer_namespace_lookups_total",
];

/// Series Prometheus makes itself for every target.
const PROMETHEUS_OWN: &[&str] = &["up"];

const DASHBOARD: &str = "manifests/monitoring/gpu-slicer-dashboard.json";
const RULES: &str = "manifests/monitoring/prometheusrule.yaml";
const SERVICE_MONITOR: &str = "manifests/monitoring/servicemonitor.yaml";

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo(DASHBOARD)).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    let mut docs =
        gpu_slicer_core::yaml::documents(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one object");
    docs.remove(0)
}

fn alert_rules(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// (where, PromQL) for every query of the dashboard: panel targets and query variables (the
/// selector inside `label_values(SELECTOR, label)`).
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {:?} target {}: no expr", p["title"], t["refId"]));
            out.push((
                format!("panel {:?} {}", p["title"], t["refId"]),
                expr.into(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap();
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map(|(sel, _)| sel.to_string())
            .unwrap_or_else(|| panic!("variable {}: not label_values(...): {q}", v["name"]));
        out.push((format!("variable {}", v["name"]), inner));
    }
    out
}

// ---- a small PromQL scanner: the metric names an expression selects ----

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Binary operators and modifiers, and the aggregation operators, which may be followed by a
/// grouping clause instead of their parenthesis (`sum by (namespace) (x)`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// From `open` (an opening bracket or quote), the index just past its match; quotes inside
/// brackets are skipped whole, so `{a="}"}` ends at the right brace.
fn skip(b: &[char], open: usize) -> usize {
    let close = match b[open] {
        '{' => '}',
        '[' => ']',
        '(' => ')',
        q => {
            let mut i = open + 1;
            while i < b.len() && b[i] != q {
                i += if b[i] == '\\' && q != '`' { 2 } else { 1 };
            }
            return i + 1;
        }
    };
    let mut i = open + 1;
    while i < b.len() && b[i] != close {
        i = match b[i] {
            '"' | '\'' | '`' => skip(b, i),
            _ => i + 1,
        };
    }
    i + 1
}

/// The metric names an expression selects: identifiers outside strings, label matchers, ranges,
/// grouping label lists, Grafana variables and numbers that are not functions or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let b: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, '"' | '\'' | '`' | '{' | '[') {
            i = skip(&b, i);
        } else if c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            if i < b.len() && b[i] == '{' {
                i = skip(&b, i);
            } else {
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && b.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let mut j = i;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            let call = b.get(j) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i = skip(&b, j);
                }
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                out.push(word);
            }
        } else {
            i += 1;
        }
    }
    out
}

fn known() -> BTreeSet<&'static str> {
    CONTRACT
        .iter()
        .chain(EXISTING)
        .chain(PROMETHEUS_OWN)
        .copied()
        .collect()
}

/// The names in `expr` that are not on the list.
fn unknown_metrics(expr: &str) -> Vec<String> {
    let known = known();
    metric_names(expr)
        .into_iter()
        .filter(|m| !known.contains(m.as_str()))
        .collect()
}

#[test]
fn the_scanner_finds_metric_names_and_nothing_else() {
    let expr = r#"sum by (namespace, rule) (rate(foo_total{a="}b", c=~"$x"}[$__rate_interval] offset 1h))
        / on (x) group_left (y) bar:ratio and baz > bool 1e-9
        # comment naming not_a_metric
        or histogram_quantile(0.99, sum without (pod) (lat_bucket[5m])) * ${var} unless absent(qux)"#;
    assert_eq!(
        metric_names(expr),
        ["foo_total", "bar:ratio", "baz", "lat_bucket", "qux"]
    );
    // A renamed metric is caught.
    assert_eq!(
        unknown_metrics("sum(gpu_slicer_gpu_equivalent{namespace=~\"$namespace\"})"),
        ["gpu_slicer_gpu_equivalent"]
    );
    assert!(unknown_metrics("sum(rate(gpu_slicer_denials_total[5m]))").is_empty());
    // The scraped name of a counter is `_total`; the registered name alone is not a series.
    assert_eq!(
        unknown_metrics("rate(gpu_slicer_denials[5m])"),
        ["gpu_slicer_denials"]
    );
}

#[test]
fn every_query_names_only_metrics_gpu_slicer_exports() {
    let dash = dashboard();
    let rule = yaml_file(RULES);
    let mut queries = dashboard_queries(&dash);
    for r in alert_rules(&rule) {
        queries.push((
            format!("alert {}", r["alert"]),
            r["expr"].as_str().unwrap().into(),
        ));
    }
    assert!(queries.len() >= 20, "only {} queries", queries.len());
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: selects no metric: {expr}");
        let unknown = unknown_metrics(expr);
        assert!(
            unknown.is_empty(),
            "{place}: {unknown:?} is not a metric gpu-slicer exports (CONTRACT/EXISTING in tests/monitoring.rs): {expr}"
        );
        used.extend(names);
    }
    // The dashboard shows every contract metric, and the budget alerts use held and budget.
    let dash_used: BTreeSet<String> = dashboard_queries(&dash)
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .collect();
    for m in CONTRACT {
        assert!(dash_used.contains(*m), "the dashboard never shows {m}");
    }
    for m in [
        "gpu_slicer_admissions_total",
        "gpu_slicer_denials_total",
        "gpu_slicer_audit_would_total",
    ] {
        assert!(dash_used.contains(m), "the dashboard never shows {m}");
    }
}

#[test]
fn the_known_metric_names_are_what_the_code_exports_and_the_docs_list() {
    // A family is only written out once it has a series: give each one.
    let metrics = gpu_slicer::webhook::metrics::Metrics::new();
    metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            outcome: "rewritten",
            action: "mig",
            rule: "ml".into(),
        })
        .inc();
    metrics
        .audit_would
        .get_or_create(&AuditLabels {
            outcome: "would-deny",
            rule: "ml".into(),
            namespace: "team-a".into(),
        })
        .inc();
    metrics
        .bad_requests
        .get_or_create(&ErrorLabels { reason: "timeout" })
        .inc();
    let resource = ResourceLabel {
        resource: "namespaces",
    };
    metrics.cluster.synced.get_or_create(&resource).set(1);
    metrics.cluster.objects.get_or_create(&resource).set(3);
    metrics
        .cluster
        .lookups
        .get_or_create(&LookupLabel { result: "found" })
        .inc();
    let text = metrics.encode();
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                exported.insert(format!("{}_total", name.trim_end_matches("_total")));
            }
            "histogram" => {
                for s in ["bucket", "sum", "count"] {
                    exported.insert(format!("{name}_{s}"));
                }
            }
            _ => {
                exported.insert(name.to_string());
            }
        }
    }
    assert!(exported.len() >= 10, "{text}");
    for m in EXISTING {
        assert!(
            exported.contains(*m),
            "{m} is on EXISTING but the webhook does not export it (renamed?): {exported:?}"
        );
    }
    for m in &exported {
        assert!(
            known().contains(m.as_str()),
            "the webhook exports {m}: add it to EXISTING or CONTRACT in tests/monitoring.rs (and to the docs)"
        );
    }
    // The README and docs/deploying.md list each existing metric (deploying.md without the prefix).
    let docs = std::fs::read_to_string(repo("README.md")).unwrap()
        + &std::fs::read_to_string(repo("docs/deploying.md")).unwrap();
    for m in EXISTING {
        let base = m
            .trim_start_matches("gpu_slicer_")
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            docs.contains(&format!("`{base}`")) || docs.contains(m),
            "{m} is not documented in README.md or docs/deploying.md"
        );
    }
    // The guide names each contract metric it charts.
    let guide = std::fs::read_to_string(repo("docs/proving-savings.md")).unwrap();
    for m in CONTRACT {
        assert!(guide.contains(m), "docs/proving-savings.md never names {m}");
    }
}

#[test]
fn the_dashboard_has_its_panels_variables_and_data_source() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "gpu-slicer-gpu-equivalents");
    let vars: Vec<&Value> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let names: Vec<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["datasource", "namespace", "rule"]);
    assert_eq!(vars[0]["type"], "datasource");
    assert_eq!(vars[0]["query"], "prometheus");
    for v in &vars[1..] {
        assert_eq!(v["multi"], true, "{}", v["name"]);
        assert_eq!(v["includeAll"], true, "{}", v["name"]);
        // "All" must be a regex matching every value, the empty rule (defaultAction) included.
        assert_eq!(v["allValue"], ".*", "{}", v["name"]);
    }

    let ds = json!({"type": "prometheus", "uid": "${datasource}"});
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels(&dash) {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel id {}",
            p["id"]
        );
        for k in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][k].is_u64(), "{}: gridPos.{k}", p["title"]);
        }
        assert!(
            p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24,
            "{}: wider than the grid",
            p["title"]
        );
        titles.push(p["title"].as_str().unwrap().to_string());
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], ds, "{}", p["title"]);
        assert!(
            p["description"].as_str().is_some_and(|d| d.len() > 20),
            "{}: say what the panel shows",
            p["title"]
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"], ds, "{}", p["title"]);
        }
    }
    for want in [
        "GPU-equivalents held per namespace",
        "Whole GPUs requested vs GPU-equivalents held",
        "Slicing ratio per namespace",
        "Cost per namespace, $/h",
        "Cost now, $/h",
        "Saving per namespace, $/h",
        "Saving now, $/h",
        "Budget use per namespace",
        "Chargeback per namespace (now)",
        "Admissions by outcome",
        "Denials",
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "no panel {want:?}: {titles:?}"
        );
    }
    let stacked = panels(&dash)
        .into_iter()
        .find(|p| p["title"] == "GPU-equivalents held per namespace")
        .unwrap();
    assert_eq!(
        stacked["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"],
        "normal"
    );
    let budget = panels(&dash)
        .into_iter()
        .find(|p| p["title"] == "Budget use per namespace")
        .unwrap();
    assert_eq!(budget["fieldConfig"]["defaults"]["unit"], "percent");
    let expr = budget["targets"][0]["expr"].as_str().unwrap();
    assert!(
        expr.contains("gpu_slicer_gpu_equivalents")
            && expr.contains("/ max by (namespace, rule) (gpu_slicer_budget_gpu_equivalents"),
        "{expr}"
    );

    // Every replica exports the same cluster-wide gauges: per-namespace figures take the max over
    // replicas before any sum, or two replicas would double every number.
    for (place, expr) in dashboard_queries(&dash) {
        for m in CONTRACT {
            let mut rest = expr.as_str();
            while let Some(i) = rest.find(m) {
                let before = &rest[..i];
                assert!(
                    before.ends_with("max by (namespace, rule) (") || place.starts_with("variable"),
                    "{place}: {m} not deduplicated over replicas: {expr}"
                );
                rest = &rest[i + m.len()..];
            }
        }
    }
}

#[test]
fn the_dashboard_config_map_is_the_json_file() {
    let rendered = kustomize("manifests/monitoring");
    let kinds: BTreeSet<&str> = rendered
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "PrometheusRule", "ServiceMonitor"])
    );
    let cm = rendered.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["metadata"]["name"], "gpu-slicer-dashboard");
    assert_eq!(cm["metadata"]["namespace"], "gpu-slicer");
    // The Grafana sidecar's label (kube-prometheus-stack: grafana.sidecar.dashboards.label/labelValue).
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 1);
    let file = std::fs::read_to_string(repo(DASHBOARD)).unwrap();
    assert_eq!(
        data["gpu-slicer-dashboard.json"].as_str().unwrap(),
        file,
        "the ConfigMap is not the JSON file"
    );
    // `kubectl apply` copies the object into an annotation capped at 256 KiB.
    assert!(file.len() < 200_000, "{} bytes", file.len());
    let rule = rendered
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .unwrap();
    assert_eq!(rule["spec"], yaml_file(RULES)["spec"]);
}

#[test]
fn the_prometheus_rule_has_what_alertmanager_needs() {
    let rule = yaml_file(RULES);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["metadata"]["name"], "gpu-slicer");
    assert_eq!(rule["metadata"]["namespace"], "gpu-slicer");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&rule["spec"]), ["groups"]);
    let duration = |s: &str| {
        // Prometheus durations: one or more <number><unit>, units ms s m h d w y.
        let mut rest = s;
        !s.is_empty()
            && std::iter::from_fn(|| {
                if rest.is_empty() {
                    return None;
                }
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                let unit = ["ms", "s", "m", "h", "d", "w", "y"]
                    .into_iter()
                    .find(|u| rest[digits..].starts_with(u));
                let ok = digits > 0 && unit.is_some();
                rest = if ok {
                    &rest[digits + unit.unwrap().len()..]
                } else {
                    ""
                };
                Some(ok)
            })
            .all(|ok| ok)
    };
    let mut alerts = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for g in rule["spec"]["groups"].as_array().unwrap() {
        for k in keys(g) {
            assert!(
                [
                    "name",
                    "interval",
                    "rules",
                    "labels",
                    "limit",
                    "partial_response_strategy",
                    "query_offset"
                ]
                .contains(&k.as_str()),
                "group field {k}"
            );
        }
        assert!(
            groups.insert(g["name"].as_str().unwrap()),
            "group {}",
            g["name"]
        );
        assert!(!g["rules"].as_array().unwrap().is_empty());
        for r in g["rules"].as_array().unwrap() {
            for k in keys(r) {
                assert!(
                    [
                        "alert",
                        "record",
                        "expr",
                        "for",
                        "keep_firing_for",
                        "labels",
                        "annotations"
                    ]
                    .contains(&k.as_str()),
                    "rule field {k}"
                );
            }
            let name = r["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(name.to_string()), "alert {name} twice");
            assert!(
                name.starts_with("GpuSlicer") && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "{name}"
            );
            assert!(!r["expr"].as_str().unwrap().trim().is_empty(), "{name}");
            let f = r["for"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no for"));
            assert!(duration(f), "{name}: for {f:?}");
            assert!(
                ["critical", "warning", "info"]
                    .contains(&r["labels"]["severity"].as_str().unwrap()),
                "{name}: severity"
            );
            for l in r["labels"].as_object().unwrap().values() {
                assert!(l.is_string(), "{name}: label values are strings");
            }
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| s.len() > 20),
                    "{name}: annotations.{a}"
                );
            }
        }
    }
    // The duration check itself: a check that accepted anything would pass the loop above.
    assert!(duration("15m") && duration("1h30m") && !duration("15") && !duration("m"));

    // The budget alerts: 90 % and 100 %, per namespace and rule, saying what to do.
    let by_name = |n: &str| {
        alert_rules(&rule)
            .into_iter()
            .find(|r| r["alert"] == n)
            .unwrap_or_else(|| panic!("no alert {n}"))
            .clone()
    };
    for (name, threshold) in [
        ("GpuSlicerBudgetAlmostFull", ">= 0.9"),
        ("GpuSlicerBudgetFull", ">= 0.999"),
    ] {
        let r = by_name(name);
        let expr = r["expr"].as_str().unwrap();
        assert!(expr.contains(threshold), "{name}: {expr}");
        assert!(
            expr.contains("max by (namespace, rule) (gpu_slicer_gpu_equivalents)")
                && expr.contains("/ max by (namespace, rule) (gpu_slicer_budget_gpu_equivalents)"),
            "{name}: held over budget per namespace and rule: {expr}"
        );
        let summary = r["annotations"]["summary"].as_str().unwrap();
        assert!(
            summary.contains("$labels.namespace") && summary.contains("$labels.rule"),
            "{name}: {summary}"
        );
        let description = r["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains("Tenant:") && description.contains("Platform team:"),
            "{name}: say what each side does: {description}"
        );
    }
    assert!(alerts.contains("GpuSlicerDown"), "{alerts:?}");
}

#[test]
fn the_service_monitor_scrapes_the_webhook_service_keeping_its_namespace_label() {
    let sm = yaml_file(SERVICE_MONITOR);
    let svc = yaml_file("manifests/webhook/base/service.yaml");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["kind"], "ServiceMonitor");
    assert_eq!(sm["metadata"]["namespace"], svc["metadata"]["namespace"]);
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!([svc["metadata"]["namespace"]])
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "Service label {k}");
    }
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let ep = &endpoints[0];
    let ports: Vec<&Value> = svc["spec"]["ports"].as_array().unwrap().iter().collect();
    assert!(
        ports.iter().any(|p| p["name"] == ep["port"]),
        "port {}",
        ep["port"]
    );
    assert_eq!(ep["scheme"], "https");
    assert_eq!(ep["path"], "/metrics");
    // Without honorLabels the contract metrics' `namespace` would arrive as exported_namespace.
    assert_eq!(ep["honorLabels"], true);
    // The scrape checks the serving certificate against a name it carries (cert-manager overlay).
    let certs = gpu_slicer_core::yaml::documents(
        &std::fs::read_to_string(repo(
            "manifests/webhook/overlays/cert-manager/certificates.yaml",
        ))
        .unwrap(),
    )
    .unwrap();
    let serving = certs
        .iter()
        .find(|c| c["spec"]["secretName"] == "gpu-slicer-tls")
        .unwrap();
    assert!(
        serving["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&ep["tlsConfig"]["serverName"]),
        "{}",
        ep["tlsConfig"]["serverName"]
    );
    assert_eq!(
        ep["tlsConfig"]["ca"]["secret"],
        json!({"name": "gpu-slicer-tls", "key": "ca.crt"})
    );
    // The Prometheus Operator names the job after the Service (no jobLabel set): the alert on `up`
    // selects that job.
    assert!(sm["spec"].get("jobLabel").is_none());
    let up = alert_rules(&yaml_file(RULES))
        .into_iter()
        .find(|r| r["expr"].as_str().unwrap().contains("up{"))
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .unwrap();
    assert!(
        up.contains(&format!(
            "job=\"{}\"",
            svc["metadata"]["name"].as_str().unwrap()
        )),
        "{up}"
    );
}

// ---- promtool ----

fn promtool() -> Option<&'static str> {
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Some("promtool"),
        _ => {
            eprintln!(
                "skipped: promtool not found (Debian: apt-get install --no-install-recommends prometheus; .ci/run installs it)"
            );
            None
        }
    }
}

fn run_promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grafana's variables replaced by values Prometheus would get, so a query is plain PromQL.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "7d")
        .replace("$namespace", ".*")
        .replace("$rule", ".*")
}

#[test]
fn promtool_accepts_the_rules_and_every_dashboard_query() {
    let Some(_) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rule = yaml_file(RULES);
    let rules = json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_norway::to_string(&rules).unwrap(),
    )
    .unwrap();
    run_promtool(&["check", "rules", "rules.yaml"], dir.path());

    // Each dashboard query as a recording rule: promtool parses it.
    let queries = dashboard_queries(&dashboard());
    let records: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("dashboard:query_{i}"), "expr": as_promql(e)}))
        .collect();
    for (_, e) in &queries {
        assert!(!as_promql(e).contains('$'), "a Grafana variable left: {e}");
    }
    let file = json!({"groups": [{"name": "dashboard", "rules": records}]});
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_norway::to_string(&file).unwrap(),
    )
    .unwrap();
    run_promtool(&["check", "rules", "dashboard.yaml"], dir.path());
}

#[test]
fn promtool_unit_tests_fire_the_alerts_when_and_only_when_documented() {
    let Some(_) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The rules as shipped, each alert's annotations cut to its summary (the test file spells out
    // the summaries; the descriptions are prose checked above).
    let mut rule = yaml_file(RULES);
    for g in rule["spec"]["groups"].as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            let summary = r["annotations"]["summary"].clone();
            r["annotations"] = json!({ "summary": summary });
        }
    }
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_norway::to_string(&json!({"groups": rule["spec"]["groups"]})).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        repo("tests/data/monitoring/alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    run_promtool(&["test", "rules", "alerts.test.yaml"], dir.path());

    // Every alert is exercised there.
    let tests = std::fs::read_to_string(repo("tests/data/monitoring/alerts.test.yaml")).unwrap();
    for r in alert_rules(&yaml_file(RULES)) {
        let name = r["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "alerts.test.yaml never tests {name}"
        );
    }
}
