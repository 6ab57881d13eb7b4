//! The Pod watch behind budgets and the usage metrics: a kube-rs watcher (no reflector store: pods are
//! projected as they arrive and dropped) over a lean Pod type that reads only metadata, the containers'
//! resources, the claims and the phase, feeding [`UsageIndex`].
//!
//! Each pod is counted when the watch sees it, with the policy and namespace labels then in force
//! ([`gpu_slicer_core::equivalents::of_pod`], from its resources: an annotation a user can edit is never trusted).
//! A policy change applies to pods the watch sees afterwards; a watch restart recounts every pod.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde::Deserialize;

use super::usage::UsageIndex;
use gpu_slicer_core::equivalents::Usage;
use gpu_slicer_core::pod::{Pod, Spec};

/// A Pod as the watch reads it: serde skips everything else.
#[derive(Debug, Clone, Deserialize)]
pub struct WatchedPod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default)]
    pub status: Option<PodPhase>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodPhase {
    #[serde(default)]
    pub phase: Option<String>,
}

impl kube::Resource for WatchedPod {
    type DynamicType = ();
    type Scope = kube::core::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl WatchedPod {
    /// Holds its GPUs: not Succeeded or Failed, and not being deleted (a terminating pod's devices are
    /// freed as it stops; counting it would block its own replacement).
    pub fn live(&self) -> bool {
        let finished = matches!(
            self.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        !finished && self.metadata.deletion_timestamp.is_none()
    }

    /// The engine's view of the pod (spec only).
    pub fn view(self) -> Pod {
        Pod {
            metadata: None,
            spec: self.spec,
        }
    }
}

/// What a pod in a namespace holds, with the policy and facts in force (the webhook's `App`).
pub type Counter = Arc<dyn Fn(&Pod, &str) -> Usage + Send + Sync>;

fn apply(index: &UsageIndex, count: &Counter, pod: WatchedPod) {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone()) else {
        return;
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let live = pod.live();
    let view = pod.view();
    let usage = count(&view, &ns);
    index.apply(&ns, &name, &uid, usage, live);
}

/// Starts the watch; returns at once. `changed` is called after every event (tests and metrics wait
/// on it).
pub fn spawn(
    client: Client,
    index: Arc<UsageIndex>,
    count: Counter,
    changed: impl Fn() + Send + 'static,
) {
    tokio::spawn(async move {
        let api: Api<WatchedPod> = Api::all(client);
        let stream = watcher(api, watcher::Config::default().page_size(500)).default_backoff();
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => index.relist_started(),
                Ok(watcher::Event::InitApply(pod) | watcher::Event::Apply(pod)) => {
                    apply(&index, &count, pod)
                }
                Ok(watcher::Event::Delete(pod)) => {
                    if let (Some(ns), Some(name)) = (
                        pod.metadata.namespace.as_deref(),
                        pod.metadata.name.as_deref(),
                    ) {
                        index.delete(ns, name);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    index.relist_done();
                    tracing::info!(gpu_pods = index.len(), "pod usage index synced");
                }
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            }
            changed();
        }
    });
}
