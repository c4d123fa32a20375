//! `sluice logits`: the logits of given token ids in one forward pass, written to a
//! safetensors file for checking against other implementations.
//!
//! Output tensors: `logits` F32 `[B, T, V]` and `input_ids` I64 `[B, T]`. The rows are
//! unpadded sequences of equal length starting at position 0 (as transformers'
//! `model(input_ids).logits` without an attention mask). The file is written next to its
//! final path and renamed into place, so a reader never sees half a file.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use safetensors::{Dtype, tensor::TensorView};
use sluice::nn::attention::AttentionContext;

use super::{ModelArgs, check_equal_lengths, check_vocab, load, parse_rows};
use crate::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,

    /// Token ids: rows separated by `;`, ids by `,` (e.g. "1,2,3;4,5,6"); every row the
    /// same length.
    #[arg(long, value_name = "IDS")]
    ids: String,

    /// The safetensors file to write.
    #[arg(long, value_name = "FILE.safetensors")]
    out: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let rows = &parse_rows(&args.ids).map_err(|e| format!("--ids: {e}"))?;
    let t = check_equal_lengths(rows).map_err(|e| format!("--ids: {e}"))?;
    let b = rows.len();
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(format!(
            "--out {}: folder {} does not exist",
            args.out.display(),
            parent.display()
        )
        .into());
    }
    let (device, cfg, model) = load(&args.model, true)?;
    let vocab = model.vocab_size();
    check_vocab(rows, vocab).map_err(|e| format!("--ids: {e}"))?;

    let flat: Vec<i64> = rows.iter().flatten().map(|&x| i64::from(x)).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat.clone(), [b, t]), &device);
    let mut cache = model.new_cache();
    let ctx = AttentionContext::contiguous(b, t, 0, &device);
    let logits = model.logits(model.hidden(ids, &mut cache, &ctx));
    let values: Vec<f32> = logits
        .try_into_data()
        .map_err(|e| {
            let e = sluice::device::describe_error(&e.to_string(), &device);
            format!("reading the logits back from the device: {e}")
        })?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| format!("reading the logits back from the device: {e:?}"))?;
    debug_assert_eq!(values.len(), b * t * vocab);

    let mut meta = std::collections::HashMap::new();
    meta.insert("model".to_string(), args.model.model.display().to_string());
    meta.insert("family".to_string(), format!("{:?}", cfg.family));
    meta.insert("generated_by".to_string(), "sluice logits".to_string());
    write_safetensors(
        &args.out,
        &[
            ("logits", Dtype::F32, vec![b, t, vocab], f32_bytes(&values)),
            ("input_ids", Dtype::I64, vec![b, t], i64_bytes(&flat)),
        ],
        meta,
    )?;
    eprintln!(
        "sluice: wrote logits [{b}, {t}, {vocab}] (f32) to {}",
        args.out.display()
    );
    Ok(())
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i64_bytes(x: &[i64]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
type Entry<'a> = (&'a str, Dtype, Vec<usize>, Vec<u8>);

/// Writes `tensors` to `path` atomically: a temporary file in the same folder, renamed
/// into place (removed again on failure).
pub fn write_safetensors(
    path: &Path,
    tensors: &[Entry<'_>],
    meta: std::collections::HashMap<String, String>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| format!("tensor {name}: {e}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let file_name = path
        .file_name()
        .ok_or_else(|| format!("--out {}: not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = safetensors::serialize_to_file(views, Some(meta), &tmp)
        .map_err(|e| format!("writing {}: {e}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| format!("renaming {} to {}: {e}", tmp.display(), path.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("sluice-logits-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.safetensors");
        let vals = [1.5f32, -2.0, 3.25, 0.0, 1.0, 2.0];
        write_safetensors(
            &path,
            &[("logits", Dtype::F32, vec![1, 2, 3], f32_bytes(&vals))],
            Default::default(),
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("logits").unwrap();
        assert_eq!(t.shape(), &[1, 2, 3]);
        assert_eq!(t.dtype(), Dtype::F32);
        assert_eq!(t.data(), f32_bytes(&vals).as_slice());
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A wrong byte count is an error, and leaves nothing behind.
        let e = write_safetensors(
            &dir.join("bad.safetensors"),
            &[("logits", Dtype::F32, vec![2, 2], f32_bytes(&vals))],
            Default::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("tensor logits"), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
