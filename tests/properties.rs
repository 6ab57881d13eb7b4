//! Property tests on generated pods and arbitrary bodies.

mod common;

use common::*;
use gpu_slicer::webhook::admission::{self, StaticFacts};
use gpu_slicer_core::nodepool::NodePoolIndex;
use proptest::prelude::*;
use serde_json::{Value, json};

const NAMESPACES: &[&str] = &[
    "team-a",
    "team-a-x",
    "team-b",
    "ml-inference",
    "notebooks",
    "serving",
    "training",
    "sandbox",
    "default",
];
const GPU_KEYS: &[&str] = &[
    "nvidia.com/gpu",
    "nvidia.com/gpu",
    "nvidia.com/gpu",
    "nvidia.com/mig-1g.10gb",
    "nvidia.com/mig-3g.40gb",
    "nvidia.com/mig-7g.80gb",
    "nvidia.com/gpu.shared",
];

fn arb_container(name: String) -> impl Strategy<Value = Value> {
    (
        proptest::option::weighted(0.7, (0..GPU_KEYS.len(), 1u32..4)),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(move |(gpu, limits_only, no_resources)| {
            if no_resources && gpu.is_none() {
                return json!({"name": name, "image": "busybox"});
            }
            match gpu {
                None => container(&name, &[], false),
                Some((k, n)) => container(&name, &[(GPU_KEYS[k], &n.to_string())], limits_only),
            }
        })
}

fn arb_pod() -> impl Strategy<Value = (Value, &'static str)> {
    let containers = (1usize..4).prop_flat_map(|n| {
        (0..n)
            .map(|i| arb_container(format!("c{i}")))
            .collect::<Vec<_>>()
    });
    let init = (0usize..3).prop_flat_map(|n| {
        (0..n)
            .map(|i| arb_container(format!("i{i}")))
            .collect::<Vec<_>>()
    });
    let annotation = prop_oneof![
        Just(None),
        Just(Some(("gpu-slicer.io/profile", "2g.20gb"))),
        Just(Some(("gpu-slicer.io/profile", "7g.80gb"))),
        Just(Some(("gpu-slicer.io/gpu-memory", "15Gi"))),
        Just(Some(("gpu-slicer.io/gpu-memory", "60Gi"))),
        Just(Some(("gpu-slicer.io/exclusive", "true"))),
    ];
    let selector = prop_oneof![
        Just(None),
        Just(Some(json!({}))),
        Just(Some(json!({"topology.kubernetes.io/zone": "us-east-1a"}))),
        Just(Some(json!({"karpenter.sh/nodepool": "gpu-h100-mig"}))),
        Just(Some(json!({"karpenter.sh/nodepool": "other"}))),
    ];
    let tolerations = prop_oneof![
        Just(None),
        Just(Some(json!([]))),
        Just(Some(
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
        )),
        Just(Some(json!([{"operator": "Exists"}]))),
        Just(Some(
            json!([{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}])
        )),
    ];
    (
        containers,
        init,
        annotation,
        selector,
        tolerations,
        0..NAMESPACES.len(),
        any::<bool>(),
    )
        .prop_map(|(c, i, a, s, t, ns, no_ann_map)| {
            let mut p = pod(c);
            if !i.is_empty() {
                p["spec"]["initContainers"] = Value::Array(i);
            }
            if let Some((k, v)) = a {
                p["metadata"]["annotations"] = json!({ k: v });
            } else if !no_ann_map {
                p["metadata"]["annotations"] = json!({});
            }
            if let Some(s) = s {
                p["spec"]["nodeSelector"] = s;
            }
            if let Some(t) = t {
                p["spec"]["tolerations"] = t;
            }
            (p, NAMESPACES[ns])
        })
}

/// Extended resources (a domain-prefixed name outside kubernetes.io) need requests == limits, or limits only.
fn extended_resources_consistent(pod: &Value) -> Result<(), String> {
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let limits = &c["resources"]["limits"];
            for (k, v) in c["resources"]["requests"].as_object().into_iter().flatten() {
                if k.contains('/') && !k.starts_with("kubernetes.io/") && limits.get(k) != Some(v) {
                    return Err(format!(
                        "{}: {k} request {v} without an equal limit",
                        c["name"]
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn generated_pods_get_valid_idempotent_patches((p, ns) in arb_pod()) {
        let policy = contract_policy();
        let pools = NodePoolIndex::default();
        // `run` asserts that the patch applies to its input.
        let (d, out) = run(&p, ns, &labels(&[]), &policy, &pools);
        let typed: Result<k8s_openapi::api::core::v1::Pod, _> = serde_json::from_value(out.clone());
        prop_assert!(typed.is_ok(), "patched pod is not a Pod: {:?}", typed.err());
        prop_assert!(extended_resources_consistent(&out).is_ok(), "{:?}", extended_resources_consistent(&out));
        prop_assert!(d.warnings.iter().all(|w| w.len() <= 120));
        if let Some(reason) = &d.denied {
            prop_assert!(d.patch.is_empty());
            prop_assert!(reason.len() >= 20);
            return Ok(());
        }
        let rule = policy.rule_for(ns, &labels(&[]));
        let opted_out = p["metadata"]["annotations"]["gpu-slicer.io/exclusive"] == "true" && rule.is_some_and(|r| r.allow_opt_out);
        let rewrites = rule.is_some_and(|r| matches!(r.action.as_str(), "mig" | "timeslice" | "mps"));
        if rewrites && !opted_out {
            prop_assert!(!resource_keys(&out).contains(&"nvidia.com/gpu".to_string()), "nvidia.com/gpu left in {out}");
        }
        let (again, out2) = run(&out, ns, &labels(&[]), &policy, &pools);
        prop_assert!(again.allowed(), "second pass denied: {:?}", again.denied);
        prop_assert!(again.patch.is_empty(), "second pass patched: {}", ops(&again));
        prop_assert_eq!(out, out2);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let facts = StaticFacts { policy: contract_policy(), pools: NodePoolIndex::default() };
        let _ = admission::review(&body, &facts);
    }

    #[test]
    fn arbitrary_json_in_a_review_never_panics(object in arb_json(), request_extra in arb_json(), uid in any::<bool>()) {
        let facts = StaticFacts { policy: contract_policy(), pools: NodePoolIndex::default() };
        let mut request = json!({
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a", "operation": "CREATE", "object": object,
        });
        if uid {
            request["uid"] = json!("u");
        }
        if let (Some(r), Value::Object(extra)) = (request.as_object_mut(), request_extra) {
            for (k, v) in extra {
                r.insert(k, v);
            }
        }
        let body = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})).unwrap();
        if let Ok(r) = admission::review(&body, &facts) {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            prop_assert!(v["response"]["allowed"].is_boolean());
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z./-]{0,12}".prop_map(Value::from),
        Just(json!("nvidia.com/gpu")),
        Just(json!("CREATE")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("spec".to_string()),
            Just("containers".to_string()),
            Just("resources".to_string()),
            Just("limits".to_string()),
            Just("nvidia.com/gpu".to_string()),
            Just("metadata".to_string()),
            Just("annotations".to_string()),
            Just("uid".to_string()),
            Just("operation".to_string()),
            Just("initContainers".to_string()),
            Just("tolerations".to_string()),
            Just("nodeSelector".to_string()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in a value (objects and arrays, not the root).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

const FIXTURES: &[&str] = &[
    "ml-inference-llm-server-84f7f4dd45-create",
    "ml-inference-embedder-0-create",
    "ml-notebooks-notebook-0-create",
    "ml-training-finetune-create",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The fuzz target's twin (fuzz/fuzz_targets/review.rs): real reviews with parts removed or replaced
    /// by arbitrary JSON never panic the envelope, and any patch applies to the pod it was made for.
    #[test]
    fn mutated_real_reviews_never_panic_and_patches_apply(
        fixture in 0..FIXTURES.len(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), proptest::option::of(arb_json())), 1..6),
    ) {
        let mut rev = review(FIXTURES[fixture]);
        for (at, replacement) in edits {
            let mut paths = Vec::new();
            pointers(&rev, String::new(), &mut paths);
            if paths.is_empty() {
                break;
            }
            let path = at.get(&paths).clone();
            let (parent, key) = path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            let Some(target) = rev.pointer_mut(parent) else { continue };
            match (target, replacement) {
                (Value::Object(m), None) => { m.remove(&key); }
                (Value::Object(m), Some(v)) => { m.insert(key, v); }
                (Value::Array(a), None) => { let i: usize = key.parse().unwrap(); a.remove(i); }
                (Value::Array(a), Some(v)) => { let i: usize = key.parse().unwrap(); a[i] = v; }
                _ => {}
            }
        }
        let facts = StaticFacts { policy: contract_policy(), pools: NodePoolIndex::default() };
        let body = serde_json::to_vec(&rev).unwrap();
        if let Ok(r) = admission::review(&body, &facts) {
            let out: Value = serde_json::from_slice(&r.body).unwrap();
            // (serde also reads a struct from a JSON array, positionally: compare only the usual form.)
            if rev["request"].is_object() {
                prop_assert_eq!(&out["response"]["uid"], &rev["request"]["uid"]);
            }
            if let Some(patch) = out["response"]["patch"].as_str() {
                use base64::Engine as _;
                let ops: json_patch::Patch = serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(patch).unwrap()).unwrap();
                let mut pod = rev["request"]["object"].clone();
                prop_assert!(json_patch::patch(&mut pod, &ops).is_ok(), "patch {:?} does not apply to {}", ops, pod);
            }
        }
    }
}
