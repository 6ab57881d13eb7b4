//! DRA claims: the pod's own GPU claims (which no rule may bypass), gpu-slicer's claims already in
//! the pod (our own output, reinvoked), and the ResourceClaim a `backend: dra` rule gives instead of
//! `nvidia.com/gpu`.

use json_patch::{PatchOperation, RemoveOperation};
use serde_json::Value;

use crate::annotations::GPU_MEMORY_ANNOTATION;
use crate::audit::Change;
use crate::dra;
use crate::dra::claims;
use crate::dra::claims::{ClaimFacts, ClaimSource, ClaimVerdict};
use crate::pod::{Pod, Section};
use crate::policy::{Backend, WHOLE_GPU};

use super::Decider;
use super::rename::{add, pointer};
use super::scan::{GpuUse, Kind, slicer_claims};
use super::sizing::dra_offer;

/// One of the pod's own claims that asks for GPUs, or could not be read.
#[derive(Debug)]
pub(super) struct OwnClaim<'p> {
    pub(super) entry: &'p str,
    pub(super) source: ClaimSource<'p>,
    pub(super) verdict: ClaimVerdict,
}

impl OwnClaim<'_> {
    /// `ResourceClaim "gpu" (ResourceClaimTemplate my-gpus) requests DeviceClass gpu.nvidia.com`, or
    /// why it could not be checked.
    pub(super) fn describe(&self) -> String {
        let what = format!(
            "ResourceClaim {:?} ({})",
            self.entry,
            self.source.describe()
        );
        match &self.verdict {
            ClaimVerdict::Gpu { device_class } => {
                format!("{what} requests DeviceClass {device_class}")
            }
            ClaimVerdict::Unreadable(why) => {
                format!("{what} could not be checked for GPUs ({why})")
            }
            ClaimVerdict::NotGpu => what,
        }
    }
}

pub(super) fn own_gpu_claims<'p>(pod: &'p Pod, facts: &ClaimFacts) -> Vec<OwnClaim<'p>> {
    claims::own_claims(pod)
        .map(|(c, source)| OwnClaim {
            entry: &c.name,
            source,
            verdict: facts.verdict(&c.name),
        })
        .filter(|c| c.verdict != ClaimVerdict::NotGpu)
        .collect()
}

impl Decider<'_> {
    /// Claims the pod already makes from gpu-slicer's templates must be ones its rule offers.
    pub(super) fn check_slicer_claims(&self) -> Result<(), String> {
        let rule = self.rule;
        for (_, template) in slicer_claims(self.pod) {
            let offered = dra::templates(rule).iter().any(|t| t.name == template);
            if !offered {
                let gives = if rule.backend == Backend::Dra {
                    dra_offer(rule)
                } else {
                    format!(
                        "no claims: it uses the device plugin ({} {})",
                        rule.action.as_str(),
                        rule.backend.as_str()
                    )
                };
                return Err(format!(
                    "claim template {template} is not offered in namespace {:?}: rule {} gives {gives}; ask for nvidia.com/gpu instead",
                    self.ns.name, rule.name
                ));
            }
        }
        Ok(())
    }

    /// `backend: dra`: each whole-GPU request becomes a claim from the template that gives it (the
    /// extended resource removed from limits and requests, `resources.claims` in the container, one
    /// `spec.resourceClaims` entry per claim). App containers each get their own claim; an init
    /// container reuses an app container's claim of the same template, as the device plugin reuses
    /// init containers' devices for app containers (the pod holds the larger of the two sets).
    /// Returns the templates of the claims it adds.
    pub(super) fn claim(
        &self,
        profile: Option<&str>,
        patch: &mut Vec<PatchOperation>,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<String>, String> {
        let whole: Vec<&GpuUse> = self.uses.iter().filter(|u| u.kind == Kind::Whole).collect();
        if whole.is_empty() {
            return Ok(Vec::new());
        }
        let existing = self.pod.spec.resource_claims.as_deref().unwrap_or(&[]);
        if let Some(own) = existing
            .iter()
            .find(|c| !slicer_claims(self.pod).any(|(name, _)| name == c.name))
        {
            return Err(format!(
                "the pod has its own ResourceClaim {:?} and also asks for {WHOLE_GPU}; in namespace {:?} GPUs come as claims from gpu-slicer's templates (rule {}, DRA): drop {WHOLE_GPU}, or reference one of {} in the pod's resourceClaims yourself",
                own.name,
                self.ns.name,
                self.rule.name,
                dra_offer(self.rule)
            ));
        }
        // App containers first, so init containers can reuse their claims.
        let mut ordered = whole;
        ordered.sort_by_key(|u| (u.section == Section::InitContainers, u.index));
        let mut added: Vec<(String, String)> = Vec::new();
        for u in ordered {
            let template = dra::template_for(
                self.rule,
                profile,
                u.count.unwrap_or(1),
                self.pod.annotation(GPU_MEMORY_ANNOTATION),
            )?;
            let reuse = (u.section == Section::InitContainers)
                .then(|| added.iter().find(|(_, t)| *t == template.name))
                .flatten()
                .map(|(name, _)| name.clone());
            let claim = match reuse {
                Some(name) => name,
                None => {
                    let name = match u.section {
                        Section::Containers => format!("{}{}", dra::PREFIX, u.index),
                        Section::InitContainers => format!("{}init-{}", dra::PREFIX, u.index),
                    };
                    // Our name taken already (a pod edited by hand): adding it again would make
                    // the API server refuse the pod with a duplicate name.
                    if existing.iter().any(|c| c.name == name) {
                        return Err(format!(
                            "container {:?} asks for {WHOLE_GPU} but the pod already has a claim named {name:?}; drop one of the two",
                            u.container
                        ));
                    }
                    added.push((name.clone(), template.name.clone()));
                    name
                }
            };
            let index = u.index.to_string();
            for (present, field) in [(u.in_limits, "limits"), (u.in_requests, "requests")] {
                if present {
                    patch.push(PatchOperation::Remove(RemoveOperation {
                        path: pointer(&[
                            "spec",
                            u.section.field(),
                            &index,
                            "resources",
                            field,
                            WHOLE_GPU,
                        ]),
                    }));
                }
            }
            let has_claims = self
                .pod
                .all_containers()
                .find(|(s, i, _)| *s == u.section && *i == u.index)
                .and_then(|(_, _, c)| c.resources.as_ref())
                .is_some_and(|r| r.claims.is_some());
            let entry = serde_json::json!({ "name": claim });
            let at = ["spec", u.section.field(), &index, "resources", "claims"];
            if has_claims {
                patch.push(add(&[&at[..], &["-"]].concat(), entry));
            } else {
                patch.push(add(&at, Value::Array(vec![entry])));
            }
            changes.push(Change {
                container: u.label(),
                from: WHOLE_GPU.into(),
                to: format!("claim {} ({}, DRA)", template.name, template.describe()),
                quantity: u.quantity_text(),
            });
        }
        let templates = added.iter().map(|(_, t)| t.clone()).collect();
        let entries = added
            .into_iter()
            .map(|(name, template)| {
                serde_json::json!({ "name": name, "resourceClaimTemplateName": template })
            });
        if self.pod.spec.resource_claims.is_none() {
            patch.push(add(
                &["spec", "resourceClaims"],
                Value::Array(entries.collect()),
            ));
        } else {
            for entry in entries {
                patch.push(add(&["spec", "resourceClaims", "-"], entry));
            }
        }
        Ok(templates)
    }
}
