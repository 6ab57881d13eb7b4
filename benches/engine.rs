//! Criterion benchmarks: the engine alone (typical pod, 20-container pod, 200-rule policy) and the whole
//! envelope (parse + decide + serialize) on the captured 4.1 KB Deployment pod review, beside the cost
//! of merely scanning that review with serde_json (the floor of any read of it).
//!
//!     cargo bench --bench engine

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gpu_slicer::webhook::admission::{self, StaticFacts};
use gpu_slicer_core::engine::{self, Namespace};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};

const REVIEW: &str =
    include_str!("../tests/data/reviews/ml-inference-llm-server-84f7f4dd45-create.json");
const CONTRACT_POLICY: &str = include_str!("../tests/data/policies/contract.yaml");

fn pools() -> NodePoolIndex {
    gpu_slicer::input::nodepools(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/karpenter"
    )))
    .unwrap()
}

fn review_pod() -> Value {
    serde_json::from_str::<Value>(REVIEW).unwrap()["request"]["object"].clone()
}

/// A pod with 20 containers, every other one asking for a GPU.
fn wide_pod() -> Pod {
    let mut pod = review_pod();
    let template = pod["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..20)
        .map(|i| {
            let mut c = template.clone();
            c["name"] = json!(format!("c{i}"));
            if i % 2 == 1 {
                c["resources"]["limits"]
                    .as_object_mut()
                    .unwrap()
                    .remove("nvidia.com/gpu");
                c["resources"]["requests"]
                    .as_object_mut()
                    .unwrap()
                    .remove("nvidia.com/gpu");
            }
            c
        })
        .collect();
    pod["spec"]["containers"] = Value::Array(containers);
    serde_json::from_value(pod).unwrap()
}

/// 200 rules with globs and label selectors; the pod's namespace matches only the last one.
fn big_policy() -> Policy {
    let mut yaml =
        String::from("apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n");
    for i in 0..199 {
        yaml.push_str(&format!(
            "  - name: team-{i}\n    namespaces: [\"team-{i}-*\", \"svc-{i}\"]\n    namespaceSelector:\n      matchLabels: {{tier: t{i}}}\n      matchExpressions: [{{key: env, operator: In, values: [prod, staging]}}]\n    action: mig\n    mig: {{profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb]}}\n    nodePool: gpu-mig\n"
        ));
    }
    yaml.push_str("  - name: last\n    namespaces: [\"ml-*\"]\n    namespaceSelector: {matchLabels: {tier: gold}}\n    action: mig\n    mig: {profile: 1g.10gb}\n    nodePool: gpu-mig\n");
    Policy::parse(&yaml, "bench").unwrap()
}

fn bench(c: &mut Criterion) {
    let policy = gpu_slicer::policy_source::example();
    let pools = pools();
    let typical: Pod = serde_json::from_value(review_pod()).unwrap();
    let wide = wide_pod();
    let no_labels = BTreeMap::new();
    let gold: BTreeMap<String, String> = [("tier", "gold"), ("env", "prod")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let big = big_policy();

    c.bench_function("engine/typical pod", |b| {
        b.iter(|| {
            engine::decide(
                black_box(&typical),
                Namespace {
                    name: "ml-inference",
                    labels: &no_labels,
                },
                &policy,
                &pools,
            )
        })
    });
    c.bench_function("engine/20-container pod", |b| {
        b.iter(|| {
            engine::decide(
                black_box(&wide),
                Namespace {
                    name: "ml-inference",
                    labels: &no_labels,
                },
                &policy,
                &pools,
            )
        })
    });
    c.bench_function("engine/200-rule policy", |b| {
        b.iter(|| {
            engine::decide(
                black_box(&typical),
                Namespace {
                    name: "ml-inference",
                    labels: &gold,
                },
                &big,
                &pools,
            )
        })
    });

    let facts = StaticFacts {
        policy: Policy::parse(CONTRACT_POLICY, "contract").unwrap(),
        pools: NodePoolIndex::default(),
    };
    let body = REVIEW.as_bytes();
    c.bench_function("envelope/parse+decide+serialize 4.1 KB review", |b| {
        b.iter(|| admission::review(black_box(body), &facts).unwrap())
    });
    c.bench_function("envelope/parse only", |b| {
        b.iter(|| {
            admission::parse(black_box(body))
                .unwrap()
                .pod_namespace()
                .map(str::len)
        })
    });
    // The lower bound of any read of the body with serde_json: every token scanned, nothing kept.
    // `parse only` minus this is what the typed pod view itself costs.
    c.bench_function("envelope/serde_json skim, nothing kept", |b| {
        b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(body)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
