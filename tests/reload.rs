//! Live policy reload as the kubelet updates a ConfigMap mount (a `..data` symlink swap), refusal of a
//! broken policy, and no lost or half-decided request while policies swap under load.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use gpu_slicer::webhook::admission::StaticFacts;
use gpu_slicer::webhook::metrics::Metrics;
use gpu_slicer::webhook::reload::{Outcome, PolicyReloader};
use gpu_slicer::webhook::server::{self, App, Limits};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const POLICY_A: &str = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: first, action: mig, mig: {profile: 1g.10gb}}\n";
const POLICY_B: &str = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: second, action: timeslice, shared: {resourceName: nvidia.com/gpu.shared}}\n";

/// Writes `content` the way the kubelet updates a ConfigMap volume: a new timestamped directory, a new
/// `..data` link renamed over the old one; `policy.yaml` is a link to `..data/policy.yaml`.
fn kubelet_write(dir: &Path, generation: u32, content: &str) {
    let ts = format!("..2026_11_26_06_00_{generation:02}.{generation}");
    std::fs::create_dir(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("policy.yaml"), content).unwrap();
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("policy.yaml").exists() {
        symlink("..data/policy.yaml", dir.join("policy.yaml")).unwrap();
    }
}

fn app_with(policy: &str) -> Arc<App> {
    App::new(
        StaticFacts {
            policy: Policy::parse(policy, "t").unwrap(),
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        Limits::default(),
    )
}

/// A reloader for `dir/policy.yaml`, which `app` was started with.
fn reloader_for(dir: &Path, app: &Arc<App>) -> PolicyReloader {
    let path = dir.join("policy.yaml");
    PolicyReloader::new(path.clone(), std::fs::read(&path).unwrap(), app.clone())
}

async fn rule_for_pod(app: &Arc<App>) -> (StatusCode, String) {
    let body = serde_json::to_vec(&review("ml-inference-embedder-0-create")).unwrap();
    let resp = server::router(app.clone())
        .oneshot(Request::post("/mutate").body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let out: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    (
        status,
        out["response"]["auditAnnotations"]["rule"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

#[tokio::test]
async fn a_symlink_swap_replaces_the_policy_and_a_broken_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    kubelet_write(dir.path(), 1, POLICY_A);
    let app = app_with(POLICY_A);
    let mut reloader = reloader_for(dir.path(), &app);
    assert_eq!(reloader.check(), Outcome::Unchanged);
    assert_eq!(rule_for_pod(&app).await.1, "first");

    kubelet_write(dir.path(), 2, POLICY_B);
    assert_eq!(reloader.check(), Outcome::Replaced);
    assert_eq!(rule_for_pod(&app).await.1, "second");

    kubelet_write(
        dir.path(),
        3,
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: broken, action: mig, mig: {profile: 1g.7gb}}\n",
    );
    let Outcome::Refused(msg) = reloader.check() else {
        panic!("a broken policy was accepted")
    };
    assert!(msg.contains("spec.rules[0].mig.profile"), "{msg}");
    assert_eq!(
        rule_for_pod(&app).await.1,
        "second",
        "the last good policy stays in force"
    );
    assert_eq!(
        reloader.check(),
        Outcome::Unchanged,
        "the same broken file is not re-reported"
    );

    let resp = server::router(app.clone())
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let ready: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(ready["policy"]["generation"], 2);
    assert!(
        ready["policy"]["lastError"]
            .as_str()
            .unwrap()
            .contains("1g.7gb")
    );
    let metrics = app.metrics.encode();
    assert!(
        metrics.contains("gpu_slicer_policy_reload_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpu_slicer_policy_generation 2"),
        "{metrics}"
    );

    // Fixed again: accepted, and the error clears.
    kubelet_write(dir.path(), 4, POLICY_A);
    assert_eq!(reloader.check(), Outcome::Replaced);
    assert_eq!(rule_for_pod(&app).await.1, "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_under_load_see_one_whole_policy_or_the_other_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    kubelet_write(dir.path(), 1, POLICY_A);
    let app = app_with(POLICY_A);
    let mut reloader = reloader_for(dir.path(), &app);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (app, stop, answered) = (app.clone(), stop.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, rule) = rule_for_pod(&app).await;
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert_eq!(status, StatusCode::OK);
                match rule.as_str() {
                    "first" => seen.0 += 1,
                    "second" => seen.1 += 1,
                    other => panic!("a request saw rule {other:?}"),
                }
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    // Requests are in flight before the first reload and after the last one, however the test
    // threads are scheduled on a busy machine.
    let wait_for_answers = |at_least: u32| {
        let answered = answered.clone();
        async move {
            while answered.load(std::sync::atomic::Ordering::Relaxed) < at_least {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    wait_for_answers(4).await;
    for generation in 2..40u32 {
        kubelet_write(
            dir.path(),
            generation,
            if generation % 2 == 0 {
                POLICY_B
            } else {
                POLICY_A
            },
        );
        assert_eq!(reloader.check(), Outcome::Replaced);
        tokio::task::yield_now().await;
    }
    let after_reloads = answered.load(std::sync::atomic::Ordering::Relaxed);
    wait_for_answers(after_reloads + 4).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (a, b) = c.await.expect("no client failed");
        total += a + b;
    }
    assert!(total > 0);
}

const RULE_IN_AUDIT: &str = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: first, action: mig, mode: audit, mig: {profile: 1g.10gb}}\n";
const RULE_IN_ENFORCE: &str = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: first, action: mig, mode: enforce, mig: {profile: 1g.10gb}}\n";

/// The answer's outcome and whether it carries a patch.
async fn outcome_for_pod(app: &Arc<App>) -> (StatusCode, String, bool) {
    let body = serde_json::to_vec(&review("ml-inference-embedder-0-create")).unwrap();
    let resp = server::router(app.clone())
        .oneshot(Request::post("/mutate").body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let out: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let response = &out["response"];
    (
        status,
        response["auditAnnotations"]["outcome"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        response["patch"].is_string(),
    )
}

/// Rolling out rule by rule: switching a rule from audit to enforce in the ConfigMap takes effect
/// through live reload under load, with no failed request and no answer that is half one mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_switched_from_audit_to_enforce_under_load_starts_patching() {
    let dir = tempfile::tempdir().unwrap();
    kubelet_write(dir.path(), 1, RULE_IN_AUDIT);
    let app = app_with(RULE_IN_AUDIT);
    let mut reloader = reloader_for(dir.path(), &app);
    assert_eq!(
        outcome_for_pod(&app).await,
        (StatusCode::OK, "would-rewrite".into(), false)
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (app, stop, answered) = (app.clone(), stop.clone(), answered.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, outcome, patched) = outcome_for_pod(&app).await;
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert_eq!(status, StatusCode::OK);
                match (outcome.as_str(), patched) {
                    ("would-rewrite", false) => seen.0 += 1,
                    ("rewritten", true) => seen.1 += 1,
                    other => panic!("a request was answered {other:?}"),
                }
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    let wait_for_answers = |at_least: u32| {
        let answered = answered.clone();
        async move {
            while answered.load(std::sync::atomic::Ordering::Relaxed) < at_least {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    };
    wait_for_answers(4).await;
    // Back and forth a few times, ending in enforce, as a cautious rollout (and a rollback) would.
    for generation in 2..13u32 {
        let policy = if generation % 2 == 0 {
            RULE_IN_ENFORCE
        } else {
            RULE_IN_AUDIT
        };
        kubelet_write(dir.path(), generation, policy);
        assert_eq!(reloader.check(), Outcome::Replaced);
        tokio::task::yield_now().await;
    }
    let after_reloads = answered.load(std::sync::atomic::Ordering::Relaxed);
    wait_for_answers(after_reloads + 4).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut audited, mut enforced) = (0, 0);
    for c in clients {
        let (a, e) = c.await.expect("no request failed");
        audited += a;
        enforced += e;
    }
    assert!(
        audited > 0 && enforced > 0,
        "{audited} audited, {enforced} enforced"
    );
    // In force now: enforce.
    assert_eq!(
        outcome_for_pod(&app).await,
        (StatusCode::OK, "rewritten".into(), true)
    );
}
