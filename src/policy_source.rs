//! Where the policy comes from, in one place: a file (`--policy`), the webhook's ConfigMap as
//! `manifests/webhook` deploys it, or the example embedded in the binary. `serve`, `mutate`,
//! `policy check` / `report`, `dra`, `karpenter`, `doctor` and `usage` read it through
//! [`PolicySource`] (or [`load_file`] for a required `--policy`); the server and the template
//! controller share the policy in force through [`LivePolicy`]. The policy's model and validation are the core's ([`gpu_slicer_core::policy`]).
//!
//! Imports: [`crate::input`] (files) and [`crate::cluster`] (the ConfigMap read), nothing above.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use gpu_slicer_core::policy::{Policy, PolicyError};
use k8s_openapi::api::core::v1::ConfigMap;

use crate::cluster::kubeapi;

/// The example policy shipped in `manifests/policy/policy.yaml`, embedded for `serve` with no flags.
pub const EXAMPLE_POLICY: &str = include_str!("../manifests/policy/policy.yaml");
/// How the embedded example is named in messages.
pub const EXAMPLE_ORIGIN: &str = "manifests/policy/policy.yaml";

/// Where `manifests/webhook` deploys the policy: ConfigMap `gpu-slicer-policy` in namespace
/// `gpu-slicer`, key `policy.yaml` (manifests/policy/kustomization.yaml, base/kustomization.yaml).
pub const POLICY_NAMESPACE: &str = "gpu-slicer";
/// The policy ConfigMap's name (see [`POLICY_NAMESPACE`]).
pub const POLICY_CONFIGMAP: &str = "gpu-slicer-policy";
/// The policy ConfigMap's data key (see [`POLICY_NAMESPACE`]).
pub const POLICY_KEY: &str = "policy.yaml";

/// Where a command reads its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// `--policy FILE`.
    File(PathBuf),
    /// The webhook's ConfigMap ([`POLICY_NAMESPACE`]/[`POLICY_CONFIGMAP`], key [`POLICY_KEY`]).
    ConfigMap,
    /// The example embedded in the binary.
    Embedded,
}

/// A policy that loaded, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: Policy,
    /// For people: `--policy FILE` or `ConfigMap gpu-slicer/gpu-slicer-policy (key policy.yaml)`.
    pub source: String,
    /// For findings: `ConfigMap/gpu-slicer/gpu-slicer-policy`, or `SlicingPolicy/FILE`.
    pub object: String,
}

/// Why there is no policy to judge by (the ConfigMap source).
#[derive(Debug, Clone)]
pub enum NoPolicy {
    /// Not found or not readable, and no `--policy` given: policy checks are skipped.
    Absent(String),
    /// The webhook's ConfigMap holds a policy that does not load: itself a finding.
    Invalid { object: String, message: String },
}

impl NoPolicy {
    /// The sentence for "skipped: ...".
    pub fn why(&self) -> String {
        match self {
            NoPolicy::Absent(why) => why.clone(),
            NoPolicy::Invalid { object, message } => {
                format!("the policy in {object} does not load: {message}")
            }
        }
    }
}

impl PolicySource {
    /// `--policy FILE` when given; else the embedded example.
    pub fn file_or_example(file: Option<&Path>) -> PolicySource {
        file.map_or(PolicySource::Embedded, |f| {
            PolicySource::File(f.to_path_buf())
        })
    }

    /// `--policy FILE` when given; else the webhook's ConfigMap (commands that read a cluster).
    pub fn file_or_configmap(file: Option<&Path>) -> PolicySource {
        file.map_or(PolicySource::ConfigMap, |f| {
            PolicySource::File(f.to_path_buf())
        })
    }

    /// Reads a file or the embedded example: what needs no cluster. The ConfigMap source says it
    /// needs one.
    pub fn read_offline(&self) -> Result<LoadedPolicy, SourceError> {
        match self {
            PolicySource::File(path) => Ok(loaded_file(
                load_file(path).map_err(SourceError::File)?,
                path,
            )),
            PolicySource::Embedded => Ok(LoadedPolicy {
                policy: example(),
                source: "the example policy".into(),
                object: format!("SlicingPolicy/{EXAMPLE_ORIGIN}"),
            }),
            PolicySource::ConfigMap => Err(SourceError::NeedsCluster),
        }
    }

    /// Reads the policy; the ConfigMap through `client`. A file that does not load is an error
    /// (the caller's `--policy` is wrong); a ConfigMap that is absent or invalid is a [`NoPolicy`].
    pub async fn read(&self, client: &kube::Client) -> Result<LoadedPolicy, SourceError> {
        match self {
            PolicySource::ConfigMap => from_configmap(client).await.map_err(SourceError::NoPolicy),
            other => other.read_offline(),
        }
    }
}

impl PolicySource {
    /// The policy `serve` starts with, and the bytes it was parsed from (what the reload compares
    /// with; none for the embedded example). Parsed as the reload parses ([`parse_bytes`]).
    pub fn read_served(&self) -> Result<(Policy, Vec<u8>), ServedPolicyError> {
        match self {
            PolicySource::File(path) => {
                let bytes =
                    crate::input::read_bytes(path).map_err(|source| ServedPolicyError::Read {
                        path: path.display().to_string(),
                        source,
                    })?;
                Ok((parse_bytes(&bytes, path)?, bytes))
            }
            PolicySource::Embedded => Ok((example(), Vec::new())),
            PolicySource::ConfigMap => Err(ServedPolicyError::NotServed),
        }
    }

    /// How `serve` names it in its log.
    pub fn describe(&self) -> String {
        match self {
            PolicySource::File(path) => path.display().to_string(),
            PolicySource::Embedded => "embedded example".into(),
            PolicySource::ConfigMap => {
                format!("ConfigMap {POLICY_NAMESPACE}/{POLICY_CONFIGMAP}")
            }
        }
    }
}

/// Why `serve` could not read its policy.
#[derive(Debug, thiserror::Error)]
pub enum ServedPolicyError {
    #[error("--policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    /// The server reads a file (the ConfigMap's mount, re-read on change), never the API.
    #[error("serve reads its policy from a file (the ConfigMap's mount) or the embedded example")]
    NotServed,
}

/// Why [`PolicySource::read`] found no policy.
#[derive(Debug)]
pub enum SourceError {
    /// `--policy FILE` (or the example) does not load.
    File(PolicyError),
    /// The webhook's ConfigMap is absent, unreadable or invalid.
    NoPolicy(NoPolicy),
    /// The ConfigMap source, asked for without a cluster.
    NeedsCluster,
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::File(e) => write!(f, "{e}"),
            SourceError::NoPolicy(no) => write!(f, "{}", no.why()),
            SourceError::NeedsCluster => write!(
                f,
                "ConfigMap {POLICY_NAMESPACE}/{POLICY_CONFIGMAP}: reading it needs cluster access"
            ),
        }
    }
}

impl std::error::Error for SourceError {}

fn loaded_file(policy: Policy, path: &Path) -> LoadedPolicy {
    LoadedPolicy {
        policy,
        source: format!("--policy {}", path.display()),
        // Kind/name: the file's name (the message has the whole path).
        object: format!(
            "SlicingPolicy/{}",
            path.file_name().map_or(path.display().to_string(), |n| n
                .to_string_lossy()
                .into_owned())
        ),
    }
}

/// Reads and validates a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let display = path.display().to_string();
    let text = crate::input::read_text(path).map_err(|source| PolicyError::Read {
        path: display.clone(),
        source,
    })?;
    Policy::parse(&text, &display)
}

/// The policy in a file's bytes as `serve` and its reload read them (invalid UTF-8 replaced, so a
/// stray byte is a parse error that names its line, not an unreadable file).
pub fn parse_bytes(bytes: &[u8], path: &Path) -> Result<Policy, PolicyError> {
    Policy::parse(&String::from_utf8_lossy(bytes), &path.display().to_string())
}

/// The embedded example policy.
pub fn example() -> Policy {
    // The example is validated by a test, so this cannot fail in a released binary.
    Policy::parse(EXAMPLE_POLICY, EXAMPLE_ORIGIN)
        .unwrap_or_else(|e| panic!("the embedded example policy is invalid: {e}"))
}

/// The policy the webhook runs, from its ConfigMap as `manifests/webhook` deploys it.
pub async fn from_configmap(client: &kube::Client) -> Result<LoadedPolicy, NoPolicy> {
    let at = format!("ConfigMap {POLICY_NAMESPACE}/{POLICY_CONFIGMAP}");
    let cm = kubeapi::get_namespaced::<ConfigMap>(client, POLICY_NAMESPACE, POLICY_CONFIGMAP)
        .await
        .map_err(|e| NoPolicy::Absent(format!("{e}; give --policy FILE")))?
        .ok_or_else(|| {
            NoPolicy::Absent(format!(
                "no policy: {at} (where manifests/webhook puts it) does not exist; give --policy FILE"
            ))
        })?;
    let source = format!("{at} (key {POLICY_KEY})");
    let object = format!("ConfigMap/{POLICY_NAMESPACE}/{POLICY_CONFIGMAP}");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(POLICY_KEY))
        .ok_or_else(|| NoPolicy::Invalid {
            object: object.clone(),
            message: format!("{at} has no data key {POLICY_KEY}"),
        })?;
    let policy = Policy::parse(text, &source).map_err(|e| NoPolicy::Invalid {
        object: object.clone(),
        message: e.to_string(),
    })?;
    Ok(LoadedPolicy {
        policy,
        source,
        object,
    })
}

/// The policy in force, shared by the admission server and the template controller: replaced whole
/// (no reader sees half of one), each replacement announced to subscribers, so the controller
/// reacts to a reload without polling.
pub struct LivePolicy {
    current: ArcSwap<Policy>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl LivePolicy {
    pub fn new(policy: Policy) -> LivePolicy {
        LivePolicy {
            current: ArcSwap::from_pointee(policy),
            generation: tokio::sync::watch::Sender::new(1),
        }
    }

    /// The policy in force, for one request.
    pub fn load(&self) -> Guard<Arc<Policy>> {
        self.current.load()
    }

    /// The policy in force, to hold across awaits.
    pub fn load_full(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Puts `policy` in force and announces it; returns its generation (the first policy is 1).
    pub fn replace(&self, policy: Policy) -> u64 {
        self.current.store(Arc::new(policy));
        let mut generation = 0;
        self.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        generation
    }

    /// How many policies have been in force (the first is 1).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that wakes on every replacement.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
