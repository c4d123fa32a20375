//! Writing safetensors files tensor by tensor.
//!
//! A safetensors file is `u64 header length | header JSON (padded with spaces to a multiple
//! of 8) | tensor data back to back`. The header needs every name, shape and dtype, not the
//! data, so [`TensorWriter`] writes it first from what the caller knows up front and then
//! takes each tensor's values as they are read (e.g. from the device, one at a time): host
//! memory stays at one tensor, whatever the size of the file. The header is serialised by
//! the `safetensors` crate's own types, so readers see exactly what its `serialize` writes.

use std::collections::HashMap;
use std::io::Write;

use safetensors::tensor::{Metadata, TensorInfo};

use super::random::FileDtype;
use super::save::SaveError;

/// One tensor of a file being written: name, shape, storage type.
pub type Entry = (String, Vec<usize>, FileDtype);

/// Elements encoded per write (bounds the staging buffer to 256 KiB).
const CHUNK: usize = 1 << 16;

/// Writes the header for `entries` (in this order in the file), then accepts the tensors'
/// values in the same order; [`finish`](Self::finish) checks that every tensor came.
pub struct TensorWriter<'w> {
    w: &'w mut dyn Write,
    entries: Vec<Entry>,
    next: usize,
}

fn io(e: std::io::Error) -> SaveError {
    SaveError::Io(e.to_string())
}

impl<'w> TensorWriter<'w> {
    /// Writes the length and header for `entries` with one metadata pair (e.g.
    /// `("format", "pt")`).
    pub fn start(
        w: &'w mut dyn Write,
        entries: Vec<Entry>,
        metadata: (&str, String),
    ) -> Result<Self, SaveError> {
        let mut offset = 0usize;
        let infos = entries
            .iter()
            .map(|(name, shape, dtype)| {
                let len = shape.iter().product::<usize>() * dtype.bytes();
                let info = TensorInfo {
                    dtype: dtype.safetensors(),
                    shape: shape.clone(),
                    data_offsets: (offset, offset + len),
                };
                offset += len;
                (name.clone(), info)
            })
            .collect();
        let meta = HashMap::from([(metadata.0.to_string(), metadata.1)]);
        let meta =
            Metadata::new(Some(meta), infos).map_err(|e| SaveError::Serialize(e.to_string()))?;
        let mut header =
            serde_json::to_vec(&meta).map_err(|e| SaveError::Serialize(e.to_string()))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        w.write_all(&(header.len() as u64).to_le_bytes())
            .and_then(|()| w.write_all(&header))
            .map_err(io)?;
        Ok(Self {
            w,
            entries,
            next: 0,
        })
    }

    /// Writes the next tensor's values (row-major), encoded in its entry's dtype. `name` must
    /// be the next entry's and `values` its element count.
    pub fn tensor(&mut self, name: &str, values: &[f32]) -> Result<(), SaveError> {
        let Some((want, shape, dtype)) = self.entries.get(self.next) else {
            return Err(SaveError::Serialize(format!(
                "`{name}` is not in the file's header"
            )));
        };
        let numel: usize = shape.iter().product();
        if want != name || values.len() != numel {
            return Err(SaveError::Serialize(format!(
                "expected `{want}` ({numel} values) next, got `{name}` ({} values)",
                values.len()
            )));
        }
        for chunk in values.chunks(CHUNK) {
            self.w.write_all(&dtype.encode(chunk)).map_err(io)?;
        }
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor of the header was written and flushes.
    pub fn finish(self) -> Result<(), SaveError> {
        if let Some((name, _, _)) = self.entries.get(self.next) {
            return Err(SaveError::Missing(name.clone()));
        }
        self.w.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::linear16::Half;

    fn write(entries: Vec<Entry>, data: &[Vec<f32>]) -> Result<Vec<u8>, SaveError> {
        let mut out = Vec::new();
        let mut w = TensorWriter::start(&mut out, entries.clone(), ("format", "pt".into()))?;
        for ((name, _, _), v) in entries.iter().zip(data) {
            w.tensor(name, v)?;
        }
        w.finish()?;
        Ok(out)
    }

    #[test]
    fn streamed_file_equals_the_crate_serialisation() {
        let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 1.0).collect();
        let b: Vec<f32> = (0..CHUNK + 3).map(|i| (i as f32).sin()).collect();
        let bf16 = FileDtype::Half(Half::Bf16);
        // Order as the crate sorts: descending dtype alignment, then name.
        let entries = vec![
            ("a".to_string(), vec![2, 3], FileDtype::F32),
            ("b".to_string(), vec![CHUNK + 3], bf16),
        ];
        let ours = write(entries, &[a.clone(), b.clone()]).expect("write");
        let (ea, eb) = (FileDtype::F32.encode(&a), bf16.encode(&b));
        let views = vec![
            (
                "b",
                safetensors::tensor::TensorView::new(bf16.safetensors(), vec![CHUNK + 3], &eb)
                    .expect("view"),
            ),
            (
                "a",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &ea)
                    .expect("view"),
            ),
        ];
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let theirs = safetensors::serialize(views, Some(meta)).expect("serialize");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn out_of_order_or_missing_tensors_are_errors() {
        let entries = vec![
            ("a".to_string(), vec![2], FileDtype::F32),
            ("b".to_string(), vec![1], FileDtype::F32),
        ];
        let e = write(entries.clone(), &[vec![1.0]]).unwrap_err();
        assert!(e.to_string().contains("expected `a` (2 values)"), "{e}");
        let e = write(entries, &[vec![1.0, 2.0]]).unwrap_err();
        assert_eq!(e, SaveError::Missing("b".into()));
    }
}
