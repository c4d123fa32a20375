//! What the Device panel shows about the wgpu adapter.

use eframe::wgpu;

/// Adapter facts, as text rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// True when the UI renders on the engine's own wgpu device.
    pub shared: bool,
    /// Why the UI has its own device, when it does.
    pub note: Option<String>,
    pub limits: Vec<(String, String)>,
    pub features: Vec<String>,
}

impl DeviceInfo {
    pub fn from_adapter(adapter: &wgpu::Adapter, shared: bool, note: Option<String>) -> Self {
        let info = adapter.get_info();
        let l = adapter.limits();
        let limits = [
            ("max_buffer_size", l.max_buffer_size.to_string()),
            (
                "max_storage_buffer_binding_size",
                l.max_storage_buffer_binding_size.to_string(),
            ),
            (
                "max_storage_buffers_per_shader_stage",
                l.max_storage_buffers_per_shader_stage.to_string(),
            ),
            (
                "max_compute_invocations_per_workgroup",
                l.max_compute_invocations_per_workgroup.to_string(),
            ),
            (
                "max_compute_workgroup_storage_size",
                l.max_compute_workgroup_storage_size.to_string(),
            ),
            (
                "max_compute_workgroup_size_x/y/z",
                format!(
                    "{} / {} / {}",
                    l.max_compute_workgroup_size_x,
                    l.max_compute_workgroup_size_y,
                    l.max_compute_workgroup_size_z
                ),
            ),
            (
                "max_compute_workgroups_per_dimension",
                l.max_compute_workgroups_per_dimension.to_string(),
            ),
            ("max_bind_groups", l.max_bind_groups.to_string()),
            (
                "max_texture_dimension_2d",
                l.max_texture_dimension_2d.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let features = adapter
            .features()
            .iter_names()
            .map(|(n, _)| n.to_lowercase())
            .collect();
        DeviceInfo {
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            shared,
            note,
            limits,
            features,
        }
    }
}
