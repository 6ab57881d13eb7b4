//! Workloads from Kubernetes objects: Deployments, StatefulSets, DaemonSets, Jobs, CronJobs,
//! ReplicaSets without an owner and bare Pods, each turned into the pod it would create.
//!
//! Pure on JSON values, so manifests (`-f`) and a cluster's lists (`--from-cluster`) read alike;
//! [`load_paths`] is the only part that touches files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// A workload and the pod its controller would create at its next rollout.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `spec.replicas` (Deployment, StatefulSet, ReplicaSet), `parallelism` (Job, CronJob), 1 for a
    /// Pod; `None` for a DaemonSet (one per matching node).
    pub replicas: Option<u64>,
    /// The pod: the template's metadata and spec, in the workload's namespace.
    pub pod: Value,
    /// Where it was read from (a file, or `cluster`).
    pub origin: String,
}

/// What was read: workloads, the labels of Namespace objects met on the way, and what was skipped.
#[derive(Debug, Default)]
pub struct Read {
    pub workloads: Vec<Workload>,
    /// Labels of the Namespace objects among the inputs (`kustomize build` output often has them).
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Objects of a workload kind that could not be used, each with why.
    pub skipped: Vec<String>,
}

/// Whether an object's `metadata.ownerReferences` names a controller: such a ReplicaSet, Job or Pod
/// is made by another workload, which is reported instead.
fn has_controller(obj: &Value) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| r["controller"] == Value::Bool(true)))
}

/// Reads objects (with their origin); `default_namespace` is for objects that name none, as
/// `kubectl apply` would use. `*List` objects (`kubectl get -o yaml`) are read item by item.
pub fn from_objects(objects: Vec<Document>, default_namespace: &str) -> Read {
    let mut read = Read::default();
    let mut queue: Vec<Document> = objects;
    queue.reverse();
    while let Some((origin, obj)) = queue.pop() {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        if kind.ends_with("List")
            && let Some(items) = obj.get("items").and_then(Value::as_array)
        {
            // Items of a typed list come without `kind`: it is the list's, less `List`.
            let item_kind = kind.trim_end_matches("List").to_string();
            for item in items.iter().rev() {
                let mut item = item.clone();
                if item.get("kind").is_none() && !item_kind.is_empty() {
                    item["kind"] = Value::from(item_kind.clone());
                }
                queue.push((origin.clone(), item));
            }
            continue;
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if kind == "Namespace" {
            let labels = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            read.namespace_labels.insert(name, labels);
            continue;
        }
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(default_namespace)
            .to_string();
        let spec = &obj["spec"];
        let (template, replicas) = match kind.as_str() {
            "Deployment" | "StatefulSet" => (&spec["template"], Some(count(&spec["replicas"]))),
            "ReplicaSet" if has_controller(&obj) => continue,
            "ReplicaSet" => (&spec["template"], Some(count(&spec["replicas"]))),
            "DaemonSet" => (&spec["template"], None),
            // A CronJob's Jobs are reported as the CronJob.
            "Job" if has_controller(&obj) => continue,
            "Job" => (&spec["template"], Some(count(&spec["parallelism"]))),
            "CronJob" => (
                &spec["jobTemplate"]["spec"]["template"],
                Some(count(&spec["jobTemplate"]["spec"]["parallelism"])),
            ),
            "Pod" if has_controller(&obj) => continue,
            "Pod" => (&obj, Some(1)),
            _ => continue,
        };
        let id = format!("{kind} {namespace}/{name} ({origin})");
        if !template.is_object() || !template["spec"].is_object() {
            read.skipped
                .push(format!("{id}: no pod template (spec.template.spec)"));
            continue;
        }
        read.workloads.push(Workload {
            pod: pod_of(template, &name, &namespace),
            kind,
            namespace,
            name,
            replicas,
            origin,
        });
    }
    read
}

/// `replicas` / `parallelism` as written; Kubernetes defaults both to 1.
fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(1)
}

/// The pod a controller creates from `template`: its labels, annotations and spec, named as
/// controllers name their pods (`generateName`), in the workload's namespace.
fn pod_of(template: &Value, name: &str, namespace: &str) -> Value {
    let meta = &template["metadata"];
    let mut metadata = json!({"generateName": format!("{name}-"), "namespace": namespace});
    for key in ["labels", "annotations"] {
        if let Some(m) = meta.get(key).filter(|m| m.is_object()) {
            metadata[key] = m.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// One YAML document and where it came from.
pub type Document = (String, Value);

/// Every document of `paths`: a file (`-` is stdin), or every `*.yaml`/`*.yml`/`*.json` file under a
/// directory, recursively and in name order (hidden entries such as `.git` and the kubelet's `..data`
/// skipped). Every file read must parse: one that does not (a Helm chart's templates, say) is an
/// error naming it, so no workload slips past `--fail-on deny` unseen.
///
/// Symlinks are followed, to files and directories alike, but nothing is read twice: a directory or
/// file reached again (a link to an ancestor such as `self -> .`, or two links to one place) is an
/// error naming the link, since its workloads would otherwise be counted twice (or forever). Inputs
/// are read through [`crate::input`]: regular files only (a FIFO, socket or device is refused before
/// it is opened) and at most [`crate::input::MAX_INPUT_BYTES`] each.
pub fn load_paths(paths: &[String]) -> Result<Vec<Document>, String> {
    let mut docs = Vec::new();
    let mut seen = Seen::default();
    for path in paths {
        if path == "-" {
            let text = crate::input::read_arg(path).map_err(|e| e.to_string())?;
            push_docs(&mut docs, "stdin", &text)?;
            continue;
        }
        let p = Path::new(path);
        let mut files = Vec::new();
        if p.is_dir() {
            walk(p, &mut seen, &mut files)?;
            files.sort();
        } else {
            files.push(p.to_path_buf());
        }
        for file in files {
            seen.first_visit(&file)?;
            let shown = file.display().to_string();
            let text = crate::input::read_text(&file).map_err(|e| format!("{shown}: {e}"))?;
            push_docs(&mut docs, &shown, &text)?;
        }
    }
    Ok(docs)
}

fn push_docs(out: &mut Vec<Document>, origin: &str, text: &str) -> Result<(), String> {
    let parsed = gpu_slicer_core::yaml::documents(text).map_err(|e| {
        format!(
            "{origin}: not valid YAML or JSON: {e} (for a Helm chart, report its rendered \
             manifests: `helm template ... | gpu-slicer policy report -f -`)"
        )
    })?;
    out.extend(parsed.into_iter().map(|d| (origin.to_string(), d)));
    Ok(())
}

/// The canonical paths read so far, each with the path it was first reached by.
#[derive(Default)]
struct Seen(HashMap<PathBuf, String>);

impl Seen {
    /// An error when `path` leads somewhere already read.
    fn first_visit(&mut self, path: &Path) -> Result<(), String> {
        let shown = path.display().to_string();
        let canonical = std::fs::canonicalize(path).map_err(|e| format!("{shown}: {e}"))?;
        if let Some(first) = self.0.get(&canonical) {
            return Err(format!(
                "{shown}: leads to {}, already read as {first} (a symlink loop, or a second link \
                 to the same place: its workloads would be counted twice); remove the link or \
                 name the target once",
                canonical.display()
            ));
        }
        self.0.insert(canonical, shown);
        Ok(())
    }
}

fn walk(dir: &Path, seen: &mut Seen, out: &mut Vec<PathBuf>) -> Result<(), String> {
    seen.first_visit(dir)?;
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{shown}: {e}"))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{shown}: {e}"))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue; // .git, and the kubelet's ..data links
        }
        if path.is_dir() {
            walk(&path, seen, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gives_its_template_and_replicas() {
        let tpl = json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}});
        let objs = vec![
            json!({"kind": "Deployment", "metadata": {"name": "d", "namespace": "ns"}, "spec": {"replicas": 3, "template": tpl}}),
            json!({"kind": "StatefulSet", "metadata": {"name": "s"}, "spec": {"template": tpl}}),
            json!({"kind": "DaemonSet", "metadata": {"name": "ds", "namespace": "ns"}, "spec": {"template": tpl}}),
            json!({"kind": "Job", "metadata": {"name": "j", "namespace": "ns"}, "spec": {"parallelism": 4, "template": tpl}}),
            json!({"kind": "CronJob", "metadata": {"name": "cj", "namespace": "ns"}, "spec": {"jobTemplate": {"spec": {"template": tpl}}}}),
            json!({"kind": "ReplicaSet", "metadata": {"name": "owned", "namespace": "ns", "ownerReferences": [{"kind": "Deployment", "name": "d", "controller": true}]}, "spec": {"template": tpl}}),
            json!({"kind": "ReplicaSet", "metadata": {"name": "rs", "namespace": "ns"}, "spec": {"replicas": 2, "template": tpl}}),
            json!({"kind": "Pod", "metadata": {"name": "bare", "namespace": "ns"}, "spec": {"containers": []}}),
            json!({"kind": "Pod", "metadata": {"name": "owned", "namespace": "ns", "ownerReferences": [{"kind": "Job", "name": "j", "controller": true}]}, "spec": {}}),
            json!({"kind": "Namespace", "metadata": {"name": "ns", "labels": {"gpu": "mig"}}}),
            json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
            json!({"kind": "Deployment", "metadata": {"name": "broken", "namespace": "ns"}, "spec": {}}),
        ];
        let read = from_objects(
            objs.into_iter()
                .map(|o| ("f.yaml".to_string(), o))
                .collect(),
            "default",
        );
        let got: Vec<_> = read
            .workloads
            .iter()
            .map(|w| {
                (
                    w.kind.as_str(),
                    w.namespace.as_str(),
                    w.name.as_str(),
                    w.replicas,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("Deployment", "ns", "d", Some(3)),
                ("StatefulSet", "default", "s", Some(1)),
                ("DaemonSet", "ns", "ds", None),
                ("Job", "ns", "j", Some(4)),
                ("CronJob", "ns", "cj", Some(1)),
                ("ReplicaSet", "ns", "rs", Some(2)),
                ("Pod", "ns", "bare", Some(1)),
            ]
        );
        let pod = &read.workloads[0].pod;
        assert_eq!(pod["metadata"]["generateName"], "d-");
        assert_eq!(pod["metadata"]["namespace"], "ns");
        assert_eq!(pod["metadata"]["annotations"]["a"], "b");
        assert_eq!(pod["spec"]["containers"][0]["name"], "c");
        assert_eq!(read.namespace_labels["ns"]["gpu"], "mig");
        assert_eq!(read.skipped.len(), 1, "{:?}", read.skipped);
        assert!(read.skipped[0].starts_with("Deployment ns/broken (f.yaml)"));
    }

    #[test]
    fn list_items_take_the_list_kind() {
        let list = json!({"kind": "DeploymentList", "items": [
            {"metadata": {"name": "a", "namespace": "n"}, "spec": {"template": {"spec": {"containers": []}}}}
        ]});
        let read = from_objects(vec![("l".into(), list)], "default");
        assert_eq!(read.workloads[0].kind, "Deployment");
    }
}
