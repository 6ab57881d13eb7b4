//! Reads what a pod's own ResourceClaims ask for, for the engine's [`ClaimFacts`]: the claim or template
//! each `spec.resourceClaims` entry names, then every DeviceClass it requests that is not plainly an
//! NVIDIA one. Each read has [`LOOKUP_TIMEOUT`]; whatever cannot be read is a verdict with the reason
//! (the engine then refuses the pod, never lets it pass on a guess).

use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceClaimTemplate};
use kube::Client;

use super::kubeapi;
use super::watch::LOOKUP_TIMEOUT;
use gpu_slicer_core::dra::claims::{self, ClaimFacts, ClaimSource, ClaimVerdict};

/// The API server allows at most 32 entries in `spec.resourceClaims`; more are not read.
const MAX_CLAIMS: usize = 32;

/// Verdicts on `own` (entry name, what it points at) in `namespace`.
pub async fn read(
    client: &Client,
    namespace: &str,
    own: &[(String, ClaimSource<'_>)],
) -> ClaimFacts {
    let mut facts = ClaimFacts::default();
    for (i, (entry, source)) in own.iter().enumerate() {
        let verdict = if i >= MAX_CLAIMS {
            ClaimVerdict::Unreadable(format!("more than {MAX_CLAIMS} claims"))
        } else {
            verdict(client, namespace, *source).await
        };
        facts.insert(entry, verdict);
    }
    facts
}

async fn verdict(client: &Client, namespace: &str, source: ClaimSource<'_>) -> ClaimVerdict {
    let spec = match read_spec(client, namespace, source).await {
        Ok(Some(spec)) => spec,
        Ok(None) => {
            return ClaimVerdict::Unreadable(format!(
                "{} not found in namespace {namespace}",
                source.describe()
            ));
        }
        Err(why) => return ClaimVerdict::Unreadable(why),
    };
    for class in claims::device_classes(&spec) {
        if claims::is_gpu_class(&class, None) {
            return ClaimVerdict::Gpu {
                device_class: class,
            };
        }
        let read = kubeapi::get::<DeviceClass>(client, &class);
        match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
            Ok(Ok(Some(dc))) => {
                let spec = serde_json::to_value(&dc.spec).unwrap_or_default();
                if claims::is_gpu_class(&class, Some(&spec)) {
                    return ClaimVerdict::Gpu {
                        device_class: class,
                    };
                }
            }
            // A class that does not exist allocates nothing (the claim stays pending): not a GPU.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return ClaimVerdict::Unreadable(e.to_string()),
            Err(_) => return ClaimVerdict::Unreadable(timed_out(&format!("DeviceClass {class}"))),
        }
    }
    ClaimVerdict::NotGpu
}

/// The claim spec (`ResourceClaim.spec`, or the template's `spec.spec`) as JSON.
async fn read_spec(
    client: &Client,
    namespace: &str,
    source: ClaimSource<'_>,
) -> Result<Option<serde_json::Value>, String> {
    let read = async {
        match source {
            ClaimSource::Template(name) => {
                kubeapi::get_namespaced::<ResourceClaimTemplate>(client, namespace, name)
                    .await
                    .map(|t| t.map(|t| serde_json::to_value(&t.spec.spec).unwrap_or_default()))
            }
            ClaimSource::Claim(name) => {
                kubeapi::get_namespaced::<ResourceClaim>(client, namespace, name)
                    .await
                    .map(|c| c.map(|c| serde_json::to_value(&c.spec).unwrap_or_default()))
            }
        }
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(timed_out(&source.describe())),
    }
}

fn timed_out(what: &str) -> String {
    format!(
        "reading {what}: no answer within {}s",
        LOOKUP_TIMEOUT.as_secs()
    )
}
