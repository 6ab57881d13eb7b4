//! `gpu-slicer mutate`: the offline dry run of one Pod or AdmissionReview.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::terminal::escape_controls;
use crate::webhook::admission::{self};
use gpu_slicer_core::engine::{self, Namespace};
use gpu_slicer_core::pod::Pod;
use gpu_slicer_core::policy::Mode;

use super::{load_policy, load_pools, parse_label};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Pod,
    Patch,
    Review,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Namespace the pod is created in.
    #[arg(long, short = 'n')]
    pub namespace: String,
    /// Policy file; without it, the embedded example policy.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Directory of Karpenter NodePool YAML.
    #[arg(long)]
    pub nodepools: Option<PathBuf>,
    /// A Pod (YAML or JSON) or an AdmissionReview; `-` for stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
    pub file: String,
    /// What to print.
    #[arg(long, short = 'o', value_enum, default_value = "pod")]
    pub output: Output,
    /// Namespace labels (key=value), for rules with a namespaceSelector.
    #[arg(long = "namespace-label", value_parser = parse_label)]
    pub namespace_labels: Vec<(String, String)>,
    /// Decide as if every rule were in this mode (default: as the policy says).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
}

/// `--mode`: the policy's `spec.mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Enforce,
    Audit,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
        }
    }
}

/// Exit codes of `mutate`: 0 allowed, 1 denied, 2 bad input.
pub(super) fn run(args: MutateArgs) -> ExitCode {
    match mutate_inner(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", escape_controls(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

pub(super) fn mutate_inner(args: &MutateArgs) -> anyhow::Result<bool> {
    let mut policy = load_policy(args.policy.as_deref())?;
    if let Some(mode) = args.mode {
        policy.force_mode(mode.into());
    }
    let pools = load_pools(args.nodepools.as_deref())?;
    let text = crate::input::read_arg(&args.file)?;
    let docs = gpu_slicer_core::yaml::documents(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file))?;
    let [doc] = docs.as_slice() else {
        return Err(anyhow::anyhow!(
            "{}: expected one Pod or AdmissionReview, found {} documents",
            args.file,
            docs.len()
        ));
    };
    let mut labels = gpu_slicer_core::labels::name_label(&args.namespace);
    labels.extend(args.namespace_labels.iter().cloned());

    // An AdmissionReview carries its own pod; answer it exactly as the server would.
    let (pod_value, uid) = if doc.get("kind").and_then(|k| k.as_str()) == Some("AdmissionReview") {
        let obj = doc
            .pointer("/request/object")
            .cloned()
            .ok_or("AdmissionReview without request.object")
            .map_err(anyhow::Error::msg)?;
        let uid = doc
            .pointer("/request/uid")
            .and_then(|u| u.as_str())
            .unwrap_or("")
            .to_string();
        (obj, uid)
    } else if doc.get("kind").and_then(|k| k.as_str()) == Some("Pod") {
        (doc.clone(), String::new())
    } else {
        return Err(anyhow::anyhow!(
            "{}: not a Pod or an AdmissionReview (kind {:?})",
            args.file,
            doc.get("kind")
        ));
    };
    if let Some(ns) = pod_value
        .pointer("/metadata/namespace")
        .and_then(|n| n.as_str())
        && ns != args.namespace
    {
        eprintln!(
            "Warning: the pod says namespace {ns:?}; deciding for --namespace {:?}",
            args.namespace
        );
    }
    let pod: Pod = serde_json::from_value(pod_value.clone())
        .map_err(|e| anyhow::anyhow!("{}: not a valid Pod: {e}", args.file))?;
    let decision = engine::decide(
        &pod,
        Namespace {
            name: &args.namespace,
            labels: &labels,
        },
        &policy,
        &pools,
    );
    // What the webhook answers: in audit mode, allowed and unpatched, with "would ..." warnings.
    let decision = gpu_slicer_core::engine::mode::apply(decision);

    for w in &decision.warnings {
        eprintln!("Warning: {}", escape_controls(w));
    }
    if let Some(record) = &decision.audit {
        eprintln!(
            "audit: {}",
            serde_json::to_string(record).unwrap_or_default()
        );
    }
    if let Some(reason) = &decision.denied {
        eprintln!("denied: {}", escape_controls(reason));
    }
    let out = match args.output {
        Output::Review => {
            String::from_utf8_lossy(&admission::respond(&uid, &decision)).into_owned()
        }
        Output::Patch => serde_json::to_string_pretty(&decision.patch)?,
        Output::Pod => {
            if decision.denied.is_some() {
                return Ok(false);
            }
            let mut pod_value = pod_value;
            json_patch::patch(&mut pod_value, &decision.patch)
                .map_err(|e| anyhow::anyhow!("internal error: the patch does not apply: {e}"))?;
            serde_norway::to_string(&pod_value)?
        }
    };
    println!("{}", out.trim_end());
    Ok(decision.allowed())
}
