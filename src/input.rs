//! Reading the offline commands' inputs (manifests, policies, inventories, NodePool and GPU Operator
//! directories, stdin) with a size cap and only from regular files, so a mistaken `-f /dev/zero`, a
//! FIFO nobody writes to or a multi-gigabyte file is an error naming the input, never a hang or an
//! out-of-memory kill.
//!
//! Imports: the core only (YAML documents, the NodePool / GPU Operator / DRA driver parsers).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use gpu_slicer_core::check::dra_driver::DriverValues;
use gpu_slicer_core::gpu_operator::{ConfigError, GpuOperatorConfigs};
use gpu_slicer_core::nodepool::{NodePoolError, NodePoolIndex};
use gpu_slicer_core::yaml;

/// The most bytes one input (a file, or stdin) may hold: 64 MiB, far above any manifest set
/// (`kubectl get -o yaml` of thousands of workloads is a few MiB) and far below a node's memory.
pub const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// The whole of a regular file (symlinks followed), at most [`MAX_INPUT_BYTES`]. A FIFO, socket or
/// device is refused before it is opened (opening a FIFO blocks until someone writes to it).
pub fn read_bytes(path: &Path) -> io::Result<Vec<u8>> {
    let kind = std::fs::metadata(path)?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a regular file ({})", describe(kind)),
        ));
    }
    capped(File::open(path)?)
}

/// [`read_bytes`] as UTF-8 text.
pub fn read_text(path: &Path) -> io::Result<String> {
    utf8(read_bytes(path)?)
}

/// All of stdin, at most [`MAX_INPUT_BYTES`], as UTF-8 text.
pub fn read_stdin() -> io::Result<String> {
    utf8(capped(io::stdin().lock())?)
}

/// Why an input could not be used; the message names the input (`stdin`, the path).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Not readable: missing, not a regular file, over [`MAX_INPUT_BYTES`], not UTF-8.
    #[error("{input}: {source}")]
    Read { input: String, source: io::Error },
    /// Read, but not what it should be (the parser's message, which names the input).
    #[error("{0}")]
    Invalid(String),
}

/// A `-f` argument: `-` is stdin, anything else a file.
pub fn read_arg(arg: &str) -> Result<String, InputError> {
    let (input, read) = if arg == "-" {
        ("stdin", read_stdin())
    } else {
        (arg, read_text(Path::new(arg)))
    };
    read.map_err(|source| InputError::Read {
        input: input.to_string(),
        source,
    })
}

/// Reads at most one byte past the limit, so an over-limit input is told apart without being held.
fn capped(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader.take(MAX_INPUT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "larger than the input limit of {} MiB (MAX_INPUT_BYTES)",
                MAX_INPUT_BYTES >> 20
            ),
        ));
    }
    Ok(bytes)
}

fn utf8(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")))
}

/// What kind of special file this is, for the error.
fn describe(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Every document of every `*.yaml` / `*.yml` file directly in `dir`, sorted by file name, with the
/// file each came from (each read through [`read_text`], so capped in size). Errors are
/// `(path, message)`.
pub fn documents_in_dir(dir: &Path) -> Result<Vec<(String, serde_json::Value)>, (String, String)> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| (shown.clone(), e.to_string()))?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let path = file.display().to_string();
        let text = read_text(&file).map_err(|e| (path.clone(), e.to_string()))?;
        for doc in yaml::documents(&text).map_err(|e| (path.clone(), e))? {
            out.push((path.clone(), doc));
        }
    }
    Ok(out)
}

/// Every NodePool in the YAML files (`*.yaml`, `*.yml`, multi-document) of a directory; other kinds
/// are skipped.
pub fn nodepools(dir: &Path) -> Result<NodePoolIndex, NodePoolError> {
    let docs =
        documents_in_dir(dir).map_err(|(path, message)| NodePoolError::Load { path, message })?;
    NodePoolIndex::from_documents(docs)
}

/// The GPU Operator ConfigMaps (and ClusterPolicy or Helm values) in the YAML files of `dir`,
/// recognised by content.
pub fn gpu_operator_configs(dir: &Path) -> Result<GpuOperatorConfigs, ConfigError> {
    let docs = documents_in_dir(dir).map_err(|(path, message)| ConfigError { path, message })?;
    GpuOperatorConfigs::from_documents(docs)
}

/// A Helm values file of the NVIDIA DRA driver's chart.
pub fn driver_values(path: &Path) -> Result<DriverValues, InputError> {
    let input = path.display().to_string();
    let text = read_text(path).map_err(|source| InputError::Read {
        input: input.clone(),
        source,
    })?;
    DriverValues::from_text(&text, input).map_err(InputError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_is_an_error_naming_the_limit() {
        let err = capped(io::repeat(b'a')).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("64 MiB"), "{err}");
        let at_limit = capped(io::repeat(b'a').take(MAX_INPUT_BYTES)).unwrap();
        assert_eq!(at_limit.len() as u64, MAX_INPUT_BYTES);
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_directories_are_refused_before_opening() {
        let err = read_bytes(Path::new("/dev/zero")).unwrap_err();
        assert!(
            err.to_string().contains("not a regular file (a device)"),
            "{err}"
        );
        let err = read_bytes(Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_invalid_data() {
        assert_eq!(
            utf8(vec![0xff]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
