//! Cluster mode, DRA backend: keeps gpu-slicer's ResourceClaimTemplates in every namespace whose rule
//! uses `backend: dra`, with a kube-runtime `Controller` over Namespaces.
//!
//! - A namespace is reconciled when it changes (labels feed `namespaceSelector` rules), when one of the
//!   templates gpu-slicer manages in it changes or disappears (drift is repaired), and every namespace
//!   when the policy in force changes (checked on each reload tick).
//! - Reconciling compares what the namespace's rule needs ([`dra::template_objects`]) with the templates
//!   labelled `app.kubernetes.io/managed-by: gpu-slicer` there: missing or different ones are applied
//!   (server-side apply, field manager `gpu-slicer`), ones no rule needs any more are deleted. Objects
//!   without the label are never read for writing, changed or deleted.
//! - A pod admitted before its namespace's template exists still gets the claim: the ResourceClaim
//!   controller creates the pod's claim once the template appears, and the pod waits until then.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::resource::v1::ResourceClaimTemplate;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::dra::{self, MANAGED_BY};
use crate::policy::{Backend, Policy};
use crate::server::App;

/// The field manager of gpu-slicer's server-side applies.
pub const FIELD_MANAGER: &str = "gpu-slicer";
/// How long after a failed reconcile a namespace is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// What one reconcile of a namespace changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sync {
    pub applied: Vec<String>,
    pub deleted: Vec<String>,
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

/// Brings one namespace's managed templates to what its rule needs.
pub async fn reconcile_namespace(
    client: &Client,
    policy: &Policy,
    namespace: &Namespace,
) -> Result<Sync, SyncError> {
    let ns = namespace.name_any();
    let api: Api<ResourceClaimTemplate> = Api::namespaced(client.clone(), &ns);
    let api_err = |source| SyncError::Api {
        namespace: ns.clone(),
        source,
    };
    // A terminating namespace refuses new objects and takes its templates with it.
    let want = if namespace.metadata.deletion_timestamp.is_some() {
        Vec::new()
    } else {
        desired(policy, namespace)
    };
    let have = api
        .list(&ListParams::default().labels(&managed_selector()))
        .await
        .map_err(api_err)?;
    let mut sync = Sync::default();
    for obj in &want {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if have
            .items
            .iter()
            .any(|h| h.name_any() == name && same(h, obj))
        {
            continue;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| SyncError::Template {
                namespace: ns.clone(),
                name: name.clone(),
                message: e.to_string(),
            })?;
        sync.applied.push(name);
    }
    for h in &have.items {
        let name = h.name_any();
        if want.iter().any(|w| w["metadata"]["name"] == name.as_str()) {
            continue;
        }
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => sync.deleted.push(name),
            // Gone already: what we wanted.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(api_err(e)),
        }
    }
    if !sync.applied.is_empty() || !sync.deleted.is_empty() {
        tracing::info!(namespace = %ns, applied = ?sync.applied, deleted = ?sync.deleted, "ResourceClaimTemplates synced");
    }
    Ok(sync)
}

struct Context {
    client: Client,
    app: Arc<App>,
}

/// Runs the controller until the process ends: reconciles every namespace on start, on namespace
/// and managed-template changes, and on every policy change seen by polling `app.policy` each
/// `every`.
pub async fn run(client: Client, app: Arc<App>, every: Duration) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let templates: Api<ResourceClaimTemplate> = Api::all(client.clone());
    let start = (app.clone(), app.policy.load_full());
    let policy_changes = futures_util::stream::unfold(start, move |(app, last)| async move {
        loop {
            tokio::time::sleep(every).await;
            let now = app.policy.load_full();
            if !Arc::ptr_eq(&now, &last) {
                return Some(((), (app, now)));
            }
        }
    });
    let context = Arc::new(Context { client, app });
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
    let policy = ctx.app.policy.load_full();
    reconcile_namespace(&ctx.client, &policy, &namespace).await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Namespace>, error: &SyncError, _: Arc<Context>) -> Action {
    tracing::warn!(error = %error, "ResourceClaimTemplate sync failed; retrying");
    Action::requeue(RETRY)
}

/// Starts [`run`] as soon as the policy in force has a `dra` rule (at once, or after a reload that
/// adds one), so clusters without DRA never watch ResourceClaimTemplates.
pub fn spawn_when_needed(
    client: Client,
    app: Arc<App>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !needs_templates(&app.policy.load()) {
            tokio::time::sleep(every).await;
        }
        tracing::info!("policy has DRA rules: keeping ResourceClaimTemplates in their namespaces");
        run(client, app, every).await;
    })
}
