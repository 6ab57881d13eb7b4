//! NVIDIA GPU Operator configuration as gpu-slicer reads it: mig-parted configs (the names
//! `nvidia.com/mig.config` can take) and the device plugin's named configs (the names
//! `nvidia.com/device-plugin.config` can take), recognised by content, not by ConfigMap name.
//!
//! Field names follow the upstream Go structs: mig-parted `pkg/config/v1` (`mig-configs`,
//! `device-filter`, `devices`, `mig-enabled`, `mig-devices`) and the device plugin's
//! `api/config/v1` (`sharing.timeSlicing` / `sharing.mps`, `renameByDefault`,
//! `failRequestsGreaterThanOne`, `resources[].name|rename|replicas|devices`).
//!
//! Imports (of this crate): [`crate::catalog`], [`crate::policy`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::catalog::GpuModel;

/// The GPU Operator's default mig-parted configs (`data/`, copied from NVIDIA/gpu-operator).
pub const DEFAULT_MIG_PARTED: &str =
    include_str!("../../../data/gpu-operator-default-mig-parted-config.yaml");

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// One entry of a mig-parted config: a layout for the devices it selects.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigConfigEntry {
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub device_filter: Vec<String>,
    #[serde(default)]
    pub devices: serde_json::Value,
    pub mig_enabled: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mig_devices: BTreeMap<String, u32>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl MigConfigEntry {
    fn applies_to(&self, gpu: &GpuModel) -> bool {
        self.device_filter.is_empty()
            || self
                .device_filter
                .iter()
                .any(|f| gpu.pci_ids.iter().any(|id| id.eq_ignore_ascii_case(f)))
    }
}

#[derive(Debug, Deserialize)]
struct MigPartedFile {
    #[serde(rename = "mig-configs")]
    mig_configs: BTreeMap<String, Vec<MigConfigEntry>>,
}

/// A set of mig-parted configs and where they came from.
#[derive(Debug, Clone)]
pub struct MigConfigs {
    pub source: String,
    pub configs: BTreeMap<String, Vec<MigConfigEntry>>,
}

/// What a MIG config does to one GPU model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigLayout {
    /// MIG off: whole GPUs.
    Disabled,
    /// MIG on, with these instances per GPU.
    Enabled(BTreeMap<String, u32>),
}

impl MigConfigs {
    pub fn parse(text: &str, source: &str) -> Result<MigConfigs, ConfigError> {
        let file: MigPartedFile = serde_norway::from_str(text).map_err(|e| ConfigError {
            path: source.to_string(),
            message: e.to_string(),
        })?;
        Ok(MigConfigs {
            source: source.to_string(),
            configs: file.mig_configs,
        })
    }

    /// The GPU Operator's built-in configs.
    pub fn defaults() -> MigConfigs {
        let doc: serde_json::Value = serde_norway::from_str(DEFAULT_MIG_PARTED).unwrap_or_default();
        let text = doc
            .pointer("/data/config.yaml")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        // Embedded and covered by a test: cannot fail in a released binary.
        MigConfigs::parse(text, "the GPU Operator's default mig-parted config")
            .unwrap_or_else(|e| panic!("embedded default mig-parted config: {e}"))
    }

    /// The layout `config` gives `gpu`: `None` if there is no such config, `Some(None)` if the config
    /// has no entry for that GPU.
    pub fn layout(&self, config: &str, gpu: &GpuModel) -> Option<Option<MigLayout>> {
        let entries = self.configs.get(config)?;
        Some(entries.iter().find(|e| e.applies_to(gpu)).map(|e| {
            if e.mig_enabled {
                MigLayout::Enabled(e.mig_devices.clone())
            } else {
                MigLayout::Disabled
            }
        }))
    }
}

/// A device plugin config (`version: v1`). Unknown top-level keys are errors: the plugin ignores them,
/// so a misspelt `flages:` would silently leave its strategy at the default.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DevicePluginConfig {
    pub version: String,
    #[serde(default)]
    pub flags: Option<Flags>,
    /// `resources` and `imex` (the plugin's `api/config/v1` Config), not read here.
    #[serde(default)]
    pub resources: Option<serde_json::Value>,
    #[serde(default)]
    pub imex: Option<serde_json::Value>,
    #[serde(default)]
    pub sharing: Option<Sharing>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flags {
    #[serde(default)]
    pub mig_strategy: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sharing {
    #[serde(default)]
    pub time_slicing: Option<ReplicatedResources>,
    #[serde(default)]
    pub mps: Option<ReplicatedResources>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicatedResources {
    #[serde(default)]
    pub rename_by_default: bool,
    #[serde(default)]
    pub fail_requests_greater_than_one: Option<bool>,
    #[serde(default)]
    pub resources: Vec<ReplicatedResource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicatedResource {
    pub name: String,
    #[serde(default)]
    pub rename: Option<String>,
    pub replicas: u32,
    #[serde(default)]
    pub devices: Option<serde_json::Value>,
}

/// How a device plugin config shares GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharingMode {
    TimeSlicing,
    Mps,
}

impl SharingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SharingMode::TimeSlicing => "time-slicing",
            SharingMode::Mps => "MPS",
        }
    }
}

impl DevicePluginConfig {
    /// The sharing section in use, if any (the device plugin refuses both at once).
    pub fn sharing(&self) -> Option<(SharingMode, &ReplicatedResources)> {
        let s = self.sharing.as_ref()?;
        match (&s.time_slicing, &s.mps) {
            (Some(t), _) if !t.resources.is_empty() => Some((SharingMode::TimeSlicing, t)),
            (_, Some(m)) if !m.resources.is_empty() => Some((SharingMode::Mps, m)),
            _ => None,
        }
    }
}

impl ReplicatedResources {
    /// The name a shared resource is advertised under (`renameByDefault: true` gives `<name>.shared`;
    /// the device plugin's `api/config/v1/resources.go`).
    pub fn advertised_name(&self, r: &ReplicatedResource) -> String {
        match &r.rename {
            Some(rename) if !rename.is_empty() => rename.clone(),
            _ if self.rename_by_default => format!("{}.shared", r.name),
            _ => r.name.clone(),
        }
    }
}

/// The device plugin's MIG strategy (`none | single | mixed`): how it advertises MIG devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMigStrategy {
    /// MIG devices are not advertised.
    None,
    /// Every MIG device as `nvidia.com/gpu`; all MIG devices of a node must be one profile.
    Single,
    /// Each profile as `nvidia.com/mig-<profile>`.
    Mixed,
}

impl DeviceMigStrategy {
    pub fn parse(s: &str) -> Option<DeviceMigStrategy> {
        match s {
            "none" => Some(DeviceMigStrategy::None),
            "single" => Some(DeviceMigStrategy::Single),
            "mixed" => Some(DeviceMigStrategy::Mixed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceMigStrategy::None => "none",
            DeviceMigStrategy::Single => "single",
            DeviceMigStrategy::Mixed => "mixed",
        }
    }
}

/// What a rule's `mig.strategy` expects the device plugin to run with.
impl From<crate::policy::MigStrategy> for DeviceMigStrategy {
    fn from(s: crate::policy::MigStrategy) -> Self {
        match s {
            crate::policy::MigStrategy::Mixed => DeviceMigStrategy::Mixed,
            crate::policy::MigStrategy::Single => DeviceMigStrategy::Single,
        }
    }
}

/// The MIG strategy a node's device plugin runs with, and what says so (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveStrategy {
    pub strategy: DeviceMigStrategy,
    pub source: String,
}

/// Everything read from `--gpu-operator DIR`.
#[derive(Debug, Clone)]
pub struct GpuOperatorConfigs {
    /// Custom mig-parted configs, which replace the defaults (the operator's `migManager.config.name`);
    /// the GPU Operator's defaults when none was found.
    pub mig: MigConfigs,
    /// Whether `mig` is the built-in default set.
    pub mig_is_default: bool,
    /// Device plugin configs by name, with the file they came from.
    pub device_plugin: BTreeMap<String, (DevicePluginConfig, String)>,
    /// The GPU Operator's `mig.strategy` (Helm values) or `spec.mig.strategy` (ClusterPolicy), with
    /// where it was read; `None` when neither was among the files.
    pub operator_mig_strategy: Option<(DeviceMigStrategy, String)>,
    /// The device plugin config of nodes without the `nvidia.com/device-plugin.config` label: the
    /// operator's `devicePlugin.config.default`, when read.
    pub default_plugin_config: Option<String>,
    /// Whether these configs were read from files (`--gpu-operator`), rather than assumed.
    pub from_files: bool,
}

impl Default for GpuOperatorConfigs {
    fn default() -> Self {
        GpuOperatorConfigs {
            mig: MigConfigs::defaults(),
            mig_is_default: true,
            device_plugin: BTreeMap::new(),
            operator_mig_strategy: None,
            default_plugin_config: None,
            from_files: false,
        }
    }
}

/// Top-level keys of the GPU Operator chart's values that mark a YAML document as its Helm values.
const OPERATOR_VALUE_KEYS: &[&str] = &["mig", "migManager", "devicePlugin", "driver", "toolkit"];

/// The `mig.strategy` a GPU Operator document sets: a ClusterPolicy's `spec.mig.strategy`, or the Helm
/// values' `mig.strategy` (the chart's default, `single`, when the values leave it out). `Ok(None)`
/// for other documents, and for a ClusterPolicy without one (the operator then sets no `MIG_STRATEGY`
/// and each node's device plugin config decides).
fn operator_strategy(doc: &serde_json::Value) -> Result<Option<DeviceMigStrategy>, String> {
    let (value, default) = match (
        doc.get("apiVersion"),
        doc.get("kind").and_then(|k| k.as_str()),
    ) {
        (Some(_), Some("ClusterPolicy")) => (doc.pointer("/spec/mig/strategy"), None),
        (None, None)
            if doc
                .as_object()
                .is_some_and(|o| OPERATOR_VALUE_KEYS.iter().any(|k| o.contains_key(*k))) =>
        {
            // A misspelling that circulates in public copies; the chart ignores unknown keys.
            if doc.pointer("/mixed/strategy").is_some() {
                return Err(
                    "mixed.strategy is not a GPU Operator value (the chart ignores it): the key is mig.strategy".into(),
                );
            }
            (
                doc.pointer("/mig/strategy"),
                Some(DeviceMigStrategy::Single),
            )
        }
        _ => return Ok(None),
    };
    match value.and_then(|v| v.as_str()) {
        None => Ok(default),
        Some(s) => DeviceMigStrategy::parse(s)
            .map(Some)
            .ok_or_else(|| format!("mig.strategy {s:?} must be none, single or mixed")),
    }
}

impl GpuOperatorConfigs {
    /// Recognises ConfigMaps by content, and the operator's MIG strategy from a ClusterPolicy or Helm
    /// values, among `(origin, object)` pairs: files' documents (`input::gpu_operator_configs`) or
    /// objects read from a cluster (`doctor`).
    pub fn from_documents(
        docs: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> Result<GpuOperatorConfigs, ConfigError> {
        let mut out = GpuOperatorConfigs::default();
        let mut custom: Option<MigConfigs> = None;
        for (path, doc) in docs {
            let strategy = operator_strategy(&doc).map_err(|message| ConfigError {
                path: path.clone(),
                message,
            })?;
            if let Some(strategy) = strategy {
                let (what, at) = if doc.get("kind").is_some() {
                    (
                        "ClusterPolicy spec.mig.strategy",
                        "/spec/devicePlugin/config/default",
                    )
                } else {
                    ("Helm values mig.strategy", "/devicePlugin/config/default")
                };
                out.operator_mig_strategy = Some((strategy, format!("{what} in {path}")));
                if let Some(name) = doc.pointer(at).and_then(|v| v.as_str()) {
                    out.default_plugin_config = Some(name.to_string());
                }
            }
            if doc.get("kind").and_then(|k| k.as_str()) != Some("ConfigMap") {
                continue;
            }
            let cm = doc
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .unwrap_or("?")
                .to_string();
            let Some(data) = doc.get("data").and_then(|d| d.as_object()) else {
                continue;
            };
            for (key, value) in data {
                let Some(text) = value.as_str() else { continue };
                let origin = format!("{path}: ConfigMap {cm} data.{key}");
                let Ok(parsed) = serde_norway::from_str::<serde_json::Value>(text) else {
                    continue;
                };
                if parsed.get("mig-configs").is_some() {
                    let configs = MigConfigs::parse(text, &origin)?;
                    match &mut custom {
                        Some(existing) => existing.configs.extend(configs.configs),
                        None => custom = Some(configs),
                    }
                } else if parsed.get("version").and_then(|v| v.as_str()) == Some("v1")
                    && (parsed.get("flags").is_some() || parsed.get("sharing").is_some())
                {
                    let config: DevicePluginConfig =
                        serde_json::from_value(parsed).map_err(|e| ConfigError {
                            path: origin.clone(),
                            message: format!("not a device plugin config: {e}"),
                        })?;
                    out.device_plugin.insert(key.clone(), (config, origin));
                }
            }
        }
        if let Some(custom) = custom {
            out.mig = custom;
            out.mig_is_default = false;
        }
        out.from_files = true;
        Ok(out)
    }

    /// The MIG strategy of a node whose device plugin uses the named config. The GPU Operator passes its
    /// `mig.strategy` to the plugin as the `MIG_STRATEGY` environment variable (gpu-operator
    /// `applyMIGConfiguration`), and the plugin ranks environment over config file (its README,
    /// "Configuring the NVIDIA device plugin binary"), so the operator's setting wins; without it the
    /// config's `flags.migStrategy` decides, else the operator's default, `single`. `None` when nothing
    /// was read from files: the strategy is unknown.
    pub fn mig_strategy(&self, plugin_config: Option<&str>) -> Option<EffectiveStrategy> {
        if let Some((strategy, source)) = &self.operator_mig_strategy {
            return Some(EffectiveStrategy {
                strategy: *strategy,
                source: format!("the GPU Operator's {source}"),
            });
        }
        // A node without the label runs the operator's default config (conventionally `default`).
        let name = plugin_config
            .or(self.default_plugin_config.as_deref())
            .or_else(|| {
                self.device_plugin
                    .contains_key("default")
                    .then_some("default")
            });
        let named = name.and_then(|n| self.device_plugin.get(n).map(|c| (n, c)));
        if let Some((name, (config, _))) = named
            && let Some(s) = config
                .flags
                .as_ref()
                .and_then(|f| f.mig_strategy.as_deref())
            && let Some(strategy) = DeviceMigStrategy::parse(s)
        {
            return Some(EffectiveStrategy {
                strategy,
                source: format!("flags.migStrategy of device plugin config {name}"),
            });
        }
        self.from_files.then(|| EffectiveStrategy {
            strategy: DeviceMigStrategy::Single,
            source: "the GPU Operator's default mig.strategy (no mig.strategy or flags.migStrategy given)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{self, GPUS};

    #[test]
    fn catalog_counts_match_the_gpu_operators_all_profile_configs() {
        let defaults = MigConfigs::defaults();
        let mut checked = 0;
        for (name, entries) in &defaults.configs {
            let Some(profile) = name.strip_prefix("all-") else {
                continue;
            };
            for entry in entries {
                if !entry.mig_enabled || entry.mig_devices.len() != 1 {
                    continue;
                }
                let Some(count) = entry.mig_devices.get(profile) else {
                    continue;
                };
                for gpu in GPUS.iter().filter(|g| g.mig_profile(profile).is_some()) {
                    // A filtered entry speaks for the GPUs it names; an unfiltered one for every GPU with the profile.
                    if !entry.device_filter.is_empty() && !entry.applies_to(gpu) {
                        continue;
                    }
                    assert_eq!(
                        gpu.mig_profile(profile).unwrap().max_per_gpu,
                        *count,
                        "{name} on {}",
                        gpu.name
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 20, "only {checked} (config, GPU) pairs checked");
    }

    #[test]
    fn layouts_resolve_by_device_filter() {
        let d = MigConfigs::defaults();
        let one_g = d
            .layout("all-1g.10gb", &catalog::H100_80GB)
            .unwrap()
            .unwrap();
        assert_eq!(
            one_g,
            MigLayout::Enabled(BTreeMap::from([("1g.10gb".into(), 7)]))
        );
        let forty = d
            .layout("all-1g.10gb", &catalog::A100_40GB)
            .unwrap()
            .unwrap();
        assert_eq!(
            forty,
            MigLayout::Enabled(BTreeMap::from([("1g.10gb".into(), 4)]))
        );
        let balanced = d
            .layout("all-balanced", &catalog::A100_80GB)
            .unwrap()
            .unwrap();
        assert_eq!(
            balanced,
            MigLayout::Enabled(BTreeMap::from([
                ("1g.10gb".into(), 2),
                ("2g.20gb".into(), 1),
                ("3g.40gb".into(), 1)
            ]))
        );
        assert_eq!(
            d.layout("all-disabled", &catalog::B200),
            Some(Some(MigLayout::Disabled))
        );
        assert_eq!(d.layout("no-such-config", &catalog::B200), None);
    }

    #[test]
    fn shared_resource_names_follow_the_device_plugin() {
        let c: DevicePluginConfig = serde_norway::from_str(
            "version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
        )
        .unwrap();
        let (mode, r) = c.sharing().unwrap();
        assert_eq!(mode, SharingMode::TimeSlicing);
        assert_eq!(r.advertised_name(&r.resources[0]), "nvidia.com/gpu.shared");
        let misspelled = serde_norway::from_str::<DevicePluginConfig>(
            "version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n    failRequestGreaterThanOne: true\n    resources: []\n",
        );
        assert!(
            misspelled
                .unwrap_err()
                .to_string()
                .contains("failRequestGreaterThanOne")
        );
    }
}
