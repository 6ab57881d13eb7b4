//! The admission envelope: `AdmissionReview` (admission.k8s.io/v1) in, `AdmissionReview` out.
//!
//! Our own lean serde types rather than kube-core's `AdmissionReview<DynamicObject>`: the request is
//! read borrowed, the pod only where the decision needs it (see [`gpu_slicer_core::pod`]), and the patch is sent
//! as the base64 string the API documents (kube-core serializes `patch` as a number array; kube-rs
//! issue 1781). A test checks both read the captured reviews alike.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use gpu_slicer_core::audit::{self, Entry, Owner};
use gpu_slicer_core::dra::claims::ClaimFacts;
use gpu_slicer_core::engine::mode;
use gpu_slicer_core::engine::{self, Decision, Namespace};
use gpu_slicer_core::labels;
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::Policy;

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";
/// Longest `auditAnnotations` value sent; longer ones are cut (the API server keeps them in every
/// audit event of the request).
const MAX_AUDIT_VALUE: usize = 1024;

/// A body that is not a usable AdmissionReview: answered with HTTP 400 and this message.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAReview(String),
    #[error("request.object is not a Pod: {0}")]
    NotAPod(serde_json::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a, O> {
    #[serde(borrow)]
    api_version: Option<&'a str>,
    #[serde(borrow)]
    kind: Option<&'a str>,
    #[serde(borrow)]
    request: Option<RequestIn<'a, O>>,
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    group: &'a str,
    #[serde(borrow, default)]
    kind: &'a str,
}

#[derive(Deserialize)]
struct GroupVersionResource<'a> {
    #[serde(borrow, default)]
    group: &'a str,
    #[serde(borrow, default)]
    resource: &'a str,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

// Every field is optional here so that one pass reads the whole review; what is required is checked
// after the apiVersion, so the error names the real problem. `O` is how `object` is read: as the pod
// view in the one-pass fast path, or as raw JSON in the exact path (see [`parse`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a, O> {
    #[serde(default)]
    uid: Option<String>,
    #[serde(borrow, default)]
    kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default)]
    resource: Option<GroupVersionResource<'a>>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default = "none")]
    object: Option<O>,
    #[serde(default)]
    dry_run: Option<bool>,
}

// `#[serde(default)]` would ask `O: Default`.
fn none<O>() -> Option<O> {
    None
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    audit_annotations: BTreeMap<&'static str, Cow<'a, str>>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    code: u16,
}

/// A policy and NodePools with namespaces known by name only: what `mutate` and offline reviews
/// decide with (the server adds the cluster's namespace labels, see `server::App`).
pub struct StaticFacts {
    pub policy: Policy,
    pub pools: NodePoolIndex,
}

/// The answer to one review.
#[derive(Debug)]
pub struct Reviewed {
    /// The serialized response AdmissionReview.
    pub body: Vec<u8>,
    /// The audit entry (the engine's record and who asked), for pods that ask for a GPU resource.
    pub audit: Option<Entry>,
    /// Whether the answer carries a patch.
    pub patched: bool,
    /// Whether the pod was denied.
    pub denied: bool,
}

/// What the decision needs to know of the namespace's labels.
#[derive(Debug, Clone)]
pub enum Labels {
    /// The policy selects on names only.
    NotNeeded,
    Known(BTreeMap<String, String>),
    /// They could not be read; GPU pods are refused with this reason rather than decided on a guess.
    Unknown(String),
}

/// A parsed review, before the decision.
#[derive(Debug)]
pub struct Request {
    uid: String,
    user: String,
    dry_run: bool,
    /// The pod, for a pod CREATE; `None` for requests allowed untouched.
    pod: Option<(Pod, String)>,
}

/// Reads a review. Never panics on any input.
pub fn parse(body: &[u8]) -> Result<Request, BadReview> {
    // The fast path reads the review and the pod view in one pass. An object that is not a pod (the
    // API server sends whatever the webhook configuration matches) may not read as one: then the
    // exact path below reads `object` as raw JSON, and as a pod only for a pod CREATE. Both give the
    // same answer wherever the fast one succeeds; bad input is read twice, which is fine.
    // Reading from `str` checks UTF-8 once for the whole body (std's check is word-at-a-time for
    // ASCII) rather than string by string.
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_json::from_str::<ReviewIn<'_, Pod>>(text).ok());
    match fast {
        Some(review) => checked(review, Ok),
        None => parse_exact(body),
    }
}

/// The exact path: `object` as raw JSON, read as a pod only for a pod CREATE.
fn parse_exact(body: &[u8]) -> Result<Request, BadReview> {
    let review: ReviewIn<'_, &RawValue> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            BadReview::NotAReview(e.to_string())
        } else {
            BadReview::NotJson(e)
        }
    })?;
    checked(review, |raw| {
        serde_json::from_str(raw.get()).map_err(BadReview::NotAPod)
    })
}

/// Checks what the review must carry and keeps what the decision needs; `read_pod` turns `object`
/// into the pod view, for a pod CREATE only.
fn checked<O>(
    review: ReviewIn<'_, O>,
    read_pod: impl FnOnce(O) -> Result<Pod, BadReview>,
) -> Result<Request, BadReview> {
    if review.api_version != Some(API_VERSION) || review.kind != Some(KIND) {
        return Err(BadReview::NotAReview(format!(
            "apiVersion {:?} kind {:?}; expected {API_VERSION} {KIND}",
            review.api_version.unwrap_or(""),
            review.kind.unwrap_or("")
        )));
    }
    let Some(req) = review.request else {
        return Err(BadReview::NotAReview("it has no request".into()));
    };
    let (Some(uid), Some(kind), Some(resource)) = (req.uid, &req.kind, &req.resource) else {
        return Err(BadReview::NotAReview(
            "request needs uid, kind and resource".into(),
        ));
    };
    if uid.is_empty() {
        return Err(BadReview::NotAReview("request.uid is empty".into()));
    }

    // Only CREATE of core/v1 pods (not subresources such as pods/ephemeralcontainers) is ours;
    // anything else the API server sends by misconfiguration is allowed unchanged.
    let is_pod_create = req.operation == "CREATE"
        && kind.group.is_empty()
        && kind.kind == "Pod"
        && resource.group.is_empty()
        && resource.resource == "pods"
        && req.sub_resource.as_deref().unwrap_or("").is_empty();
    let pod = if is_pod_create {
        let Some(object) = req.object else {
            return Err(BadReview::NotAReview(
                "a pod CREATE without request.object".into(),
            ));
        };
        let pod = read_pod(object)?;
        let namespace = req
            .namespace
            .or_else(|| pod.meta().namespace.clone())
            .unwrap_or_else(|| "default".to_string());
        Some((pod, namespace))
    } else {
        None
    };
    Ok(Request {
        uid,
        user: req.user_info.username,
        dry_run: req.dry_run.unwrap_or(false),
        pod,
    })
}

impl Request {
    /// The namespace of the pod being created; `None` when the request is not ours to decide.
    pub fn pod_namespace(&self) -> Option<&str> {
        self.pod.as_ref().map(|(_, ns)| ns.as_str())
    }

    /// The namespace whose labels the decision needs: a GPU pod's, under a policy that selects on labels.
    pub fn namespace_for_labels(&self, policy: &Policy) -> Option<&str> {
        let (pod, ns) = self.pod.as_ref()?;
        (policy.needs_labels(ns) && engine::asks_for_gpu(pod, policy)).then_some(ns.as_str())
    }

    /// The pod's own ResourceClaims (not from gpu-slicer's templates) and what each points at, for the
    /// edge to read before deciding: `(entry name, source)`.
    pub fn own_claims(&self) -> Vec<(String, gpu_slicer_core::dra::claims::ClaimSource<'_>)> {
        let Some((pod, _)) = self.pod.as_ref() else {
            return Vec::new();
        };
        gpu_slicer_core::dra::claims::own_claims(pod)
            .map(|(c, source)| (c.name.clone(), source))
            .collect()
    }

    /// The namespace of the pod under review.
    pub fn namespace(&self) -> Option<&str> {
        self.pod.as_ref().map(|(_, ns)| ns.as_str())
    }

    /// Decides and writes the answer, the pod's own claims unread (see [`Request::decide_with_claims`]).
    pub fn decide(self, policy: &Policy, pools: &NodePoolIndex, labels: Labels) -> Reviewed {
        self.decide_with_claims(policy, pools, labels, &ClaimFacts::default())
    }

    /// Decides and writes the answer, given what the pod's own claims ask for; a budget is said, not
    /// checked (offline: no pod watch).
    pub fn decide_with_claims(
        self,
        policy: &Policy,
        pools: &NodePoolIndex,
        labels: Labels,
        claims: &ClaimFacts,
    ) -> Reviewed {
        self.decide_gated(
            policy,
            pools,
            labels,
            claims,
            |input, decision| match input.rule {
                Some(rule) => gpu_slicer_core::budget::offline_note(decision, rule),
                None => decision,
            },
        )
    }

    /// Decides and writes the answer; `gate` sees the engine's decision before audit mode does (the
    /// budget check in cluster mode).
    pub fn decide_gated(
        mut self,
        policy: &Policy,
        pools: &NodePoolIndex,
        labels: Labels,
        claims: &ClaimFacts,
        gate: impl FnOnce(GateInput<'_>, Decision) -> Decision,
    ) -> Reviewed {
        let Some((pod, namespace)) = self.pod.take() else {
            return Reviewed {
                body: allow_untouched(&self.uid),
                patched: false,
                denied: false,
                audit: None,
            };
        };
        let empty = BTreeMap::new();
        let fallback;
        let ns_labels = match &labels {
            Labels::Known(l) => l,
            Labels::NotNeeded => &empty,
            Labels::Unknown(_) => {
                fallback = labels::name_label(&namespace);
                &fallback
            }
        };
        let ns = Namespace {
            name: &namespace,
            labels: ns_labels,
        };
        let decided = engine::decide_with_claims(&pod, ns, claims, policy, pools);
        let decision = match &labels {
            Labels::Unknown(why) if decided.audit.is_some() => {
                let rule = policy.rule_for(&namespace, ns_labels);
                engine::refuse(
                    format!(
                        "gpu-slicer: the labels of namespace {namespace:?} could not be read ({why}) and the GPU policy selects rules by namespace labels; retry in a moment"
                    ),
                    rule,
                    // Audit mode never denies, not even on missing facts.
                    rule.map_or(policy.mode, |r| r.mode),
                )
            }
            _ => gate(
                GateInput {
                    namespace: &namespace,
                    rule: policy.rule_for(&namespace, ns_labels),
                    dry_run: self.dry_run,
                },
                decided,
            ),
        };
        let decision = mode::apply(decision);
        let body = respond(&self.uid, &decision);
        let (patched, denied) = (!decision.patch.is_empty(), decision.denied.is_some());
        let audit = decision.audit.map(|record| Entry {
            uid: self.uid,
            namespace,
            pod: pod.display_name().to_string(),
            owner: pod.controller().map(|o| Owner {
                kind: o.kind.clone(),
                name: o.name.clone(),
            }),
            user: self.user,
            dry_run: self.dry_run,
            record,
        });
        Reviewed {
            body,
            audit,
            patched,
            denied,
        }
    }
}

/// What the budget gate sees of a review: the pod's namespace, its rule, and whether it is a dry run.
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    pub namespace: &'a str,
    pub rule: Option<&'a gpu_slicer_core::policy::Rule>,
    pub dry_run: bool,
}

/// Reads a review, decides with `facts` (namespaces known by their name label), and writes the
/// answer. Never panics on any input.
pub fn review(body: &[u8], facts: &StaticFacts) -> Result<Reviewed, BadReview> {
    let request = parse(body)?;
    let labels = match request.namespace_for_labels(&facts.policy) {
        Some(ns) => Labels::Known(labels::name_label(ns)),
        None => Labels::NotNeeded,
    };
    Ok(request.decide(&facts.policy, &facts.pools, labels))
}

fn allow_untouched(uid: &str) -> Vec<u8> {
    write(
        ResponseOut {
            uid,
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
            warnings: &[],
            audit_annotations: BTreeMap::new(),
        },
        128,
    )
}

/// Serializes a decision as the response AdmissionReview.
pub fn respond(uid: &str, decision: &Decision) -> Vec<u8> {
    let patch = (!decision.patch.is_empty()).then(|| patch_string(&decision.patch));
    let status = decision.denied.as_deref().map(|message| StatusOut {
        status: "Failure",
        message,
        reason: "Forbidden",
        code: 403,
    });
    let audit_annotations = decision
        .audit
        .as_ref()
        .map(|a| {
            a.audit_annotations()
                .into_iter()
                .map(|(k, v)| {
                    if v.len() > MAX_AUDIT_VALUE {
                        (
                            k,
                            Cow::Owned(audit::truncate(v.into_owned(), MAX_AUDIT_VALUE)),
                        )
                    } else {
                        (k, v)
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let size = 512 + patch.as_ref().map_or(0, |p| p.get().len());
    write(
        ResponseOut {
            uid,
            allowed: decision.allowed(),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status,
            warnings: &decision.warnings,
            audit_annotations,
        },
        size,
    )
}

/// The patch as the JSON string the response carries: base64 of its JSON. Written as a raw value:
/// base64 needs no escaping, so the serializer's byte-by-byte escape scan is skipped.
fn patch_string(patch: &[json_patch::PatchOperation]) -> Box<RawValue> {
    use base64::engine::general_purpose::STANDARD;
    let mut json = Vec::with_capacity(256 * patch.len());
    // Serializing patch operations into memory cannot fail.
    let _ = serde_json::to_writer(&mut json, patch);
    let mut quoted = String::with_capacity(base64::encoded_len(json.len(), true).unwrap_or(0) + 2);
    quoted.push('"');
    STANDARD.encode_string(&json, &mut quoted);
    quoted.push('"');
    // A quoted base64 alphabet string is always valid JSON.
    RawValue::from_string(quoted).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

fn write(response: ResponseOut<'_>, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    // Serializing these plain structs into memory cannot fail; an empty body would be answered as an
    // error anyway.
    if serde_json::to_writer(
        &mut out,
        &ReviewOut {
            api_version: API_VERSION,
            kind: KIND,
            response,
        },
    )
    .is_err()
    {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..5).prop_map(Value::from),
            prop::sample::select(vec!["", "1", "2Gi", "nvidia.com/gpu", "Exists", "main"])
                .prop_map(Value::from),
        ];
        let keys = prop::sample::select(vec![
            "metadata",
            "spec",
            "containers",
            "initContainers",
            "resources",
            "limits",
            "requests",
            "nvidia.com/gpu",
            "name",
            "namespace",
            "annotations",
            "gpu-slicer.io/profile",
            "ownerReferences",
            "controller",
            "tolerations",
            "nodeSelector",
            "template",
        ]);
        leaf.prop_recursive(5, 48, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(keys.clone(), inner, 0..4).prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.into(), v)).collect()
                )),
            ]
        })
    }

    fn review_of(
        kind: (&str, &str),
        operation: &str,
        namespace: Option<&str>,
        object: Value,
    ) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind.0},
                "resource": {"group": "", "version": "v1", "resource": kind.1},
                "operation": operation,
                "namespace": namespace,
                "userInfo": {"username": "someone"},
                "object": object,
                "dryRun": false,
            }
        }))
        .unwrap()
    }

    #[test]
    fn an_object_that_does_not_read_as_a_pod_is_allowed_unless_it_is_a_pod() {
        let odd = json!({"spec": {"containers": 7}});
        let request = parse(&review_of(
            ("Widget", "widgets"),
            "CREATE",
            None,
            odd.clone(),
        ))
        .unwrap();
        assert!(request.pod_namespace().is_none());
        let Err(BadReview::NotAPod(_)) = parse(&review_of(("Pod", "pods"), "CREATE", None, odd))
        else {
            panic!("a pod that is not a pod must be refused");
        };
    }

    proptest! {
        // The one-pass fast path answers exactly as the two-pass exact path, for pods and for objects
        // that are not pods, whichever of them fails to read.
        #[test]
        fn fast_path_reads_as_the_exact_path(
            object in arb_json(),
            kind in prop::sample::select(vec![("Pod", "pods"), ("Deployment", "deployments")]),
            operation in prop::sample::select(vec!["CREATE", "UPDATE", "DELETE"]),
            namespace in prop::option::of(Just("team-a")),
        ) {
            let body = review_of(kind, operation, namespace, object);
            prop_assert_eq!(format!("{:?}", parse(&body)), format!("{:?}", parse_exact(&body)));
        }
    }
}
