//! The ResourceClaimTemplate controller at scale (issue 20, "Done when": 2,000 namespaces reconciled after
//! a policy change in under 30 s against a fake API server). Not a timed test: it prints the figures
//! (BENCHMARKS.md).
//!
//! The fake API server of `tests/common/dra_api.rs` (Namespace and ResourceClaimTemplate list + watch,
//! per-namespace lists, server-side apply, DELETE, Pod lists, Events) starts with N namespaces that a
//! `backend: dra` `mig` rule matches, each already holding its two templates (1g.10gb, 2g.20gb) as the
//! controller writes them. The controller starts and reconciles them all (nothing to write); then the
//! policy is replaced (`App::replace_policy`, what a reload does) with one that also allows 3g.40gb, and
//! the clock runs until every namespace holds `gpu-slicer-mig-3g.40gb`. The controller is told of a new
//! policy the moment it is replaced (`LivePolicy`; before the workspace split it polled on the reload
//! tick), so the time is split into detection (until the first write) and the reconcile itself; requests are counted until the controller is quiet again.
//!
//!     cargo bench --bench controller_scale              # 2,000 namespaces, reload interval 10 s
//!     cargo bench --bench controller_scale -- 5000 1    # namespaces, reload interval (seconds)
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs 200 namespaces with a 0.1 s interval
//! once, as a smoke test of the same path; it fails only if the templates never appear.

// Shared with tests/dra_controller.rs.
#[path = "../tests/common/dra_api.rs"]
mod dra_api;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dra_api::Fake;
use gpu_slicer::controller::{self, OWNER_ANNOTATION};
use gpu_slicer::webhook::admission::StaticFacts;
use gpu_slicer::webhook::metrics::Metrics;
use gpu_slicer::webhook::server::{App, Limits};
use gpu_slicer_core::nodepool::NodePoolIndex;
use gpu_slicer_core::policy::Policy;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

/// The template the policy change adds to every namespace.
const NEW_TEMPLATE: &str = "gpu-slicer-mig-3g.40gb";
/// How long the controller must stay without a request to count as quiet.
const QUIET: Duration = Duration::from_millis(1500);
/// When to give up waiting.
const GIVE_UP: Duration = Duration::from_secs(300);

fn policy(profiles: &str) -> Policy {
    Policy::parse(
        &format!(
            "apiVersion: gpu-slicer.io/v1alpha1\nkind: SlicingPolicy\nspec:\n  rules:\n  - {{name: infer, namespaces: [\"infer-*\"], action: mig, backend: dra, nodePool: gpu-dra-mig, mig: {{profile: 1g.10gb, allowedProfiles: [{profiles}]}}}}\n"
        ),
        "policy.yaml",
    )
    .expect("bench policy")
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// `n` namespaces, each with the templates `policy` gives it, as the controller writes them.
fn populate(fake: &Fake, policy: &Policy, n: usize) -> usize {
    let mut templates = 0;
    for i in 0..n {
        let name = format!("infer-{i:05}");
        fake.set_namespace(&name, json!({}));
        for mut t in controller::desired(policy, &namespace(&name)) {
            t["metadata"]["annotations"][OWNER_ANNOTATION.0] = json!(OWNER_ANNOTATION.1);
            t["metadata"]["uid"] = json!(format!("uid-{name}-{templates}"));
            fake.put_template(&name, t);
            templates += 1;
        }
    }
    templates
}

/// Waits until `done` holds, polling every 5 ms; `None` after [`GIVE_UP`].
async fn until(started: Instant, done: impl Fn() -> bool) -> Option<Duration> {
    while !done() {
        if started.elapsed() > GIVE_UP {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(started.elapsed())
}

/// Waits until no request has arrived for [`QUIET`]; returns when the last one did.
async fn quiet(fake: &Fake, started: Instant) -> Duration {
    let (mut seen, mut last) = (fake.served(), started.elapsed());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = fake.served();
        if now != seen {
            (seen, last) = (now, started.elapsed());
        } else if started.elapsed() - last >= QUIET || started.elapsed() > GIVE_UP {
            return last;
        }
    }
}

fn requests(fake: &Fake) -> BTreeMap<String, usize> {
    fake.requests.lock().map(|r| r.clone()).unwrap_or_default()
}

/// Requests after minus before, as `N KIND` lines.
fn difference(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> String {
    after
        .iter()
        .map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("    {n:>6}  {k}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run(n: usize, every: Duration) -> Result<(), String> {
    let (addr, fake) = dra_api::start().await;
    let templates = populate(&fake, &policy("1g.10gb, 2g.20gb"), n);
    let app = App::new(
        StaticFacts {
            policy: policy("1g.10gb, 2g.20gb"),
            pools: NodePoolIndex::default(),
        },
        Metrics::new(),
        Limits::default(),
    );
    let url = format!("http://{addr}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let client = kube::Client::try_from(kube::Config::new(url)).map_err(|e| e.to_string())?;
    println!(
        "controller_scale: {n} namespaces, {templates} templates in place, reload interval {every:?}"
    );

    let started = Instant::now();
    let controller = controller::spawn_when_needed(client, app.policy.clone());
    let per_namespace = |f: &Fake| {
        requests(f)
            .get("GET list templates (namespace)")
            .copied()
            .unwrap_or(0)
    };
    until(started, || per_namespace(&fake) >= n)
        .await
        .ok_or("the first sync never reached every namespace")?;
    let synced = quiet(&fake, started).await;
    let writes = fake.writes().len();
    println!(
        "  start: every namespace reconciled, last request after {:.2} s, {} requests, {writes} writes",
        synced.as_secs_f64(),
        fake.served()
    );

    let (before, served) = (requests(&fake), fake.served());
    let changed = Instant::now();
    app.replace_policy(policy("1g.10gb, 2g.20gb, 3g.40gb"));
    let detected = until(changed, || fake.writes().len() > writes)
        .await
        .ok_or("the policy change was never acted on")?;
    let done = until(changed, || fake.namespaces_with(NEW_TEMPLATE) == n)
        .await
        .ok_or_else(|| {
            format!(
                "only {} of {n} namespaces got {NEW_TEMPLATE}",
                fake.namespaces_with(NEW_TEMPLATE)
            )
        })?;
    let settled = quiet(&fake, changed).await;
    controller.abort();
    println!(
        "  policy change (+{NEW_TEMPLATE} in each namespace): first write after {:.2} s, \
         every namespace had it after {:.2} s ({:.2} s of reconciling), quiet after {:.2} s; {} requests:\n{}",
        detected.as_secs_f64(),
        done.as_secs_f64(),
        (done - detected).as_secs_f64(),
        settled.as_secs_f64(),
        fake.served() - served,
        difference(&before, &requests(&fake))
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let numbers: Vec<f64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (n, every) = match numbers.as_slice() {
        [n, secs] => (*n as usize, Duration::from_secs_f64(*secs)),
        [n] => (*n as usize, Duration::from_secs(10)),
        _ if bench => (2000, Duration::from_secs(10)),
        _ => (200, Duration::from_millis(100)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(n, every)) {
        eprintln!("controller_scale: {e}");
        std::process::exit(1);
    }
}
