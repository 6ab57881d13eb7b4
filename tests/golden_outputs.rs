//! `mutate` and `policy report` print, byte for byte, what they printed on the repo's examples before
//! the workspace split (issue 22): the outputs under `tests/data/golden/` were written by the binary of
//! the commit before it. Regenerate one only when a change of output is intended, with
//! `GOLDEN_WRITE=1 cargo test --test golden_outputs`, and say why in the commit.

use std::path::Path;
use std::process::Command;

/// (golden file, arguments): every example pod in each output form, the example workloads reported
/// under the example policy, the node-groups policy and the DRA policy, in each report format. One
/// case a line; the arguments are split on spaces (none holds one).
#[rustfmt::skip]
const CASES: &[(&str, &str)] = &[
    ("mutate-batch.pod.yaml", "mutate -n ml-batch -f docs/examples/batch-pod.yaml"),
    ("mutate-batch.patch.json", "mutate -n ml-batch -f docs/examples/batch-pod.yaml -o patch"),
    ("mutate-batch.review.json", "mutate -n ml-batch -f docs/examples/batch-pod.yaml -o review"),
    ("mutate-inference.pod.yaml", "mutate -n ml-inference -f docs/examples/inference-pod.yaml"),
    ("mutate-inference.review.json", "mutate -n ml-inference -f docs/examples/inference-pod.yaml -o review"),
    ("mutate-inference-memory.pod.yaml", "mutate -n ml-inference -f docs/examples/inference-gpu-memory-pod.yaml"),
    ("mutate-inference-memory.review.json", "mutate -n ml-inference -f docs/examples/inference-gpu-memory-pod.yaml -o review"),
    ("mutate-notebook.pod.yaml", "mutate -n ml-notebooks -f docs/examples/notebook-pod.yaml"),
    ("mutate-notebook.review.json", "mutate -n ml-notebooks -f docs/examples/notebook-pod.yaml -o review"),
    ("mutate-notebook-opt-out.review.json", "mutate -n ml-notebooks -f docs/examples/notebook-opt-out-pod.yaml -o review"),
    ("mutate-sandbox.review.json", "mutate -n sandbox -f docs/examples/sandbox-pod.yaml -o review"),
    ("mutate-training.review.json", "mutate -n ml-training -f docs/examples/training-pod.yaml -o review"),
    ("mutate-training-audit.review.json", "mutate -n ml-training -f docs/examples/training-pod.yaml -o review --mode audit"),
    ("mutate-inference-nodepools.review.json", "mutate -n ml-inference -f docs/examples/inference-pod.yaml -o review --nodepools manifests/karpenter"),
    ("mutate-notebook-node-groups.review.json", "mutate -n ml-notebooks -f docs/examples/notebook-pod.yaml -o review --policy docs/examples/policy-node-groups.yaml"),
    ("mutate-inference-dra.review.json", "mutate -n ml-inference-dra -f docs/examples/inference-pod.yaml -o review --policy manifests/examples/dra/policy.yaml --nodepools manifests/examples/dra"),
    ("mutate-training-dra.review.json", "mutate -n ml-training-dra -f docs/examples/training-pod.yaml -o review --policy manifests/examples/dra/policy.yaml --nodepools manifests/examples/dra"),
    ("report-dra-pod.table.txt", "policy report -f tests/data/golden/inputs/pod-without-namespace.yaml -n ml-inference-dra --policy manifests/examples/dra/policy.yaml --nodepools manifests/examples/dra"),
    ("report-workloads.table.txt", "policy report -f docs/examples/workloads"),
    ("report-workloads.json", "policy report -f docs/examples/workloads -o json"),
    ("report-workloads.html", "policy report -f docs/examples/workloads -o html"),
    ("report-workloads-nodepools.table.txt", "policy report -f docs/examples/workloads --nodepools manifests/karpenter"),
    ("report-workloads-node-groups.json", "policy report -f docs/examples/workloads --policy docs/examples/policy-node-groups.yaml -o json"),
    ("report-workloads-dra.json", "policy report -f docs/examples/workloads --policy manifests/examples/dra/policy.yaml --nodepools manifests/examples/dra -o json"),
    ("report-workloads-dra.table.txt", "policy report -f docs/examples/workloads --policy manifests/examples/dra/policy.yaml --nodepools manifests/examples/dra"),
];

#[test]
fn mutate_and_policy_report_print_what_they_printed_before_the_split() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden_dir = root.join("tests/data/golden");
    let write = std::env::var_os("GOLDEN_WRITE").is_some();
    let mut differ = Vec::new();
    for (name, args) in CASES {
        let out = Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
            .args(args.split_whitespace())
            .current_dir(root)
            .env_remove("KUBECONFIG")
            .output()
            .expect("run gpu-slicer");
        // Exit status and stderr are part of the output: a denial exits 0 with a review, a report
        // with denials says so on stderr.
        let got = format!(
            "# gpu-slicer {}\n# exit: {}\n# stderr:\n{}# stdout:\n{}",
            args,
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let path = golden_dir.join(name);
        if write {
            std::fs::write(&path, &got).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (GOLDEN_WRITE=1 writes it)", path.display()));
        if got != want {
            differ.push(format!("{name}:\n--- want\n{want}\n--- got\n{got}"));
        }
    }
    assert!(differ.is_empty(), "outputs changed:\n{}", differ.join("\n"));
}
