//! Bounds on what one pod can make the engine say (issue 24, finding 7): a 5,000-container pod got
//! 5,001 warnings and a 254 KB annotation (the API server caps all of a pod's annotations at 256 KiB),
//! and `limits: 1, requests: 2` was silently rewritten to 1/1 where the API server refuses the pod.

mod common;

use common::*;
use serde_json::json;

/// The engine under the shipped policy and NodePools, in namespace ml-inference (a `mig` rule).
fn in_ml_inference(
    p: &serde_json::Value,
) -> (gpu_slicer_core::engine::Decision, serde_json::Value) {
    run(
        p,
        "ml-inference",
        &labels(&[]),
        &example_policy(),
        &shipped_pools(),
    )
}

#[test]
fn requests_that_differ_from_limits_are_denied_not_made_equal() {
    let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    p["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = json!("2");
    let (d, _) = in_ml_inference(&p);
    let msg = d.denied.expect("denied");
    assert!(
        msg.contains("container \"main\": nvidia.com/gpu requests 2 differ from its limits 1"),
        "{msg}"
    );
    // Equal quantities written differently are equal.
    p["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = json!(1);
    let (d, _) = in_ml_inference(&p);
    assert!(d.allowed(), "{:?}", d.denied);
}

#[test]
fn thousands_of_containers_get_a_bounded_answer() {
    let containers = (0..5000)
        .map(|i| container(&format!("c{i}"), &[("nvidia.com/gpu", "1")], false))
        .collect();
    let p = pod(containers);
    let policy = gpu_slicer_core::policy::Policy::parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {name: all, namespaces: [big], action: mig, mig: {profile: 1g.10gb}}\n",
        "p.yaml",
    )
    .unwrap();
    let (d, out) = run(&p, "big", &labels(&[]), &policy, &shipped_pools());
    assert!(d.allowed(), "{:?}", d.denied);
    assert_eq!(
        d.warnings.len(),
        gpu_slicer_core::engine::MAX_WARNINGS,
        "{:?}",
        &d.warnings[..3]
    );
    let last = d.warnings.last().unwrap();
    assert!(last.contains("and 4981 more"), "{last}");
    assert!(
        d.warnings
            .iter()
            .all(|w| w.len() <= gpu_slicer_core::engine::MAX_WARNING_LEN)
    );
    let note = out["metadata"]["annotations"]["gpu-slicer.io/rewritten"]
        .as_str()
        .unwrap();
    assert!(note.len() < 4096, "{} bytes", note.len());
    assert!(
        note.ends_with("more containers (the audit log lists them)"),
        "{note}"
    );
    // Every container was still rewritten, and the audit record keeps every change.
    assert_eq!(d.audit.as_ref().unwrap().changes.len(), 5000);
    assert_eq!(
        out["spec"]["containers"][4999]["resources"]["limits"]["nvidia.com/mig-1g.10gb"],
        "1"
    );
}

#[test]
fn a_pod_whose_metadata_or_spec_is_an_array_is_not_read() {
    // Found by tests/properties.rs: serde's derived structs read arrays by position.
    for (field, value) in [
        ("metadata", json!([null, null, null, null, []])),
        ("spec", json!([[], [], null, null, null])),
    ] {
        let mut p = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
        p[field] = value;
        assert!(
            serde_json::from_value::<gpu_slicer_core::pod::Pod>(p).is_err(),
            "{field} as an array was read"
        );
    }
    let ok = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    assert!(serde_json::from_value::<gpu_slicer_core::pod::Pod>(ok).is_ok());
}
