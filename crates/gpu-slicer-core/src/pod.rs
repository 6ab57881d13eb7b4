//! The parts of a Pod that gpu-slicer reads.
//!
//! A partial, typed view: serde skips every field not named here, so an AdmissionReview's pod is parsed
//! without building the whole `k8s_openapi` `Pod` tree (managedFields, volumes, env, ...).
//!
//! Imports: nothing of this crate (the lowest layer).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A Pod as the mutation engine sees it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// `None` when the object has no `metadata` at all (patches must then create it).
    #[serde(default, deserialize_with = "object")]
    pub metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "object_or_default")]
    pub spec: Spec,
}

/// A JSON object (or null) only. Serde's derived structs also accept arrays (fields by position): a
/// `metadata` written as an array would be read, and a patch made for an object it is not.
fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Only<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_option(Only(std::marker::PhantomData))
}

fn object_or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    object(d).map(Option::unwrap_or_default)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    /// Only gpu-slicer's own annotations are kept (`Some(empty)` when the pod has others only).
    #[serde(default, deserialize_with = "gpu_slicer_annotations")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    pub controller: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    /// Dynamic Resource Allocation claims of the pod (`spec.resourceClaims`).
    pub resource_claims: Option<Vec<PodResourceClaim>>,
}

/// One entry of `spec.resourceClaims`: a name the containers use, and the claim or template behind it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodResourceClaim {
    #[serde(default)]
    pub name: String,
    pub resource_claim_name: Option<String>,
    pub resource_claim_template_name: Option<String>,
}

/// One entry of a container's `resources.claims`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerClaim {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    pub resources: Option<Resources>,
    /// `Always` on an init container makes it a sidecar (KEP-753): it runs beside the app containers,
    /// so its requests add to theirs.
    #[serde(default, rename = "restartPolicy")]
    pub restart_policy: Option<String>,
}

/// A container's resources. Quantities stay as the JSON values they came as, so a rename writes back
/// exactly what the pod said.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Resources {
    #[serde(default, deserialize_with = "extended_resources")]
    pub limits: Option<BTreeMap<String, Value>>,
    #[serde(default, deserialize_with = "extended_resources")]
    pub requests: Option<BTreeMap<String, Value>>,
    /// Dynamic Resource Allocation claims the container uses, by their pod-level names.
    #[serde(default)]
    pub claims: Option<Vec<ContainerClaim>>,
}

/// Annotation prefix of the keys gpu-slicer reads and writes.
pub const ANNOTATION_PREFIX: &str = "gpu-slicer.io/";

// Partial reads: a pod's cpu/memory quantities and its other annotations (kubectl's
// last-applied-configuration can be kilobytes) are skipped without allocating.

/// A map key, borrowed from the input where it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Reads a JSON object (or null) keeping the entries `keep` accepts.
fn filtered_map<'de, D, T>(
    d: D,
    keep: fn(&str) -> bool,
) -> Result<Option<BTreeMap<String, T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(fn(&str) -> bool, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Option<BTreeMap<String, T>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                if (self.0)(&key) {
                    out.insert(key.into_owned(), map.next_value::<T>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(Some(out))
        }
    }
    d.deserialize_option(V(keep, std::marker::PhantomData))
}

/// Extended resources only (a `/` in the name): `cpu`, `memory` and the like are never GPU resources.
fn extended_resources<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, Value>>, D::Error> {
    filtered_map(d, |k| k.contains('/'))
}

fn gpu_slicer_annotations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    filtered_map(d, |k| k.starts_with(ANNOTATION_PREFIX))
}

/// A pod toleration (core/v1 Toleration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// Whether this toleration tolerates everything `need` asks for (k8s.io/api/core/v1
    /// toleration.go `ToleratesTaint`, extended to a need that may itself be `Exists` or effect-less).
    pub fn covers(&self, need: &Toleration) -> bool {
        fn nonempty(s: &Option<String>) -> Option<&str> {
            s.as_deref().filter(|s| !s.is_empty())
        }
        let effect_ok = match nonempty(&self.effect) {
            None => true,
            Some(e) => nonempty(&need.effect) == Some(e),
        };
        let exists = self.operator.as_deref() == Some("Exists");
        let key_ok = match nonempty(&self.key) {
            None => exists,
            Some(k) => nonempty(&need.key) == Some(k),
        };
        let value_ok = exists
            || (need.operator.as_deref() != Some("Exists")
                && self.value.as_deref().unwrap_or("") == need.value.as_deref().unwrap_or(""));
        effect_ok && key_ok && value_ok
    }
}

/// Which list of a pod spec a container sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Section {
    Containers,
    InitContainers,
}

impl Section {
    /// The field name under `/spec`.
    pub fn field(self) -> &'static str {
        match self {
            Section::Containers => "containers",
            Section::InitContainers => "initContainers",
        }
    }
}

impl Pod {
    /// Every container with the list it sits in and its index there; init containers first, as they run.
    pub fn all_containers(&self) -> impl Iterator<Item = (Section, usize, &Container)> {
        let init = self
            .spec
            .init_containers
            .iter()
            .enumerate()
            .map(|(i, c)| (Section::InitContainers, i, c));
        let main = self
            .spec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| (Section::Containers, i, c));
        init.chain(main)
    }

    /// The pod's metadata (empty when it has none).
    pub fn meta(&self) -> &Metadata {
        static EMPTY: std::sync::OnceLock<Metadata> = std::sync::OnceLock::new();
        self.metadata
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Metadata::default))
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The pod's name, or its `generateName` prefix for controller-made pods (which have no name yet).
    pub fn display_name(&self) -> &str {
        self.meta()
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.meta().generate_name.as_deref())
            .unwrap_or("")
    }

    /// The controlling owner, if any (`ReplicaSet/llm-server-84f7f4dd45`).
    pub fn controller(&self) -> Option<&OwnerReference> {
        let refs = &self.meta().owner_references;
        refs.iter()
            .find(|o| o.controller == Some(true))
            .or(refs.first())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(key: &str, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: Some(key.to_string()).filter(|k| !k.is_empty()),
            operator: Some(op.to_string()),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_coverage_follows_kubernetes_rules() {
        let need = tol("nvidia.com/gpu", "Exists", None, Some("NoSchedule"));
        assert!(tol("nvidia.com/gpu", "Exists", None, Some("NoSchedule")).covers(&need));
        assert!(tol("nvidia.com/gpu", "Exists", None, None).covers(&need));
        assert!(tol("", "Exists", None, None).covers(&need));
        assert!(!tol("nvidia.com/gpu", "Exists", None, Some("NoExecute")).covers(&need));
        // Equal with a value does not cover "any value".
        assert!(!tol("nvidia.com/gpu", "Equal", Some("true"), Some("NoSchedule")).covers(&need));
        let need_value = tol("nvidia.com/gpu", "Equal", Some("true"), Some("NoSchedule"));
        assert!(tol("nvidia.com/gpu", "Equal", Some("true"), None).covers(&need_value));
        assert!(!tol("nvidia.com/gpu", "Equal", Some("false"), None).covers(&need_value));
        assert!(!tol("other", "Exists", None, None).covers(&need));
    }

    #[test]
    fn reads_a_real_apiserver_pod_and_skips_the_rest() {
        let review: Value = serde_json::from_str(include_str!(
            "../../../tests/data/reviews/ml-training-finetune-create.json"
        ))
        .unwrap();
        let pod: Pod = serde_json::from_value(review["request"]["object"].clone()).unwrap();
        assert_eq!(pod.spec.init_containers.len(), 1);
        let order: Vec<_> = pod.all_containers().map(|(s, i, _)| (s, i)).collect();
        assert_eq!(order[0], (Section::InitContainers, 0));
        assert_eq!(pod.controller().unwrap().kind, "Job");
        assert!(pod.display_name().starts_with("finetune"));
    }
}
