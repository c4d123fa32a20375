//! Writing and reading checkpoint and model directories (native only).
//!
//! Directories are replaced atomically: every file is written into `.NAME.tmp` next to the
//! target and fsynced, the temp directory is fsynced, then the old directory (if any) is
//! renamed to `.NAME.old`, the temp directory renamed to `NAME`, the parent fsynced, and the
//! old one removed. An interrupted write leaves the previous directory intact (at `NAME`, or
//! at `.NAME.old` if the process died between the two renames — the next write or load puts
//! it back). POSIX cannot rename over a non-empty directory, hence the two renames.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::checkpoint::{
    CONFIG_FILE, CheckpointError, Contents, MODEL_FILE, OPTIMIZER_FILE, Restored, STATE_FILE,
    TrainerState, adapter_checkpoint_files_async, all_f32, checkpoint_contents, model_contents,
    restore,
};
use super::optim::AdamW;
use crate::model::save::SaveError;
use crate::model::{Config, HybridModel};

/// Errors writing or reading a directory.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: missing (not a complete checkpoint)")]
    Missing(PathBuf),
    #[error("`{0}` is not a plain file name")]
    BadName(String),
    #[error("{dir}: {source}")]
    Checkpoint {
        dir: PathBuf,
        source: CheckpointError,
    },
    #[error("{0}")]
    Save(#[from] SaveError),
    #[error("{0}")]
    Load(Box<crate::model::files::LoadError>),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `(.NAME.tmp, .NAME.old)` next to `dir`.
fn siblings(dir: &Path) -> Result<(PathBuf, PathBuf), FilesError> {
    let name = dir
        .file_name()
        .ok_or_else(|| FilesError::BadName(dir.display().to_string()))?
        .to_string_lossy()
        .into_owned();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    Ok((
        parent.join(format!(".{name}.tmp")),
        parent.join(format!(".{name}.old")),
    ))
}

/// Puts back a directory left at `.NAME.old` by an interrupted replace.
fn recover(dir: &Path) -> Result<(), FilesError> {
    let (_, old) = siblings(dir)?;
    if !dir.exists() && old.is_dir() {
        tracing::warn!(
            "restoring {} from {} (an earlier write was interrupted)",
            dir.display(),
            old.display()
        );
        std::fs::rename(&old, dir).map_err(io(dir))?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), FilesError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// Writes `files` (plain names → bytes) as the directory `dir`, replacing any previous one
/// atomically (see the module docs).
pub fn write_dir_atomic(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), FilesError> {
    write_dir_atomic_failing_after(dir, files, None)
}

/// [`write_dir_atomic`] that fails with an I/O error after writing `fail_after` files
/// (`Some(n)`), to test interrupted writes.
#[doc(hidden)]
pub fn write_dir_atomic_failing_after(
    dir: &Path,
    files: &[(String, Vec<u8>)],
    fail_after: Option<usize>,
) -> Result<(), FilesError> {
    let files = files
        .iter()
        .map(|(n, b)| (n.clone(), Contents::Bytes(b.as_slice().into())))
        .collect();
    replace_dir(dir, files, fail_after)
}

/// Writes `files` as the directory `dir`, each streamed to its file (tensor by tensor for
/// models and optimizer states), replacing any previous directory atomically.
pub fn write_contents_atomic(dir: &Path, files: Vec<(String, Contents)>) -> Result<(), FilesError> {
    replace_dir(dir, files, None)
}

fn replace_dir(
    dir: &Path,
    files: Vec<(String, Contents)>,
    fail_after: Option<usize>,
) -> Result<(), FilesError> {
    for (name, _) in &files {
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|f| f == name.as_str());
        if !plain || name.starts_with('.') {
            return Err(FilesError::BadName(name.clone()));
        }
    }
    recover(dir)?;
    let (tmp, old) = siblings(dir)?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    if let Some(parent) = tmp.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let written = (|| {
        for (i, (name, contents)) in files.into_iter().enumerate() {
            let path = tmp.join(&name);
            if fail_after == Some(i) {
                return Err(FilesError::Io {
                    path,
                    source: std::io::Error::other("simulated failure"),
                });
            }
            write_file(dir, &path, contents)?;
        }
        sync_dir(&tmp)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    let replacing = dir.exists();
    if replacing {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    if replacing {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Streams `contents` into a new file at `path` (through a 1 MiB buffer) and fsyncs it;
/// errors of the contents name `dir`, the folder being written.
fn write_file(dir: &Path, path: &Path, contents: Contents) -> Result<(), FilesError> {
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    pollster::block_on(contents.write_to(&mut w)).map_err(|source| FilesError::Checkpoint {
        dir: dir.to_path_buf(),
        source,
    })?;
    let file = w.into_inner().map_err(|e| io(path)(e.into_error()))?;
    file.sync_all().map_err(io(path))
}

/// Saves `model` as a Hugging Face model folder (`config.json`, `model.safetensors`, plus
/// `extra` files such as `tokenizer.json`), atomically, streaming the weights tensor by
/// tensor. `sluice generate` and transformers load it.
pub fn save_model_dir(
    dir: &Path,
    cfg: &Config,
    model: &HybridModel,
    extra: &[(String, Vec<u8>)],
) -> Result<(), FilesError> {
    let mut files = model_contents(cfg, model, &all_f32);
    files.extend(extra_contents(extra));
    write_contents_atomic(dir, files)
}

fn extra_contents(extra: &[(String, Vec<u8>)]) -> impl Iterator<Item = (String, Contents<'_>)> {
    extra
        .iter()
        .map(|(n, b)| (n.clone(), Contents::Bytes(b.as_slice().into())))
}

/// Saves a training checkpoint (model folder + optimizer + trainer state + `extra` files)
/// to `dir`, atomically, streaming the weights and moments tensor by tensor.
pub fn save_checkpoint(
    dir: &Path,
    cfg: &Config,
    model: &HybridModel,
    optimizer: &AdamW,
    state: &TrainerState,
    extra: &[(String, Vec<u8>)],
) -> Result<(), FilesError> {
    let mut files = checkpoint_contents(cfg, model, optimizer, state).map_err(|source| {
        FilesError::Checkpoint {
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    files.extend(extra_contents(extra));
    write_contents_atomic(dir, files)
}

/// Saves a LoRA checkpoint (see [`super::checkpoint::adapter_checkpoint_files_async`]) to
/// `dir`, atomically; `base` names the base model in `adapter_config.json`.
pub fn save_adapter_checkpoint(
    dir: &Path,
    model: &HybridModel,
    optimizer: &AdamW,
    state: &TrainerState,
    base: &str,
) -> Result<(), FilesError> {
    let files = pollster::block_on(adapter_checkpoint_files_async(
        model, optimizer, state, base,
    ))
    .map_err(|source| FilesError::Checkpoint {
        dir: dir.to_path_buf(),
        source,
    })?;
    write_dir_atomic(dir, &files)
}

/// Loads a LoRA checkpoint written by [`save_adapter_checkpoint`]: attaches its adapters to
/// `base` (loaded by the caller, on an autodiff device) and reads the optimizer and state.
pub fn load_adapter_checkpoint(
    dir: &Path,
    cfg: &Config,
    base: HybridModel,
    device: &Device,
) -> Result<(HybridModel, AdamW, TrainerState), FilesError> {
    recover(dir)?;
    let checkpoint = |source: CheckpointError| FilesError::Checkpoint {
        dir: dir.to_path_buf(),
        source,
    };
    let state = TrainerState::from_json(&read_text(dir, STATE_FILE)?).map_err(checkpoint)?;
    let optimizer = read_file(dir, OPTIMIZER_FILE)?;
    let (model, _) = crate::model::files::load_adapter_dir(base, cfg, dir, device)
        .map_err(|e| FilesError::Load(Box::new(e)))?;
    let optimizer = AdamW::from_safetensors(&optimizer, device)
        .map_err(|e| checkpoint(CheckpointError::Optimizer(e)))?;
    optimizer
        .check_against(&model)
        .map_err(|e| checkpoint(CheckpointError::Optimizer(e)))?;
    Ok((model, optimizer, state))
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, FilesError> {
    let path = dir.join(name);
    crate::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FilesError::Missing(path.clone()),
        _ => FilesError::Io {
            path: path.clone(),
            source: e,
        },
    })
}

/// Memory-maps `dir/name` (read-only), so loading copies one tensor at a time.
fn map_file(dir: &Path, name: &str) -> Result<memmap2::Mmap, FilesError> {
    let path = dir.join(name);
    let file = crate::fs::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FilesError::Missing(path.clone()),
        _ => FilesError::Io {
            path: path.clone(),
            source: e,
        },
    })?;
    // SAFETY: read-only map of a checkpoint file nothing else writes while it loads (every
    // write goes to a new file that replaces the folder by rename).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(&path))
}

fn read_text(dir: &Path, name: &str) -> Result<String, FilesError> {
    String::from_utf8(read_file(dir, name)?).map_err(|e| FilesError::Io {
        path: dir.join(name),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Loads a checkpoint written by [`save_checkpoint`] onto `device` (an autodiff device to
/// continue training).
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<Restored, FilesError> {
    recover(dir)?;
    let config = read_text(dir, CONFIG_FILE)?;
    let model = map_file(dir, MODEL_FILE)?;
    let optimizer = map_file(dir, OPTIMIZER_FILE)?;
    let state = read_text(dir, STATE_FILE)?;
    restore(&config, Box::new(model), &optimizer, &state, device).map_err(|source| {
        FilesError::Checkpoint {
            dir: dir.to_path_buf(),
            source,
        }
    })
}
