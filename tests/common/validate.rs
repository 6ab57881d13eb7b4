//! Validation shared by the manifest and docs tests: k8s-openapi round trips and CRD schemas.
#![allow(dead_code)]

use serde_json::Value;

use super::repo;

/// Keys of `original` that did not survive a typed round trip: fields the type does not know.
pub fn dropped_fields(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => dropped_fields(v, w, &format!("{path}.{k}"), out),
                    None if v.is_null() => {}
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

pub fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Vec<String>, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut dropped = Vec::new();
    dropped_fields(v, &back, "", &mut dropped);
    Ok(dropped)
}

/// A CRD's schema as JSON Schema: Kubernetes prunes unknown fields silently, so to catch misspellings
/// every object with `properties` (and no escape hatch) refuses others.
pub fn strict(schema: &mut Value) {
    if let Value::Object(map) = schema {
        if map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            && !map.contains_key("anyOf")
        {
            map.insert(
                "anyOf".into(),
                serde_json::json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
        let open = map.contains_key("additionalProperties")
            || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if map.contains_key("properties") && !open {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        for v in map.values_mut() {
            strict(v);
        }
    } else if let Value::Array(items) = schema {
        items.iter_mut().for_each(strict);
    }
}

pub fn crd_validator(file: &str, version: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo(&format!("tests/data/crds/{file}"))).unwrap();
    let crd = &gpu_slicer_core::yaml::documents(&text).unwrap()[0];
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap();
    let mut schema = v["schema"]["openAPIV3Schema"].clone();
    strict(&mut schema);
    // metadata is the API server's to validate.
    schema["properties"]["metadata"] = serde_json::json!({"type": "object"});
    jsonschema::validator_for(&schema).unwrap()
}

pub fn errors(v: &jsonschema::Validator, obj: &Value) -> Vec<String> {
    v.iter_errors(obj)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Validates one core Kubernetes object by a k8s-openapi round trip; `None` for kinds it does not cover.
pub fn core_object(obj: &Value) -> Option<Result<Vec<String>, String>> {
    use k8s_openapi::api::{
        admissionregistration::v1 as adm, apps::v1 as apps, core::v1 as core, policy::v1 as policy,
        rbac::v1 as rbac,
    };
    let kind = obj["kind"].as_str().unwrap_or_default();
    Some(
        match (obj["apiVersion"].as_str().unwrap_or_default(), kind) {
            ("v1", "Namespace") => roundtrip::<core::Namespace>(obj),
            ("v1", "ServiceAccount") => roundtrip::<core::ServiceAccount>(obj),
            ("v1", "Service") => roundtrip::<core::Service>(obj),
            ("v1", "ConfigMap") => roundtrip::<core::ConfigMap>(obj),
            ("v1", "Secret") => roundtrip::<core::Secret>(obj),
            ("v1", "Pod") => roundtrip::<core::Pod>(obj),
            ("apps/v1", "Deployment") => roundtrip::<apps::Deployment>(obj),
            ("apps/v1", "StatefulSet") => roundtrip::<apps::StatefulSet>(obj),
            ("batch/v1", "Job") => roundtrip::<k8s_openapi::api::batch::v1::Job>(obj),
            ("policy/v1", "PodDisruptionBudget") => roundtrip::<policy::PodDisruptionBudget>(obj),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => roundtrip::<rbac::ClusterRole>(obj),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                roundtrip::<rbac::ClusterRoleBinding>(obj)
            }
            ("resource.k8s.io/v1", "DeviceClass") => {
                roundtrip::<k8s_openapi::api::resource::v1::DeviceClass>(obj)
            }
            ("resource.k8s.io/v1", "ResourceClaimTemplate") => {
                roundtrip::<k8s_openapi::api::resource::v1::ResourceClaimTemplate>(obj)
            }
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                roundtrip::<adm::MutatingWebhookConfiguration>(obj)
            }
            _ => return None,
        },
    )
}
