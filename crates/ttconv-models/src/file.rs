//! Reading any supported checkpoint from disk, and writing safetensors atomically.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::{Checkpoint, Limits};
use crate::{st, torch};

/// The on-disk format of a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// safetensors.
    Safetensors,
    /// `torch.save` zip archive (torch >= 1.6).
    TorchZip,
    /// `torch.save` legacy format (before torch 1.6).
    TorchLegacy,
}

/// Tells the format from a file's first bytes (not from its name).
pub fn detect_format(bytes: &[u8]) -> Result<Format> {
    if torch::is_zip(bytes) {
        Ok(Format::TorchZip)
    } else if torch::is_legacy(bytes) {
        Ok(Format::TorchLegacy)
    } else if st::looks_like(bytes) {
        Ok(Format::Safetensors)
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(Error::UnknownFormat(format!(
            "first bytes [{}] are neither safetensors, a torch zip archive nor a legacy torch file",
            head.join(" ")
        )))
    }
}

/// Parses a checkpoint held in memory, of any supported format.
pub fn parse_checkpoint(bytes: &[u8], limits: &Limits) -> Result<Checkpoint> {
    Limits::check("file", bytes.len() as u64, limits.max_file_bytes)?;
    match detect_format(bytes)? {
        Format::Safetensors => st::read(bytes, limits),
        Format::TorchZip => torch::read_zip(bytes, limits),
        Format::TorchLegacy => torch::read_legacy(bytes, limits),
    }
}

/// Reads a checkpoint file: safetensors, or a PyTorch `.pt` / `.pth` in the zip or legacy
/// format (a state_dict, or one inside `{"state_dict": ...}` / `{"model": ...}`).
pub fn read_checkpoint(path: impl AsRef<Path>, limits: &Limits) -> Result<Checkpoint> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Limits::check("file", len, limits.max_file_bytes)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    parse_checkpoint(&bytes, limits)
}

/// Serialises a checkpoint to safetensors bytes.
pub fn checkpoint_to_bytes(checkpoint: &Checkpoint) -> Result<Vec<u8>> {
    st::to_bytes(checkpoint)
}

/// Writes `bytes` to `path` atomically: into a temporary file beside it, synced, then renamed
/// over `path`, so a failure leaves no half-written output. Refuses to write onto `input` (the
/// file a command read) when given.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8], input: Option<&Path>) -> Result<()> {
    let path = path.as_ref();
    if let Some(input) = input
        && same_file(input, path)
    {
        return Err(Error::WouldOverwriteInput(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ttconv-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes a checkpoint as safetensors, atomically (see [`write_atomic`]).
pub fn write_checkpoint(
    path: impl AsRef<Path>,
    checkpoint: &Checkpoint,
    input: Option<&Path>,
) -> Result<()> {
    write_atomic(path, &st::to_bytes(checkpoint)?, input)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
