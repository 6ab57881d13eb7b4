//! Audit mode through the engine, `mode::apply` and `mutate`: the engine decides as in enforce; the
//! answer is allowed, unpatched, with `gpu-slicer (audit): would ...` warnings and `would-*` outcomes.

mod common;

use common::*;
use gpu_slicer_core::audit::Outcome;
use gpu_slicer_core::engine::mode;
use gpu_slicer_core::engine::{Decision, MAX_WARNING_LEN};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::{Mode, Policy};
use serde_json::Value;

/// The contract policy with `spec.mode` (and, optionally, one rule's `mode`) set.
fn contract_in(spec_mode: &str, rule_override: Option<(&str, &str)>) -> Policy {
    let text = std::fs::read_to_string(repo("tests/data/policies/contract.yaml")).unwrap();
    let mut text = text.replacen("spec:\n", &format!("spec:\n  mode: {spec_mode}\n"), 1);
    if let Some((rule, m)) = rule_override {
        let at = format!("  - name: {rule}\n");
        text = text.replacen(&at, &format!("{at}    mode: {m}\n"), 1);
    }
    Policy::parse(&text, "contract.yaml").unwrap()
}

fn pod_of(name: &str) -> Value {
    review(name)["request"]["object"].clone()
}

/// Decides in `ns` and applies the decision's mode, as the server does.
fn answer(pod: &Value, ns: &str, policy: &Policy) -> (Decision, Decision) {
    let pools = NodePoolIndex::default();
    let (enforced, _) = run(pod, ns, &labels(&[]), policy, &pools);
    (enforced.clone(), mode::apply(enforced))
}

#[test]
fn audit_decides_as_enforce_and_changes_nothing() {
    let enforce = contract_policy();
    let audit = contract_in("audit", None);
    let cases = [
        ("ml-inference-llm-server-84f7f4dd45-create", "ml-inference"),
        ("ml-inference-embedder-0-create", "sandbox"),
        ("ml-notebooks-notebook-0-create", "notebooks"),
        ("ml-training-finetune-create", "training"),
        ("ml-inference-embedder-0-create", "serving"),
        ("ml-inference-embedder-0-create", "team-b"),
        ("ml-inference-cpu-only-create", "ml-inference"),
        ("ml-inference-embedder-0-create", "nobody"),
    ];
    for (fixture, ns) in cases {
        let pod = pod_of(fixture);
        let (e, e_answer) = answer(&pod, ns, &enforce);
        let (a, a_answer) = answer(&pod, ns, &audit);
        // The engine's decision is the same in both modes; only the mode it carries differs.
        assert_eq!(
            Decision {
                mode: Mode::Enforce,
                ..a.clone()
            },
            e,
            "{fixture} in {ns}"
        );
        assert_eq!(e_answer, e, "enforce answers what the engine decided");

        assert!(a_answer.allowed(), "{fixture} in {ns}: audit never denies");
        assert!(
            a_answer.patch.is_empty(),
            "{fixture} in {ns}: audit never patches"
        );
        let (Some(before), Some(after)) = (&a.audit, &a_answer.audit) else {
            assert!(a_answer.audit.is_none() && a_answer.warnings.is_empty());
            continue;
        };
        let would = match before.outcome {
            Outcome::Rewritten => Outcome::WouldRewrite,
            Outcome::Routed => Outcome::WouldRoute,
            Outcome::Denied => Outcome::WouldDeny,
            same => same,
        };
        assert_eq!(after.outcome, would, "{fixture} in {ns}");
        assert_eq!(after.changes, before.changes);
        assert_eq!(after.reason, before.reason);
        if would != before.outcome {
            assert!(!a_answer.warnings.is_empty());
            for w in &a_answer.warnings {
                assert!(w.starts_with("gpu-slicer (audit): "), "{w}");
                assert!(w.len() <= MAX_WARNING_LEN, "{w}");
            }
        } else {
            assert_eq!(
                a_answer.warnings, a.warnings,
                "nothing would change: said as in enforce"
            );
        }
        // Applying twice changes nothing more.
        assert_eq!(mode::apply(a_answer.clone()), a_answer);
    }
}

#[test]
fn audit_warnings_say_what_enforce_would_do() {
    let audit = contract_in("audit", None);
    let (_, a) = answer(
        &pod_of("ml-inference-llm-server-84f7f4dd45-create"),
        "ml-inference",
        &audit,
    );
    assert_eq!(
        a.warnings,
        [
            "gpu-slicer (audit): would rewrite vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb (rule ml)",
            "gpu-slicer (audit): would route to Karpenter NodePool gpu-h100-mig (rule ml)",
        ]
    );
    let record = a.audit.unwrap();
    assert_eq!(record.outcome.as_str(), "would-rewrite");
    let annotations = record.audit_annotations();
    assert_eq!(annotations["outcome"], "would-rewrite");
    assert!(annotations["rewrites"].contains("vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb"));

    let (e, a) = answer(&pod_of("ml-inference-embedder-0-create"), "sandbox", &audit);
    let message = e.denied.unwrap();
    assert_eq!(
        a.warnings[0].get(..32),
        Some("gpu-slicer (audit): would deny: ")
    );
    // The whole message, wrapped between words over as many lines as it takes.
    let said: Vec<&str> = a
        .warnings
        .iter()
        .map(|w| w.trim_start_matches("gpu-slicer (audit): "))
        .collect();
    assert_eq!(
        said.join(" "),
        format!("would deny: {}", message.trim_start_matches("gpu-slicer: "))
    );
    let record = a.audit.unwrap();
    assert_eq!(record.outcome, Outcome::WouldDeny);
    assert_eq!(record.reason.as_deref(), Some(message.as_str()));
    assert_eq!(record.audit_annotations()["outcome"], "would-deny");
}

#[test]
fn a_rule_mode_overrides_the_policy_mode() {
    let pod = pod_of("ml-inference-embedder-0-create");
    // Policy in enforce, one rule in audit.
    let policy = contract_in("enforce", Some(("sandbox", "audit")));
    let (_, a) = answer(&pod, "sandbox", &policy);
    assert!(a.allowed());
    assert_eq!(a.audit.unwrap().outcome, Outcome::WouldDeny);
    let (_, a) = answer(&pod, "ml-inference", &policy);
    assert!(!a.patch.is_empty());
    assert_eq!(a.audit.unwrap().outcome, Outcome::Rewritten);

    // Policy in audit, one rule switched to enforce.
    let policy = contract_in("audit", Some(("ml", "enforce")));
    let (_, a) = answer(&pod, "ml-inference", &policy);
    assert!(!a.patch.is_empty());
    let (_, a) = answer(&pod, "sandbox", &policy);
    assert_eq!(a.audit.unwrap().outcome, Outcome::WouldDeny);

    // defaultAction follows spec.mode.
    let text = "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  mode: audit\n  defaultAction: deny\n";
    let policy = Policy::parse(text, "p.yaml").unwrap();
    let (e, a) = answer(&pod, "anywhere", &policy);
    assert!(!e.allowed());
    assert!(a.allowed());
    assert_eq!(a.audit.unwrap().outcome, Outcome::WouldDeny);
}

#[test]
fn mode_apply_as_overrides_the_rule() {
    let enforce = contract_policy();
    let (e, _) = answer(
        &pod_of("ml-inference-embedder-0-create"),
        "ml-inference",
        &enforce,
    );
    let a = mode::apply_as(e.clone(), Mode::Audit);
    assert!(a.patch.is_empty());
    assert_eq!(a.audit.unwrap().outcome, Outcome::WouldRewrite);
    assert_eq!(mode::apply_as(e.clone(), Mode::Enforce), e);
}

// ---- `mutate` ----

const POD_YAML: &str = "apiVersion: v1
kind: Pod
metadata:
  name: vllm-0
spec:
  containers:
    - name: vllm
      image: vllm/vllm-openai:v0.6.3
      resources:
        limits:
          nvidia.com/gpu: 1
";

#[test]
fn mutate_mode_audit_prints_the_pod_unchanged_and_what_enforce_would_do() {
    let policy = "tests/data/policies/contract.yaml";
    let out = gpu_slicer_with_stdin(
        &[
            "mutate",
            "-n",
            "ml-inference",
            "--policy",
            policy,
            "--mode",
            "audit",
        ],
        POD_YAML,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let pod: Value = serde_norway::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let original: Value = serde_norway::from_str(POD_YAML).unwrap();
    assert_eq!(pod, original);
    assert!(
        stderr.contains("Warning: gpu-slicer (audit): would rewrite vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb (rule ml)"),
        "{stderr}"
    );
    assert!(stderr.contains("\"outcome\":\"would-rewrite\""), "{stderr}");

    // A denial in audit: exit 0, said as a warning.
    let out = gpu_slicer_with_stdin(
        &[
            "mutate", "-n", "sandbox", "--policy", policy, "--mode", "audit",
        ],
        POD_YAML,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("Warning: gpu-slicer (audit): would deny: namespace \"sandbox\""),
        "{stderr}"
    );

    // The response review: allowed, no patch.
    let out = gpu_slicer_with_stdin(
        &[
            "mutate", "-n", "sandbox", "--policy", policy, "--mode", "audit", "-o", "review",
        ],
        POD_YAML,
    );
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["response"]["allowed"], true);
    assert!(review["response"].get("patch").is_none());
    assert_eq!(
        review["response"]["auditAnnotations"]["outcome"],
        "would-deny"
    );
}

#[test]
fn mutate_mode_enforce_overrides_an_audit_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.yaml");
    let text = std::fs::read_to_string(repo("tests/data/policies/contract.yaml")).unwrap();
    std::fs::write(&path, text.replacen("spec:\n", "spec:\n  mode: audit\n", 1)).unwrap();
    let path = path.to_str().unwrap();
    let out = gpu_slicer_with_stdin(&["mutate", "-n", "sandbox", "--policy", path], POD_YAML);
    assert_eq!(out.status.code(), Some(0), "the policy is in audit");
    let out = gpu_slicer_with_stdin(
        &[
            "mutate", "-n", "sandbox", "--policy", path, "--mode", "enforce",
        ],
        POD_YAML,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("denied: gpu-slicer: namespace"));
}

#[test]
fn the_audit_log_line_carries_the_would_outcome() {
    use gpu_slicer::webhook::admission::{StaticFacts, review as answer_review};
    let facts = StaticFacts {
        policy: contract_in("audit", None),
        pools: NodePoolIndex::default(),
    };
    let body = serde_json::to_vec(&review("ml-inference-llm-server-84f7f4dd45-create")).unwrap();
    let reviewed = answer_review(&body, &facts).unwrap();
    assert!(!reviewed.patched && !reviewed.denied);
    let at = time::macros::datetime!(2026-12-04 05:00:00 UTC);
    let line = String::from_utf8(reviewed.audit.unwrap().json_line(at)).unwrap();
    assert!(line.contains(r#""outcome":"would-rewrite""#), "{line}");
    assert!(line.contains(r#""to":"nvidia.com/mig-1g.10gb""#), "{line}");
}

#[test]
fn policy_check_notes_the_rules_still_in_audit() {
    let policy = contract_in("enforce", Some(("sandbox", "audit")));
    let report = gpu_slicer_core::check::check(&policy, "p.yaml", None, None);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("audit mode") && n.ends_with("rule(s) sandbox")),
        "{:?}",
        report.notes
    );
    assert!(report.errors.is_empty());
}

/// Namespace labels that cannot be read deny a GPU pod in enforce; in audit mode that too is only a
/// warning: audit mode never denies.
#[test]
fn unreadable_namespace_labels_are_a_would_deny_in_audit() {
    use gpu_slicer::webhook::admission::{Labels, parse};
    let body = serde_json::to_vec(&review("ml-inference-embedder-0-create")).unwrap();
    let pools = NodePoolIndex::default();
    let answer = |policy: &Policy| {
        let reviewed = parse(&body).unwrap().decide(
            policy,
            &pools,
            Labels::Unknown("connection refused".into()),
        );
        let out: Value = serde_json::from_slice(&reviewed.body).unwrap();
        (
            reviewed.denied,
            out["response"]["auditAnnotations"]["outcome"].clone(),
        )
    };
    assert_eq!(answer(&contract_policy()), (true, Value::from("denied")));
    assert_eq!(
        answer(&contract_in("audit", None)),
        (false, Value::from("would-deny"))
    );
}
