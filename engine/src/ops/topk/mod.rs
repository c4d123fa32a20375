//! The `k` largest values of each row, with their indices, on the device
//! (`shaders/topk_rows.wgsl`: bitonic sorts of row segments in workgroup memory, repeated on
//! the candidates until one segment is left). Burn's own `topk` sorts on the host after a
//! blocking read-back on wgpu, which stalls the GPU and cannot run in a browser; this op
//! reads nothing back. Forward only (callers use the values as thresholds or candidates).
//!
//! Order: descending value, ties by lower index; NaN after every number.

mod backend;

use burn::backend::Dispatch;
use burn::tensor::{Int, Tensor};

pub use backend::TopkBackend;

/// Largest `k` the kernel takes (half its 1024-long segments, so that every pass at least
/// halves a row); beyond it, and on backends without WGSL, [`topk_rows`] sorts whole rows
/// with Burn's sort.
pub const MAX_K: usize = 512;

/// The `min(k, N)` largest values of each row of `x` `[R, N]` in descending order and their
/// column indices: `([R, k], [R, k])`. No gradient flows through it (use the values as
/// constants). `k` ≥ 1. The kernel runs on f32 rows shorter than 2^24 − 1 on wgpu; other
/// inputs are sorted whole with Burn.
pub fn topk_rows(x: Tensor<2>, k: usize) -> (Tensor<2>, Tensor<2, Int>) {
    let [r, n] = x.dims();
    let k = k.min(n).max(1);
    let f32 = x.dtype() == burn::tensor::DType::F32;
    if !f32 || !crate::device::supports_wgsl(&x.device()) || k > MAX_K || n >= (1 << 24) - 1 {
        let (v, i) = x.detach().sort_descending_with_indices(1);
        return (v.narrow(1, 0, k), i.narrow(1, 0, k));
    }
    let packed: Tensor<1> =
        Tensor::from_dispatch(<Dispatch as TopkBackend>::topk_rows(x.into_dispatch(), k));
    let values = packed.clone().narrow(0, 0, r * k).reshape([r, k]);
    let indices = packed.narrow(0, r * k, r * k).reshape([r, k]).int();
    (values, indices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Host reference: stable sort by descending value (ties keep the lower index).
    fn reference(row: &[f32], k: usize) -> (Vec<f32>, Vec<i64>) {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        idx.truncate(k.min(row.len()));
        (
            idx.iter().map(|&i| row[i]).collect(),
            idx.iter().map(|&i| i as i64).collect(),
        )
    }

    /// Distinct pseudo-random values, or few distinct ones (ties), or mostly -inf (masked).
    #[derive(Clone, Copy)]
    enum Data {
        Distinct,
        Ties,
        Masked,
    }

    fn check(r: usize, n: usize, k: usize, kind: Data) {
        let device = crate::device::wgpu();
        let data: Vec<f32> = (0..r * n)
            .map(|i| {
                let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                match kind {
                    Data::Distinct => h as f32 / 1e5 - 50.0,
                    Data::Ties => (h % 7) as f32,
                    Data::Masked if i % 3 != 0 => f32::NEG_INFINITY,
                    Data::Masked => h as f32,
                }
            })
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(data.clone(), [r, n]), &device);
        let (v, i) = topk_rows(x, k);
        let v = v.into_data().try_to_vec::<f32>().expect("values");
        let i: Vec<i64> = i
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .expect("indices");
        let kk = k.min(n);
        for row in 0..r {
            let (rv, ri) = reference(&data[row * n..(row + 1) * n], k);
            assert_eq!(&v[row * kk..(row + 1) * kk], &rv[..], "values, row {row}");
            assert_eq!(&i[row * kk..(row + 1) * kk], &ri[..], "indices, row {row}");
        }
    }

    #[test]
    fn one_segment_rows_match_a_stable_sort() {
        check(5, 7, 3, Data::Distinct);
        check(3, 100, 8, Data::Ties);
        check(2, 1024, 512, Data::Distinct);
        check(2, 1000, 400, Data::Masked);
    }

    #[test]
    fn long_rows_take_several_passes() {
        check(2, 70_000, 20, Data::Distinct);
        check(1, 5_000, 512, Data::Ties);
        check(3, 3_000, 1, Data::Distinct);
        check(2, 3_000, 512, Data::Masked);
    }
}
