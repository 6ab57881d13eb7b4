//! Cluster mode, DRA backend: keeps gpu-slicer's ResourceClaimTemplates in every namespace whose rule
//! uses `backend: dra`, with a kube-runtime `Controller` over Namespaces.
//!
//! - A namespace is reconciled when it changes (labels feed `namespaceSelector` rules), when one of the
//!   templates gpu-slicer manages in it changes or disappears (drift is repaired), and every namespace
//!   when the policy in force is replaced (the reload announces it).
//! - Reconciling compares what the namespace's rule needs ([`dra::template_objects`]) with the templates
//!   labelled `app.kubernetes.io/managed-by: gpu-slicer` there: missing or different ones are applied
//!   (server-side apply, field manager `gpu-slicer`), ones no rule needs any more are deleted. Objects
//!   without the label are never read for writing, changed or deleted.
//! - A pod admitted before its namespace's template exists still gets the claim: the ResourceClaim
//!   controller creates the pod's claim once the template appears, and the pod waits until then.
//!
//! Imports: the core, [`crate::cluster`] and [`crate::policy_source`] (the policy in force, as
//! [`crate::policy_source::LivePolicy`]); never the webhook that starts it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::resource::v1::ResourceClaimTemplate;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::Value;

use crate::policy_source::LivePolicy;
use gpu_slicer_core::dra::{self, MANAGED_BY};
use gpu_slicer_core::policy::{Backend, Policy};

/// The field manager of gpu-slicer's server-side applies.
pub const FIELD_MANAGER: &str = "gpu-slicer";
/// How long after a failed reconcile a namespace is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// The annotation gpu-slicer's controller writes on every template it creates; with the managed-by
/// label, what makes an object its own to change or delete.
pub const OWNER_ANNOTATION: (&str, &str) = ("gpu-slicer.io/owner", "template-controller");

/// What one reconcile of a namespace changed, and what it left for later.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sync {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
    /// Names gpu-slicer needs that an object of someone else's holds: never touched.
    pub held: Vec<String>,
    /// Templates no rule needs (or whose spec must change) that live pods still reference: kept
    /// until they do not.
    pub kept: Vec<String>,
}

impl Sync {
    /// Whether something is left to do once pods finish or names are freed.
    pub fn pending(&self) -> bool {
        !self.held.is_empty() || !self.kept.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("namespace {namespace}: {source}")]
    Api {
        namespace: String,
        source: kube::Error,
    },
    #[error("namespace {namespace}: template {name}: {message}")]
    Template {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("namespace {namespace}: {} templates failed; first: {first}", .count)]
    Several {
        namespace: String,
        count: usize,
        first: Box<SyncError>,
    },
}

/// Whether gpu-slicer made this template: its managed-by label, and its owner annotation or (a
/// template an earlier gpu-slicer applied, before the annotation existed) server-side-apply fields
/// owned by gpu-slicer's field manager. A copy that only carries the label is someone else's.
pub fn is_ours(t: &ResourceClaimTemplate) -> bool {
    let labelled = t.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1);
    let annotated =
        t.annotations().get(OWNER_ANNOTATION.0).map(String::as_str) == Some(OWNER_ANNOTATION.1);
    let applied_by_us = t.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
    });
    labelled && (annotated || applied_by_us)
}

/// The label selector of the templates gpu-slicer manages.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

/// Whether the policy has any `dra` rule (the controller is started only then).
pub fn needs_templates(policy: &Policy) -> bool {
    policy.rules.iter().any(|r| r.backend == Backend::Dra)
}

/// The templates `namespace` should hold under `policy`, as objects.
pub fn desired(policy: &Policy, namespace: &Namespace) -> Vec<Value> {
    let name = namespace.name_any();
    let labels = namespace.labels();
    match policy.rule_for(&name, labels) {
        Some(rule) if dra::unsupported(rule).is_none() => dra::template_objects(rule, &name),
        _ => Vec::new(),
    }
}

/// Whether an existing template already says what `want` says (labels, annotations, spec).
fn same(have: &ResourceClaimTemplate, want: &Value) -> bool {
    let Ok(have) = serde_json::to_value(have) else {
        return false;
    };
    let sub = |v: &Value, path: &str| v.pointer(path).cloned().unwrap_or(Value::Null);
    let contains = |path: &str| {
        let (w, h) = (sub(want, path), sub(&have, path));
        w.as_object()
            .is_none_or(|w| w.iter().all(|(k, v)| h.get(k) == Some(v)))
    };
    contains("/metadata/labels")
        && contains("/metadata/annotations")
        && sub(want, "/spec") == sub(&have, "/spec")
}

/// The templates `namespace`'s live pods (not Succeeded or Failed) reference: deleting one of those
/// would leave a pod whose claim is not yet made Pending for good.
async fn referenced(api: &Api<Pod>) -> Result<BTreeSet<String>, kube::Error> {
    let mut names = BTreeSet::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for pod in &page.items {
            let finished = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Succeeded" || p == "Failed");
            if finished {
                continue;
            }
            let claims = pod.spec.as_ref().and_then(|s| s.resource_claims.as_ref());
            names.extend(
                claims
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.resource_claim_template_name.clone()),
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(names),
        }
    }
}

/// Brings one namespace's templates to what its rule needs, touching only gpu-slicer's own
/// ([`is_ours`]): a name someone else holds is reported in [`Sync::held`], a template live pods still
/// reference is kept ([`Sync::kept`]), and one failure does not stop the rest.
pub async fn reconcile_namespace(
    client: &Client,
    policy: &Policy,
    namespace: &Namespace,
) -> Result<Sync, SyncError> {
    let ns = namespace.name_any();
    let api: Api<ResourceClaimTemplate> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let api_err = |source| SyncError::Api {
        namespace: ns.clone(),
        source,
    };
    // A terminating namespace refuses new objects and takes its templates with it.
    let want: Vec<Value> = if namespace.metadata.deletion_timestamp.is_some() {
        Vec::new()
    } else {
        desired(policy, namespace)
            .into_iter()
            .map(|mut t| {
                t["metadata"]["annotations"][OWNER_ANNOTATION.0] = OWNER_ANNOTATION.1.into();
                t
            })
            .collect()
    };
    // Every template of the namespace, so a name held by another object is seen before any write.
    let have = api.list(&ListParams::default()).await.map_err(api_err)?;
    let mut in_use: Option<BTreeSet<String>> = None;
    let mut sync = Sync::default();
    let mut errors = Vec::new();
    for obj in &want {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let existing = have.items.iter().find(|h| h.name_any() == name);
        let step = match existing {
            Some(h) if !is_ours(h) => {
                sync.held.push(name.to_string());
                continue;
            }
            Some(h) if same(h, obj) => continue,
            // The spec is immutable: a changed one means a new object, once no live pod uses it.
            Some(h)
                if h.spec != serde_json::from_value(obj["spec"].clone()).unwrap_or_default() =>
            {
                if in_use.is_none() {
                    in_use = Some(referenced(&pods).await.map_err(api_err)?);
                }
                if in_use.as_ref().is_some_and(|u| u.contains(name)) {
                    sync.kept.push(name.to_string());
                    continue;
                }
                replace(&api, h, obj).await
            }
            // Ours with other labels or annotations: apply repairs them.
            Some(_) => apply(&api, name, obj, true).await,
            // New: a plain (unforced) apply, so an object someone creates meanwhile is not taken over.
            None => apply(&api, name, obj, false).await,
        };
        match step {
            Ok(()) => sync.applied.push(name.to_string()),
            Err(kube::Error::Api(s)) if s.code == 409 => sync.held.push(name.to_string()),
            Err(e) => errors.push(SyncError::Template {
                namespace: ns.clone(),
                name: name.to_string(),
                message: e.to_string(),
            }),
        }
    }
    for h in have.items.iter().filter(|h| is_ours(h)) {
        let name = h.name_any();
        if want.iter().any(|w| w["metadata"]["name"] == name.as_str()) {
            continue;
        }
        if in_use.is_none() {
            in_use = Some(referenced(&pods).await.map_err(api_err)?);
        }
        if in_use.as_ref().is_some_and(|u| u.contains(&name)) {
            sync.kept.push(name);
            continue;
        }
        match delete_exact(&api, h).await {
            Ok(()) => sync.deleted.push(name),
            // Gone already, or replaced by another object since the list: not ours to delete.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => errors.push(api_err(e)),
        }
    }
    if !sync.applied.is_empty() || !sync.deleted.is_empty() || sync.pending() {
        tracing::info!(namespace = %ns, applied = ?sync.applied, deleted = ?sync.deleted, held_by_others = ?sync.held, kept_for_pods = ?sync.kept, "ResourceClaimTemplates synced");
    }
    match errors.len() {
        0 => Ok(sync),
        1 => Err(errors.remove(0)),
        count => Err(SyncError::Several {
            namespace: ns,
            count,
            first: Box::new(errors.remove(0)),
        }),
    }
}

async fn apply(
    api: &Api<ResourceClaimTemplate>,
    name: &str,
    obj: &Value,
    force: bool,
) -> Result<(), kube::Error> {
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force {
        params = params.force();
    }
    api.patch(name, &params, &Patch::Apply(obj))
        .await
        .map(|_| ())
}

/// Deletes exactly the object that was listed (its uid as a precondition): never one that took its
/// name since.
async fn delete_exact(
    api: &Api<ResourceClaimTemplate>,
    have: &ResourceClaimTemplate,
) -> Result<(), kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: have.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    api.delete(&have.name_any(), &params).await.map(|_| ())
}

async fn replace(
    api: &Api<ResourceClaimTemplate>,
    have: &ResourceClaimTemplate,
    want: &Value,
) -> Result<(), kube::Error> {
    match delete_exact(api, have).await {
        Ok(()) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e),
    }
    apply(api, &have.name_any(), want, false).await
}

struct Context {
    client: Client,
    policy: Arc<LivePolicy>,
    events: Recorder,
}

/// Runs the controller until the process ends: reconciles every namespace on start, on namespace
/// and managed-template changes, and on every replacement of the policy in force (announced by
/// [`LivePolicy`], not polled).
pub async fn run(client: Client, policy: Arc<LivePolicy>) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let templates: Api<ResourceClaimTemplate> = Api::all(client.clone());
    let policy_changes = futures_util::stream::unfold(policy.subscribe(), |mut changes| async {
        changes.changed().await.ok()?;
        Some(((), changes))
    });
    let events = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let context = Arc::new(Context {
        client,
        policy,
        events,
    });
    Controller::new(namespaces, watcher::Config::default())
        .watches(
            templates,
            watcher::Config::default().labels(&managed_selector()),
            |t: ResourceClaimTemplate| t.namespace().map(|ns| ObjectRef::new(&ns)),
        )
        .reconcile_all_on(policy_changes)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "template controller");
            }
        })
        .await;
}

async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let policy = ctx.policy.load_full();
    let sync = reconcile_namespace(&ctx.client, &policy, &namespace).await?;
    for name in &sync.held {
        let note = format!(
            "ResourceClaimTemplate {name} is needed by gpu-slicer's DRA rule but another object holds the name (no {}={} label and {} annotation); gpu-slicer leaves it alone and pods it rewrites will use it: delete or rename it",
            MANAGED_BY.0, MANAGED_BY.1, OWNER_ANNOTATION.0
        );
        tracing::warn!(namespace = %namespace.name_any(), template = %name, "template name held by another object");
        let event = Event {
            type_: EventType::Warning,
            reason: "TemplateNameTaken".into(),
            note: Some(note),
            action: "Apply".into(),
            secondary: None,
        };
        if let Err(e) = ctx.events.publish(&event, &namespace.object_ref(&())).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }
    Ok(if sync.pending() {
        Action::requeue(RETRY)
    } else {
        Action::await_change()
    })
}

fn error_policy(_: Arc<Namespace>, error: &SyncError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "ResourceClaimTemplate sync failed; retrying");
    Action::requeue(RETRY)
}

/// Starts [`run`] as soon as the policy in force has a `dra` rule (at once, or after a reload that
/// adds one), so clusters without DRA never watch ResourceClaimTemplates.
pub fn spawn_when_needed(client: Client, policy: Arc<LivePolicy>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = policy.subscribe();
        while !needs_templates(&policy.load()) {
            if changes.changed().await.is_err() {
                return;
            }
        }
        tracing::info!("policy has DRA rules: keeping ResourceClaimTemplates in their namespaces");
        run(client, policy).await;
    })
}
