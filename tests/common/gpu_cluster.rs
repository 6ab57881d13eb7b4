//! A GPU cluster as the API server would list it, for `doctor`: the shipped NodePools, NodeOverlays,
//! webhook registration, policy ConfigMap and GPU Operator ConfigMaps, plus Nodes, Pods and NodeClaims
//! shaped as Kubernetes and Karpenter v1 write them (NodeClaim conditions Launched / Registered /
//! Initialized / Ready, with reason and message as Karpenter sets them).
//!
//! Also used by `examples/doctor_scale.rs` (included by path).
#![allow(dead_code)]

use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::fakeapi::FakeApi;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    gpu_slicer_core::yaml::documents(&text).unwrap()
}

/// RFC 3339, `minutes` ago.
pub fn ago(minutes: i64) -> String {
    Timestamp::from_second(Timestamp::now().as_second() - minutes * 60)
        .unwrap()
        .to_string()
}

fn uid(seed: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 20) & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

/// Adds what the API server adds to stored objects.
fn stored(mut obj: Value, minutes_ago: i64) -> Value {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(uid(&name));
    meta["resourceVersion"] = json!("4100");
    meta["creationTimestamp"] = json!(ago(minutes_ago));
    if meta.get("generation").is_none() {
        meta["generation"] = json!(1);
    }
    obj
}

/// Everything the fake API server serves; `None` collections are not served (404, as without the CRD).
#[derive(Clone)]
pub struct Cluster {
    pub namespaces: Vec<Value>,
    pub nodes: Vec<Value>,
    pub pods: Vec<Value>,
    pub webhooks: Vec<Value>,
    pub configmaps: Vec<Value>,
    pub nodepools: Option<Vec<Value>>,
    pub nodeclaims: Option<Vec<Value>>,
    pub nodeoverlays: Option<Vec<Value>>,
    pub clusterpolicies: Option<Vec<Value>>,
    /// resource.k8s.io/v1: DeviceClasses, ResourceSlices and ResourceClaimTemplates; `None` when the
    /// API server does not serve it (before Kubernetes 1.34).
    pub dra: Option<Dra>,
}

/// The resource.k8s.io/v1 objects a cluster serves.
#[derive(Clone, Default)]
pub struct Dra {
    pub deviceclasses: Vec<Value>,
    pub resourceslices: Vec<Value>,
    pub resourceclaimtemplates: Vec<Value>,
}

impl Cluster {
    /// Serves it on `api`.
    pub fn install(&self, api: &FakeApi) {
        api.serve(
            "/api/v1/namespaces",
            "v1",
            "NamespaceList",
            self.namespaces.clone(),
        );
        api.serve("/api/v1/nodes", "v1", "NodeList", self.nodes.clone());
        api.serve_namespaced("/api/v1", "pods", "v1", "PodList", self.pods.clone());
        api.serve_namespaced(
            "/api/v1",
            "configmaps",
            "v1",
            "ConfigMapList",
            self.configmaps.clone(),
        );
        api.serve(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfigurationList",
            self.webhooks.clone(),
        );
        let custom = [
            (
                "/apis/karpenter.sh/v1/nodepools",
                "karpenter.sh/v1",
                "NodePoolList",
                &self.nodepools,
            ),
            (
                "/apis/karpenter.sh/v1/nodeclaims",
                "karpenter.sh/v1",
                "NodeClaimList",
                &self.nodeclaims,
            ),
            (
                "/apis/karpenter.sh/v1alpha1/nodeoverlays",
                "karpenter.sh/v1alpha1",
                "NodeOverlayList",
                &self.nodeoverlays,
            ),
            (
                "/apis/nvidia.com/v1/clusterpolicies",
                "nvidia.com/v1",
                "ClusterPolicyList",
                &self.clusterpolicies,
            ),
        ];
        for (path, api_version, kind, items) in custom {
            match items {
                Some(items) => api.serve(path, api_version, kind, items.clone()),
                None => api.remove(path),
            }
        }
        self.install_dra(api);
    }

    fn install_dra(&self, api: &FakeApi) {
        const DRA: &str = "/apis/resource.k8s.io/v1";
        const VERSION: &str = "resource.k8s.io/v1";
        let Some(dra) = &self.dra else {
            for plural in ["deviceclasses", "resourceslices", "resourceclaimtemplates"] {
                api.remove(&format!("{DRA}/{plural}"));
            }
            return;
        };
        api.serve(
            &format!("{DRA}/deviceclasses"),
            VERSION,
            "DeviceClassList",
            dra.deviceclasses.clone(),
        );
        api.serve(
            &format!("{DRA}/resourceslices"),
            VERSION,
            "ResourceSliceList",
            dra.resourceslices.clone(),
        );
        api.serve_namespaced(
            DRA,
            "resourceclaimtemplates",
            VERSION,
            "ResourceClaimTemplateList",
            dra.resourceclaimtemplates.clone(),
        );
    }

    /// Without resource.k8s.io/v1 (a cluster before Kubernetes 1.34).
    pub fn without_dra(mut self) -> Cluster {
        self.dra = None;
        self
    }

    /// Without Karpenter's CRDs.
    pub fn without_karpenter(mut self) -> Cluster {
        self.nodepools = None;
        self.nodeclaims = None;
        self.nodeoverlays = None;
        self
    }

    /// Without the GPU Operator's CRD.
    pub fn without_gpu_operator(mut self) -> Cluster {
        self.clusterpolicies = None;
        self
    }
}

pub fn namespace(name: &str, labels: Value) -> Value {
    let mut l = labels;
    l["kubernetes.io/metadata.name"] = json!(name);
    stored(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": l},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        60 * 24 * 7,
    )
}

/// A node Karpenter launched for `pool` on `instance_type`, with these extra labels and nvidia.com/
/// allocatable.
pub fn node(name: &str, pool: &str, instance_type: &str, labels: Value, gpus: Value) -> Value {
    let mut l = json!({
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone": "us-east-1a",
        "karpenter.sh/nodepool": pool, "karpenter.sh/registered": "true", "karpenter.sh/initialized": "true",
        "karpenter.sh/capacity-type": "on-demand", "karpenter.k8s.aws/ec2nodeclass": "gpu",
        "nvidia.com/gpu.present": "true",
    });
    for (k, v) in labels.as_object().unwrap() {
        l[k] = v.clone();
    }
    let mut allocatable = json!({"cpu": "191450m", "ephemeral-storage": "95551679124", "hugepages-1Gi": "0",
        "hugepages-2Mi": "0", "memory": "2097042636Ki", "pods": "737"});
    for (k, v) in gpus.as_object().unwrap() {
        allocatable[k] = v.clone();
    }
    stored(
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": l,
                "annotations": {"karpenter.sh/nodepool-hash": "6821555240594823858", "node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"providerID": format!("aws:///us-east-1a/i-0{}", &uid(name)[..16]),
                "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            "status": {
                "capacity": allocatable.clone(), "allocatable": allocatable,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastHeartbeatTime": ago(1), "lastTransitionTime": ago(110)}],
                "nodeInfo": {"architecture": "amd64", "bootID": uid(name), "containerRuntimeVersion": "containerd://2.0.5",
                    "kernelVersion": "6.12.40-63.114.amzn2023.x86_64", "kubeProxyVersion": "", "kubeletVersion": "v1.36.2-eks-3b0d9c5",
                    "machineID": "ec2", "operatingSystem": "linux", "osImage": "Amazon Linux 2023.8.20250915", "systemUUID": "ec2"}
            }
        }),
        120,
    )
}

/// The all-balanced layout of a p5.48xlarge (8 x H100-80GB) once mig-manager has applied it.
pub fn mig_node(name: &str) -> Value {
    node(
        name,
        "gpu-mig",
        "p5.48xlarge",
        json!({"nvidia.com/mig.config": "all-balanced", "nvidia.com/mig.config.state": "success", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        json!({"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "16", "nvidia.com/mig-2g.20gb": "8", "nvidia.com/mig-3g.40gb": "8"}),
    )
}

/// A pod of Deployment `deploy` (ReplicaSet `deploy-7d9c8b6f5`) with one container asking for
/// `resources` (limits, requests copied as the API server defaults them), and `extra` merged into spec
/// (`annotations` into metadata).
pub fn pod(
    ns: &str,
    deploy: &str,
    suffix: &str,
    phase: &str,
    resources: Value,
    extra: Value,
) -> Value {
    let rs = format!("{deploy}-7d9c8b6f5");
    let name = format!("{rs}-{suffix}");
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "generateName": format!("{rs}-"), "namespace": ns,
            "labels": {"app": deploy, "pod-template-hash": "7d9c8b6f5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": uid(&rs),
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {
            "containers": [{"name": "main", "image": "nvcr.io/nvidia/tritonserver:25.08-py3",
                "resources": {"limits": resources.clone(), "requests": resources},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {"phase": phase, "qosClass": "Burstable"}
    });
    for (k, v) in extra.as_object().unwrap() {
        match k.as_str() {
            "annotations" => p["metadata"]["annotations"] = v.clone(),
            "tolerations" => {
                let t = p["spec"]["tolerations"].as_array_mut().unwrap();
                t.extend(v.as_array().unwrap().iter().cloned());
            }
            _ => p["spec"][k] = v.clone(),
        }
    }
    if phase == "Pending" {
        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient nvidia.com/mig-1g.10gb. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
            "lastTransitionTime": ago(40), "lastProbeTime": null}]);
    } else if let Some(node) = extra.get("nodeName") {
        p["spec"]["nodeName"] = node.clone();
    }
    stored(p, 45)
}

/// What the webhook adds to a pod of rule inference-mig.
pub fn routed_to_gpu_mig() -> Value {
    json!({"nodeSelector": {"karpenter.sh/nodepool": "gpu-mig", "nvidia.com/mig.config": "all-balanced"},
           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
           "annotations": {"gpu-slicer.io/rewritten": "main: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb 1 (rule inference-mig)"}})
}

/// A NodeClaim of gpu-mig as Karpenter v1 writes it, registered as `node`; `initialized` is the
/// Initialized condition.
pub fn nodeclaim(name: &str, node: &str, initialized: Value) -> Value {
    let initialized_true = initialized["status"] == "True";
    let ready = if initialized_true {
        json!({"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": ago(50), "observedGeneration": 1})
    } else {
        json!({"type": "Ready", "status": "Unknown", "reason": "UnhealthyDependents", "message": "Initialized=Unknown", "lastTransitionTime": ago(50), "observedGeneration": 1})
    };
    let resources = json!({"cpu": "191450m", "memory": "2097042636Ki", "pods": "737", "ephemeral-storage": "95551679124",
        "nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "16", "nvidia.com/mig-2g.20gb": "8", "nvidia.com/mig-3g.40gb": "8"});
    stored(
        json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
            "metadata": {"name": name,
                "labels": {"karpenter.sh/nodepool": "gpu-mig", "node.kubernetes.io/instance-type": "p5.48xlarge",
                    "karpenter.sh/capacity-type": "on-demand", "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/zone": "us-east-1a", "karpenter.k8s.aws/ec2nodeclass": "gpu",
                    "nvidia.com/mig.config": "all-balanced"},
                "annotations": {"karpenter.sh/nodepool-hash": "6821555240594823858", "karpenter.sh/nodepool-hash-version": "v3",
                    "karpenter.k8s.aws/ec2nodeclass-hash": "15342250768451498428", "karpenter.k8s.aws/ec2nodeclass-hash-version": "v4",
                    "karpenter.k8s.aws/tagged": "true"},
                "finalizers": ["karpenter.sh/termination"],
                "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "name": "gpu-mig", "uid": uid("gpu-mig"), "blockOwnerDeletion": true}]},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
                "requirements": [
                    {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["p5.48xlarge"]},
                    {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["gpu-mig"]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "nvidia.com/mig.config", "operator": "In", "values": ["all-balanced"]}],
                "resources": {"requests": {"cpu": "2150m", "memory": "8Gi", "pods": "6", "nvidia.com/mig-1g.10gb": "1"}},
                "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
                "expireAfter": "720h"
            },
            "status": {
                "providerID": format!("aws:///us-east-1a/i-0{}", &uid(node)[..16]),
                "imageID": "ami-0b3f5a4d6c1e2f789", "nodeName": node,
                "capacity": resources.clone(), "allocatable": resources,
                "conditions": [
                    {"type": "Launched", "status": "True", "reason": "Launched", "message": "", "lastTransitionTime": ago(58), "observedGeneration": 1},
                    {"type": "Registered", "status": "True", "reason": "Registered", "message": "", "lastTransitionTime": ago(55), "observedGeneration": 1},
                    initialized,
                    ready,
                    {"type": "ConsistentStateFound", "status": "True", "reason": "ConsistentStateFound", "message": "", "lastTransitionTime": ago(50), "observedGeneration": 1}]
            }
        }),
        60,
    )
}

pub fn initialized() -> Value {
    json!({"type": "Initialized", "status": "True", "reason": "Initialized", "message": "", "lastTransitionTime": ago(52), "observedGeneration": 1})
}

/// Karpenter v1's condition for a node that never registered `resource`.
pub fn not_registered(resource: &str, minutes_ago: i64) -> Value {
    json!({"type": "Initialized", "status": "Unknown", "reason": "ResourceNotRegistered",
           "message": format!("Resource \"{resource}\" was requested but not registered"),
           "lastTransitionTime": ago(minutes_ago), "observedGeneration": 1})
}

fn shipped(kind: &str, dir: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        if f.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let rel = f
            .strip_prefix(repo(""))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        out.extend(
            yaml_docs(&rel)
                .into_iter()
                .filter(|d| d["kind"] == kind)
                .map(|d| stored(d, 60 * 24)),
        );
    }
    out
}

/// A NodeOverlay as Karpenter reports it once validated.
fn with_ready_status(mut overlay: Value) -> Value {
    overlay["status"] = json!({"conditions": [
        {"type": "ValidationSucceeded", "status": "True", "reason": "ValidationSucceeded", "message": "", "lastTransitionTime": ago(600), "observedGeneration": 1},
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": ago(600), "observedGeneration": 1}]});
    overlay
}

/// The shipped NodeOverlays (manifests/karpenter/nodeoverlays.yaml), Ready.
pub fn shipped_overlays() -> Vec<Value> {
    yaml_docs("manifests/karpenter/nodeoverlays.yaml")
        .into_iter()
        .map(|d| with_ready_status(stored(d, 60 * 24)))
        .collect()
}

/// A healthy cluster: the shipped manifests applied, one initialized MIG node running one sliced pod,
/// plus `cpu_pods` pods without GPUs (to make the pod list span pages).
pub fn healthy(cpu_pods: usize) -> Cluster {
    let mut configmaps = shipped("ConfigMap", "manifests/gpu-operator");
    for cm in &mut configmaps {
        cm["metadata"]["namespace"] = json!("gpu-operator");
    }
    let policy = std::fs::read_to_string(repo("manifests/policy/policy.yaml")).unwrap();
    configmaps.push(stored(
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "gpu-slicer-policy", "namespace": "gpu-slicer",
                            "labels": {"app.kubernetes.io/name": "gpu-slicer", "app.kubernetes.io/component": "policy"}},
               "data": {"policy.yaml": policy}}),
        60,
    ));
    let mut pods = vec![pod(
        "ml-inference",
        "llm",
        "abcde",
        "Running",
        json!({"nvidia.com/mig-1g.10gb": "1"}),
        {
            let mut r = routed_to_gpu_mig();
            r["nodeName"] = json!("ip-10-0-1-5.ec2.internal");
            r
        },
    )];
    for i in 0..cpu_pods {
        pods.push(pod(
            "default",
            &format!("web{}", i / 10),
            &format!("{i:05}"),
            "Running",
            json!({"cpu": "100m", "memory": "128Mi"}),
            json!({"nodeName": "ip-10-0-0-1.ec2.internal"}),
        ));
    }
    Cluster {
        namespaces: [
            ("default", json!({})),
            ("kube-system", json!({})),
            ("gpu-slicer", json!({})),
            ("gpu-operator", json!({})),
            ("ml-inference", json!({"gpu-sharing": "mig"})),
            ("ml-notebooks", json!({})),
            ("sandbox", json!({})),
        ]
        .into_iter()
        .map(|(n, l)| namespace(n, l))
        .collect(),
        nodes: vec![mig_node("ip-10-0-1-5.ec2.internal")],
        pods,
        webhooks: shipped("MutatingWebhookConfiguration", "manifests/webhook/base"),
        configmaps,
        nodepools: Some(shipped("NodePool", "manifests/karpenter")),
        nodeclaims: Some(vec![nodeclaim(
            "gpu-mig-x7k2p",
            "ip-10-0-1-5.ec2.internal",
            initialized(),
        )]),
        nodeoverlays: Some(shipped_overlays()),
        clusterpolicies: Some(vec![stored(
            json!({"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy",
                   "metadata": {"name": "cluster-policy"},
                   "spec": {"mig": {"strategy": "mixed"},
                            "migManager": {"enabled": true, "config": {"name": "custom-mig-config", "default": "all-disabled"}},
                            "devicePlugin": {"config": {"name": "device-plugin-config", "default": "default"}},
                            "driver": {"enabled": false}, "toolkit": {"enabled": false}},
                   "status": {"state": "ready", "namespace": "gpu-operator"}}),
            60 * 24,
        )]),
        // Kubernetes 1.34+ serves DRA; no DRA driver is installed.
        dra: Some(Dra::default()),
    }
}

/// What [`at_scale`] plants, so a run can be checked.
pub struct Planted {
    pub stuck_claims: usize,
    pub failed_nodes: usize,
    pub unrewritten_owners: usize,
}

/// A big cluster: `nodes` initialized gpu-mig nodes (1% with a failed MIG layout), `claims`
/// NodeClaims (the failed nodes' stuck on `ResourceNotRegistered`), and `pods` pods: 40% running MIG
/// slices, 1% pending for one, 0.5% whole-GPU pods that bypassed the webhook, the rest CPU only.
pub fn at_scale(nodes: usize, pods: usize, claims: usize) -> (Cluster, Planted) {
    let mut c = healthy(0);
    let failed = (nodes / 100).max(1);
    c.nodes = (0..nodes)
        .map(|i| {
            let mut n = mig_node(&format!(
                "ip-10-{}-{}-{}.ec2.internal",
                i / 65536,
                i / 256 % 256,
                i % 256
            ));
            if i < failed {
                n["metadata"]["labels"]["nvidia.com/mig.config.state"] = json!("failed");
                n["metadata"]["labels"]["karpenter.sh/initialized"] = json!("false");
                n["status"]["allocatable"] = json!({"cpu": "191450m", "nvidia.com/gpu": "8"});
            }
            n
        })
        .collect();
    let node_name = |i: usize| {
        format!(
            "ip-10-{}-{}-{}.ec2.internal",
            i / 65536,
            i / 256 % 256,
            i % 256
        )
    };
    let stuck = failed.min(claims);
    c.nodeclaims = Some(
        (0..claims)
            .map(|i| {
                let cond = if i < stuck {
                    not_registered("nvidia.com/mig-1g.10gb", 30)
                } else {
                    initialized()
                };
                nodeclaim(&format!("gpu-mig-{i:05}"), &node_name(i), cond)
            })
            .collect(),
    );
    let unrewritten = pods / 200;
    let mut out = Vec::with_capacity(pods);
    for i in 0..pods {
        let deploy = format!("svc{}", i / 10);
        let suffix = format!("{i:05}");
        let pod = if i < pods * 40 / 100 {
            let mut extra = routed_to_gpu_mig();
            extra["nodeName"] = json!(node_name(failed + i % (nodes - failed).max(1)));
            pod(
                "ml-inference",
                &deploy,
                &suffix,
                "Running",
                json!({"nvidia.com/mig-1g.10gb": "1"}),
                extra,
            )
        } else if i < pods * 41 / 100 {
            pod(
                "ml-inference",
                &deploy,
                &suffix,
                "Pending",
                json!({"nvidia.com/mig-1g.10gb": "1"}),
                routed_to_gpu_mig(),
            )
        } else if i < pods * 41 / 100 + unrewritten {
            pod(
                "ml-inference",
                &format!("bypass{}", i / 10),
                &suffix,
                "Running",
                json!({"nvidia.com/gpu": "1"}),
                json!({"nodeName": node_name(i % nodes)}),
            )
        } else {
            pod(
                "default",
                &deploy,
                &suffix,
                "Running",
                json!({"cpu": "250m", "memory": "512Mi"}),
                json!({"nodeName": node_name(i % nodes)}),
            )
        };
        out.push(pod);
    }
    c.pods = out;
    (
        c,
        Planted {
            stuck_claims: stuck,
            failed_nodes: failed,
            unrewritten_owners: (pods * 41 / 100..pods * 41 / 100 + unrewritten)
                .map(|i| i / 10)
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
        },
    )
}

// ---- DRA (manifests/examples/dra) ----

/// The DRA example's policy (manifests/examples/dra/policy.yaml) plus the device-plugin rule of the
/// main example for `ml-inference` on NodePool gpu-mig: DRA and device-plugin namespaces side by side.
pub fn dra_policy() -> String {
    let dra = std::fs::read_to_string(repo("manifests/examples/dra/policy.yaml")).unwrap();
    format!(
        "{dra}
    - name: inference-mig
      namespaces: [\"ml-inference\"]
      action: mig
      mig:
        profile: 1g.10gb
        allowedProfiles: [1g.10gb, 2g.20gb, 3g.40gb]
      nodePool: gpu-mig
"
    )
}

/// A node of a DRA NodePool: the labels its template gives (the driver's kubelet plugin runs there,
/// the device plugin does not), and no `nvidia.com/` resource in its allocatable.
pub fn dra_node(name: &str, pool: &str, instance_type: &str) -> Value {
    let mut labels = json!({"gpu-slicer.io/gpu-allocator": "dra", "nvidia.com/gpu.deploy.device-plugin": "false",
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"});
    if pool == "gpu-dra-mig" {
        labels["nvidia.com/mig.config"] = json!("all-balanced");
        labels["nvidia.com/mig.config.state"] = json!("success");
    }
    node(name, pool, instance_type, labels, json!({}))
}

/// The ResourceSlice the NVIDIA DRA driver's kubelet plugin publishes for `node`: pool named after the
/// node, `gpus` full GPUs, or with `mig` the all-balanced layout of each (2 x 1g.10gb, 2g.20gb,
/// 3g.40gb), attributes as its `resourceslice-attributes.md` lists them.
pub fn resource_slice(node: &str, gpus: usize, mig: bool) -> Value {
    let mut devices = Vec::new();
    for g in 0..gpus {
        let common = json!({"productName": {"string": "NVIDIA H100 80GB HBM3"}, "brand": {"string": "Nvidia"},
            "architecture": {"string": "Hopper"}, "cudaComputeCapability": {"version": "9.0.0"},
            "driverVersion": {"version": "580.95.5"}, "cudaDriverVersion": {"version": "13.0.0"},
            "pcieBusID": {"string": format!("0000:{:02x}:00.0", 0x53 + g)}});
        let parent = uid(&format!("{node}-gpu-{g}"));
        if !mig {
            let mut attributes = common.clone();
            attributes["type"] = json!({"string": "gpu"});
            attributes["uuid"] = json!({"string": format!("GPU-{parent}")});
            attributes["index"] = json!({"int": g});
            devices.push(json!({"name": format!("gpu-{g}"), "attributes": attributes,
                "capacity": {"memory": {"value": "81559Mi"}}}));
            continue;
        }
        // (profile, profile id, placement start, size, memory, multiprocessors)
        for (profile, id, start, size, memory, sms) in [
            ("1g.10gb", 19, 0, 1, "9984Mi", "16"),
            ("1g.10gb", 19, 1, 1, "9984Mi", "16"),
            ("2g.20gb", 14, 2, 2, "20096Mi", "32"),
            ("3g.40gb", 9, 4, 4, "40192Mi", "60"),
        ] {
            let mut attributes = common.clone();
            attributes["type"] = json!({"string": "mig"});
            attributes["profile"] = json!({"string": profile});
            attributes["parentUUID"] = json!({"string": format!("GPU-{parent}")});
            attributes["uuid"] =
                json!({"string": format!("MIG-{}", uid(&format!("{parent}-{start}")))});
            attributes["parentIndex"] = json!({"int": g});
            devices.push(
                json!({"name": format!("gpu-{g}-mig-{id}-{start}-{size}"), "attributes": attributes,
                "capacity": {"memory": {"value": memory}, "multiprocessors": {"value": sms}}}),
            );
        }
    }
    stored(
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
               "metadata": {"name": format!("{node}-gpu.nvidia.com-{}", &uid(node)[..5]),
                   "generateName": format!("{node}-gpu.nvidia.com-"),
                   "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid(node), "controller": true}]},
               "spec": {"driver": "gpu.nvidia.com", "nodeName": node,
                   "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}, "devices": devices}}),
        110,
    )
}

/// The templates gpu-slicer's controller keeps in `namespace` under `policy`, as it writes them
/// (managed-by label and owner annotation).
pub fn gpu_slicer_templates(policy: &str, namespace: &str) -> Vec<Value> {
    use gpu_slicer::controller::{OWNER_ANNOTATION, desired};
    let policy = gpu_slicer_core::policy::Policy::parse(policy, "policy.yaml").unwrap();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(self::namespace(namespace, json!({}))).unwrap();
    desired(&policy, &ns)
        .into_iter()
        .map(|mut t| {
            t["metadata"]["annotations"][OWNER_ANNOTATION.0] = json!(OWNER_ANNOTATION.1);
            stored(t, 60)
        })
        .collect()
}

/// A healthy cluster with DRA: [`healthy`] plus the DRA example (NodePools gpu-dra-mig, static with
/// one node, and gpu-dra-whole; the driver's DeviceClasses; [`dra_policy`] in the ConfigMap), the
/// driver's kubelet plugin only on the DRA node, and gpu-slicer's templates in the DRA namespaces.
pub fn dra_healthy() -> Cluster {
    let mut c = healthy(0);
    let policy = dra_policy();
    for cm in &mut c.configmaps {
        if cm["metadata"]["name"] == "gpu-slicer-policy" {
            cm["data"]["policy.yaml"] = json!(policy);
        }
    }
    c.nodepools
        .as_mut()
        .unwrap()
        .extend(shipped("NodePool", "manifests/examples/dra"));
    for ns in ["ml-inference-dra", "ml-training-dra"] {
        c.namespaces.push(namespace(ns, json!({})));
    }
    let node = "ip-10-0-2-7.ec2.internal";
    c.nodes.push(dra_node(node, "gpu-dra-mig", "p5.48xlarge"));
    let mut templates = gpu_slicer_templates(&policy, "ml-inference-dra");
    templates.extend(gpu_slicer_templates(&policy, "ml-training-dra"));
    c.dra = Some(Dra {
        deviceclasses: shipped("DeviceClass", "manifests/examples/dra"),
        resourceslices: vec![resource_slice(node, 8, true)],
        resourceclaimtemplates: templates,
    });
    c
}

/// What docs/troubleshooting.md shows for DRA: the driver's kubelet plugin also on device-plugin node
/// ip-10-0-1-5 (no `kubeletPlugin.nodeSelector`), a gpu-dra-whole node whose device plugin still runs,
/// NodePool gpu-dra-mig dynamic (no `spec.replicas`) and drained, and a tenant's template holding
/// `gpu-slicer-gpu` in ml-training-dra.
pub fn dra_broken() -> Cluster {
    let mut c = dra_healthy();
    c.nodes
        .retain(|n| n["metadata"]["labels"]["karpenter.sh/nodepool"] != "gpu-dra-mig");
    for pool in c.nodepools.as_mut().unwrap() {
        if pool["metadata"]["name"] == "gpu-dra-mig" {
            pool["spec"].as_object_mut().unwrap().remove("replicas");
        }
    }
    let whole = "ip-10-0-2-9.ec2.internal";
    let mut n = dra_node(whole, "gpu-dra-whole", "g6e.12xlarge");
    n["status"]["allocatable"]["nvidia.com/gpu"] = json!("4");
    c.nodes.push(n);
    let dra = c.dra.as_mut().unwrap();
    dra.resourceslices = vec![
        resource_slice("ip-10-0-1-5.ec2.internal", 8, true),
        resource_slice(whole, 4, false),
    ];
    for t in &mut dra.resourceclaimtemplates {
        if t["metadata"]["namespace"] == "ml-training-dra"
            && t["metadata"]["name"] == "gpu-slicer-gpu"
        {
            t["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "Helm"});
            t["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "trainer"});
            t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] = json!(2);
        }
    }
    c
}
