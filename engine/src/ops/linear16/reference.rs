//! Host references of the 16-bit ops (test oracles): the weight widened to f32, then plain
//! products.

use super::Half;

/// The raw values `bits` as f32.
pub fn widen(bits: &[u16], half: Half) -> Vec<f32> {
    bits.iter().map(|&b| half.to_f32(b)).collect()
}

/// `y[m, n] = Σ_k x[m, k] w[n, k]` in f64 (an oracle with no rounding of its own to speak of).
pub fn matmul_t(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|c| f64::from(x[i * k + c]) * f64::from(w[j * k + c]))
                .sum();
            y[i * n + j] = s as f32;
        }
    }
    y
}
