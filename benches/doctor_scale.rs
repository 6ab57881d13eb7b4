//! `gpu-slicer doctor` at scale: the real binary against the fake API server (tests/common/fakeapi.rs)
//! serving 2,000 nodes, 20,000 pods and 500 NodeClaims, paginated as kube-apiserver does. Reports the
//! doctor process's CPU time (user + system) and peak RSS, from `getrusage(RUSAGE_CHILDREN)` after it
//! exits, against the targets of issue 13 (< 5 s CPU, < 256 MiB). Figures in BENCHMARKS.md.
//!
//! Doctor is started by a small launcher process (this binary again, started before the fake cluster
//! is built): Linux counts the spawning process's resident set at `exec` into the child's `ru_maxrss`
//! (`exec_mmap` -> `setmax_mm_hiwater_rss`), so spawning doctor straight from a process holding 100 MiB
//! of fake cluster would report that instead of doctor's own peak.
//!
//!     cargo bench --bench doctor_scale            # full scale, release build
//!     cargo bench --bench doctor_scale -- 500 5000 100   # nodes pods claims
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a tenth of the scale once, as a
//! smoke test of the same path; it never fails on time.

// Shared with tests/doctor.rs; gpu_cluster finds fakeapi as its sibling (`super::fakeapi`).
#[path = "../tests/common/fakeapi.rs"]
mod fakeapi;
#[path = "../tests/common/gpu_cluster.rs"]
mod gpu_cluster;

use std::process::Command;
use std::time::Instant;

use fakeapi::FakeApi;
use serde_json::Value;

/// CPU seconds (user + system) and peak RSS in KiB of the children waited for so far.
fn children_usage() -> (f64, i64) {
    // SAFETY: getrusage writes into the struct we own; RUSAGE_CHILDREN is a valid `who`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime) + secs(ru.ru_stime), ru.ru_maxrss)
}

/// The launcher: reads doctor's arguments (one per line) from stdin, runs it with stdout to the file
/// named first, and prints `exit-code cpu-seconds peak-rss-kib wall-seconds`.
fn launcher() {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).unwrap();
    let mut lines = input.lines();
    let out_file = std::fs::File::create(lines.next().unwrap()).unwrap();
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_gpu-slicer"))
        .args(lines)
        .env_remove("KUBECONFIG")
        .stdout(out_file)
        .status()
        .unwrap();
    let wall = started.elapsed().as_secs_f64();
    let (cpu, rss) = children_usage();
    println!("{} {cpu} {rss} {wall}", status.code().unwrap_or(-1));
}

fn main() {
    if std::env::var_os("DOCTOR_SCALE_LAUNCHER").is_some() {
        return launcher();
    }
    // Started first, while this process is still small (see the module comment).
    let mut launcher = Command::new(std::env::current_exe().unwrap())
        .env("DOCTOR_SCALE_LAUNCHER", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let numbers: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (nodes, pods, claims) = match numbers.as_slice() {
        [n, p, c] => (*n, *p, *c),
        _ if bench => (2000, 20_000, 500),
        _ => (200, 2000, 50),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cluster, planted) = gpu_cluster::at_scale(nodes, pods, claims);
    let api = runtime.block_on(async {
        let api = FakeApi::start().await;
        cluster.install(&api);
        api
    });
    drop(cluster);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.kubeconfig(dir.path());
    let json_file = dir.path().join("report.json");
    let request = format!(
        "{}\ndoctor\n-o\njson\n--kubeconfig\n{}\n",
        json_file.display(),
        kubeconfig.display()
    );
    // The server keeps answering on its runtime threads while the launcher runs doctor.
    {
        use std::io::Write;
        let mut stdin = launcher.stdin.take().unwrap();
        stdin.write_all(request.as_bytes()).unwrap();
    }
    let result = launcher.wait_with_output().unwrap();
    let line = String::from_utf8(result.stdout).unwrap();
    let fields: Vec<f64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let [code, cpu, rss_kib, wall] = fields[..] else {
        panic!("launcher said {line:?}")
    };
    assert_eq!(code, 1.0, "doctor's exit code");
    let report: Value = serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    let count = |check: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["check"] == check)
            .count()
    };
    // The run found what was planted, no more: the figures are of a complete diagnosis.
    assert_eq!(
        count("nodeclaim-resource-not-registered"),
        planted.stuck_claims
    );
    assert_eq!(count("mig-config-failed"), planted.failed_nodes);
    assert_eq!(count("pod-not-rewritten"), planted.unrewritten_owners);
    let requests = api.requests();
    let pages = requests
        .iter()
        .filter(|(_, u)| u.starts_with("/api/v1/pods?"))
        .count();
    println!(
        "doctor_scale: {nodes} nodes, {pods} pods, {claims} NodeClaims ({pages} pod pages, {} requests): \
         CPU {cpu:.2} s (target < 5 s), peak RSS {:.1} MiB (target < 256 MiB), wall {:.2} s; summary {}",
        requests.len(),
        rss_kib / 1024.0,
        wall,
        report["summary"]
    );
    if bench && (cpu >= 5.0 || rss_kib >= 256.0 * 1024.0) {
        println!("doctor_scale: ABOVE TARGET");
    }
}
