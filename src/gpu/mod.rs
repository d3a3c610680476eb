//! The GPU backend: our own WGSL compute kernels (one kernel per file, in each model's `shaders/`)
//! run through `wgpu`, which speaks WebGPU in the browser and Vulkan, Metal or DX12 natively.
//! candle has no WebGPU backend, so the forward passes we run are written again here, kernel by
//! kernel, and held to the CPU path by tests (`tests/gpu.rs`).
//!
//! The pieces: [`Gpu`] (an adapter and its device), [`Signature`] (a kernel's bindings, written
//! as WGSL in front of its file), [`Kernel`] (one compiled shader), [`Op`] (a kernel bound to its
//! buffers, recorded once at load), and the models built from them (`llm::gpu::GpuLlama`,
//! `embed::gpu::GpuBert`, each beside its model). A forward pass writes two numbers (how many
//! positions, and where they start) and replays the recorded ops; the only copy back is the
//! logits.

/// A kernel's source with `exp.wgsl` (a function the CPU's `exp` is copied into, not a kernel)
/// prepended, for the kernels that call it.
macro_rules! with_exp {
    ($file:literal) => {
        concat!(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/gpu/shaders/exp.wgsl")), include_str!($file))
    };
}
pub(crate) use with_exp;

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use wgpu::util::DeviceExt;

/// Where a model runs: on the CPU (candle and our SIMD kernels) or on the GPU (our WGSL kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Cpu,
    Gpu,
}

crate::named::named_enum!(Backend, "backend", { Cpu => "cpu", Gpu => "gpu" });

/// A GPU device and its queue.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    /// The first error the device reported outside any request (a validation error, running out
    /// of memory). wgpu's default is to panic natively and to log in the browser; we keep it and
    /// return it from the next check (`Gpu::check`), so a GPU fault becomes an `Error::Gpu`.
    fault: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// The preferred adapter (a discrete GPU before an integrated one before a software one),
    /// with its own buffer size limits: WebGPU's defaults (128 MiB per binding) would not hold a
    /// larger model's embedding table.
    pub async fn new() -> Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        // wgpu's own message lists every backend it was built without, which means nothing to
        // someone reading the page's backend label.
        #[cfg(target_arch = "wasm32")]
        let no_adapter = |_| Error::Gpu("the browser offers no WebGPU adapter".into());
        #[cfg(not(target_arch = "wasm32"))]
        let no_adapter =
            |e| Error::Gpu(format!("no GPU adapter ({e}); a Vulkan driver such as Mesa's lavapipe provides one"));
        let adapter = instance.request_adapter(&options).await.map_err(no_adapter)?;
        let available = adapter.limits();
        let required_limits = wgpu::Limits {
            max_storage_buffer_binding_size: available.max_storage_buffer_binding_size,
            max_buffer_size: available.max_buffer_size,
            ..wgpu::Limits::default()
        };
        let descriptor = wgpu::DeviceDescriptor { label: Some("pocketrag"), required_limits, ..Default::default() };
        let (device, queue) =
            adapter.request_device(&descriptor).await.map_err(|e| Error::Gpu(format!("cannot open the GPU: {e}")))?;
        let fault = Arc::new(Mutex::new(None));
        let slot = fault.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        Ok(Gpu { device, queue, info: adapter.get_info(), fault })
    }

    /// The first fault the device has reported, as an error (once; the device is not trusted
    /// after it, so callers drop the model that met it).
    pub(crate) fn check(&self) -> Result<()> {
        match self.fault.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(Error::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Adapter name and API, e.g. "llvmpipe (LLVM 15.0.6, 256 bits) on Vulkan, software".
    pub fn describe(&self) -> String {
        let kind = if self.is_software() { ", software" } else { "" };
        // Browsers may withhold the adapter's name (Chromium gives SwiftShader's none).
        let name = [&self.info.name, &self.info.driver, &self.info.driver_info]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("an unnamed adapter", |s| s.as_str());
        format!("{name} on {:?}{kind}", self.info.backend)
    }

    /// A CPU-based adapter (lavapipe, SwiftShader): right for tests, slow for use.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub(crate) fn storage(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub(crate) fn zeros(&self, label: &str, values: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (values.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn uniform(&self, label: &str, words: [u32; 4]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes_u32(&words),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub(crate) fn staging(&self, label: &str, values: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (values * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// The first `values` f32 of a MAP_READ buffer, once the GPU has written them. Natively this
    /// waits for the device here; in the browser the map completes from the event loop, so the
    /// caller must await it there.
    pub(crate) async fn read(&self, staging: &wgpu::Buffer, values: usize) -> Result<Vec<f32>> {
        let slice = staging.slice(..(values * 4) as u64);
        let (done, mapped) = oneshot();
        slice.map_async(wgpu::MapMode::Read, move |r| done.send(r));
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        let mapped = mapped.await;
        self.check()?;
        mapped.map_err(|e| Error::Gpu(format!("reading back from the GPU: {e}")))?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("reading back from the GPU: {e}")))?;
            view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        };
        staging.unmap();
        Ok(out)
    }
}

/// A model kernel's inputs and outputs, from which its WGSL declarations are written. Every model
/// kernel takes two uniforms, the forward pass's step (binding 0: how many positions, and where
/// they start) and its own shape (binding 1), then its buffers from binding 2 on, in the order
/// `Op::new` binds them. Writing the declarations from one list keeps each shader file to its
/// computation and the binding numbers in a single place.
pub(crate) struct Signature<'a> {
    /// The step's two fields, as WGSL (`"n: u32, pos: u32"`).
    pub step: &'a str,
    /// Up to four 32-bit fields, as WGSL; padded to four, the 16 bytes every shape buffer holds.
    pub shape: &'a str,
    /// The storage buffers, each `"name"` (f32 values), `"name: u32"`, and `"mut "` in front of
    /// one the kernel writes.
    pub buffers: &'a [&'a str],
}

impl Signature<'_> {
    /// The WGSL that declares the two uniforms and the buffers.
    pub(crate) fn declarations(&self) -> String {
        let fields = self.shape.split(',').filter(|f| !f.trim().is_empty()).count();
        let padding: String = (fields..4).map(|i| format!(", _pad{i}: u32")).collect();
        let mut wgsl = format!(
            "struct Step {{ {} }}\nstruct Shape {{ {}{padding} }}\n\
             @group(0) @binding(0) var<uniform> step: Step;\n\
             @group(0) @binding(1) var<uniform> shape: Shape;\n",
            self.step, self.shape
        );
        for (i, buffer) in self.buffers.iter().enumerate() {
            let (access, buffer) = match buffer.strip_prefix("mut ") {
                Some(name) => ("read_write", name),
                None => ("read", *buffer),
            };
            let (name, element) = buffer.split_once(": ").unwrap_or((buffer, "f32"));
            wgsl += &format!("@group(0) @binding({}) var<storage, {access}> {name}: array<{element}>;\n", i + 2);
        }
        wgsl
    }
}

/// One compute shader, compiled; its bind group layout comes from the shader itself.
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
}

impl Kernel {
    pub(crate) fn new(gpu: &Gpu, name: &str, source: &str, entry: &str) -> Kernel {
        let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { pipeline }
    }

    /// A model kernel: `body` (its computation) after the declarations `signature` writes.
    pub(crate) fn declared(gpu: &Gpu, name: &str, signature: &Signature, body: &str, entry: &str) -> Kernel {
        Kernel::new(gpu, name, &(signature.declarations() + body), entry)
    }

    /// Bind `buffers` to bindings 0, 1, 2, ... in order.
    pub(crate) fn bind(&self, gpu: &Gpu, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
            .collect();
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }
}

/// How many workgroups an op needs for `n` positions starting at `pos`.
pub(crate) type Grid = Box<dyn Fn(u32, u32) -> [u32; 3] + Send + Sync>;

/// A kernel bound to its buffers, recorded once; a forward pass replays it.
pub(crate) struct Op {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: Grid,
}

impl Op {
    pub(crate) fn new(gpu: &Gpu, kernel: &Kernel, buffers: &[&wgpu::Buffer], grid: Grid) -> Op {
        Op { pipeline: kernel.pipeline.clone(), bind_group: kernel.bind(gpu, buffers), grid }
    }

    pub(crate) fn record(&self, pass: &mut wgpu::ComputePass, n: u32, pos: u32) {
        let [x, y, z] = (self.grid)(n, pos);
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// Workgroups of 64 threads covering `count` items.
pub(crate) fn groups(count: u32) -> u32 {
    count.div_ceil(64)
}

/// One thread per value of a position's `width` values (or per output row of a product), for
/// each position.
pub(crate) fn per_value(width: u32) -> Grid {
    Box::new(move |n, _| [groups(width), n, 1])
}

/// One thread per value of all n × `width` values (the element-wise kernels).
pub(crate) fn per_element(width: u32) -> Grid {
    Box::new(move |n, _| [groups(n * width), 1, 1])
}

/// One thread per position.
pub(crate) fn per_position() -> Grid {
    Box::new(|n, _| [groups(n), 1, 1])
}

/// Shape uniforms (four words each): one buffer per distinct shape, shared by every op with it.
#[derive(Default)]
pub(crate) struct Shapes(RefCell<HashMap<[u32; 4], wgpu::Buffer>>);

impl Shapes {
    pub(crate) fn get(&self, gpu: &Gpu, words: [u32; 4]) -> wgpu::Buffer {
        self.0.borrow_mut().entry(words).or_insert_with(|| gpu.uniform("shape", words)).clone()
    }
}

pub(crate) fn bytes_u32(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

pub(crate) fn bytes_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A one-value channel whose receiving end is a future: how a buffer map's callback (called by
/// wgpu, natively from `poll`, in the browser from the event loop) reaches the code awaiting it.
fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Mutex::new((None, None)));
    (Sender(shared.clone()), Receiver(shared))
}

type Slot<T> = Arc<Mutex<(Option<T>, Option<Waker>)>>;

struct Sender<T>(Slot<T>);

impl<T> Sender<T> {
    pub(crate) fn send(self, value: T) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slot.0 = Some(value);
        if let Some(waker) = slot.1.take() {
            waker.wake();
        }
    }
}

struct Receiver<T>(Slot<T>);

impl<T> Future for Receiver<T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.0.take() {
            Some(value) => Poll::Ready(value),
            None => {
                slot.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The value of a future that is already complete, as every GPU future is natively (wgpu's
/// native backends finish a request before returning it, and `Gpu::read` waits for the device).
/// In the browser, await them instead.
pub fn now<F: Future>(future: F) -> Result<F::Output> {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(Error::Gpu("a GPU operation did not complete at once; await it instead".into())),
    }
}

impl Gpu {
    /// Whether this adapter's f32 arithmetic gives the CPU's bits for what our kernels do: a
    /// multiply then an add, each rounded (not fused into one multiply-add), division and square
    /// root correctly rounded, and `exp.wgsl`'s eˣ. WGSL promises none of this (a compiler may fuse,
    /// and `/`, `sqrt` need only be within a few units in the last place), and hardware GPUs
    /// commonly fuse; Mesa's lavapipe does all of it (measured). Where it holds, the GPU's forward
    /// passes give exactly the CPU's numbers (`tests/gpu.rs` asserts it); elsewhere the logits
    /// differ within the 8-bit rounding of activations.
    pub async fn arithmetic_is_exact(&self) -> Result<bool> {
        let n = 4096;
        let inputs: Vec<Vec<f32>> = (1..=3)
            .map(|seed| crate::kernels::random::pseudo_random(n, seed).iter().map(|v| 4.0 * v).collect())
            .collect();
        let source = with_exp!("shaders/arithmetic.wgsl");
        let kernel = Kernel::new(self, "arithmetic", source, "main");
        let buffers: Vec<_> = inputs.iter().map(|v| self.storage("arithmetic input", &bytes_f32(v))).collect();
        let out = self.zeros("arithmetic output", 4 * n);
        let op = Op::new(self, &kernel, &[&buffers[0], &buffers[1], &buffers[2], &out], per_element(n as u32));
        let staging = self.staging("arithmetic read-back", 4 * n);
        let mut encoder = self.device.create_command_encoder(&Default::default());
        op.record(&mut encoder.begin_compute_pass(&Default::default()), 1, 0);
        encoder.copy_buffer_to_buffer(&out, 0, &staging, 0, (4 * n * 4) as u64);
        self.queue.submit([encoder.finish()]);
        let got = self.read(&staging, 4 * n).await?;
        let (a, b, c) = (&inputs[0], &inputs[1], &inputs[2]);
        let want = (0..n)
            .map(|i| a[i] * b[i] + c[i])
            .chain((0..n).map(|i| a[i] / b[i]))
            .chain((0..n).map(|i| 1.0 / a[i].abs().sqrt()))
            .chain((0..n).map(|i| crate::kernels::vecmath::exp(48.0 * a[i])));
        Ok(got.len() == 4 * n && got.iter().zip(want).all(|(g, w)| g.to_bits() == w.to_bits()))
    }
}
