//! Where the policy comes from: a file, the webhook's ConfigMap, or the example embedded in the
//! binary. Every command and the server read it here; the policy's model and validation are the
//! core's ([`gpu_slicer_core::policy`]).

use std::path::Path;

use gpu_slicer_core::policy::{Policy, PolicyError};

/// The example policy shipped in `manifests/policy/policy.yaml`, embedded for `serve` with no flags.
pub const EXAMPLE_POLICY: &str = include_str!("../manifests/policy/policy.yaml");
/// How the embedded example is named in messages.
pub const EXAMPLE_ORIGIN: &str = "manifests/policy/policy.yaml";

/// Reads and validates a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let display = path.display().to_string();
    let text = crate::input::read_text(path).map_err(|source| PolicyError::Read {
        path: display.clone(),
        source,
    })?;
    Policy::parse(&text, &display)
}

/// The embedded example policy.
pub fn example() -> Policy {
    // The example is validated by a test, so this cannot fail in a released binary.
    Policy::parse(EXAMPLE_POLICY, EXAMPLE_ORIGIN)
        .unwrap_or_else(|e| panic!("the embedded example policy is invalid: {e}"))
}
