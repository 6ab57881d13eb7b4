//! The ResourceClaimTemplate controller (cluster mode, `backend: dra`) against a local HTTP server that
//! speaks the API server's wire format for what the controller uses ([`common::dra_api`]): Namespace
//! list and watch, ResourceClaimTemplate list and watch (all namespaces, label selector), server-side
//! apply (PATCH `application/apply-patch+yaml`) and DELETE. Every write is recorded, so the tests show
//! the controller creates, updates and deletes exactly its own templates and touches nothing else.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::dra_api::start;
use common::*;
use gpu_slicer::webhook::admission::StaticFacts;
use gpu_slicer::webhook::metrics::Metrics;
use gpu_slicer::webhook::server::{App, Limits};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use serde_json::{Value, json};

fn policy(rules: &str) -> Policy {
    Policy::parse(
        &format!(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n{rules}"
        ),
        "policy.yaml",
    )
    .unwrap()
}

const MIG: &str = "  - {name: infer, namespaces: [infer-*], action: mig, backend: dra, mig: {profile: 1g.10gb}}\n";
const LABELLED: &str = "  - {name: train, namespaceSelector: {matchLabels: {gpu: dra}}, action: exclusive, backend: dra, maxPerContainer: 2}\n";

/// Starts the controller (via `spawn_when_needed`) for an app holding `policy`, against the fake API.
fn start_controller(addr: SocketAddr, policy: Policy) -> (Arc<App>, tokio::task::JoinHandle<()>) {
    let app = App::new(
        StaticFacts {
            policy,
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        Limits::default(),
    );
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let handle = gpu_slicer::controller::spawn_when_needed(client, app.policy.clone());
    (app, handle)
}

/// Waits until `check` holds (the controller works asynchronously); fails after 10 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names(map: &BTreeMap<String, Value>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[tokio::test]
async fn templates_follow_the_policy_and_the_namespaces_and_nothing_else_is_touched() {
    let (addr, fake) = start().await;
    fake.set_namespace("infer-a", json!({}));
    fake.set_namespace("team-b", json!({}));
    fake.set_namespace("other", json!({}));
    // Someone else's template, a stale one of ours where no rule needs it any more, and one that
    // carries our label but not our owner annotation (a tenant's copy): never ours to delete.
    fake.put_template("infer-a", json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "theirs", "labels": {"team": "x"}}, "spec": {"spec": {"devices": {"requests": []}}}}));
    fake.put_template("other", ours("gpu-slicer-gpu"));
    // One an earlier gpu-slicer applied (no owner annotation yet, its field manager's apply): ours.
    fake.put_template("other", json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "gpu-slicer-mig-1g.10gb", "labels": {"app.kubernetes.io/managed-by": "gpu-slicer"},
        "managedFields": [{"manager": "gpu-slicer", "operation": "Apply", "apiVersion": "resource.k8s.io/v1", "fieldsType": "FieldsV1", "fieldsV1": {}}]}, "spec": {"spec": {"devices": {"requests": []}}}}));
    fake.put_template("other", json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "gpu-slicer-gpu-x2", "labels": {"app.kubernetes.io/managed-by": "gpu-slicer"}}, "spec": {"spec": {"devices": {"requests": []}}}}));

    let (app, controller) = start_controller(addr, policy(&format!("{MIG}{LABELLED}")));

    // Created where a DRA rule matches; the stale one deleted; theirs untouched.
    eventually("infer-a has its template", || {
        fake.templates_in("infer-a")
            .contains_key("gpu-slicer-mig-1g.10gb")
    })
    .await;
    eventually("the stale templates are gone", || {
        let left = fake.templates_in("other");
        !left.contains_key("gpu-slicer-gpu") && !left.contains_key("gpu-slicer-mig-1g.10gb")
    })
    .await;
    assert_eq!(
        names(&fake.templates_in("other")),
        vec!["gpu-slicer-gpu-x2"]
    );
    assert_eq!(
        names(&fake.templates_in("infer-a")),
        vec!["gpu-slicer-mig-1g.10gb", "theirs"]
    );
    assert!(fake.templates_in("team-b").is_empty());
    let t = &fake.templates_in("infer-a")["gpu-slicer-mig-1g.10gb"];
    assert_eq!(
        t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"],
        "mig.nvidia.com"
    );
    common::validate::roundtrip::<k8s_openapi::api::resource::v1::ResourceClaimTemplate>(t)
        .unwrap();

    // A namespace gains the label a DRA rule selects on: its templates appear.
    fake.set_namespace("team-b", json!({"gpu": "dra"}));
    eventually("team-b has two templates", || {
        fake.templates_in("team-b").len() == 2
    })
    .await;
    assert_eq!(
        names(&fake.templates_in("team-b")),
        vec!["gpu-slicer-gpu", "gpu-slicer-gpu-x2"]
    );

    // The policy changes (live reload): the mig rule allows another profile, the labelled rule goes.
    app.replace_policy(policy(
        "  - {name: infer, namespaces: [infer-*], action: mig, backend: dra, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb]}}\n",
    ));
    eventually("infer-a gets 2g.20gb", || {
        fake.templates_in("infer-a")
            .contains_key("gpu-slicer-mig-2g.20gb")
    })
    .await;
    eventually("team-b's templates are deleted", || {
        fake.templates_in("team-b").is_empty()
    })
    .await;

    // Drift: somebody deletes one of ours; it comes back.
    fake.store
        .lock()
        .unwrap()
        .writes
        .push("(test) DELETE infer-a/gpu-slicer-mig-1g.10gb".into());
    {
        let obj = fake.templates_in("infer-a")["gpu-slicer-mig-1g.10gb"].clone();
        fake.store
            .lock()
            .unwrap()
            .templates
            .remove(&("infer-a".into(), "gpu-slicer-mig-1g.10gb".into()));
        let _ = fake
            .tpl_events
            .send(json!({"type": "DELETED", "object": obj}).to_string());
    }
    eventually("the deleted template is restored", || {
        fake.templates_in("infer-a")
            .contains_key("gpu-slicer-mig-1g.10gb")
    })
    .await;

    // Every write was to a template gpu-slicer manages; theirs was never written.
    let writes = fake.writes();
    assert!(
        writes.iter().all(|w| w.contains("/gpu-slicer-")),
        "{writes:?}"
    );
    assert!(
        writes.contains(&"DELETE other/gpu-slicer-gpu".to_string()),
        "{writes:?}"
    );
    assert!(!writes.iter().any(|w| w.contains("theirs")), "{writes:?}");
    assert!(
        !writes.iter().any(|w| w.contains("other/gpu-slicer-gpu-x2")),
        "{writes:?}"
    );
    // Nothing rewritten that was already right: each template applied once per change.
    let applies_1g = writes
        .iter()
        .filter(|w| *w == "PATCH infer-a/gpu-slicer-mig-1g.10gb")
        .count();
    assert_eq!(
        applies_1g, 2,
        "created, then restored after the drift: {writes:?}"
    );
    controller.abort();
}

#[tokio::test]
async fn without_dra_rules_the_controller_never_starts() {
    let (addr, fake) = start().await;
    fake.set_namespace("other", json!({}));
    fake.put_template("other", json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "gpu-slicer-gpu", "labels": {"app.kubernetes.io/managed-by": "gpu-slicer"}}, "spec": {"spec": {"devices": {"requests": []}}}}));
    let (_app, controller) = start_controller(addr, example_policy());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(fake.writes().is_empty());
    assert_eq!(fake.templates_in("other").len(), 1);
    controller.abort();
}

/// A template of gpu-slicer's own: its label and its owner annotation.
fn ours(name: &str) -> Value {
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": name, "uid": format!("uid-{name}"),
        "labels": {"app.kubernetes.io/managed-by": "gpu-slicer"},
        "annotations": {"gpu-slicer.io/owner": "template-controller"}},
        "spec": {"spec": {"devices": {"requests": []}}}})
}

#[tokio::test]
async fn a_name_held_by_someone_else_is_left_alone_named_in_an_event_and_the_rest_syncs() {
    let (addr, fake) = start().await;
    fake.set_namespace("infer-a", json!({}));
    // A tenant's template under the name gpu-slicer's rule needs, asking for whole GPUs.
    let tenant = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "gpu-slicer-mig-1g.10gb"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}]}}}});
    fake.put_template("infer-a", tenant.clone());
    let (_app, controller) = start_controller(
        addr,
        policy(
            "  - {name: infer, namespaces: [infer-*], action: mig, backend: dra, mig: {profile: 1g.10gb, allowedProfiles: [1g.10gb, 2g.20gb]}}\n",
        ),
    );
    eventually("the other template is still made", || {
        fake.templates_in("infer-a")
            .contains_key("gpu-slicer-mig-2g.20gb")
    })
    .await;
    eventually("an event names the held template", || {
        !fake.store.lock().unwrap().events.is_empty()
    })
    .await;
    let event = fake.store.lock().unwrap().events[0].clone();
    assert_eq!(event["reason"], "TemplateNameTaken");
    assert_eq!(event["type"], "Warning");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("gpu-slicer-mig-1g.10gb"),
        "{event}"
    );
    // Never written: not adopted, not overwritten, not deleted.
    let writes = fake.writes();
    assert!(
        !writes.iter().any(|w| w.ends_with("gpu-slicer-mig-1g.10gb")),
        "{writes:?}"
    );
    let kept = &fake.templates_in("infer-a")["gpu-slicer-mig-1g.10gb"];
    assert_eq!(kept["spec"], tenant["spec"]);
    controller.abort();
}

#[tokio::test]
async fn templates_live_pods_reference_are_kept_until_the_pods_finish() {
    let (addr, fake) = start().await;
    fake.set_namespace("infer-a", json!({}));
    fake.put_template("infer-a", ours("gpu-slicer-mig-3g.40gb"));
    let pod = |phase: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "infer-a"},
        "spec": {"containers": [{"name": "c", "image": "x"}], "resourceClaims": [{"name": "g", "resourceClaimTemplateName": "gpu-slicer-mig-3g.40gb"}]},
        "status": {"phase": phase}})
    };
    fake.store
        .lock()
        .unwrap()
        .pods
        .insert(("infer-a".into(), "p".into()), pod("Pending"));
    // The rule no longer offers 3g.40gb: the template goes, but only once no live pod needs it.
    let (_app, controller) = start_controller(addr, policy(MIG));
    eventually("the rule's template is made", || {
        fake.templates_in("infer-a")
            .contains_key("gpu-slicer-mig-1g.10gb")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.templates_in("infer-a")
            .contains_key("gpu-slicer-mig-3g.40gb"),
        "deleted while a Pending pod references it"
    );
    fake.store
        .lock()
        .unwrap()
        .pods
        .insert(("infer-a".into(), "p".into()), pod("Succeeded"));
    // Requeued after RETRY; nudge it with a namespace change instead of waiting 30 s.
    fake.set_namespace("infer-a", json!({"nudge": "1"}));
    eventually("deleted once the pod finished", || {
        !fake
            .templates_in("infer-a")
            .contains_key("gpu-slicer-mig-3g.40gb")
    })
    .await;
    controller.abort();
}
