//! Prometheus metrics (`GET /metrics`, text format). Label values come from closed sets or from the
//! policy's rule names, so cardinality stays bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cluster::watch::ClusterMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    /// rewritten | routed | unchanged | optedOut | denied | ignored (not a pod CREATE or no GPU);
    /// in audit mode would-rewrite | would-route | would-deny
    pub outcome: &'static str,
    pub action: &'static str,
    pub rule: String,
}

/// Labels of [`Metrics::audit_would`]: audit mode only, so a dashboard shows per rule *and namespace*
/// what enforcing would change. Namespaces are bounded by the cluster's; enforce decisions never
/// touch this family, so the request path in enforce pays nothing for it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditLabels {
    /// would-rewrite | would-route | would-deny
    pub outcome: &'static str,
    pub rule: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// bad_json | not_a_review | not_a_pod | too_large | timeout | read_error | overloaded (503: the
    /// request-body memory budget had no room)
    pub reason: &'static str,
}

/// Every metric the webhook exports.
pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub audit_would: Family<AuditLabels, Counter>,
    pub patches: Counter,
    pub denials: Counter,
    pub bad_requests: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    pub policy_rules: Gauge,
    pub policy_generation: Gauge,
    pub policy_reload_errors: Counter,
    pub policy_last_reload_success: Gauge,
    pub certificate_expiry: Gauge,
    pub cluster: ClusterMetrics,
    /// GPU-equivalents, budgets and cost per namespace (cluster mode).
    pub usage: crate::webhook::usage_metrics::UsageMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gpu_slicer");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by outcome, action and rule",
            admissions.clone(),
        );
        let audit_would = Family::<AuditLabels, Counter>::default();
        registry.register(
            "audit_would",
            "Audit mode: pods enforce would have changed or denied, by outcome, rule and namespace",
            audit_would.clone(),
        );
        let patches = Counter::default();
        registry.register(
            "patches",
            "Admission responses that carried a patch",
            patches.clone(),
        );
        let denials = Counter::default();
        registry.register("denials", "Pods denied by the policy", denials.clone());
        let bad_requests = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "bad_requests",
            "Requests answered with a 4xx, or a 503 when the body budget had no room, by reason",
            bad_requests.clone(),
        );
        // Seconds as floats from 25 us: a sub-millisecond webhook must not read as 0.
        let duration = Histogram::new([
            0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
        ]);
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to the response, seconds",
            duration.clone(),
        );
        let policy_generation = Gauge::default();
        registry.register(
            "policy_generation",
            "Policies put in force since start (1 = the one loaded at start)",
            policy_generation.clone(),
        );
        let policy_reload_errors = Counter::default();
        registry.register(
            "policy_reload_errors",
            "Policy files refused on reload (the previous policy stayed in force)",
            policy_reload_errors.clone(),
        );
        let policy_last_reload_success = Gauge::default();
        registry.register(
            "policy_last_reload_success_timestamp_seconds",
            "Unix time the policy in force was loaded",
            policy_last_reload_success.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "Unix time the serving certificate expires (notAfter)",
            certificate_expiry.clone(),
        );
        let cluster = ClusterMetrics::default();
        cluster.register(&mut registry);
        let usage = crate::webhook::usage_metrics::UsageMetrics::default();
        usage.register(&mut registry);
        let policy_rules = Gauge::default();
        registry.register(
            "policy_rules",
            "Rules in the policy in force",
            policy_rules.clone(),
        );
        Metrics {
            registry,
            admissions,
            audit_would,
            patches,
            denials,
            bad_requests,
            duration,
            policy_rules,
            policy_generation,
            policy_reload_errors,
            policy_last_reload_success,
            certificate_expiry,
            cluster,
            usage,
        }
    }

    /// The registry, for components that add their own metrics at start-up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
