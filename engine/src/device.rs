//! Device selection helpers.

use burn::backend::DispatchDevice;
use burn::tensor::Device;

/// True when `device` (with or without autodiff) runs on Burn's wgpu runtime with the WGSL
/// compiler, i.e. when Sluice's hand-written kernels can be launched on it.
pub fn supports_wgsl(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube) => cube.runtime() == burn::cubecl::RuntimeId::Wgpu,
        _ => false,
    }
}

/// The largest buffer one storage binding can hold on `device`, in bytes (the adapter's
/// `maxStorageBufferBindingSize`, capped by `maxBufferSize`, as requested at device creation);
/// `None` on backends without WGSL kernels.
pub fn max_binding_bytes(device: &Device) -> Option<u64> {
    if !supports_wgsl(device) {
        return None;
    }
    let probe = burn::tensor::Tensor::<1>::zeros([1], device).inner();
    let t = probe.try_into_primitive::<burn::backend::Cube>().ok()?;
    Some(t.client.properties().memory.max_page_size)
}

/// A failed device operation in a few words: an allocation the adapter cannot make becomes
/// "cannot allocate a buffer of N bytes" with the adapter's per-buffer limit; otherwise the
/// backend's reason without its backtrace. `text` is the backend error's `Display`.
pub fn describe_error(text: &str, device: &Device) -> String {
    describe_error_with_limit(text, || max_binding_bytes(device))
}

/// [`describe_error`] with the per-buffer limit from `limit` (asked only for an allocation
/// failure).
fn describe_error_with_limit(text: &str, limit: impl FnOnce() -> Option<u64>) -> String {
    const TOO_BIG: &str = "allocate buffer of size: ";
    if let Some(at) = text.find(TOO_BIG) {
        let digits: String = text[at + TOO_BIG.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<u64>() {
            let limit = limit()
                .map(|l| format!("; this adapter allows at most {l} bytes per buffer"))
                .unwrap_or_default();
            return format!(
                "the device cannot allocate a buffer of {n} bytes ({:.1} MB){limit}",
                n as f64 / 1e6
            );
        }
    }
    let frame = |l: &str| {
        l.starts_with("at ")
            || l.split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    };
    let lines: Vec<&str> = (text.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !frame(l) && !l.starts_with("Caused by"))
        .take(3)
        .collect();
    lines.join(": ")
}

/// Kernel launches batched into one command submission on native devices.
pub const TASKS_PER_SUBMISSION: usize = 512;

/// The environment variable that pins the native graphics API: `vulkan`, `metal`, `dx12`,
/// `gl` or `auto` (unset = `auto`: Metal on macOS; Vulkan, then DX12, then GL elsewhere).
pub const BACKEND_ENV: &str = "SLUICE_WGPU_BACKEND";

/// Parses a graphics API name (case-insensitive) as [`BACKEND_ENV`] takes it.
pub fn parse_backend(name: &str) -> Result<burn::tensor::wgpu::WgpuBackend, String> {
    use burn::tensor::wgpu::WgpuBackend as B;
    match name.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(B::Auto),
        "vulkan" => Ok(B::Vulkan),
        "metal" => Ok(B::Metal),
        "dx12" | "d3d12" | "directx" => Ok(B::Dx12),
        "gl" | "opengl" | "gles" => Ok(B::Gl),
        other => Err(format!(
            "{BACKEND_ENV}={other:?}: expected one of auto, vulkan, metal, dx12, gl"
        )),
    }
}

/// The wgpu device on the graphics API [`BACKEND_ENV`] names (Vulkan/Metal/DX12/GL), created
/// once per process and cloned afterwards. Errors name the variable or the API that failed.
#[cfg(not(target_family = "wasm"))]
pub fn try_wgpu() -> Result<Device, String> {
    use std::sync::OnceLock;
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let api = parse_backend(&std::env::var(BACKEND_ENV).unwrap_or_default())?;
            let mut opts = Device::wgpu_options();
            if api != burn::tensor::wgpu::WgpuBackend::Auto {
                opts = opts.graphics_api(api);
            }
            // A decoded token is a few hundred launches: batch them into one submission
            // (cubecl's default flushes every 32) unless the environment says otherwise.
            if std::env::var_os("CUBECL_WGPU_MAX_TASKS").is_none() {
                opts = opts.tasks_max(TASKS_PER_SUBMISSION);
            }
            opts.init().map_err(|e| {
                if api == burn::tensor::wgpu::WgpuBackend::Auto {
                    format!("no usable GPU adapter (Vulkan, Metal, DX12 or GL): {e}")
                } else {
                    format!("{BACKEND_ENV}: no usable {api:?} adapter: {e}")
                }
            })
        })
        .clone()
}

/// [`try_wgpu`] for callers that checked it once already (programs call `try_wgpu` first
/// and report its error).
///
/// # Panics
/// When [`try_wgpu`] fails (a bad [`BACKEND_ENV`] value or no adapter for the named API).
#[cfg(not(target_family = "wasm"))]
pub fn wgpu() -> Device {
    try_wgpu().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::wgpu::WgpuBackend as B;

    #[test]
    fn backend_names() {
        assert_eq!(parse_backend("").unwrap(), B::Auto);
        assert_eq!(parse_backend("Vulkan").unwrap(), B::Vulkan);
        assert_eq!(parse_backend("metal").unwrap(), B::Metal);
        assert_eq!(parse_backend("DX12").unwrap(), B::Dx12);
        assert_eq!(parse_backend("gl").unwrap(), B::Gl);
        let e = parse_backend("cuda").unwrap_err();
        assert!(e.contains(BACKEND_ENV) && e.contains("dx12"), "{e}");
    }

    #[test]
    fn device_errors_are_short() {
        let alloc = "An error happened during execution\nCaused by:\n  can't allocate buffer of \
                     size: 174284800\n   0: cubecl_runtime::server::alloc\n      at src/a.rs:3\n   \
                     1: burn::x";
        let e = describe_error_with_limit(alloc, || Some(1 << 27));
        assert_eq!(
            e,
            "the device cannot allocate a buffer of 174284800 bytes (174.3 MB); this adapter \
             allows at most 134217728 bytes per buffer"
        );
        let other = "An error happened during execution\nCaused by:\n  shader failed\n   0: f\n      at g.rs:1";
        assert_eq!(
            describe_error_with_limit(other, || None),
            "An error happened during execution: shader failed"
        );
    }
}
