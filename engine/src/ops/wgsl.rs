//! Launching the hand-written WGSL kernels in `shaders/` on Burn's wgpu runtime.
//!
//! A kernel is its source text plus template constants (`{{ name }}` placeholders); every
//! distinct set of constants compiles once and is cached by the runtime under its id.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::{CubeCount, CubeDim, KernelId};
use burn::cubecl::server::{Handle, KernelArguments};
use burn::tensor::{DType, Shape};

/// Launches of Sluice's own kernels so far in this process (benchmarks read the difference
/// around a decode step; Burn's generic ops are not counted).
static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Number of Sluice kernel launches so far in this process.
pub fn launch_count() -> u64 {
    LAUNCHES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A WGSL source with its template constants.
pub(crate) struct WgslKernel {
    name: &'static str,
    source: &'static str,
    consts: Vec<(&'static str, String)>,
    unrolls: Vec<(&'static str, usize)>,
}

impl WgslKernel {
    pub(crate) fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            consts: Vec::new(),
            unrolls: Vec::new(),
        }
    }

    /// Repeats every block between the lines `//#unroll name` and `//#end` `n` times, with
    /// `{{name}}` replaced by 0, 1, .., n - 1 in the copies (for code that needs a constant
    /// expression per copy, such as `subgroupBroadcast`'s lane).
    pub(crate) fn unroll(mut self, name: &'static str, n: usize) -> Self {
        self.unrolls.push((name, n));
        self
    }

    /// Sets the template constant `{{ key }}`.
    pub(crate) fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.consts.push((key, value.to_string()));
        self
    }

    /// Sets a float template constant, written as a WGSL f32 literal that round-trips.
    pub(crate) fn with_f32(self, key: &'static str, value: f32) -> Self {
        self.with(key, format!("{value:?}f"))
    }

    /// Launches on `grid` workgroups of `workgroup` invocations with `buffers` bound in
    /// `@binding` order, followed by one storage buffer holding `params` (run-time sizes,
    /// so that one compiled pipeline serves every batch size and sequence length).
    pub(crate) fn launch(
        self,
        workgroup: u32,
        grid: [u32; 3],
        buffers: &[&CubeTensor],
        params: &[u32],
    ) {
        LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = buffers[0].client.clone();
        let params = params_handle(buffers[0], params);
        let args = KernelArguments::new().with_buffers(
            buffers
                .iter()
                .map(|t| t.handle.clone().binding())
                .chain([params.binding()])
                .collect(),
        );
        client.launch(
            Box::new(SourceKernel::new(self, CubeDim::new_1d(workgroup))),
            CubeCount::Static(grid[0], grid[1], grid[2]),
            args,
        );
    }
}

thread_local! {
    /// Uploaded `params` buffers by (device, contents): a decode step repeats the same few
    /// size lists every token, and an upload per launch costs more than the launch. Kernels
    /// only read `params`.
    static PARAMS: std::cell::RefCell<std::collections::HashMap<(String, Vec<u32>), Handle>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Most cached `params` buffers per thread (the cache is cleared when full).
const PARAMS_CACHE: usize = 4096;

/// The device buffer holding `params` for kernels launched on `like`'s device.
fn params_handle(like: &CubeTensor, params: &[u32]) -> Handle {
    let key = (format!("{:?}", like.device), params.to_vec());
    PARAMS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(h) = cache.get(&key) {
            return h.clone();
        }
        if cache.len() >= PARAMS_CACHE {
            cache.clear();
        }
        let bytes: Vec<u8> = params.iter().flat_map(|p| p.to_le_bytes()).collect();
        let h = like.client.create_from_slice(&bytes);
        cache.insert(key, h.clone());
        h
    })
}

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        let text = self
            .unrolls
            .iter()
            .fold(self.source.to_string(), |text, &(name, n)| {
                unroll(&text, name, n)
            });
        self.consts
            .iter()
            .fold(SourceTemplate::new(text), |t, (k, v)| {
                t.register(*k, v.clone())
            })
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.consts.clone(), self.unrolls.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// `text` with each `//#unroll name` .. `//#end` block repeated `n` times, `{{name}}` replaced
/// by the copy's index. Blocks of other names nest inside (their `//#end` lines pair up) and
/// are expanded when their own name is.
fn unroll(text: &str, name: &str, n: usize) -> String {
    let open = format!("//#unroll {name}");
    let placeholder = format!("{{{{{name}}}}}");
    let mut out = String::with_capacity(text.len());
    // The block being collected and how many inner blocks are open in it.
    let mut block: Option<(String, usize)> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        match &mut block {
            None if trimmed == open => block = Some((String::new(), 0)),
            None => out.push_str(line),
            Some((body, 0)) if trimmed == "//#end" => {
                for i in 0..n {
                    out.push_str(&body.replace(&placeholder, &i.to_string()));
                }
                block = None;
            }
            Some((body, depth)) => {
                if trimmed.starts_with("//#unroll ") {
                    *depth += 1;
                } else if trimmed == "//#end" {
                    *depth -= 1;
                }
                body.push_str(line);
            }
        }
    }
    out
}

/// A new contiguous f32 tensor with uninitialised contents, on `like`'s device.
pub(crate) fn empty_f32(like: &CubeTensor, shape: impl Into<Shape>) -> CubeTensor {
    let shape: Shape = shape.into();
    let bytes = shape.num_elements().max(1) * core::mem::size_of::<f32>();
    let handle = like.client.empty(bytes);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

/// `t` as a contiguous f32 tensor (kernels index raw buffers).
pub(crate) fn contiguous(t: CubeTensor) -> CubeTensor {
    burn::backend::wgpu::into_contiguous(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unroll_repeats_blocks_with_the_index() {
        let src = "a\n  //#unroll c\n  x[{{c}}] = {{c}}u;\n  //#end\nb {{ keep }}\n";
        assert_eq!(
            super::unroll(src, "c", 3),
            "a\n  x[0] = 0u;\n  x[1] = 1u;\n  x[2] = 2u;\nb {{ keep }}\n"
        );
        assert_eq!(super::unroll(src, "c", 0), "a\nb {{ keep }}\n");
    }

    #[test]
    fn unroll_nests_blocks_of_other_names_in_either_order() {
        let src = "//#unroll r\n//#unroll x\na[{{r}}][{{x}}]\n//#end\nb[{{r}}]\n//#end\n";
        let want = "a[0][0]\na[0][1]\nb[0]\na[1][0]\na[1][1]\nb[1]\n";
        let rx = super::unroll(&super::unroll(src, "r", 2), "x", 2);
        let xr = super::unroll(&super::unroll(src, "x", 2), "r", 2);
        assert_eq!(rx, want);
        assert_eq!(xr, want);
    }
}
