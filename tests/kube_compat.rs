//! Our lean envelope against kube-core's admission types, on the captured reviews.

mod common;

use common::*;
use gpu_slicer::webhook::admission::{self, StaticFacts};
use gpu_slicer_core::nodepool::NodePoolIndex;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "ml-inference-llm-server-84f7f4dd45-create",
    "ml-inference-embedder-0-create",
    "ml-inference-cpu-only-create",
    "ml-notebooks-notebook-0-create",
    "ml-training-finetune-create",
];

#[test]
fn kube_core_reads_the_same_requests_and_our_answers_echo_them() {
    let facts = StaticFacts {
        policy: contract_policy(),
        pools: NodePoolIndex::default(),
    };
    for name in FIXTURES {
        let raw = review(name);
        let typed: AdmissionReview<DynamicObject> = serde_json::from_value(raw.clone()).unwrap();
        let req: AdmissionRequest<DynamicObject> = typed.try_into().unwrap();
        assert_eq!(req.operation, Operation::Create);
        let ours = admission::review(&serde_json::to_vec(&raw).unwrap(), &facts).unwrap();
        let out: Value = serde_json::from_slice(&ours.body).unwrap();
        assert_eq!(out["response"]["uid"], req.uid.as_str(), "{name}");
        if let Some(entry) = &ours.audit {
            assert_eq!(entry.uid, req.uid);
            assert_eq!(Some(entry.namespace.clone()), req.namespace);
            assert_eq!(entry.dry_run, req.dry_run);
            assert_eq!(
                entry.user,
                req.user_info.username.clone().unwrap_or_default()
            );
        }
    }
}

#[test]
fn kube_core_would_send_the_patch_as_numbers_which_is_why_we_do_not_use_it() {
    // kube-rs issue 1781: `AdmissionResponse.patch` is a Vec<u8> serialized as a JSON array, while the
    // API documents (and kube-apiserver expects) a base64 string.
    let raw = review("ml-inference-embedder-0-create");
    let typed: AdmissionReview<DynamicObject> = serde_json::from_value(raw).unwrap();
    let req: AdmissionRequest<DynamicObject> = typed.try_into().unwrap();
    let patch = json_patch::Patch(vec![]);
    let resp = AdmissionResponse::from(&req).with_patch(patch).unwrap();
    let json = serde_json::to_value(resp.into_review()).unwrap();
    assert!(
        json["response"]["patch"].is_array(),
        "kube-core changed: {}",
        json["response"]["patch"]
    );
}
