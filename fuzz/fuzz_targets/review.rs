//! body -> decode -> decide -> encode, on arbitrary bytes (seeded with real AdmissionReviews).
//! Beyond "no panic": every answer is JSON, echoes the uid, and every patch applies to the pod it was
//! made for.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use gpu_slicer::webhook::admission::{self, StaticFacts};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use libfuzzer_sys::fuzz_target;

fn facts() -> &'static StaticFacts {
    static FACTS: OnceLock<StaticFacts> = OnceLock::new();
    FACTS.get_or_init(|| StaticFacts {
        policy: Policy::parse(include_str!("../../tests/data/policies/contract.yaml"), "contract").expect("policy"),
        pools: NodePoolIndex::default(),
    })
}

fuzz_target!(|body: &[u8]| {
    let Ok(reviewed) = admission::review(body, facts()) else { return };
    let out: serde_json::Value = serde_json::from_slice(&reviewed.body).expect("the answer is JSON");
    // Fields the webhook skips are not fully validated (serde's IgnoredAny does not check \u escapes for
    // lone surrogates), so an accepted body may still be rejected by a strict parse: nothing to compare then.
    let Ok(input) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    // serde also reads a struct from a JSON array (positionally); compare the usual form only.
    if input["request"].is_object() {
        assert_eq!(out["response"]["uid"], input["request"]["uid"], "uid echoed");
    }
    if let Some(patch) = out["response"]["patch"].as_str() {
        let ops = base64::engine::general_purpose::STANDARD.decode(patch).expect("base64 patch");
        let ops: json_patch::Patch = serde_json::from_slice(&ops).expect("a JSON patch");
        let mut pod = input["request"]["object"].clone();
        json_patch::patch(&mut pod, &ops).expect("the patch applies to the pod it was made for");
    }
});
