//! The inventory from a cluster: the Deployments, StatefulSets and Jobs whose pods request
//! `nvidia.com/gpu`, listed page by page through [`crate::cluster::kubeapi`], turned into workloads by a pure
//! function.
//!
//! What a workload object says for the planner (on its pod template):
//! - replicas: `spec.replicas` (Deployments, StatefulSets; default 1) or `spec.parallelism` (Jobs);
//! - GPUs per replica: the pod's `nvidia.com/gpu` (sum over containers, or the largest init container);
//! - `gpu-slicer.io/gpu-memory`: peak GPU memory per replica (required: the planner cannot guess it);
//! - `gpu-slicer.io/isolation`: `memory` (default: the safe choice) or `none`;
//! - the current instance type: `nodeSelector` `node.kubernetes.io/instance-type`, or the annotation
//!   `gpu-slicer.io/instance-type` (required);
//! - cpu and memory per replica: the pod's requests as the scheduler counts them ([`pod_requests`]);
//!   absent, the plan does not check the hosts for that workload and says so.
//!
//! Workloads without what the planner needs are skipped, each with the reason.

use serde_json::Value;

use super::inventory::{Isolation, Workload};
use crate::cluster::kubeapi::ApiError;
use crate::cluster::workloads;
use gpu_slicer_core::annotations::GPU_MEMORY_ANNOTATION;
use gpu_slicer_core::policy::WHOLE_GPU;
use gpu_slicer_core::quantity;

pub const ISOLATION_ANNOTATION: &str = "gpu-slicer.io/isolation";
pub const INSTANCE_TYPE_ANNOTATION: &str = "gpu-slicer.io/instance-type";

fn gpus_of(containers: Option<&Value>) -> Vec<u64> {
    containers
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let limit = c
                .pointer("/resources/limits")
                .and_then(|l| l.get(WHOLE_GPU));
            let v = limit.or_else(|| {
                c.pointer("/resources/requests")
                    .and_then(|r| r.get(WHOLE_GPU))
            });
            match v {
                Some(Value::String(s)) => quantity::parse_count(s).unwrap_or(0),
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                _ => 0,
            }
        })
        .collect()
}

/// A quantity in a resource list: a string (`"500m"`) or a bare JSON number (`2`).
fn quantity_of(
    list: Option<&Value>,
    resource: &str,
    parse: fn(&str) -> Option<u128>,
) -> Option<u128> {
    match list?.get(resource)? {
        Value::String(s) => parse(s),
        Value::Number(n) => parse(&n.to_string()),
        _ => None,
    }
}

/// One container's request: `requests`, else `limits` (the API server defaults a missing request to
/// the limit when it creates the pod).
fn container_request(c: &Value, resource: &str, parse: fn(&str) -> Option<u128>) -> Option<u128> {
    quantity_of(c.pointer("/resources/requests"), resource, parse)
        .or_else(|| quantity_of(c.pointer("/resources/limits"), resource, parse))
}

/// What the scheduler reserves for one pod of `spec` for `resource`, as
/// k8s.io/component-helpers/resource `PodRequests` computes it: the containers' sum (sidecars, the init
/// containers with `restartPolicy: Always`, included), or the largest init container plus the sidecars
/// started before it if that is larger, plus `spec.overhead`. `None` when no container states it.
fn pod_request(spec: &Value, resource: &str, parse: fn(&str) -> Option<u128>) -> Option<u128> {
    let list = |key: &str| {
        spec.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut stated = false;
    let mut sum = 0u128;
    for c in list("containers") {
        if let Some(v) = container_request(&c, resource, parse) {
            stated = true;
            sum += v;
        }
    }
    let mut sidecars = 0u128;
    let mut init_peak = 0u128;
    for c in list("initContainers") {
        let v = container_request(&c, resource, parse);
        stated |= v.is_some();
        let v = v.unwrap_or(0);
        if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
            sum += v;
            sidecars += v;
            init_peak = init_peak.max(sidecars);
        } else {
            init_peak = init_peak.max(v + sidecars);
        }
    }
    let overhead = quantity_of(spec.get("overhead"), resource, parse);
    if !stated && overhead.is_none() {
        return None;
    }
    Some(sum.max(init_peak) + overhead.unwrap_or(0))
}

/// The cpu (millicores) and memory (bytes) the scheduler reserves for one pod of `spec`.
pub fn pod_requests(spec: &Value) -> (Option<u64>, Option<u128>) {
    let cpu = pod_request(spec, "cpu", quantity::parse_milli)
        .map(|m| u64::try_from(m).unwrap_or(u64::MAX));
    let memory = pod_request(spec, "memory", quantity::parse);
    (cpu, memory)
}

/// Builds workloads from Deployment / StatefulSet / Job objects; returns them and the skipped ones with
/// the reason.
pub fn workloads_from_objects(objects: &[Value]) -> (Vec<Workload>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or("");
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let id = format!("{kind} {namespace}/{name}");
        let template = &obj["spec"]["template"];
        let spec = &template["spec"];
        let main: u64 = gpus_of(spec.get("containers")).iter().sum();
        let init = gpus_of(spec.get("initContainers"))
            .into_iter()
            .max()
            .unwrap_or(0);
        let gpus = main.max(init);
        if gpus == 0 {
            continue; // not a GPU workload
        }
        let annotation = |key: &str| {
            template
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(key))
                .and_then(Value::as_str)
        };
        let replicas = match kind {
            "Job" => obj["spec"]["parallelism"].as_u64().unwrap_or(1),
            _ => obj["spec"]["replicas"].as_u64().unwrap_or(1),
        };
        if replicas == 0 {
            skipped.push(format!("{id}: scaled to 0"));
            continue;
        }
        let Some(memory_text) = annotation(GPU_MEMORY_ANNOTATION) else {
            skipped.push(format!("{id}: no {GPU_MEMORY_ANNOTATION} annotation on its pod template (the planner sizes by it)"));
            continue;
        };
        let Some(gpu_memory) = quantity::parse(memory_text).filter(|b| *b > 0) else {
            skipped.push(format!(
                "{id}: {GPU_MEMORY_ANNOTATION} {memory_text:?} is not a quantity"
            ));
            continue;
        };
        let isolation = match annotation(ISOLATION_ANNOTATION) {
            None | Some("memory") => Isolation::Memory,
            Some("none") => Isolation::None,
            Some(other) => {
                skipped.push(format!(
                    "{id}: {ISOLATION_ANNOTATION} {other:?} must be memory or none"
                ));
                continue;
            }
        };
        let instance = spec
            .pointer("/nodeSelector/node.kubernetes.io~1instance-type")
            .and_then(Value::as_str)
            .or_else(|| annotation(INSTANCE_TYPE_ANNOTATION));
        let Some(instance) = instance else {
            skipped.push(format!(
                "{id}: its current instance type is unknown (nodeSelector node.kubernetes.io/instance-type or the {INSTANCE_TYPE_ANNOTATION} annotation)"
            ));
            continue;
        };
        let (cpu_millis, memory) = pod_requests(spec);
        out.push(Workload {
            name: format!("{}-{name}", kind.to_ascii_lowercase()),
            namespace: namespace.to_string(),
            replicas,
            gpu_memory,
            gpu_memory_text: memory_text.to_string(),
            isolation,
            current_instance_type: instance.to_string(),
            gpus_per_replica: u32::try_from(gpus).unwrap_or(u32::MAX),
            cpu_millis: cpu_millis.filter(|c| *c > 0),
            memory: memory.filter(|m| *m > 0),
        });
    }
    (out, skipped)
}

/// Lists every Deployment, StatefulSet and Job in the cluster (as JSON, with `kind` set), paginated,
/// through the one workload lister.
pub async fn list_workloads(client: kube::Client) -> Result<Vec<Value>, ApiError> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch};
    let mut out = workloads::list::<apps::Deployment>(&client, |_| true).await?;
    out.extend(workloads::list::<apps::StatefulSet>(&client, |_| true).await?);
    out.extend(workloads::list::<batch::Job>(&client, |_| true).await?);
    Ok(out)
}
