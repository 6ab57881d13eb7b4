//! The `gpu-slicer.io/` pod annotations in one place: those developers write (their asks) and those
//! the webhook writes (its record).
//!
//! Imports: nothing of this crate (the lowest layer).

/// Developer annotation: ask for a specific MIG profile.
pub const PROFILE_ANNOTATION: &str = "gpu-slicer.io/profile";
/// Developer annotation: ask for at least this much GPU memory (a Kubernetes quantity).
pub const GPU_MEMORY_ANNOTATION: &str = "gpu-slicer.io/gpu-memory";
/// Developer annotation: `"true"` keeps whole GPUs where the rule allows opting out.
pub const EXCLUSIVE_ANNOTATION: &str = "gpu-slicer.io/exclusive";
/// Pod annotation that records what the webhook rewrote.
pub const REWRITTEN_ANNOTATION: &str = "gpu-slicer.io/rewritten";
/// Pod annotation: the GPU-equivalents the pod holds (a decimal), set by the webhook.
pub const EQUIVALENTS_ANNOTATION: &str = "gpu-slicer.io/gpu-equivalents";
/// Pod annotation: the whole GPUs the pod's requests stand for (what it asked before any rewrite).
pub const REQUESTED_ANNOTATION: &str = "gpu-slicer.io/requested-gpus";
