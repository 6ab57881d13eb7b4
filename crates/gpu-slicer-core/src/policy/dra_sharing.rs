//! How the NVIDIA DRA driver shares its devices (its Helm value `consumableShares`), and the policy
//! errors of `backend: dra` rules whose promise a mode cannot keep (docs/dra-backend.md, "Action x
//! mode").
//!
//! The driver's four modes, from `cmd/gpu-kubelet-plugin/consumable_shares.go` (driver v0.5+, feature
//! gate `ConsumableShares`), applied to full GPUs and MIG devices alike:
//! - `disabled`: devices as before, one claim each (no `allowMultipleAllocations`);
//! - `<N>`: `allowMultipleAllocations: true`, capacity `shares: N` (request policy default 1, range
//!   1..N step 1), `memory` with default 0;
//! - `memory`: `allowMultipleAllocations: true`, `memory` with default = the whole memory (range 1Mi..
//!   all, step 1Mi);
//! - `unlimited`: `allowMultipleAllocations: true`, `memory` with default 0 (range 0..all).
//!
//! Kubernetes' consumable-capacity rules (KEP-5075) then decide: a claim consumes, per capacity, what
//! it requests (`capacity.requests`), else the request policy's default, else the whole capacity; a
//! multi-allocatable device takes claims while every capacity's sum stays within its value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::catalog;
use crate::policy::{Action, Backend, RuleSpec};
use crate::quantity;

/// The driver's `consumableShares`: how (and whether) several claims share one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumableShares {
    /// One claim per device (the driver's default).
    #[default]
    Disabled,
    /// Each device has `N` shares; a claim takes one by default.
    Shares(u32),
    /// Claims take device memory; a claim that asks none takes all of it.
    Memory,
    /// Claims take device memory; a claim that asks none takes nothing: sharing is unbounded.
    Unlimited,
}

impl ConsumableShares {
    /// Whether the driver marks devices `allowMultipleAllocations` in this mode.
    pub fn shares_devices(self) -> bool {
        self != ConsumableShares::Disabled
    }
}

impl FromStr for ConsumableShares {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "disabled" => Ok(ConsumableShares::Disabled),
            "memory" => Ok(ConsumableShares::Memory),
            "unlimited" => Ok(ConsumableShares::Unlimited),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(ConsumableShares::Shares(n)),
                _ => Err(format!(
                    "{s:?} is not a consumableShares mode of the NVIDIA DRA driver: \"disabled\", a positive integer (\"4\"), \"memory\" or \"unlimited\""
                )),
            },
        }
    }
}

impl fmt::Display for ConsumableShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumableShares::Disabled => f.write_str("disabled"),
            ConsumableShares::Shares(n) => write!(f, "{n}"),
            ConsumableShares::Memory => f.write_str("memory"),
            ConsumableShares::Unlimited => f.write_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for ConsumableShares {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML writes `consumableShares: 4` as often as `"4"`.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ConsumableShares {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// `spec.dra`: how the cluster's NVIDIA DRA driver runs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyDraSpec {
    #[serde(default)]
    pub consumable_shares: ConsumableShares,
}

/// A rule's `dra`: overrides for pools another install of the driver serves.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleDraSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumable_shares: Option<ConsumableShares>,
    /// Memory mode: the GPU memory a `timeslice` claim asks for when the pod names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A `dra` rule's validated sharing settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraSettings {
    /// The mode of the driver serving the rule's pools (the rule's, else the policy's).
    pub shares: ConsumableShares,
    /// Memory mode: bytes a `timeslice` claim asks for by default.
    pub memory: Option<u128>,
    /// `mig.fallback`: profiles a claim takes, in order, when the profile it asks for is not free.
    pub fallback: Vec<String>,
}

type FieldError = (String, String);

fn err<T>(field: &str, message: String) -> Result<T, FieldError> {
    Err((field.to_string(), message))
}

/// Validates a rule's `dra` and `mig.fallback` against its action and backend and the mode of the
/// driver that serves it. Every cell of the action x mode table that cannot keep the action's promise
/// is an error saying why and what to do.
pub fn validate(
    spec: &RuleSpec,
    backend: Backend,
    policy_shares: ConsumableShares,
) -> Result<DraSettings, FieldError> {
    let fallback = spec
        .mig
        .as_ref()
        .map(|m| m.fallback.clone())
        .unwrap_or_default();
    if backend != Backend::Dra {
        if spec.dra.is_some() {
            return err(
                "dra",
                "only applies to backend dra (it describes the NVIDIA DRA driver serving the rule)"
                    .into(),
            );
        }
        if !fallback.is_empty() {
            return err(
                "mig.fallback",
                "needs backend dra: under the device plugin a pod names one extended resource (nvidia.com/mig-<profile>), so it cannot ask for one profile and take another; list the profiles in allowedProfiles and size pods with gpu-slicer.io/gpu-memory".into(),
            );
        }
        return Ok(DraSettings::default());
    }
    let dra = spec.dra.clone().unwrap_or_default();
    let shares = dra.consumable_shares.unwrap_or(policy_shares);
    let memory = match &dra.memory {
        None => None,
        Some(text) => match quantity::parse(text) {
            Some(bytes) if bytes > 0 => Some(bytes),
            _ => {
                return err(
                    "dra.memory",
                    format!("{text:?} is not a positive Kubernetes quantity (e.g. 8Gi)"),
                );
            }
        },
    };
    check_cell(spec.action, shares, memory.is_some())?;
    check_fallback(spec, &fallback)?;
    Ok(DraSettings {
        shares,
        memory,
        fallback,
    })
}

/// The cells of the action x mode table that are errors.
fn check_cell(
    action: Action,
    shares: ConsumableShares,
    has_memory: bool,
) -> Result<(), FieldError> {
    use ConsumableShares::*;
    let mode = format!("consumableShares {shares}");
    match (action, shares) {
        (Action::Exclusive | Action::Mig, Unlimited) => err(
            "action",
            format!(
                "{} claims cannot hold a device alone under {mode}: the driver then gives every device's memory a request default of 0, so claims that ask nothing consume nothing and any number of them share the device (KEP-5075); serve this rule from a driver install in disabled, \"<N>\" or memory mode (dra.consumableShares)",
                action.as_str()
            ),
        ),
        (Action::Timeslice, Disabled) => err(
            "action",
            format!(
                "timeslice needs the driver's ConsumableShares: under {mode} every GPU goes to one claim, so each pod would hold a whole GPU; enable the driver's ConsumableShares with consumableShares \"<N>\" or memory and say so in spec.dra.consumableShares, or use action exclusive"
            ),
        ),
        (Action::Timeslice, Memory) if !has_memory => err(
            "dra.memory",
            format!(
                "is needed under {mode}: a timeslice claim that asks no memory takes the whole GPU (the driver's request default), so say what a pod without gpu-slicer.io/gpu-memory asks for (e.g. memory: 8Gi)"
            ),
        ),
        (_, Memory) if has_memory && action != Action::Timeslice => err(
            "dra.memory",
            format!(
                "only applies to timeslice rules; {} claims take the whole device",
                action.as_str()
            ),
        ),
        (_, Disabled | Shares(_) | Unlimited) if has_memory => err(
            "dra.memory",
            format!("only applies under consumableShares memory, not {mode}"),
        ),
        _ => Ok(()),
    }
}

/// `mig.fallback`: each a profile the rule allows, larger than (holding at least the compute and
/// memory of) the rule's profile, listed once.
fn check_fallback(spec: &RuleSpec, fallback: &[String]) -> Result<(), FieldError> {
    let Some(mig) = &spec.mig else {
        return Ok(());
    };
    let allowed: &[String] = if mig.allowed_profiles.is_empty() {
        std::slice::from_ref(&mig.profile)
    } else {
        &mig.allowed_profiles
    };
    for (j, p) in fallback.iter().enumerate() {
        let field = format!("mig.fallback[{j}]");
        if !allowed.contains(p) {
            return err(
                &field,
                format!(
                    "{p:?} must be one of mig.allowedProfiles: a fallback is a slice the namespace may have"
                ),
            );
        }
        if !is_larger(p, &mig.profile) {
            return err(
                &field,
                format!(
                    "{p:?} must be larger than mig.profile {:?} (at least its compute and memory): a pod sized for {:?} must fit the slice it falls back to",
                    mig.profile, mig.profile
                ),
            );
        }
        if fallback[..j].contains(p) {
            return err(&field, format!("{p:?} is listed twice"));
        }
    }
    Ok(())
}

/// Whether profile `a` holds at least what `b` does, and is another profile.
pub fn is_larger(a: &str, b: &str) -> bool {
    match (catalog_size(a), catalog_size(b)) {
        (Some((ca, ma)), Some((cb, mb))) => a != b && ca >= cb && ma >= mb,
        _ => false,
    }
}

/// `(compute slices, memory GB)` from a profile name (`3g.40gb` -> (3, 40); `1g.10gb+me` -> (1, 10)).
fn catalog_size(profile: &str) -> Option<(u32, u32)> {
    if !catalog::is_known_mig_profile(profile) {
        return None;
    }
    let base = profile.split('+').next()?;
    let (g, mem) = base.split_once("g.")?;
    Some((g.parse().ok()?, mem.strip_suffix("gb")?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_the_driver_reads_them() {
        assert_eq!("disabled".parse(), Ok(ConsumableShares::Disabled));
        assert_eq!("4".parse(), Ok(ConsumableShares::Shares(4)));
        assert_eq!("memory".parse(), Ok(ConsumableShares::Memory));
        assert_eq!("unlimited".parse(), Ok(ConsumableShares::Unlimited));
        assert!("0".parse::<ConsumableShares>().is_err());
        assert!("-2".parse::<ConsumableShares>().is_err());
        assert!("shares".parse::<ConsumableShares>().is_err());
        assert_eq!(ConsumableShares::Shares(7).to_string(), "7");
    }

    #[test]
    fn larger_means_at_least_the_compute_and_the_memory() {
        assert!(is_larger("2g.20gb", "1g.10gb"));
        assert!(is_larger("1g.20gb", "1g.10gb"));
        assert!(!is_larger("1g.10gb", "1g.10gb"));
        assert!(!is_larger("1g.20gb", "2g.20gb"));
        assert!(!is_larger("1g.10gb", "2g.20gb"));
    }
}
