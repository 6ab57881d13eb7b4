//! What each namespace's GPUs cost: its GPU-equivalents, the whole GPUs its pods asked for, and the price
//! per GPU of its rule's NodePool, for the usage metrics and `gpu-slicer usage`. Pure.
//!
//! Price per GPU: each instance type of the rule's NodePool (its `node.kubernetes.io/instance-type`
//! requirement) that the catalog prices gives its on-demand $/hour over its GPUs; the NodePool's price
//! is the lowest of them, the type Karpenter launches when it fits (its price-capacity choice among
//! the allowed types). Rules without a NodePool, or NodePools without catalogued instance types, have
//! no price: their cost is unknown, never 0.
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::gpus`], [`crate::nodepool`],
//! [`crate::policy`].

use serde::Serialize;

use crate::catalog;
use crate::gpus::Gpus;
use crate::nodepool::NodePoolIndex;
use crate::policy::Rule;

/// On-demand $/hour of one GPU of the rule's NodePool (see the module doc), if known.
pub fn usd_per_gpu_hour(rule: &Rule, pools: &NodePoolIndex) -> Option<f64> {
    let pool = pools.get(rule.node_pool.as_deref()?)?;
    pool.instance_types()?
        .iter()
        .filter_map(|t| catalog::instance_type(t))
        .filter(|t| t.gpus > 0)
        .filter_map(|t| Some(t.usd_per_hour? / f64::from(t.gpus)))
        .min_by(f64::total_cmp)
}

/// One namespace: what its live GPU pods hold and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    /// The rule that matches the namespace ("" when none does).
    pub rule: String,
    pub pods: u64,
    #[serde(serialize_with = "decimal")]
    pub gpu_equivalents: Gpus,
    pub requested_gpus: u64,
    pub usd_per_hour: Option<f64>,
    pub usd_per_hour_without_slicing: Option<f64>,
    #[serde(serialize_with = "optional_decimal")]
    pub budget_gpu_equivalents: Option<Gpus>,
}

pub fn decimal<S: serde::Serializer>(g: &Gpus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&g.to_string())
}

pub fn optional_decimal<S: serde::Serializer>(g: &Option<Gpus>, s: S) -> Result<S::Ok, S::Error> {
    match g {
        Some(g) => s.serialize_str(&g.to_string()),
        None => s.serialize_none(),
    }
}

/// Rounded to the cent's hundredth, as prices are shown.
fn money(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl Row {
    /// A namespace's row; `price` is its rule's [`usd_per_gpu_hour`].
    pub fn new(
        namespace: &str,
        rule: Option<&Rule>,
        pods: u64,
        held: Gpus,
        requested: u64,
        price: Option<f64>,
    ) -> Row {
        Row {
            namespace: namespace.to_string(),
            rule: rule.map(|r| r.name.clone()).unwrap_or_default(),
            pods,
            gpu_equivalents: held,
            requested_gpus: requested,
            usd_per_hour: price.map(|p| money(held.as_f64() * p)),
            usd_per_hour_without_slicing: price.map(|p| money(requested as f64 * p)),
            budget_gpu_equivalents: rule.and_then(|r| r.budget),
        }
    }

    /// What slicing saves per hour: the same pods on whole GPUs, minus what they cost now.
    pub fn saving(&self) -> Option<f64> {
        Some(money(
            self.usd_per_hour_without_slicing? - self.usd_per_hour?,
        ))
    }

    /// The share of the budget held, in percent.
    pub fn budget_use(&self) -> Option<f64> {
        let b = self.budget_gpu_equivalents?;
        (b > Gpus::ZERO).then(|| self.gpu_equivalents.as_f64() / b.as_f64() * 100.0)
    }
}

/// Every row added up (`rule` and `namespace` empty; a budget only where every row has one).
pub fn totals(rows: &[Row]) -> Row {
    let sum = |f: fn(&Row) -> Option<f64>| {
        rows.iter()
            .filter_map(f)
            .fold(None, |acc: Option<f64>, x| Some(acc.unwrap_or(0.0) + x))
            .map(money)
    };
    Row {
        namespace: String::new(),
        rule: String::new(),
        pods: rows.iter().map(|r| r.pods).sum(),
        gpu_equivalents: rows.iter().map(|r| r.gpu_equivalents).sum(),
        requested_gpus: rows.iter().map(|r| r.requested_gpus).sum(),
        usd_per_hour: sum(|r| r.usd_per_hour),
        usd_per_hour_without_slicing: sum(|r| r.usd_per_hour_without_slicing),
        budget_gpu_equivalents: rows
            .iter()
            .map(|r| r.budget_gpu_equivalents)
            .sum::<Option<Gpus>>()
            .filter(|_| !rows.is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_and_saving_follow_the_price_per_gpu() {
        let row = Row::new("a", None, 7, Gpus::ONE, 7, Some(6.88));
        assert_eq!(row.usd_per_hour, Some(6.88));
        assert_eq!(row.usd_per_hour_without_slicing, Some(48.16));
        assert_eq!(row.saving(), Some(41.28));
        let t = totals(&[row.clone(), Row::new("b", None, 1, Gpus::ONE, 1, None)]);
        assert_eq!((t.pods, t.requested_gpus), (8, 8));
        assert_eq!(t.usd_per_hour, Some(6.88));
        assert_eq!(t.budget_gpu_equivalents, None);
    }
}
