//! The usage metrics (cluster mode), refreshed from the Pod watch's index at every scrape:
//! `gpu_slicer_gpu_equivalents`, `gpu_slicer_requested_gpus`, `gpu_slicer_budget_gpu_equivalents`,
//! `gpu_slicer_cost_usd_per_hour` and `gpu_slicer_saving_usd_per_hour`, each `{namespace,rule}`.
//! Namespaces are bounded by the cluster's: a series exists for each namespace with live GPU pods,
//! and the budget for each namespace a budgeted rule matches.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use gpu_slicer_core::spend::Row;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceRule {
    pub namespace: String,
    pub rule: String,
}

type FloatGauges = Family<NamespaceRule, Gauge<f64, AtomicU64>>;

#[derive(Clone, Default)]
pub struct UsageMetrics {
    pub held: FloatGauges,
    pub requested: FloatGauges,
    pub budget: FloatGauges,
    pub cost: FloatGauges,
    pub saving: FloatGauges,
}

impl UsageMetrics {
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, family) in [
            (
                "gpu_equivalents",
                "GPU-equivalents held by the namespace's live pods (one = one whole GPU)",
                &self.held,
            ),
            (
                "requested_gpus",
                "Whole GPUs the same pods asked for (what they would hold without slicing)",
                &self.requested,
            ),
            (
                "budget_gpu_equivalents",
                "The namespace's budget in GPU-equivalents (its rule's budget.gpuEquivalents)",
                &self.budget,
            ),
            (
                "cost_usd_per_hour",
                "GPU-equivalents held x the on-demand price per GPU of the rule's NodePool",
                &self.cost,
            ),
            (
                "saving_usd_per_hour",
                "What the same pods would cost on whole GPUs, minus what they cost now",
                &self.saving,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
    }

    /// Replaces every series with `rows` (one per namespace).
    pub fn refresh(&self, rows: &[Row]) {
        for family in [
            &self.held,
            &self.requested,
            &self.budget,
            &self.cost,
            &self.saving,
        ] {
            family.clear();
        }
        for row in rows {
            let labels = NamespaceRule {
                namespace: row.namespace.clone(),
                rule: row.rule.clone(),
            };
            if row.pods > 0 {
                self.held
                    .get_or_create(&labels)
                    .set(row.gpu_equivalents.as_f64());
                self.requested
                    .get_or_create(&labels)
                    .set(row.requested_gpus as f64);
                if let Some(cost) = row.usd_per_hour {
                    self.cost.get_or_create(&labels).set(cost);
                }
                if let Some(saving) = row.saving() {
                    self.saving.get_or_create(&labels).set(saving);
                }
            }
            if let Some(budget) = row.budget_gpu_equivalents {
                self.budget.get_or_create(&labels).set(budget.as_f64());
            }
        }
    }
}
