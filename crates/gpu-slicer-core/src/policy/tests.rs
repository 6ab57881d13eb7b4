use super::*;

fn parse(yaml: &str) -> Result<Policy, String> {
    Policy::parse(yaml, "p.yaml").map_err(|e| e.to_string())
}

fn with_rule(rule: &str) -> String {
    format!(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n{}",
        rule.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    )
}

#[test]
fn the_example_policy_is_valid() {
    let p = Policy::parse(
        include_str!("../../../../manifests/policy/policy.yaml"),
        "example",
    )
    .unwrap();
    let actions: BTreeSet<_> = p.rules.iter().map(|r| r.action.as_str()).collect();
    for a in ["mig", "timeslice", "mps", "exclusive", "deny"] {
        assert!(actions.contains(a), "example has no {a} rule");
    }
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            "- name: a\n  action: mig\n  mig: {profile: 1g.7gb}",
            "p.yaml: spec.rules[0].mig.profile: \"1g.7gb\" is not a MIG profile of any GPU",
        ),
        (
            "- name: a\n  action: mig\n  mig: {profile: big}",
            "spec.rules[0].mig.profile: \"big\" is not a MIG profile name",
        ),
        (
            "- name: a\n  action: mig",
            "spec.rules[0].mig: action mig needs a mig section",
        ),
        (
            "- name: a\n  action: timeslice",
            "spec.rules[0].shared: action timeslice needs shared.resourceName",
        ),
        (
            "- name: a\n  action: mps\n  shared: {resourceName: gpu}",
            "spec.rules[0].shared.resourceName: \"gpu\" is not an extended resource name",
        ),
        (
            "- name: a\n  action: deny\n- name: a\n  action: deny",
            "spec.rules[1].name: \"a\" is used by an earlier rule",
        ),
        (
            "- name: a\n  namespaces: [\"team-[\"]\n  action: deny",
            "spec.rules[0].namespaces[0]: \"team-[\" is not a valid glob",
        ),
        (
            "- name: a\n  action: mig\n  mig: {profile: 1g.10gb, allowedProfiles: [2g.20gb]}",
            "spec.rules[0].mig.profile: \"1g.10gb\" must be one of mig.allowedProfiles",
        ),
        (
            "- name: a\n  action: deny\n  nodePool: x",
            "spec.rules[0].nodePool: has no effect with action deny",
        ),
        (
            "- name: a\n  action: exclusive\n  maxPerContainer: 0",
            "spec.rules[0].maxPerContainer: must be at least 1",
        ),
        // Issue 24: 4294967295 templates per namespace (1e8 took dra templates to 18.4 GB).
        (
            "- name: a\n  action: exclusive\n  backend: dra\n  nodePool: p\n  maxPerContainer: 4294967295",
            "spec.rules[0].maxPerContainer: 4294967295 is more than one node holds under backend: dra (at most 8 GPUs",
        ),
        (
            "- name: a\n  action: mig\n  backend: dra\n  nodePool: p\n  mig: {profile: 1g.10gb}\n  maxPerContainer: 57",
            "spec.rules[0].maxPerContainer: 57 is more than one node holds under backend: dra (at most 56 MIG devices",
        ),
        (
            "- name: a\n  action: exclusive\n  tolerations: [{key: k, operator: Exists, value: v}]",
            "spec.rules[0].tolerations[0]: operator Exists takes no value",
        ),
        (
            "- name: Bad_Name\n  action: deny",
            "spec.rules[0].name: \"Bad_Name\" must be a DNS label",
        ),
        (
            "- name: a\n  action: mig\n  shared: {resourceName: nvidia.com/gpu.shared}\n  mig: {profile: 1g.10gb}",
            "spec.rules[0].shared: only allowed with action timeslice or mps",
        ),
    ];
    for (rule, want) in cases {
        let got = parse(&with_rule(rule)).unwrap_err();
        assert!(got.contains(want), "{rule}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn unknown_fields_are_errors() {
    let got = parse(&with_rule("- name: a\n  action: deny\n  nodepool: x")).unwrap_err();
    assert!(got.contains("unknown field `nodepool`"), "{got}");
    let got = parse(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec: {defaultAction: allow}",
    )
    .unwrap_err();
    assert!(
        got.contains("defaultAction") || got.contains("allow"),
        "{got}"
    );
    let got = parse("apiVersion: v1\nkind: SlicingPolicy\nspec: {}").unwrap_err();
    assert!(got.contains("apiVersion: must be"), "{got}");
}

#[test]
fn rules_match_on_names_and_labels_first_match_wins() {
    let p = parse(&with_rule(
        "- name: by-label\n  namespaces: [\"team-*\"]\n  namespaceSelector: {matchLabels: {gpu: mig}}\n  action: deny\n\
         - name: by-name\n  namespaces: [\"team-*\"]\n  action: exclusive\n\
         - name: expr\n  namespaceSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [prod]}]}\n  action: passthrough",
    ))
    .unwrap();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let name = |ns: &str, l: &[(&str, &str)]| p.rule_for(ns, &labels(l)).map(|r| r.name.clone());
    assert_eq!(
        name("team-a", &[("gpu", "mig")]).as_deref(),
        Some("by-label")
    );
    assert_eq!(name("team-a", &[]).as_deref(), Some("by-name"));
    assert_eq!(name("other", &[]).as_deref(), Some("expr"));
    assert_eq!(name("other", &[("tier", "prod")]), None);
    assert_eq!(
        p.rules[1].max_per_container, None,
        "exclusive defaults to no limit"
    );
}

#[test]
fn mig_rules_default_to_one_per_container_and_their_own_profile() {
    let p = parse(&with_rule(
        "- name: a\n  action: mig\n  mig: {profile: 1g.10gb}",
    ))
    .unwrap();
    assert_eq!(p.rules[0].max_per_container, Some(1));
    assert_eq!(p.rules[0].allowed_profiles, vec!["1g.10gb".to_string()]);
}

#[test]
fn mode_defaults_to_enforce_and_a_rule_overrides_the_policy() {
    let p = parse(&with_rule("- name: a\n  action: deny")).unwrap();
    assert_eq!((p.mode, p.rules[0].mode), (Mode::Enforce, Mode::Enforce));

    let p = parse(concat!(
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  mode: audit\n  rules:\n",
        "  - {name: a, action: deny}\n",
        "  - {name: b, action: deny, mode: enforce}\n",
        "  - {name: c, action: exclusive, mode: audit}\n",
    ))
    .unwrap();
    assert_eq!(p.mode, Mode::Audit);
    let modes: Vec<_> = p.rules.iter().map(|r| r.mode).collect();
    assert_eq!(modes, [Mode::Audit, Mode::Enforce, Mode::Audit]);
    assert_eq!(p.audited_rules().collect::<Vec<_>>(), ["a", "c"]);

    let mut forced = p.clone();
    forced.force_mode(Mode::Enforce);
    assert_eq!(forced.mode, Mode::Enforce);
    assert!(forced.rules.iter().all(|r| r.mode == Mode::Enforce));

    let p = parse(&with_rule("- name: a\n  action: deny\n  mode: audit")).unwrap();
    assert_eq!((p.mode, p.rules[0].mode), (Mode::Enforce, Mode::Audit));
}

#[test]
fn mode_is_parsed_strictly() {
    let got = parse(&with_rule("- name: a\n  action: deny\n  mode: dryrun")).unwrap_err();
    assert!(got.contains("dryrun") && got.contains("audit"), "{got}");
    let got = parse("apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec: {mode: warn}")
        .unwrap_err();
    assert!(got.contains("warn") && got.contains("enforce"), "{got}");
    let got = parse(&with_rule(
        "- name: a\n  action: passthrough\n  mode: audit",
    ))
    .unwrap_err();
    assert!(
        got.contains("spec.rules[0].mode: has no effect with action passthrough"),
        "{got}"
    );
}
