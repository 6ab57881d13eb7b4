//! The offline commands against hostile or careless input (issue 24, findings 6 and 7): symlink loops,
//! FIFOs and devices, unparseable files in a report, inputs past `MAX_INPUT_BYTES`, terminal escape
//! sequences in names, and GPU counts written as quantities with exponents.
//!
//! Every binary run here has a deadline: before these were fixed, some of them hung or ate memory.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::*;
use gpu_slicer::input::MAX_INPUT_BYTES;

/// A Deployment of one whole-GPU replica in `ml-inference` (a `mig` rule of the example policy),
/// named `name`.
fn deployment(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ml-inference"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        ]}}}
    })
    .to_string()
    // JSON is YAML, but YAML wants C1 controls escaped, which serde_json leaves raw.
    .replace('\u{9b}', "\\u009b")
}

/// Waits for `child` at most `limit`, killing it past that: a hang is a failed assertion, not a
/// stuck test run.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (hangs, or reads without a bound)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Runs the binary with these arguments, empty stdin, and a 20 s deadline.
fn gpu_slicer(args: &[&str]) -> Output {
    let mut child = spawn_gpu_slicer(args);
    drop(child.stdin.take()); // end of input
    finish(child, Duration::from_secs(20), &args.join(" "))
}

fn report_json(dir: &Path) -> Output {
    gpu_slicer(&[
        "policy",
        "report",
        "-f",
        dir.to_str().unwrap(),
        "-o",
        "json",
    ])
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_in_a_report_directory_is_refused_naming_the_link() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), deployment("vllm")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("self")).unwrap();
    let out = report_json(dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}\n{}", text(&out.stdout));
    let link = dir.path().join("self").display().to_string();
    assert!(err.contains(&link), "{err}");
    assert!(
        err.contains("symlink loop") && err.contains("counted twice"),
        "{err}"
    );

    // A link to a directory outside the walk is followed, once.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("more.yaml"), deployment("linked")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), deployment("vllm")).unwrap();
    std::os::unix::fs::symlink(other.path(), dir.path().join("shared")).unwrap();
    let out = report_json(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<_> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["linked", "vllm"], "rows are in name order");
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn fifos_and_devices_are_refused_before_they_are_opened() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), deployment("vllm")).unwrap();
    let fifo = dir.path().join("pipe.yaml");
    mkfifo(&fifo);
    let fifo_shown = fifo.display().to_string();
    for args in [
        vec!["policy", "report", "-f", dir.path().to_str().unwrap()],
        vec!["policy", "report", "-f", &fifo_shown],
        vec!["policy", "report", "-f", "/dev/zero"],
        vec!["mutate", "-n", "team-a", "-f", "/dev/zero"],
        vec!["mutate", "-n", "team-a", "-f", &fifo_shown],
        vec!["plan", "-f", "/dev/zero"],
        vec!["policy", "check", "/dev/zero"],
    ] {
        let out = gpu_slicer(&args);
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
        let named = if args.contains(&"/dev/zero") {
            "/dev/zero"
        } else {
            &fifo_shown
        };
        assert!(err.contains(named), "{args:?}: {err}");
    }
}

/// Before, a file that did not parse was skipped with a note and the report exited 0, so a workload
/// in it slipped past `--fail-on deny`.
#[test]
fn an_unparseable_file_fails_the_report_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), deployment("vllm")).unwrap();
    let chart = dir.path().join("templates-deployment.yaml");
    std::fs::write(
        &chart,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  labels: {{- include \"x\" . | nindent 4 }}\n",
    )
    .unwrap();
    let out = gpu_slicer(&[
        "policy",
        "report",
        "-f",
        dir.path().to_str().unwrap(),
        "--fail-on",
        "deny",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&chart.display().to_string()), "{err}");
    assert!(err.contains("not valid YAML or JSON"), "{err}");
    assert!(err.contains("helm template"), "{err}");
}

/// A sparse file one byte past the limit: cheap to make, and refused by every reader.
#[test]
fn files_past_the_input_limit_are_refused_naming_them_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(MAX_INPUT_BYTES + 1)
        .unwrap();
    let pools = dir.path().join("pools");
    std::fs::create_dir(&pools).unwrap();
    std::fs::copy(&big, pools.join("pool.yaml")).unwrap();
    let big = big.to_str().unwrap();
    let pools_dir = pools.to_str().unwrap();
    for (args, named) in [
        (vec!["mutate", "-n", "team-a", "-f", big], big.to_string()),
        (vec!["policy", "report", "-f", big], big.to_string()),
        (vec!["plan", "-f", big], big.to_string()),
        (vec!["policy", "check", big], big.to_string()),
        (
            vec![
                "mutate",
                "-n",
                "team-a",
                "--policy",
                big,
                "-f",
                "docs/examples/inference-pod.yaml",
            ],
            big.to_string(),
        ),
        (
            vec![
                "mutate",
                "-n",
                "team-a",
                "--nodepools",
                pools_dir,
                "-f",
                "docs/examples/inference-pod.yaml",
            ],
            format!("{pools_dir}/pool.yaml"),
        ),
    ] {
        let out = gpu_slicer(&args);
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains(&named), "{args:?}: {err}");
        assert!(err.contains("input limit of 64 MiB"), "{args:?}: {err}");
    }
}

/// stdin is capped too: the reader stops one byte past the limit, whatever is still being written.
#[test]
fn stdin_past_the_input_limit_is_refused() {
    for args in [
        ["mutate", "-n", "team-a", "-f", "-"].as_slice(),
        ["policy", "report", "-f", "-"].as_slice(),
    ] {
        let mut child = spawn_gpu_slicer(args);
        let mut pipe = child.stdin.take().unwrap();
        // Endless spaces, until the reader hangs up (a broken pipe ends the writer).
        let writer = std::thread::spawn(move || {
            let chunk = vec![b' '; 1 << 20];
            while pipe.write_all(&chunk).is_ok() {}
        });
        let out = finish(child, Duration::from_secs(30), &args.join(" "));
        writer.join().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("stdin: "), "{err}");
        assert!(err.contains("input limit of 64 MiB"), "{err}");
    }
}

/// An object named with `ESC [2J` (clear screen) is shown escaped in the table, never raw; JSON keeps
/// the name as it is (its encoder escapes it).
#[test]
fn escape_sequences_in_names_are_escaped_in_the_report_table() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "evil\u{1b}[2J\u{9b}31m";
    std::fs::write(dir.path().join("app.yaml"), deployment(evil)).unwrap();
    let out = gpu_slicer(&["policy", "report", "-f", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{9b}'),
        "{table:?}"
    );
    assert!(
        table.contains("Deployment/evil\\x1b[2J\\u{9b}31m"),
        "{table}"
    );

    let out = report_json(dir.path());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rows"][0]["name"], evil);
}

#[test]
fn escape_sequences_in_inventory_names_are_escaped_in_the_plan_table() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        "apiVersion: gpu-slicer.io/v1alpha1\nkind: Inventory\nspec:\n  workloads:\n  - {name: \"evil\\e[2J\\e]0;x\\a\", namespace: ml, replicas: 2, gpuMemory: 8Gi, isolation: memory, current: {instanceType: p4de.24xlarge, gpusPerReplica: 1}}\n",
    )
    .unwrap();
    let out = gpu_slicer(&["plan", "-f", inventory.to_str().unwrap()]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{7}'),
        "{table:?}"
    );
    assert!(table.contains("ml/evil\\x1b[2J"), "{table}");

    // Errors quote the same names on stderr: escaped there too.
    let text_in = std::fs::read_to_string(&inventory).unwrap();
    std::fs::write(&inventory, text_in.replace("p4de.24xlarge", "p9.nope")).unwrap();
    let out = gpu_slicer(&["plan", "-f", inventory.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("error: ml/evil\\x1b[2J"), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
}

/// `1e0` and `1E0` are quantities of 1 (k8s.io/apimachinery's grammar), so a pod that writes its GPU
/// count that way is rewritten exactly like one that writes `1`, not denied.
#[test]
fn a_gpu_count_written_with_an_exponent_is_rewritten_like_a_plain_one() {
    let policy = contract_policy();
    let pools = shipped_pools();
    let plain = pod(vec![container("main", &[("nvidia.com/gpu", "1")], false)]);
    let (want, want_pod) = run(&plain, "team-a", &labels(&[]), &policy, &pools);
    assert!(want.allowed());
    for q in ["1e0", "1E0", "0.001e3", "1000m"] {
        let p = pod(vec![container("main", &[("nvidia.com/gpu", q)], false)]);
        let (d, out) = run(&p, "team-a", &labels(&[]), &policy, &pools);
        assert!(d.allowed(), "{q}: {:?}", d.denied);
        assert_eq!(resource_keys(&out), resource_keys(&want_pod), "{q}");
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"], q,
            "{q}: the quantity is kept as written"
        );
        assert_eq!(
            out["spec"]["nodeSelector"],
            want_pod["spec"]["nodeSelector"]
        );
    }
    // Not a whole number of devices: still denied.
    let half = pod(vec![container("main", &[("nvidia.com/gpu", "0.5")], false)]);
    let (d, _) = run(&half, "team-a", &labels(&[]), &policy, &pools);
    assert!(d.denied.is_some());
}
