//! Reading checkpoint tensors by their Hugging Face names from safetensors buffers.
//!
//! The buffers are plain bytes (memory-mapped files natively, fetched bytes in a browser), so
//! this module has no filesystem access. F32, BF16 and F16 tensors are read as stored ([`Weights::raw`]) or as f32.
//! Names are normalised: the `model.language_model.` prefix of composite Qwen3.5
//! checkpoints becomes `model.`; vision-tower (`model.visual.*`) and multi-token-prediction
//! (`mtp.*`) tensors are skipped with a log line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use safetensors::Dtype;
use safetensors::tensor::Metadata;

/// Errors reading weights; each names the tensor and/or the file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    #[error("{file}: not a valid safetensors file (truncated or corrupt?): {msg}")]
    Corrupt { file: String, msg: String },
    #[error("tensor `{name}` is missing from the checkpoint ({files})")]
    Missing { name: String, files: String },
    #[error("tensor `{name}` in {file} has shape {got:?}, expected {want:?}")]
    Shape {
        name: String,
        file: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("tensor `{name}` in {file} has dtype {dtype}; supported: F32, BF16, F16")]
    Dtype {
        name: String,
        file: String,
        dtype: String,
    },
    #[error(
        "tensor `{name}` needs {bytes} bytes in one buffer, above the device's storage-binding \
         limit of {limit} bytes"
    )]
    TooLarge {
        name: String,
        bytes: u64,
        limit: u64,
    },
    #[error("tensor `{name}` holds values beyond {dtype}'s range; load it as f32 or bf16")]
    Range { name: String, dtype: &'static str },
    #[error("placing tensor `{name}` on the device: {msg}")]
    Place { name: String, msg: String },
    #[error("tensor `{name}` is stored in both {first} and {second}")]
    Duplicate {
        name: String,
        first: String,
        second: String,
    },
    #[error("tensor `{name}` in {file} holds a non-finite value ({value}) at element {index}")]
    NonFinite {
        name: String,
        file: String,
        index: usize,
        value: f32,
    },
    #[error(
        "the checkpoint holds {count} tensor(s) the configuration does not use (does config.json \
         describe this checkpoint?): {names}"
    )]
    Unused { count: usize, names: String },
}

/// The bytes of one safetensors file (a memory map natively, fetched bytes in a browser).
pub type Buffer = Box<dyn AsRef<[u8]> + Send + Sync>;

/// One safetensors buffer with its parsed header.
struct File {
    name: String,
    bytes: Buffer,
    header_len: usize,
    meta: Metadata,
}

/// A host copy of one tensor, converted to f32.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// How a tensor is stored in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    F32,
    Bf16,
    F16,
}

impl StoredDtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 | Self::F16 => 2,
        }
    }
}

/// The stored bytes of one tensor (little-endian), borrowed from its file.
#[derive(Debug, Clone, Copy)]
pub struct Raw<'a> {
    pub dtype: StoredDtype,
    pub bytes: &'a [u8],
}

impl Raw<'_> {
    /// Values `[start, end)` (in elements) as f32.
    pub fn to_f32_range(&self, start: usize, end: usize) -> Vec<f32> {
        let sz = self.dtype.size();
        let b = &self.bytes[start * sz..end * sz];
        match self.dtype {
            StoredDtype::F32 => b
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            StoredDtype::Bf16 => b
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            StoredDtype::F16 => b
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }

    /// The index of the first NaN or ±Inf value, if any (one pass over the bits).
    pub fn first_non_finite(&self) -> Option<usize> {
        match self.dtype {
            StoredDtype::F32 => self.bytes.chunks_exact(4).position(|b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000
            }),
            StoredDtype::Bf16 => (self.bytes.chunks_exact(2))
                .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80),
            StoredDtype::F16 => (self.bytes.chunks_exact(2))
                .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00),
        }
    }

    /// All values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.to_f32_range(0, self.bytes.len() / self.dtype.size())
    }

    /// Raw 16-bit values `[start, end)` (in elements); only for BF16 / F16 tensors.
    pub fn bits_range(&self, start: usize, end: usize) -> Vec<u16> {
        debug_assert_eq!(self.dtype.size(), 2);
        self.bytes[start * 2..end * 2]
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    }
}

/// Where a normalised tensor name lives, and whether the model read it.
struct Entry {
    file: usize,
    name: String,
    used: AtomicBool,
}

/// Tensors of a checkpoint spread over one or more safetensors buffers.
pub struct Weights {
    files: Vec<File>,
    /// Normalised name -> its file, its name there, and whether it was read.
    index: HashMap<String, Entry>,
}

/// The name the text model uses for a checkpoint name, or `None` to skip the tensor.
fn normalise(name: &str) -> Option<String> {
    // PEFT adapter files name tensors under the wrapped model: `base_model.model.<name>`.
    let name = name.strip_prefix("base_model.model.").unwrap_or(name);
    if name.starts_with("mtp.") || name.starts_with("model.visual.") || name.starts_with("visual.")
    {
        return None;
    }
    Some(match name.strip_prefix("model.language_model.") {
        Some(rest) => format!("model.{rest}"),
        None => name.to_string(),
    })
}

impl Weights {
    /// Parses the headers of `files` (`(file name, bytes)`); the name is used in errors.
    pub fn new(files: Vec<(String, Buffer)>) -> Result<Self, WeightError> {
        let mut parsed = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        let mut skipped = 0usize;
        for (fi, (name, bytes)) in files.into_iter().enumerate() {
            let (header_len, meta) =
                safetensors::SafeTensors::read_metadata(bytes.as_ref().as_ref()).map_err(|e| {
                    WeightError::Corrupt {
                        file: name.clone(),
                        msg: e.to_string(),
                    }
                })?;
            let data_len = bytes.as_ref().as_ref().len() - 8 - header_len;
            for (tname, info) in meta.tensors() {
                if info.data_offsets.1 > data_len {
                    return Err(WeightError::Corrupt {
                        file: name.clone(),
                        msg: format!("tensor `{tname}` extends past the end of the file"),
                    });
                }
                let Some(norm) = normalise(&tname) else {
                    skipped += 1;
                    continue;
                };
                let entry = Entry {
                    file: fi,
                    name: tname.clone(),
                    used: AtomicBool::new(false),
                };
                if let Some(Entry { file: prev, .. }) = index.insert(norm.clone(), entry) {
                    let first = if prev == fi {
                        name.clone()
                    } else {
                        parsed
                            .get(prev)
                            .map(|f: &File| f.name.clone())
                            .unwrap_or_default()
                    };
                    return Err(WeightError::Duplicate {
                        name: norm,
                        first,
                        second: name.clone(),
                    });
                }
            }
            parsed.push(File {
                name,
                bytes,
                header_len,
                meta,
            });
        }
        if skipped > 0 {
            tracing::info!(
                "skipped {skipped} vision-tower / multi-token-prediction tensors (text model only)"
            );
        }
        Ok(Self {
            files: parsed,
            index,
        })
    }

    /// Whether the checkpoint holds `name` (normalised).
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names (normalised), sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }

    fn files_list(&self) -> String {
        let names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        names.join(", ")
    }

    /// How tensor `name` (normalised) is stored; `None` when absent or of another dtype.
    pub fn dtype(&self, name: &str) -> Option<StoredDtype> {
        let e = self.index.get(name)?;
        match self.files[e.file].meta.info(&e.name)?.dtype {
            Dtype::F32 => Some(StoredDtype::F32),
            Dtype::BF16 => Some(StoredDtype::Bf16),
            Dtype::F16 => Some(StoredDtype::F16),
            _ => None,
        }
    }

    /// The stored shape of tensor `name` (normalised).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let e = self.index.get(name)?;
        Some(self.files[e.file].meta.info(&e.name)?.shape.clone())
    }

    /// Marks `name` as deliberately not read (e.g. a stored `lm_head.weight` that the config
    /// ties to the embedding, which transformers ignores too).
    pub fn skip(&self, name: &str) {
        if let Some(e) = self.index.get(name) {
            e.used.store(true, Ordering::Relaxed);
        }
    }

    /// Tensors no [`Weights::raw`] call has read (normalised names, sorted).
    pub fn unused(&self) -> Vec<String> {
        let mut v: Vec<String> = (self.index.iter())
            .filter(|(_, e)| !e.used.load(Ordering::Relaxed))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Fails with [`WeightError::Unused`] when some tensor was never read.
    pub fn check_all_used(&self) -> Result<(), WeightError> {
        let unused = self.unused();
        if unused.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 8;
        let mut names = unused[..unused.len().min(SHOWN)].join(", ");
        if unused.len() > SHOWN {
            names.push_str(&format!(", … ({} more)", unused.len() - SHOWN));
        }
        Err(WeightError::Unused {
            count: unused.len(),
            names,
        })
    }

    /// The stored bytes and dtype of tensor `name`, checked against `shape` (F32, BF16 or F16).
    pub fn raw(&self, name: &str, shape: &[usize]) -> Result<Raw<'_>, WeightError> {
        let entry = self.index.get(name).ok_or_else(|| WeightError::Missing {
            name: name.to_string(),
            files: self.files_list(),
        })?;
        let file = &self.files[entry.file];
        let info = file
            .meta
            .info(&entry.name)
            .expect("indexed tensors exist in their file's header");
        if info.shape != shape {
            return Err(WeightError::Shape {
                name: name.to_string(),
                file: file.name.clone(),
                got: info.shape.clone(),
                want: shape.to_vec(),
            });
        }
        let start = 8 + file.header_len + info.data_offsets.0;
        let end = 8 + file.header_len + info.data_offsets.1;
        let bytes = &file.bytes.as_ref().as_ref()[start..end];
        let dtype = match info.dtype {
            Dtype::F32 => StoredDtype::F32,
            Dtype::BF16 => StoredDtype::Bf16,
            Dtype::F16 => StoredDtype::F16,
            other => {
                return Err(WeightError::Dtype {
                    name: name.to_string(),
                    file: file.name.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let n: usize = shape.iter().product();
        if bytes.len() != n * dtype.size() {
            return Err(WeightError::Corrupt {
                file: file.name.clone(),
                msg: format!(
                    "tensor `{name}` holds {} bytes for shape {shape:?} in {dtype:?}",
                    bytes.len()
                ),
            });
        }
        let raw = Raw { dtype, bytes };
        if let Some(index) = raw.first_non_finite() {
            return Err(WeightError::NonFinite {
                name: name.to_string(),
                file: file.name.clone(),
                index,
                value: raw.to_f32_range(index, index + 1)[0],
            });
        }
        entry.used.store(true, Ordering::Relaxed);
        Ok(raw)
    }

    /// The tensor `name` as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor, WeightError> {
        let raw = self.raw(name, shape)?;
        Ok(HostTensor {
            shape: shape.to_vec(),
            data: raw.to_f32(),
        })
    }
}
