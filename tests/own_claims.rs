//! A pod's own DRA claims are enforced by its namespace's rule (issue 24, finding 2): a `deny` rule
//! used to be walked around with a ResourceClaim of any name not starting `gpu-slicer-`, and a `mig`
//! namespace could take whole GPUs the same way. Through the engine with verdicts given, and through
//! the real request path reading templates, claims and DeviceClasses from a local API server.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::fakeapi::FakeApi;
use common::*;
use gpu_slicer::webhook::server::{self, App};
use gpu_slicer_core::audit::Outcome;
use gpu_slicer_core::dra::claims::{ClaimFacts, ClaimVerdict};
use gpu_slicer_core::engine::{self, Decision, Namespace};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::Policy;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const POLICY: &str = r#"
apiVersion: gpu-slicer.io/v1alpha1
kind: SlicingPolicy
spec:
  defaultAction: passthrough
  rules:
    - name: sandbox
      namespaces: ["sandbox"]
      action: deny
    - name: sandbox-audited
      namespaces: ["sandbox-audit"]
      mode: audit
      action: deny
    - name: ml
      namespaces: ["ml"]
      action: mig
      mig: {profile: 1g.10gb}
    - name: open
      namespaces: ["open"]
      action: passthrough
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "own-claims.yaml").unwrap()
}

/// A pod with no `nvidia.com/` resource at all: one container using claim `c`.
fn claiming_pod(source: Value) -> Value {
    let mut p = pod(vec![
        json!({"name": "main", "image": "x", "resources": {"claims": [{"name": "c"}]}}),
    ]);
    let mut entry = json!({"name": "c"});
    entry
        .as_object_mut()
        .unwrap()
        .extend(source.as_object().unwrap().clone());
    p["spec"]["resourceClaims"] = json!([entry]);
    p
}

fn decide(p: &Value, ns: &str, verdict: Option<ClaimVerdict>) -> Decision {
    let pod: Pod = serde_json::from_value(p.clone()).unwrap();
    let mut facts = ClaimFacts::default();
    if let Some(v) = verdict {
        facts.insert("c", v);
    }
    let labels = labels(&[]);
    engine::decide_with_claims(
        &pod,
        Namespace {
            name: ns,
            labels: &labels,
        },
        &facts,
        &policy(),
        &NodePoolIndex::default(),
    )
}

fn gpu() -> Option<ClaimVerdict> {
    Some(ClaimVerdict::Gpu {
        device_class: "gpu.nvidia.com".into(),
    })
}

#[test]
fn a_deny_rule_denies_gpu_claims_of_any_name() {
    let p = claiming_pod(json!({"resourceClaimTemplateName": "whole-gpus"}));
    let d = decide(&p, "sandbox", gpu());
    let msg = d.denied.expect("denied");
    assert!(
        msg.contains("namespace \"sandbox\" may not use GPUs")
            && msg.contains(
                "ResourceClaim \"c\" (ResourceClaimTemplate whole-gpus) requests DeviceClass gpu.nvidia.com"
            ),
        "{msg}"
    );
    assert_eq!(d.audit.unwrap().outcome, Outcome::Denied);
    // A ResourceClaim (not a template) likewise.
    let p = claiming_pod(json!({"resourceClaimName": "shared-gpu"}));
    let msg = decide(&p, "sandbox", gpu()).denied.expect("denied");
    assert!(msg.contains("(ResourceClaim shared-gpu)"), "{msg}");
}

#[test]
fn a_claim_that_cannot_be_read_is_denied_with_the_reason() {
    let p = claiming_pod(json!({"resourceClaimTemplateName": "later"}));
    let why = ClaimVerdict::Unreadable(
        "ResourceClaimTemplate later not found in namespace sandbox".into(),
    );
    let msg = decide(&p, "sandbox", Some(why)).denied.expect("denied");
    assert!(
        msg.contains("could not be checked for GPUs (ResourceClaimTemplate later not found"),
        "{msg}"
    );
    // Offline (no verdict at all): the same, saying the webhook has no cluster access.
    let msg = decide(&p, "ml", None).denied.expect("denied");
    assert!(
        msg.contains("no cluster access")
            && msg.contains("create the ResourceClaimTemplate later before the pod"),
        "{msg}"
    );
}

#[test]
fn claims_that_ask_for_no_gpu_are_left_alone() {
    let p = claiming_pod(json!({"resourceClaimTemplateName": "efa"}));
    for ns in ["sandbox", "ml", "open", "elsewhere"] {
        let d = decide(&p, ns, Some(ClaimVerdict::NotGpu));
        assert!(
            d.allowed() && d.patch.is_empty() && d.audit.is_none(),
            "{ns}: {d:?}"
        );
    }
}

#[test]
fn other_rules_refuse_gpus_claimed_past_them_and_passthrough_allows() {
    let p = claiming_pod(json!({"resourceClaimTemplateName": "whole-gpus"}));
    let msg = decide(&p, "ml", gpu())
        .denied
        .expect("a mig namespace taking whole GPUs");
    assert!(
        msg.contains(
            "outside the GPU policy: namespace \"ml\" gets GPUs from rule ml (mig devicePlugin)"
        ) && msg.contains("ask for nvidia.com/gpu"),
        "{msg}"
    );
    for ns in ["open", "elsewhere"] {
        let d = decide(&p, ns, gpu());
        assert!(d.allowed() && d.patch.is_empty(), "{ns}");
        assert_eq!(d.audit.unwrap().outcome, Outcome::Unchanged);
    }
}

#[test]
fn audit_mode_says_would_deny() {
    let p = claiming_pod(json!({"resourceClaimTemplateName": "whole-gpus"}));
    let d = gpu_slicer_core::engine::mode::apply(decide(&p, "sandbox-audit", gpu()));
    assert!(d.allowed());
    assert_eq!(d.audit.unwrap().outcome, Outcome::WouldDeny);
    assert!(
        d.warnings.iter().any(|w| w.contains("would deny")),
        "{:?}",
        d.warnings
    );
}

fn template(ns: &str, name: &str, class: &str) -> Value {
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "r", "exactly": {"deviceClassName": class}}]}}}})
}

fn review_of(pod_value: &Value, ns: &str) -> Value {
    let mut r = review("ml-inference-llm-server-84f7f4dd45-create");
    let mut p = pod_value.clone();
    p["metadata"] = json!({"generateName": "x-", "namespace": ns});
    r["request"]["namespace"] = json!(ns);
    r["request"]["object"] = p;
    r
}

async fn answer(app: &Arc<App>, r: &Value) -> Value {
    let resp = server::router(app.clone())
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(Body::from(r.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn the_webhook_reads_templates_claims_and_device_classes_in_cluster_mode() {
    let api = FakeApi::start().await;
    api.serve_namespaced(
        "/apis/resource.k8s.io/v1",
        "resourceclaimtemplates",
        "resource.k8s.io/v1",
        "ResourceClaimTemplateList",
        vec![
            template("sandbox", "whole-gpus", "gpu.nvidia.com"),
            template("sandbox", "team-gpus", "team-gpus"),
            template("sandbox", "nic", "rdma.example.com"),
        ],
    );
    api.serve_namespaced(
        "/apis/resource.k8s.io/v1",
        "resourceclaims",
        "resource.k8s.io/v1",
        "ResourceClaimList",
        vec![
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "shared", "namespace": "sandbox"},
            "spec": {"devices": {"requests": [{"name": "r", "firstAvailable": [
                {"name": "a", "deviceClassName": "rdma.example.com"},
                {"name": "b", "deviceClassName": "mig.nvidia.com"}]}]}}}),
        ],
    );
    api.serve(
        "/apis/resource.k8s.io/v1/deviceclasses",
        "resource.k8s.io/v1",
        "DeviceClassList",
        vec![
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                "metadata": {"name": "team-gpus"},
                "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]}}),
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
                "metadata": {"name": "rdma.example.com"},
                "spec": {"selectors": [{"cel": {"expression": "device.driver == 'rdma.example.com'"}}]}}),
        ],
    );
    let (app, _cluster) = common::cluster_app(api.client(), policy(), NodePoolIndex::default());

    let cases = [
        (
            json!({"resourceClaimTemplateName": "whole-gpus"}),
            false,
            "requests DeviceClass gpu.nvidia.com",
        ),
        // A class of the platform team's own that selects NVIDIA's driver.
        (
            json!({"resourceClaimTemplateName": "team-gpus"}),
            false,
            "requests DeviceClass team-gpus",
        ),
        (
            json!({"resourceClaimName": "shared"}),
            false,
            "requests DeviceClass mig.nvidia.com",
        ),
        (
            json!({"resourceClaimTemplateName": "missing"}),
            false,
            "ResourceClaimTemplate missing not found in namespace sandbox",
        ),
        (json!({"resourceClaimTemplateName": "nic"}), true, ""),
    ];
    for (source, allowed, says) in cases {
        let out = answer(&app, &review_of(&claiming_pod(source.clone()), "sandbox")).await;
        let resp = &out["response"];
        assert_eq!(resp["allowed"], allowed, "{source}: {resp}");
        if !allowed {
            let msg = resp["status"]["message"].as_str().unwrap();
            assert!(msg.contains(says), "{source}: {msg}");
        }
    }
    // Only reads, each object by name.
    assert!(api.requests().iter().all(|(m, _)| m == "GET"));
    assert!(
        api.requests()
            .iter()
            .any(|(_, p)| p.ends_with("/namespaces/sandbox/resourceclaimtemplates/team-gpus"))
    );
}
