//! Shared helpers of Sluice's integration tests (run headless on lavapipe).

use burn::tensor::{Device, Distribution, Tensor};

/// The wgpu device the tests run on (lavapipe in CI).
pub fn wgpu() -> Device {
    sluice::device::wgpu()
}

/// A tensor with N(0, 1) entries, scaled by `scale`.
pub fn randn<const D: usize>(shape: [usize; D], scale: f32, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device).mul_scalar(scale)
}

/// A tensor with U(lo, hi) entries.
pub fn uniform<const D: usize>(shape: [usize; D], lo: f64, hi: f64, device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Uniform(lo, hi), device)
}

/// Host copy of a tensor.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// max |a - b| / (atol + rtol·|b|) must be ≤ 1; reports the worst element otherwise.
pub fn assert_close<const D: usize>(a: Tensor<D>, b: Tensor<D>, rtol: f32, atol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes differ");
    let (a, b) = (to_vec(a), to_vec(b));
    let mut worst = (0.0f32, 0usize);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(x.is_finite(), "{what}: non-finite value {x} at {i}");
        let r = (x - y).abs() / (atol + rtol * y.abs());
        if r > worst.0 {
            worst = (r, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: element {i} is {} but expected {} (ratio {:.3} over tolerance)",
        a[i],
        b[i],
        worst.0
    );
}

/// Reads every tensor of a safetensors fixture (F32) as `(shape, values)` by name.
pub fn read_fixture(
    path: &std::path::Path,
) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .filter(|(_, view)| view.dtype() != safetensors::Dtype::I64)
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name} must be F32");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

/// The committed fixtures folder.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture tensor on `device`.
pub fn fixture_tensor<const D: usize>(
    map: &std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>,
    name: &str,
    device: &Device,
) -> Tensor<D> {
    let (shape, values) = map
        .get(name)
        .unwrap_or_else(|| panic!("fixture has no tensor {name}"));
    Tensor::from_data(
        burn::tensor::TensorData::new(values.clone(), shape.clone()),
        device,
    )
}

/// Reads an I64 tensor (token ids) of a safetensors fixture as `(shape, values)`.
pub fn read_fixture_ids(path: &std::path::Path, name: &str) -> (Vec<usize>, Vec<i64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
    assert_eq!(view.dtype(), safetensors::Dtype::I64, "{name} must be I64");
    let values = view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    (view.shape().to_vec(), values)
}
