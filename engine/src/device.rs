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

/// The default wgpu device (Vulkan/Metal/DX12/WebGPU as the platform offers).
#[cfg(not(target_family = "wasm"))]
pub fn wgpu() -> Device {
    Device::wgpu(burn::tensor::DeviceKind::default())
}
