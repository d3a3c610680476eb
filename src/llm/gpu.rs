//! The generator (a llama-architecture decoder, `crate::llm::llama`) on the GPU: the same forward
//! pass, kernel by kernel, on the same Q8_0 weights. Weights are uploaded once; the key and value
//! caches live on the GPU; a step writes the token ids and two numbers, and reads back only the
//! logits of the last position.
//!
//! Per block, for n positions at pos..pos + n (every step a kernel in `shaders/`):
//!   h = rms_norm(x)                      rms_norm
//!   q, k, v = h W_q, h W_k, h W_v        quantize (h to 14–15 bits a block, once) + matmul_q8 (+ matmul_f32 × 2
//!                                        per adapted matrix: the fine-tune's low-rank update)
//!   rotate q; rotate k into the cache;   rope, store
//!   copy v into the cache
//!   attention over the cache             attn_scores, attn_softmax, attn_values
//!   x += att W_o                         quantize + matmul_q8, add
//!   h = rms_norm(x)
//!   x += (silu(h W_gate) * h W_up) W_down   quantize + matmul_q8 × 2, silu_mul, quantize + matmul_q8, add
//! then rms_norm and the output projection for the last position only.

use super::decode::Parts;
use super::llama::{Llama, MAX_SEQ_LEN};
use super::lora::LoraPair;
use crate::error::{Error, Result};
use crate::gpu::{
    bytes_f32, bytes_u32, groups, per_element, per_position, per_value, with_exp, Gpu, Grid, Kernel, Op, Shapes,
    Signature,
};
use crate::kernels::q8::Q8Matrix;
use std::sync::Arc;

/// The most positions one forward pass takes (prompts are fed in slices of at most this many).
pub const MAX_POSITIONS: usize = 128;

struct Kernels {
    embed: Kernel,
    rms_norm: Kernel,
    quantize: Kernel,
    matmul_q8: Kernel,
    matmul_f32: Kernel,
    rope: Kernel,
    store: Kernel,
    scores: Kernel,
    softmax: Kernel,
    values: Kernel,
    silu_mul: Kernel,
    add: Kernel,
}

impl Kernels {
    fn new(gpu: &Gpu) -> Kernels {
        let signature = |shape, buffers| Signature { step: "n: u32, pos: u32", shape, buffers };
        // Each kernel's file is shaders/{file}.wgsl; its bindings, in the order `GpuLlama` binds them.
        macro_rules! kernel {
            ($file:literal, $shape:expr, $buffers:expr) => {
                Kernel::declared(
                    gpu,
                    $file,
                    &signature($shape, $buffers),
                    include_str!(concat!("shaders/", $file, ".wgsl")),
                    "main",
                )
            };
        }
        let heads = "heads: u32, kv_heads: u32, head_dim: u32, context: u32";
        let softmax = with_exp!("shaders/attn_softmax.wgsl");
        let elementwise = with_exp!("shaders/elementwise.wgsl");
        let pair = signature("width: u32", &["mut a", "b"]);
        Kernels {
            embed: kernel!("embed", "dim: u32", &["tokens: u32", "quants: u32", "scales", "mut x"]),
            rms_norm: kernel!("rms_norm", "dim: u32, eps: f32", &["x", "weight", "mut out"]),
            quantize: kernel!("quantize", "cols: u32", &["x", "mut quants: u32", "mut scales"]),
            matmul_q8: kernel!("matmul_q8", "rows: u32, cols: u32", &["xq: u32", "xs", "wq: u32", "ws", "mut out"]),
            matmul_f32: kernel!(
                "matmul_f32",
                "rows: u32, cols: u32, accumulate: u32, scale: f32",
                &["x", "w", "mut out"]
            ),
            rope: kernel!(
                "rope",
                "heads: u32, head_dim: u32, into_cache: u32",
                &["src", "cos_table", "sin_table", "mut dst"]
            ),
            store: kernel!("store", "width: u32", &["src", "mut cache"]),
            scores: kernel!("attn_scores", heads, &["q", "keys", "mut scores"]),
            softmax: Kernel::declared(
                gpu,
                "attn_softmax",
                &signature("heads: u32, context: u32", &["mut scores"]),
                softmax,
                "main",
            ),
            values: kernel!("attn_values", heads, &["scores", "values", "mut out"]),
            silu_mul: Kernel::declared(gpu, "silu_mul", &pair, elementwise, "silu_mul"),
            add: Kernel::declared(gpu, "add", &pair, elementwise, "add"),
        }
    }
}

/// A Q8_0 matrix on the GPU, in the plain layout (`Q8Matrix::row_major`).
struct Matrix {
    quants: wgpu::Buffer,
    scales: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

impl Matrix {
    fn upload(gpu: &Gpu, name: &str, m: &Q8Matrix) -> Matrix {
        let (rows, cols) = m.shape();
        let (quants, scales) = m.row_major();
        let quants: Vec<u8> = quants.into_iter().map(|q| q as u8).collect();
        Matrix { quants: gpu.storage(name, &quants), scales: gpu.storage(name, &bytes_f32(&scales)), rows, cols }
    }
}

/// An adapter's pair for one matrix: scale · (x Aᵀ) Bᵀ is added to x Wᵀ.
struct Lora {
    a: wgpu::Buffer,
    b: wgpu::Buffer,
    rank: usize,
    scale: f32,
}

impl Lora {
    fn upload(gpu: &Gpu, pair: &LoraPair) -> Result<Lora> {
        let rank = pair.a.dim(0)?;
        let a: Vec<f32> = pair.a.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = pair.b.flatten_all()?.to_vec1()?;
        Ok(Lora {
            a: gpu.storage("lora a", &bytes_f32(&a)),
            b: gpu.storage("lora b", &bytes_f32(&b)),
            rank,
            scale: pair.scale as f32,
        })
    }
}

struct Block {
    attn_norm: wgpu::Buffer,
    ffn_norm: wgpu::Buffer,
    /// W_q, W_k, W_v, W_o, W_gate, W_up, W_down.
    linears: [Matrix; 7],
    adapters: [Option<Lora>; 7],
    keys: wgpu::Buffer,
    values: wgpu::Buffer,
}

/// Working buffers, sized for MAX_POSITIONS positions.
struct Buffers {
    tokens: wgpu::Buffer,
    x: wgpu::Buffer,
    h: wgpu::Buffer,
    q: wgpu::Buffer,
    q_rotated: wgpu::Buffer,
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    att: wgpu::Buffer,
    gate: wgpu::Buffer,
    up: wgpu::Buffer,
    /// The input of the next product, rounded to 14–15 bits per block (two values a word).
    xq: wgpu::Buffer,
    xs: wgpu::Buffer,
    /// x Aᵀ of an adapter.
    low_rank: wgpu::Buffer,
    scores: wgpu::Buffer,
    /// The last position's x, and its norm.
    last: wgpu::Buffer,
    last_normed: wgpu::Buffer,
    logits: wgpu::Buffer,
    staging: wgpu::Buffer,
}

pub struct GpuLlama {
    gpu: Arc<Gpu>,
    kernels: Kernels,
    blocks: Vec<Block>,
    table: Matrix,
    norm: wgpu::Buffer,
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    buffers: Buffers,
    /// {n, pos} of this forward pass, and {1, pos + n - 1} for the output projection.
    step: wgpu::Buffer,
    step_last: wgpu::Buffer,
    /// Shape uniforms, shared by the ops with the same shape.
    shapes: Shapes,
    ops: Vec<Op>,
    output_ops: Vec<Op>,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    hidden: usize,
    eps: f32,
    context: usize,
    max_rank: usize,
}

impl GpuLlama {
    /// Upload `model`'s weights (and its adapter, if one is set) and record the forward pass, for
    /// sequences of up to `context` positions.
    pub fn new(gpu: Arc<Gpu>, model: &Llama, context: usize) -> Result<GpuLlama> {
        let parts = model.parts()?;
        let context = context.min(MAX_SEQ_LEN);
        let (n_head, n_kv_head, head_dim) = (parts.n_head, parts.n_kv_head, parts.head_dim);
        if parts.cos.len() != MAX_SEQ_LEN * head_dim / 2 {
            return Err(Error::Gpu("the GPU path needs rotary positions over whole heads".into()));
        }
        if head_dim % 4 != 0 {
            return Err(Error::Gpu(format!("the GPU path needs heads of a multiple of 4 values, not {head_dim}")));
        }
        let dim = n_head * head_dim;
        let kv_dim = n_kv_head * head_dim;
        let g = &gpu;
        let blocks: Vec<Block> = parts
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| Block {
                attn_norm: g.storage("attn_norm", &bytes_f32(b.attn_norm)),
                ffn_norm: g.storage("ffn_norm", &bytes_f32(b.ffn_norm)),
                linears: b.linears.map(|(m, _)| Matrix::upload(g, &format!("blk.{i}"), m)),
                adapters: [None, None, None, None, None, None, None],
                keys: g.zeros("keys", context * kv_dim),
                values: g.zeros("values", context * kv_dim),
            })
            .collect();
        let hidden = blocks.first().map_or(0, |b| b.linears[4].rows);
        let table = Matrix::upload(g, "token_embd", parts.table);
        let vocab = table.rows;
        let p = MAX_POSITIONS;
        let widest = dim.max(hidden);
        let buffers = Buffers {
            tokens: g.zeros("tokens", p),
            x: g.zeros("x", p * dim),
            h: g.zeros("h", p * dim),
            q: g.zeros("q", p * dim),
            q_rotated: g.zeros("q rotated", p * dim),
            k: g.zeros("k", p * kv_dim),
            v: g.zeros("v", p * kv_dim),
            att: g.zeros("att", p * dim),
            gate: g.zeros("gate", p * hidden),
            up: g.zeros("up", p * hidden),
            xq: g.zeros("xq", p * widest / 2),
            xs: g.zeros("xs", p * widest / 32),
            low_rank: g.zeros("low rank", p),
            scores: g.zeros("scores", n_head * p * context),
            last: g.zeros("last", dim),
            last_normed: g.zeros("last normed", dim),
            logits: g.zeros("logits", vocab),
            staging: g.staging("logits staging", vocab),
        };
        let mut llama = GpuLlama {
            kernels: Kernels::new(g),
            norm: g.storage("output_norm", &bytes_f32(parts.norm)),
            cos: g.storage("cos", &bytes_f32(&parts.cos)),
            sin: g.storage("sin", &bytes_f32(&parts.sin)),
            step: g.uniform("step", [0; 4]),
            step_last: g.uniform("step last", [0; 4]),
            shapes: Shapes::default(),
            ops: Vec::new(),
            output_ops: Vec::new(),
            blocks,
            table,
            buffers,
            n_head,
            n_kv_head,
            head_dim,
            hidden,
            eps: parts.eps,
            context,
            max_rank: 0,
            gpu,
        };
        llama.set_adapter(&parts)?;
        llama.gpu.check()?;
        Ok(llama)
    }

    /// Follow the CPU model's adapter (set with `Llama::set_adapter`): upload its pairs, or drop
    /// them, and record the forward pass again. The base weights stay where they are.
    pub fn sync_adapter(&mut self, model: &Llama) -> Result<()> {
        self.set_adapter(&model.parts()?)
    }

    fn set_adapter(&mut self, parts: &Parts) -> Result<()> {
        // Every pair is uploaded before any replaces the old ones: a failure changes nothing.
        let mut uploaded = Vec::with_capacity(self.blocks.len());
        for b in &parts.blocks {
            let mut pairs: [Option<Lora>; 7] = Default::default();
            for (slot, (_, pair)) in pairs.iter_mut().zip(&b.linears) {
                *slot = pair.map(|p| Lora::upload(&self.gpu, p)).transpose()?;
            }
            uploaded.push(pairs);
        }
        let mut max_rank = 0;
        for (block, pairs) in self.blocks.iter_mut().zip(uploaded) {
            block.adapters = pairs;
            max_rank = block.adapters.iter().flatten().fold(max_rank, |m, l| m.max(l.rank));
        }
        if max_rank > self.max_rank {
            self.buffers.low_rank = self.gpu.zeros("low rank", MAX_POSITIONS * max_rank);
            self.max_rank = max_rank;
        }
        self.record();
        Ok(())
    }

    fn shape(&self, words: [u32; 4]) -> wgpu::Buffer {
        self.shapes.get(&self.gpu, words)
    }

    /// Record the ops of a forward pass (see the module's comment for the order).
    fn record(&mut self) {
        let (n_head, n_kv_head, hd) = (self.n_head as u32, self.n_kv_head as u32, self.head_dim as u32);
        let (dim, kv_dim, hidden, context) = (n_head * hd, n_kv_head * hd, self.hidden as u32, self.context as u32);
        let mut ops = Vec::new();
        let b = &self.buffers;
        let (step, step_last) = (self.step.clone(), self.step_last.clone());

        let shape = self.shape([dim, 0, 0, 0]);
        ops.push(self.op(
            &self.kernels.embed,
            &[&step, &shape, &b.tokens, &self.table.quants, &self.table.scales, &b.x],
            per_value(dim),
        ));
        let norm_shape = self.shape([dim, self.eps.to_bits(), 0, 0]);
        for l in 0..self.blocks.len() {
            let blk = &self.blocks[l];
            let b = &self.buffers;
            ops.push(self.op(
                &self.kernels.rms_norm,
                &[&step, &norm_shape, &b.x, &blk.attn_norm, &b.h],
                per_position(),
            ));
            ops.extend(self.quantize(&step, &b.h, dim));
            for (j, out) in [(0, &b.q), (1, &b.k), (2, &b.v)] {
                ops.extend(self.linear(&step, l, j, &b.h, out));
            }
            let rope_q = self.shape([n_head, hd, 0, 0]);
            let rope_k = self.shape([n_kv_head, hd, 1, 0]);
            let store = self.shape([kv_dim, 0, 0, 0]);
            let attention = self.shape([n_head, n_kv_head, hd, context]);
            let softmax = self.shape([n_head, context, 0, 0]);
            let (b, blk) = (&self.buffers, &self.blocks[l]);
            ops.push(self.op(
                &self.kernels.rope,
                &[&step, &rope_q, &b.q, &self.cos, &self.sin, &b.q_rotated],
                per_value(dim / 2),
            ));
            ops.push(self.op(
                &self.kernels.rope,
                &[&step, &rope_k, &b.k, &self.cos, &self.sin, &blk.keys],
                per_value(kv_dim / 2),
            ));
            ops.push(self.op(&self.kernels.store, &[&step, &store, &b.v, &blk.values], per_value(kv_dim)));
            let heads = n_head;
            ops.push(self.op(
                &self.kernels.scores,
                &[&step, &attention, &b.q_rotated, &blk.keys, &b.scores],
                Box::new(move |n, pos| [groups(pos + n), heads, n]),
            ));
            ops.push(self.op(
                &self.kernels.softmax,
                &[&step, &softmax, &b.scores],
                Box::new(move |n, _| [groups(n * heads), 1, 1]),
            ));
            ops.push(self.op(
                &self.kernels.values,
                &[&step, &attention, &b.scores, &blk.values, &b.att],
                Box::new(move |n, _| [groups(hd), heads, n]),
            ));
            ops.extend(self.quantize(&step, &b.att, dim));
            ops.extend(self.linear(&step, l, 3, &b.att, &b.h));
            let width = self.shape([dim, 0, 0, 0]);
            let wide = self.shape([hidden, 0, 0, 0]);
            let (b, blk) = (&self.buffers, &self.blocks[l]);
            ops.push(self.op(&self.kernels.add, &[&step, &width, &b.x, &b.h], per_element(dim)));
            ops.push(self.op(&self.kernels.rms_norm, &[&step, &norm_shape, &b.x, &blk.ffn_norm, &b.h], per_position()));
            ops.extend(self.quantize(&step, &b.h, dim));
            ops.extend(self.linear(&step, l, 4, &b.h, &b.gate));
            ops.extend(self.linear(&step, l, 5, &b.h, &b.up));
            ops.push(self.op(&self.kernels.silu_mul, &[&step, &wide, &b.gate, &b.up], per_element(hidden)));
            ops.extend(self.quantize(&step, &b.gate, hidden));
            ops.extend(self.linear(&step, l, 6, &b.gate, &b.h));
            ops.push(self.op(&self.kernels.add, &[&step, &width, &b.x, &b.h], per_element(dim)));
        }

        // The last position only: its x is copied to `last` between the two passes.
        let b = &self.buffers;
        let mut output_ops = vec![self.op(
            &self.kernels.rms_norm,
            &[&step_last, &norm_shape, &b.last, &self.norm, &b.last_normed],
            per_position(),
        )];
        output_ops.extend(self.quantize(&step_last, &b.last_normed, dim));
        let out_shape = self.shape([self.table.rows as u32, self.table.cols as u32, 0, 0]);
        let b = &self.buffers;
        output_ops.push(self.op(
            &self.kernels.matmul_q8,
            &[&step_last, &out_shape, &b.xq, &b.xs, &self.table.quants, &self.table.scales, &b.logits],
            per_value(self.table.rows as u32),
        ));
        self.ops = ops;
        self.output_ops = output_ops;
    }

    fn op(&self, kernel: &Kernel, buffers: &[&wgpu::Buffer], grid: Grid) -> Op {
        Op::new(&self.gpu, kernel, buffers, grid)
    }

    /// Round `input` (n × cols) into xq/xs (`kernels::blocks::quantize_rows`), for the products that follow.
    fn quantize(&self, step: &wgpu::Buffer, input: &wgpu::Buffer, cols: u32) -> Vec<Op> {
        let shape = self.shape([cols, 0, 0, 0]);
        let b = &self.buffers;
        vec![self.op(
            &self.kernels.quantize,
            &[step, &shape, input, &b.xq, &b.xs],
            Box::new(move |n, _| [groups(n * cols / 32), 1, 1]),
        )]
    }

    /// out = input · W_jᵀ of block l (+ its adapter's update); `input` already rounded into xq/xs.
    fn linear(&self, step: &wgpu::Buffer, l: usize, j: usize, input: &wgpu::Buffer, out: &wgpu::Buffer) -> Vec<Op> {
        let m = &self.blocks[l].linears[j];
        let (rows, cols) = (m.rows as u32, m.cols as u32);
        let shape = self.shape([rows, cols, 0, 0]);
        let lora = self.blocks[l].adapters[j].as_ref().map(|a| (a.rank as u32, a.scale));
        let down = lora.map(|(rank, scale)| self.shape([rank, cols, 0, scale.to_bits()]));
        let up = lora.map(|(rank, _)| self.shape([rows, rank, 1, 1f32.to_bits()]));
        let (m, b) = (&self.blocks[l].linears[j], &self.buffers);
        let mut ops = vec![self.op(
            &self.kernels.matmul_q8,
            &[step, &shape, &b.xq, &b.xs, &m.quants, &m.scales, out],
            per_value(rows),
        )];
        if let (Some(a), Some(down), Some(up)) = (&self.blocks[l].adapters[j], down, up) {
            let rank = a.rank as u32;
            ops.push(self.op(&self.kernels.matmul_f32, &[step, &down, input, &a.a, &b.low_rank], per_value(rank)));
            ops.push(self.op(&self.kernels.matmul_f32, &[step, &up, &b.low_rank, &a.b, out], per_value(rows)));
        }
        ops
    }

    /// Run `tokens` at positions pos..pos + n (after the cached ones) and return the logits of
    /// the last. Natively it completes at once (`crate::gpu::now`); in the browser, await it.
    pub async fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>> {
        let n = tokens.len();
        if n == 0 || n > MAX_POSITIONS {
            return Err(Error::Internal(format!("{n} positions in one GPU pass (1 to {MAX_POSITIONS})")));
        }
        if pos + n > self.context {
            return Err(Error::Internal(format!("positions up to {} past the GPU cache's {}", pos + n, self.context)));
        }
        let vocab = self.table.rows as u32;
        if let Some(&t) = tokens.iter().find(|&&t| t >= vocab) {
            return Err(Error::Input(format!("token id {t} outside the vocabulary of {vocab}")));
        }
        let (gpu, b) = (&self.gpu, &self.buffers);
        let (n32, pos32) = (n as u32, pos as u32);
        gpu.queue.write_buffer(&b.tokens, 0, &bytes_u32(tokens));
        gpu.queue.write_buffer(&self.step, 0, &bytes_u32(&[n32, pos32, 0, 0]));
        gpu.queue.write_buffer(&self.step_last, 0, &bytes_u32(&[1, pos32 + n32 - 1, 0, 0]));
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for op in &self.ops {
                op.record(&mut pass, n32, pos32);
            }
        }
        let dim = (self.n_head * self.head_dim * 4) as u64;
        encoder.copy_buffer_to_buffer(&b.x, (n as u64 - 1) * dim, &b.last, 0, dim);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for op in &self.output_ops {
                op.record(&mut pass, 1, pos32 + n32 - 1);
            }
        }
        encoder.copy_buffer_to_buffer(&b.logits, 0, &b.staging, 0, vocab as u64 * 4);
        gpu.queue.submit([encoder.finish()]);
        gpu.read(&b.staging, vocab as usize).await
    }
}
