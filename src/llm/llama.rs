//! The language model itself: a llama-architecture decoder (SmolLM2-135M is one), read from a GGUF
//! file, in one file you can read in a sitting.
//!
//! A forward pass, for each new token position:
//!   embed the token → for each of the `n_layer` blocks:
//!       x += attention(rms_norm(x))   (queries, keys and values; rotary positions; a causal mask;
//!                                      keys and values of earlier positions come from the cache)
//!       x += mlp(rms_norm(x))         (silu(x W1) * (x W3), then W2)
//!   → rms_norm → logits for the last position, against the (tied) token embedding table.
//!
//! Two ways through it compute the same thing: `forward`, for prompts (many positions at once)
//! and for any weight format, with candle tensors between the steps; and `forward_one`, one token
//! on plain f32 buffers, the path every generated token takes when the weights are Q8_0, because
//! a tensor operation per step of the way cost a third of a step. Both use our own Q8_0 kernel
//! (`q8.rs`), attention (`attend.rs`, position by position), RMSNorm, softmax and SiLU
//! (`vecmath.rs`), so with 8-bit weights they give the same bits, on every build and on a GPU
//! with IEEE arithmetic (`crate::gpu`); a prompt may instead take f32 weights (`dense.rs` in
//! wasm, gemm natively), and `Weights::CandleKernels` takes candle's operations throughout.
//!
//! We own this file, rather than using candle-transformers' `quantized_llama`, because the app
//! needs to change what happens inside: weights kept twice for prompt processing (below), our own
//! kernels, low-rank adapters (our fine-tune), and later GPU kernels. `tests/llama_parity.rs` holds
//! it to candle's implementation.
//!
//! Training (our LoRA fine-tune, `crate::tune`) goes through `forward_train`, the same model
//! written with operations candle can differentiate: its fused `rms_norm`, `softmax_last_dim` and
//! `rope_i` kernels have no backward pass and would silently stop the gradient.

use super::attend::attend;
use super::lora::{Adapter, LoraPair};
use crate::kernels::q8::Q8Matrix;
use crate::kernels::vecmath::{dot, silu_mul};
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{CpuStorage, CustomOp1, DType, Device, IndexOp, Layout, Module, Shape, Tensor, D};
use std::io::{Read, Seek};

/// Longest sequence the rotary tables cover.
pub const MAX_SEQ_LEN: usize = 4096;

/// How the weight matrices are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// As stored (quantized): least memory.
    #[default]
    Quantized,
    /// Also as f32, used when many positions go through at once (the prompt). A quantized matrix
    /// product reads each weight once per position; f32 products (candle's gemm natively,
    /// `dense.rs` in wasm) block the work so weights stay in cache. Measured in wasm (Node, one
    /// thread, 117-token prompt, with candle's gemm): 109 vs 59 tok/s prompt processing, for ~4x
    /// the weight memory (about +425 MB for SmolLM2-135M).
    QuantizedAndDense,
    /// As stored, multiplied by candle's quantized kernels instead of ours, with candle's RMSNorm,
    /// batched attention, softmax, SiLU and f32 rotary tables: candle-transformers' computation,
    /// the reference that `tests/llama_parity.rs` and `make bench` hold ours to.
    CandleKernels,
}

/// The weight matrices that low-rank adapters can target, by their GGUF names.
pub const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// A quantized weight matrix: Q8_0 (the format we ship) goes through our own kernel
/// (`q8.rs`), any other format through candle's.
enum Quantized {
    Q8(Q8Matrix),
    Candle(QMatMul),
}

impl Quantized {
    fn new(q: candle_core::quantized::QTensor, weights: Weights) -> Result<Self> {
        if weights == Weights::CandleKernels {
            return Ok(Quantized::Candle(QMatMul::from_qtensor(q)?));
        }
        Ok(match Q8Matrix::from_qtensor(&q)? {
            Some(m) => Quantized::Q8(m),
            None => Quantized::Candle(QMatMul::from_qtensor(q)?),
        })
    }

    /// (out, in) of W.
    fn shape(&self) -> Result<(usize, usize)> {
        let dims = match self {
            Quantized::Q8(m) => return Ok(m.shape()),
            Quantized::Candle(QMatMul::QTensor(q)) => q.shape().dims().to_vec(),
            Quantized::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims().to_vec(),
        };
        match dims.as_slice() {
            [o, i] => Ok((*o, *i)),
            other => Err(Error::Internal(format!("weight matrix of shape {other:?}"))),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Quantized::Q8(m) => m.forward(x),
            Quantized::Candle(q) => Ok(q.forward(x)?),
        }
    }
}

/// `x W^T` for a weight matrix W, plus an adapter's low-rank update when one is set.
struct Linear {
    quantized: Quantized,
    /// W in f32, for prompts (`Weights::QuantizedAndDense`).
    dense: Option<Tensor>,
    lora: Option<LoraPair>,
}

impl Linear {
    fn new(q: candle_core::quantized::QTensor, weights: Weights, device: &Device) -> Result<Self> {
        let dense = match weights {
            Weights::Quantized | Weights::CandleKernels => None,
            Weights::QuantizedAndDense => Some(q.dequantize(device)?),
        };
        Ok(Linear { quantized: Quantized::new(q, weights)?, dense, lora: None })
    }

    /// (out, in) of W.
    fn shape(&self) -> Result<(usize, usize)> {
        self.quantized.shape()
    }

    /// `x` is (batch, positions, features).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let many = x.dim(1)? > 1;
        let y = match &self.dense {
            Some(dense) if many => dense_product(x, dense)?,
            _ => self.quantized.forward(x)?,
        };
        match &self.lora {
            Some(lora) => Ok((y + lora.forward(x)?)?),
            None => Ok(y),
        }
    }

    /// One position, on plain buffers (the decode path): `out = x Wᵀ` (+ the adapter's update).
    /// Only for matrices in our Q8_0 kernel's form (`Llama::decodes_on_buffers`).
    fn matvec(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let Quantized::Q8(m) = &self.quantized else {
            return Err(Error::Internal("the buffer decode path needs Q8_0 weights".into()));
        };
        m.matmul(x, out);
        if let Some(lora) = &self.lora {
            out.iter_mut().zip(lora.update(x)?).for_each(|(o, d)| *o += d);
        }
        Ok(())
    }

    /// The same product for training: W is frozen (no gradient is computed for it), the adapter's
    /// matrices get theirs. Needs the f32 copy of W.
    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let Some(w) = &self.dense else {
            return Err(Error::Internal("training needs the model loaded with Weights::QuantizedAndDense".into()));
        };
        let y = x.contiguous()?.apply_op1(FrozenMatmul(w.clone()))?;
        match &self.lora {
            Some(lora) => Ok((y + lora.forward_train(x)?)?),
            None => Ok(y),
        }
    }
}

/// `x Wᵀ` for many positions with W in f32, W's rows split over threads (`split_over_threads`):
/// each thread reads only its share of the weights and writes its own columns of the result. In
/// wasm the products are our kernel's (`dense.rs`), natively candle's.
fn dense_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    dense_product_with(x, w, cfg!(target_arch = "wasm32"))
}

/// `dense_product` with the kernel chosen by the caller, so native tests can run the wasm path.
fn dense_product_with(x: &Tensor, w: &Tensor, ours: bool) -> Result<Tensor> {
    if !ours {
        return split_over_threads(w.dim(0)?, 256, D::Minus1, |start, rows| {
            Ok(x.broadcast_matmul(&w.narrow(0, start, rows)?.t()?)?)
        });
    }
    let (batch, n, k) = x.dims3()?;
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    // W is read in place: a copy would be 1 to 3.5 MB per product.
    let (storage, layout) = w.storage_and_layout();
    let (candle_core::Storage::Cpu(CpuStorage::F32(all)), Some((from, to))) = (&*storage, layout.contiguous_offsets())
    else {
        return Err(Error::Internal("dense weights must be contiguous f32 on the CPU".into()));
    };
    let ws = &all[from..to];
    split_over_threads(w.dim(0)?, 256, D::Minus1, |start, rows| {
        let mut out = vec![0f32; batch * n * rows];
        crate::kernels::dense::matmul_t(&xs, &ws[start * k..(start + rows) * k], k, &mut out);
        Ok(Tensor::from_vec(out, (batch, n, rows), x.device())?)
    })
}

/// `f(start, len)` over `0..total` cut into one range per thread, run in parallel, the results
/// concatenated along `dim` — in wasm with a thread pool (the threaded build) only. Natively
/// candle's own kernels already spread every product over all threads; in wasm candle sees one
/// CPU and stays on the calling thread. Ranges shorter than `min` are not worth a thread, so
/// there may be fewer ranges than threads.
fn split_over_threads(
    total: usize,
    min: usize,
    dim: D,
    f: impl Fn(usize, usize) -> Result<Tensor> + Sync,
) -> Result<Tensor> {
    let threads = if cfg!(target_arch = "wasm32") { rayon::current_num_threads() } else { 1 };
    // As many ranges as threads, but none shorter than `min`.
    let ranges = threads.min(total / min.max(1));
    if ranges <= 1 {
        return f(0, total);
    }
    use rayon::prelude::*;
    let len = total.div_ceil(ranges);
    let results = (0..total.div_ceil(len))
        .into_par_iter()
        .map(|i| f(i * len, len.min(total - i * len)))
        .collect::<Result<Vec<Tensor>>>()?;
    Ok(Tensor::cat(&results, dim)?)
}

/// `x W^T` for a constant W. candle's own matmul also computes W's gradient on the way back,
/// which for a frozen base model is wasted work: half the backward pass.
struct FrozenMatmul(Tensor);

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        on_cpu(storage, layout, |x| {
            let dims = x.dims();
            let inner = *dims.last().unwrap_or(&1);
            let mut out = dims.to_vec();
            if let Some(last) = out.last_mut() {
                *last = self.0.dim(0)?;
            }
            x.reshape((x.elem_count() / inner.max(1), inner))?.matmul(&self.0.t()?)?.reshape(out)
        })
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.broadcast_matmul(&self.0)?))
    }
}

struct RmsNorm {
    weight: Tensor,
    /// The same weights as a plain vector, for the buffer decode path.
    values: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Each position of `x` (..., dim): with `candle_ops` by candle's operation, otherwise as
    /// `forward_slice` does it, so that a prompt's positions get the numbers a decode step (and
    /// the GPU's rms_norm.wgsl) would give them.
    fn forward(&self, x: &Tensor, candle_ops: bool) -> Result<Tensor> {
        if candle_ops {
            return Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?);
        }
        let dim = self.values.len();
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; input.len()];
        for (x, out) in input.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            self.forward_slice(x, out)?;
        }
        Ok(Tensor::from_vec(out, x.shape(), x.device())?)
    }

    /// One position, on plain buffers.
    fn forward_slice(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let mean_square = dot(x, x) / x.len() as f32;
        let inv = 1.0 / (mean_square + self.eps).sqrt();
        for ((o, v), w) in out.iter_mut().zip(x).zip(&self.values) {
            *o = v * inv * w;
        }
        Ok(())
    }

    /// The same, from differentiable operations.
    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?.sqrt()?;
        Ok(x.broadcast_div(&rms)?.broadcast_mul(&self.weight)?)
    }
}

/// Keys and values of every position seen so far, one block's: one vector per key/value head,
/// holding that head's keys (or values) position after position. Plain vectors, so that `attend`
/// reads them in place, one head's front to back, and candle's attention (`Weights::CandleKernels`)
/// copies them into (heads, positions, head_dim) tensors without reordering.
struct Cache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    head_dim: usize,
}

impl Cache {
    fn new(n_kv_head: usize, head_dim: usize) -> Self {
        Cache { keys: vec![Vec::new(); n_kv_head], values: vec![Vec::new(); n_kv_head], head_dim }
    }

    fn len(&self) -> usize {
        self.keys[0].len() / self.head_dim
    }

    fn clear(&mut self) {
        self.keys.iter_mut().chain(&mut self.values).for_each(Vec::clear);
    }

    /// Add positions, their keys and values given head by head: (heads, positions, head_dim).
    fn push(&mut self, keys: &[f32], values: &[f32]) {
        let per_head = keys.len() / self.keys.len();
        for (to, from) in self.keys.iter_mut().zip(keys.chunks_exact(per_head)) {
            to.extend_from_slice(from);
        }
        for (to, from) in self.values.iter_mut().zip(values.chunks_exact(per_head)) {
            to.extend_from_slice(from);
        }
    }

    /// Keys and values of every position as tensors (1, kv heads, positions, head dim).
    fn tensors(&self) -> Result<(Tensor, Tensor)> {
        let t = |heads: &[Vec<f32>]| -> Result<Tensor> {
            Ok(Tensor::from_vec(heads.concat(), (1, heads.len(), self.len(), self.head_dim), &Device::Cpu)?)
        };
        Ok((t(&self.keys)?, t(&self.values)?))
    }
}

struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: RmsNorm,
    w1: Linear,
    w2: Linear,
    w3: Linear,
    cache: Cache,
}

impl Block {
    /// The block's projections in the order of `PROJECTIONS`.
    fn linears(&self) -> [&Linear; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w1, &self.w3, &self.w2]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [&mut self.wq, &mut self.wk, &mut self.wv, &mut self.wo, &mut self.w1, &mut self.w3, &mut self.w2]
    }
}

pub struct Llama {
    embeddings: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Quantized,
    /// The output projection as f32, for training (kept only with `Weights::QuantizedAndDense`).
    output_dense: Option<Tensor>,
    /// Whether the output projection is the token embedding table.
    tied: bool,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Rotary position tables: (MAX_SEQ_LEN, head_dim / 2).
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// `Weights::CandleKernels`: candle's operations throughout, ours nowhere.
    candle_ops: bool,
}

/// Why a model's shape from its metadata cannot be run, if it cannot: every later division and
/// slice in this file relies on these.
fn shape_error(
    n_head: usize,
    n_kv_head: usize,
    n_layer: usize,
    dim: usize,
    rope_dim: usize,
    eps: f32,
    rope_base: f32,
) -> Option<String> {
    let problem = if n_head == 0 || n_kv_head == 0 || n_layer == 0 || dim == 0 {
        "a head count, the layer count or the embedding length is 0"
    } else if !n_head.is_multiple_of(n_kv_head) {
        "the head count is not a multiple of the key/value head count"
    } else if !dim.is_multiple_of(n_head) {
        "the embedding length is not a multiple of the head count"
    } else if rope_dim != dim / n_head || !rope_dim.is_multiple_of(2) {
        // The rotary tables and their use assume that every dimension of a head turns.
        "the rotary dimension is not the head size (partial rotary embeddings are not supported), or is odd"
    } else if ![eps, rope_base].iter().all(|v| v.is_finite() && *v > 0.0) {
        "the norm epsilon or the rotary base is not a positive number"
    } else {
        return None;
    };
    Some(format!(
        "unusable model shape: {problem} (heads {n_head}, key/value heads {n_kv_head}, layers {n_layer}, \
         embedding {dim}, rotary dimension {rope_dim})"
    ))
}

/// Why the weight matrices do not have the shapes the metadata implies, if they do not: every
/// product and slice of the forward pass takes its sizes from the metadata. Checked from the
/// file's table of tensors, before any is read; a missing tensor is reported when it is read.
fn tensor_shape_error(ct: &Content, n_layer: usize, dim: usize, n_head: usize, n_kv_head: usize) -> Option<String> {
    let shape = |name: &str| ct.tensor_infos.get(name).map(|t| t.shape.dims().to_vec());
    let kv = n_kv_head * (dim / n_head);
    let vocab = shape("token_embd.weight").and_then(|d| (d.len() == 2 && d[1] == dim).then_some(d[0]));
    let Some(vocab) = vocab.filter(|&v| v > 0) else {
        return Some(format!("token_embd.weight is {:?}, not (vocabulary, {dim})", shape("token_embd.weight")));
    };
    let mut want: Vec<(String, Vec<usize>)> = vec![("output.weight".into(), vec![vocab, dim]), ("output_norm.weight".into(), vec![dim])];
    for i in 0..n_layer {
        let hidden = shape(&format!("blk.{i}.ffn_gate.weight")).map_or(0, |d| d[0]);
        if hidden == 0 {
            return Some(format!("blk.{i}.ffn_gate.weight has no rows"));
        }
        for (name, dims) in [
            ("attn_q", vec![dim, dim]),
            ("attn_k", vec![kv, dim]),
            ("attn_v", vec![kv, dim]),
            ("attn_output", vec![dim, dim]),
            ("ffn_gate", vec![hidden, dim]),
            ("ffn_up", vec![hidden, dim]),
            ("ffn_down", vec![dim, hidden]),
            ("attn_norm", vec![dim]),
            ("ffn_norm", vec![dim]),
        ] {
            want.push((format!("blk.{i}.{name}.weight"), dims));
        }
    }
    want.push(("token_embd.weight".into(), vec![vocab, dim]));
    want.into_iter().find_map(|(name, dims)| match shape(&name) {
        Some(have) if have != dims => Some(format!("{name} is {have:?}, the model's shape needs {dims:?}")),
        Some(have) if have.len() == 2 => row_blocks_error(&name, ct.tensor_infos[&name].ggml_dtype, have[1]),
        _ => None,
    })
}

/// A quantized matrix's rows must be whole blocks: candle's products walk a row block by block,
/// and for Q4_1, Q5_0 and Q5_1 two blocks at a time (llama.cpp's layout). Every real model's rows
/// are; a crafted file's need not be.
fn row_blocks_error(name: &str, dtype: GgmlDType, cols: usize) -> Option<String> {
    let pairs = matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1);
    let multiple = dtype.block_size() * if pairs { 2 } else { 1 };
    (cols % multiple != 0)
        .then(|| format!("{name} is {dtype:?} with rows of {cols} values; that type's products need a multiple of {multiple}"))
}

impl Llama {
    pub fn from_gguf<R: Read + Seek>(ct: &Content, reader: &mut R, weights: Weights, device: &Device) -> Result<Self> {
        let meta = |key: &str| ct.metadata.get(key).ok_or_else(|| Error::Input(format!("GGUF metadata has no {key}")));
        let int = |key: &str| -> Result<usize> { Ok(meta(key)?.to_u32()? as usize) };
        let n_head = int("llama.attention.head_count")?;
        let n_kv_head = int("llama.attention.head_count_kv")?;
        let n_layer = int("llama.block_count")?;
        let dim = int("llama.embedding_length")?;
        let rope_dim = int("llama.rope.dimension_count")?;
        let eps = meta("llama.attention.layer_norm_rms_epsilon")?.to_f32()?;
        let rope_base = meta("llama.rope.freq_base").and_then(|v| Ok(v.to_f32()?)).unwrap_or(10_000.0);
        if let Some(reason) = shape_error(n_head, n_kv_head, n_layer, dim, rope_dim, eps, rope_base) {
            return Err(Error::Input(reason));
        }
        if let Some(reason) = tensor_shape_error(ct, n_layer, dim, n_head, n_kv_head) {
            return Err(Error::Input(reason));
        }

        let mut tensor = |name: &str| Ok::<_, Error>(ct.tensor(reader, name, device)?);
        let norm = |t: candle_core::quantized::QTensor| -> Result<RmsNorm> {
            let weight = t.dequantize(device)?;
            Ok(RmsNorm { values: weight.to_vec1()?, weight, eps })
        };
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?;
        // Small models tie the output projection to the embedding table.
        let (output, output_dense, tied) = match tensor("output.weight") {
            Ok(t) => {
                let dense = match weights {
                    Weights::QuantizedAndDense => Some(t.dequantize(device)?),
                    Weights::Quantized | Weights::CandleKernels => None,
                };
                (Quantized::new(t, weights)?, dense, false)
            }
            Err(_) => {
                let dense = (weights == Weights::QuantizedAndDense).then(|| embeddings.clone());
                (Quantized::new(embeddings_q, weights)?, dense, true)
            }
        };
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let mut linear = |name: &str| Linear::new(tensor(&format!("blk.{i}.{name}.weight"))?, weights, device);
            blocks.push(Block {
                wq: linear("attn_q")?,
                wk: linear("attn_k")?,
                wv: linear("attn_v")?,
                wo: linear("attn_output")?,
                w1: linear("ffn_gate")?,
                w2: linear("ffn_down")?,
                w3: linear("ffn_up")?,
                attn_norm: norm(tensor(&format!("blk.{i}.attn_norm.weight"))?)?,
                ffn_norm: norm(tensor(&format!("blk.{i}.ffn_norm.weight"))?)?,
                cache: Cache::new(n_kv_head, dim / n_head),
            });
        }
        let (cos, sin) = match weights {
            Weights::CandleKernels => rotary_tables_as_candle(rope_dim, rope_base, device)?,
            _ => rotary_tables(rope_dim, rope_base, device)?,
        };
        Ok(Llama {
            embeddings,
            blocks,
            norm: norm(tensor("output_norm.weight")?)?,
            output,
            output_dense,
            tied,
            n_head,
            n_kv_head,
            head_dim: dim / n_head,
            cos,
            sin,
            device: device.clone(),
            candle_ops: weights == Weights::CandleKernels,
        })
    }

    /// Forget every cached position: the next `forward` starts a new sequence at position 0.
    pub fn clear_cache(&mut self) {
        for b in &mut self.blocks {
            b.cache.clear();
        }
    }

    /// Names ("blk.{i}.{projection}") and (out, in) shapes of the matrices an adapter can target.
    pub fn projections(&self) -> Result<Vec<(String, (usize, usize))>> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for (p, linear) in PROJECTIONS.iter().zip(b.linears()) {
                out.push((format!("blk.{i}.{p}"), linear.shape()?));
            }
        }
        Ok(out)
    }

    /// Apply a low-rank adapter (our fine-tune) on top of the base weights, or remove it with
    /// `None`. Nothing is merged, so switching back and forth is instant and costs no memory
    /// beyond the adapter itself.
    pub fn set_adapter(&mut self, adapter: Option<&Adapter>) -> Result<()> {
        let shapes: std::collections::HashMap<String, (usize, usize)> = self.projections()?.into_iter().collect();
        if let Some(adapter) = adapter {
            for (name, pair) in &adapter.pairs {
                let Some(&(out, inp)) = shapes.get(name) else {
                    return Err(Error::Input(format!("the adapter targets {name}, which this model does not have")));
                };
                let (a, b) = (pair.a.dims(), pair.b.dims());
                if a != [adapter.config.rank, inp] || b != [out, adapter.config.rank] {
                    return Err(Error::Input(format!(
                        "the adapter's {name} has shapes {a:?} and {b:?}; this model needs [{}, {inp}] and [{out}, {}]",
                        adapter.config.rank, adapter.config.rank
                    )));
                }
            }
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (p, linear) in PROJECTIONS.iter().zip(b.linears_mut()) {
                linear.lora = adapter.and_then(|a| a.pairs.get(&format!("blk.{i}.{p}"))).cloned();
            }
        }
        Ok(())
    }

    /// Logits (len(at), vocabulary) at positions `at` of one whole sequence `tokens`, computed
    /// with operations that candle can differentiate. No cache: every position is computed.
    pub fn forward_train(&self, tokens: &[u32], at: &[u32]) -> Result<Tensor> {
        let Some(output) = &self.output_dense else {
            return Err(Error::Internal("training needs the model loaded with Weights::QuantizedAndDense".into()));
        };
        let n = tokens.len();
        if n == 0 || n > MAX_SEQ_LEN {
            return Err(Error::Input(format!("a training sequence of {n} tokens")));
        }
        let group = self.n_head / self.n_kv_head;
        let blocked = causal_mask(n, 0, group, &self.device)?;
        let mask = blocked.where_cond(
            &Tensor::new(f32::NEG_INFINITY, &self.device)?.broadcast_as(blocked.shape())?,
            &Tensor::zeros(blocked.shape(), DType::F32, &self.device)?,
        )?;
        let mut x = self.embeddings.embedding(&Tensor::new(tokens, &self.device)?)?.unsqueeze(0)?;
        let (cos, sin) = (self.cos.narrow(0, 0, n)?, self.sin.narrow(0, 0, n)?);
        for b in &self.blocks {
            let h = b.attn_norm.forward_train(&x)?;
            let h = attention_train(b, &h, &mask, &cos, &sin, (self.n_head, self.n_kv_head, self.head_dim))?;
            x = (x + h)?;
            let h = b.ffn_norm.forward_train(&x)?;
            let gate = b.w1.forward_train(&h)?.silu()?;
            let h = b.w2.forward_train(&(gate * b.w3.forward_train(&h)?)?)?;
            x = (x + h)?;
        }
        let x = x.squeeze(0)?.index_select(&Tensor::new(at, &self.device)?, 0)?;
        let x = self.norm.forward_train(&x)?;
        Ok(x.apply_op1(FrozenMatmul(output.clone()))?)
    }

    /// Run `tokens` (1, n) placed at positions `pos..pos + n`, after the cached ones; returns the
    /// logits for the last of them (1, vocabulary).
    pub fn forward(&mut self, tokens: &Tensor, pos: usize) -> Result<Tensor> {
        let (_, n) = tokens.dims2()?;
        if pos + n > MAX_SEQ_LEN {
            return Err(Error::Internal(format!("positions {pos}..{} past the model's {MAX_SEQ_LEN}", pos + n)));
        }
        if n == 1 && self.decodes_on_buffers() {
            return self.forward_one(tokens.flatten_all()?.to_vec1::<u32>()?[0], pos);
        }
        let group = self.n_head / self.n_kv_head;
        let mask = match n > 1 && self.candle_ops {
            true => Some(causal_mask(n, pos, group, &self.device)?),
            false => None,
        };
        let mut x = self.embeddings.embedding(&tokens.flatten_all()?)?.unsqueeze(0)?;
        let (cos, sin) = (self.cos.narrow(0, pos, n)?, self.sin.narrow(0, pos, n)?);
        let shape = (self.n_head, self.n_kv_head, self.head_dim);
        let candle_ops = self.candle_ops;
        for b in &mut self.blocks {
            let h = b.attn_norm.forward(&x, candle_ops)?;
            let h = match candle_ops {
                true => attention(b, &h, mask.as_ref(), &cos, &sin, pos, shape)?,
                false => attention_by_position(b, &h, &cos, &sin, pos, shape)?,
            };
            x = (x + h)?;
            let h = b.ffn_norm.forward(&x, candle_ops)?;
            let (gate, up) = (b.w1.forward(&h)?, b.w3.forward(&h)?);
            let h = match candle_ops {
                true => b.w2.forward(&(candle_nn::ops::silu(&gate)? * up)?)?,
                false => b.w2.forward(&silu_times(&gate, &up)?)?,
            };
            x = (x + h)?;
        }
        let x = self.norm.forward(&x.i((.., n - 1.., ..))?, candle_ops)?.squeeze(1)?;
        self.output.forward(&x)
    }
}

impl Llama {
    /// Whether one-token steps can take `forward_one`: every matrix is Q8_0 in our kernel's form.
    fn decodes_on_buffers(&self) -> bool {
        let ours = |q: &Quantized| matches!(q, Quantized::Q8(_));
        ours(&self.output) && self.blocks.iter().all(|b| b.linears().iter().all(|l| ours(&l.quantized)))
    }

    /// One token at position `pos`, on plain f32 buffers: the path every generated token takes.
    /// It computes what `forward` computes, without a tensor operation per step of the way: those
    /// cost about a third of a decode step (measured natively on one thread: 33 ms per token
    /// against 22 ms for the matrix products alone), for vectors of a few hundred numbers.
    fn forward_one(&mut self, token: u32, pos: usize) -> Result<Tensor> {
        let (n_head, n_kv_head, head_dim) = (self.n_head, self.n_kv_head, self.head_dim);
        let (dim, kv_dim) = (n_head * head_dim, n_kv_head * head_dim);
        let hidden = self.blocks.first().map_or(Ok((0, 0)), |b| b.w1.shape())?.0;
        if pos >= MAX_SEQ_LEN {
            return Err(Error::Internal(format!("position {pos} is past the model's {MAX_SEQ_LEN}")));
        }
        let mut x = self.embeddings.get(token as usize)?.to_vec1::<f32>()?;
        let (cos, sin) = (self.cos.get(pos)?.to_vec1::<f32>()?, self.sin.get(pos)?.to_vec1::<f32>()?);
        let (mut h, mut q, mut att) = (vec![0f32; dim], vec![0f32; dim], vec![0f32; dim]);
        let (mut k, mut v) = (vec![0f32; kv_dim], vec![0f32; kv_dim]);
        let (mut gate, mut up) = (vec![0f32; hidden], vec![0f32; hidden]);
        let mut scores = Vec::with_capacity(n_head / n_kv_head * (pos + 1));
        for b in &mut self.blocks {
            if pos == 0 {
                b.cache.clear();
            }
            if b.cache.len() != pos {
                return Err(Error::Internal(format!("position {pos} after {} cached positions", b.cache.len())));
            }
            // Attention.
            b.attn_norm.forward_slice(&x, &mut h)?;
            b.wq.matvec(&h, &mut q)?;
            b.wk.matvec(&h, &mut k)?;
            b.wv.matvec(&h, &mut v)?;
            rotate_pairs(&mut q, &cos, &sin);
            rotate_pairs(&mut k, &cos, &sin);
            b.cache.push(&k, &v);
            attend(&q, &b.cache.keys, &b.cache.values, head_dim, pos + 1, &mut scores, &mut att);
            b.wo.matvec(&att, &mut h)?;
            x.iter_mut().zip(&h).for_each(|(x, h)| *x += h);
            // MLP: silu(x W1) * (x W3), then W2.
            b.ffn_norm.forward_slice(&x, &mut h)?;
            b.w1.matvec(&h, &mut gate)?;
            b.w3.matvec(&h, &mut up)?;
            silu_mul(&mut gate, &up);
            b.w2.matvec(&gate, &mut h)?;
            x.iter_mut().zip(&h).for_each(|(x, h)| *x += h);
        }
        self.norm.forward_slice(&x, &mut h)?;
        let Quantized::Q8(output) = &self.output else {
            return Err(Error::Internal("the buffer decode path needs a Q8_0 output matrix".into()));
        };
        let mut logits = vec![0f32; output.shape().0];
        output.matmul(&h, &mut logits);
        Ok(Tensor::from_vec(logits, (1, output.shape().0), &self.device)?)
    }
}

/// The model's shape and weights, as the GPU forward pass (`super::gpu`) uploads them.
pub(crate) struct Parts<'a> {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub eps: f32,
    /// The token embedding table, which is also the output projection.
    pub table: &'a Q8Matrix,
    pub norm: &'a [f32],
    pub blocks: Vec<BlockParts<'a>>,
    /// Rotary tables, MAX_SEQ_LEN × head_dim / 2 each.
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

pub(crate) struct BlockParts<'a> {
    pub attn_norm: &'a [f32],
    pub ffn_norm: &'a [f32],
    /// W_q, W_k, W_v, W_o, W_gate, W_up, W_down, each with the adapter's pair when one is set.
    pub linears: [(&'a Q8Matrix, Option<&'a LoraPair>); 7],
}

impl Llama {
    /// The parts the GPU needs, or why this model cannot go there: every matrix must be Q8_0 in
    /// our kernel's form (the GPU kernels read the same quantized weights) and the output
    /// projection tied to the embedding table (the one table serves both).
    pub(crate) fn parts(&self) -> Result<Parts<'_>> {
        fn q8(q: &Quantized) -> Result<&Q8Matrix> {
            match q {
                Quantized::Q8(m) => Ok(m),
                Quantized::Candle(_) => Err(Error::Gpu("the GPU path needs a model with Q8_0 weights".into())),
            }
        }
        fn pair(l: &Linear) -> Result<(&Q8Matrix, Option<&LoraPair>)> {
            Ok((q8(&l.quantized)?, l.lora.as_ref()))
        }
        if !self.tied {
            return Err(Error::Gpu("the GPU path needs the output projection tied to the embedding table".into()));
        }
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let [wq, wk, wv, wo, w1, w3, w2] = b.linears();
            blocks.push(BlockParts {
                attn_norm: &b.attn_norm.values,
                ffn_norm: &b.ffn_norm.values,
                linears: [pair(wq)?, pair(wk)?, pair(wv)?, pair(wo)?, pair(w1)?, pair(w3)?, pair(w2)?],
            });
        }
        Ok(Parts {
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            head_dim: self.head_dim,
            eps: self.norm.eps,
            table: q8(&self.output)?,
            norm: &self.norm.values,
            blocks,
            cos: self.cos.flatten_all()?.to_vec1()?,
            sin: self.sin.flatten_all()?.to_vec1()?,
        })
    }
}

/// Rotary positions on one position's heads: each interleaved pair (x[2i], x[2i+1]) of every head
/// turned by the angle of frequency i (`cos`, `sin`: head_dim / 2 values for this position).
fn rotate_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(2 * cos.len()) {
        for (pair, (c, s)) in head.chunks_exact_mut(2).zip(cos.iter().zip(sin)) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// Self-attention of `x` (1, n, dim) over the cached positions and itself, position by position
/// as a decode step does it (`rotate_pairs`, then `attend` over the positions up to its own), so a
/// prompt gets the very numbers that feeding it one token at a time would give, and that the
/// GPU's kernels repeat. The attention is a small part of a prompt's work (about 0.2% of the
/// multiply-adds of a 500-token prompt), and reading a 301-token prompt in wasm was as fast this
/// way as with candle's batched products (three alternating runs each, under Node).
fn attention_by_position(
    b: &mut Block,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    pos: usize,
    (_, n_kv_head, head_dim): (usize, usize, usize),
) -> Result<Tensor> {
    use rayon::prelude::*;
    let (batch, n, dim) = x.dims3()?;
    if batch != 1 {
        return Err(Error::Internal(format!("a batch of {batch} sequences; the model takes one")));
    }
    let kv_dim = n_kv_head * head_dim;
    let rows = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let (mut q, mut k, v) = (rows(b.wq.forward(x)?)?, rows(b.wk.forward(x)?)?, rows(b.wv.forward(x)?)?);
    let (cos, sin) = (rows(cos.clone())?, rows(sin.clone())?);
    let half = head_dim / 2;
    if pos == 0 {
        b.cache.clear();
    }
    if b.cache.len() != pos {
        return Err(Error::Internal(format!("position {pos} after {} cached positions", b.cache.len())));
    }
    for i in 0..n {
        let (c, s) = (&cos[i * half..][..half], &sin[i * half..][..half]);
        rotate_pairs(&mut q[i * dim..][..dim], c, s);
        rotate_pairs(&mut k[i * kv_dim..][..kv_dim], c, s);
        b.cache.push(&k[i * kv_dim..][..kv_dim], &v[i * kv_dim..][..kv_dim]);
    }
    let (keys, values) = (&b.cache.keys, &b.cache.values);
    let mut y = vec![0f32; n * dim];
    y.par_chunks_mut(dim).zip(q.par_chunks(dim)).enumerate().for_each_init(Vec::new, |scores, (i, (y, q))| {
        attend(q, keys, values, head_dim, pos + i + 1, scores, y);
    });
    b.wo.forward(&Tensor::from_vec(y, (batch, n, dim), x.device())?)
}

/// Self-attention of `x` (1, n, dim) over the cached positions and itself, from candle's
/// operations (`Weights::CandleKernels`, the reference `tests/llama_parity.rs` holds us to).
fn attention(
    b: &mut Block,
    x: &Tensor,
    mask: Option<&Tensor>,
    cos: &Tensor,
    sin: &Tensor,
    pos: usize,
    (n_head, n_kv_head, head_dim): (usize, usize, usize),
) -> Result<Tensor> {
    let (batch, n, dim) = x.dims3()?;
    let heads = |t: Tensor, count: usize| t.reshape((batch, n, count, head_dim))?.transpose(1, 2);
    let q = heads(b.wq.forward(x)?, n_head)?;
    let k = heads(b.wk.forward(x)?, n_kv_head)?;
    let v = heads(b.wv.forward(x)?, n_kv_head)?.contiguous()?;
    // GGUF llama weights are laid out for rotating interleaved pairs (x0, x1), (x2, x3), ...
    let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, cos, sin)?;
    let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, cos, sin)?;
    if pos == 0 {
        b.cache.clear();
    }
    if b.cache.len() != pos {
        return Err(Error::Internal(format!("position {pos} after {} cached positions", b.cache.len())));
    }
    b.cache.push(&k.flatten_all()?.to_vec1::<f32>()?, &v.flatten_all()?.to_vec1::<f32>()?);
    let (k, v) = b.cache.tensors()?;

    // Grouped-query attention: query heads kv*group .. kv*group + group - 1 share key/value head
    // kv. Folding each group's heads into the rows of one matrix lets them use their shared keys
    // and values in place, instead of copying those once per query head.
    let group = n_head / n_kv_head;
    let q = q.reshape((batch, n_kv_head, group * n, head_dim))?;
    let scale = (head_dim as f64).sqrt();
    // Each row (one query head at one position) is computed on its own, so rows can be split
    // over threads without changing a bit.
    let y = split_over_threads(group * n, 64, D::Minus2, |start, rows| {
        let scores = (q.narrow(2, start, rows)?.matmul(&k.t()?)? / scale)?;
        let scores = match mask {
            Some(m) => {
                let m = m.narrow(0, start, rows)?.broadcast_as(scores.shape())?;
                m.where_cond(&Tensor::new(f32::NEG_INFINITY, x.device())?.broadcast_as(scores.shape())?, &scores)?
            }
            None => scores,
        };
        Ok(candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?)
    })?;
    let y = y.reshape((batch, n_head, n, head_dim))?.transpose(1, 2)?.reshape((batch, n, dim))?;
    b.wo.forward(&y)
}

/// silu(gate) · up, element by element, through `vecmath` rather than candle's operations, whose
/// `exp` is a library call per number in wasm.
fn silu_times(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    use rayon::prelude::*;
    let u = up.flatten_all()?.to_vec1::<f32>()?;
    through_vec(gate, |g| g.par_chunks_mut(4096).zip(u.par_chunks(4096)).for_each(|(g, u)| silu_mul(g, u)))
}

/// `f` applied to a copy of `t`'s numbers, returned as a tensor of `t`'s shape.
fn through_vec(t: &Tensor, f: impl FnOnce(&mut [f32])) -> Result<Tensor> {
    let mut v = t.flatten_all()?.to_vec1::<f32>()?;
    f(&mut v);
    Ok(Tensor::from_vec(v, t.shape(), t.device())?)
}

/// `attention` for training: the whole sequence at once, from differentiable operations.
fn attention_train(
    b: &Block,
    x: &Tensor,
    mask: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    (n_head, n_kv_head, head_dim): (usize, usize, usize),
) -> Result<Tensor> {
    let (batch, n, dim) = x.dims3()?;
    let heads = |t: Tensor, count: usize| t.reshape((batch, n, count, head_dim))?.transpose(1, 2);
    let q = rope_interleaved(&heads(b.wq.forward_train(x)?, n_head)?, cos, sin)?;
    let k = rope_interleaved(&heads(b.wk.forward_train(x)?, n_kv_head)?, cos, sin)?;
    let v = heads(b.wv.forward_train(x)?, n_kv_head)?.contiguous()?;
    let group = n_head / n_kv_head;
    let q = q.reshape((batch, n_kv_head, group * n, head_dim))?;
    let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?.broadcast_add(mask)?;
    let weights = scores.apply_op1(Softmax)?;
    let y = weights.matmul(&v)?.reshape((batch, n_head, n, head_dim))?.transpose(1, 2)?.reshape((batch, n, dim))?;
    b.wo.forward_train(&y)
}

/// A custom op's forward pass written with ordinary tensor operations: `f` gets the op's
/// (contiguous, f32) input as a tensor, and its result becomes the op's output.
fn on_cpu(
    storage: &CpuStorage,
    layout: &Layout,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("this custom op needs a contiguous input")
    };
    let x = Tensor::from_slice(&storage.as_slice::<f32>()?[start..end], layout.shape(), &Device::Cpu)?;
    let y = f(&x)?;
    let shape = y.shape().clone();
    Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), shape))
}

/// candle's fused softmax over the last dimension, given the backward pass it lacks:
/// for y = softmax(x), dx = y * (dy - sum(dy * y)). Writing softmax out of elementary operations
/// instead made the backward pass ~10% slower (measured on a 505-token example).
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        on_cpu(storage, layout, candle_nn::ops::softmax_last_dim)
    }

    fn bwd(&self, _arg: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dot = (dy * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some((y * dy.broadcast_sub(&dot)?)?))
    }
}

/// candle's `rope_i`, written out: each pair (x[2i], x[2i+1]) of every head is rotated by the
/// angle of its position and frequency i. `x` is (batch, heads, n, head_dim); `cos`/`sin` (n, head_dim / 2).
fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (batch, heads, n, d) = x.dims4()?;
    let pairs = x.contiguous()?.reshape((batch, heads, n, d / 2, 2))?;
    let (x0, x1) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
    let cos = cos.reshape((1, 1, n, d / 2, 1))?;
    let sin = sin.reshape((1, 1, n, d / 2, 1))?;
    let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Ok(Tensor::cat(&[r0, r1], 4)?.reshape((batch, heads, n, d))?)
}

/// 1 where position `pos + i` must not see key `j` (j > pos + i), for the `group` query heads
/// folded into one matrix: (group * n, pos + n).
fn causal_mask(n: usize, pos: usize, group: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<u8> = (0..group * n).flat_map(|row| (0..pos + n).map(move |j| u8::from(j > pos + row % n))).collect();
    Ok(Tensor::from_slice(&mask, (group * n, pos + n), device)?)
}

/// The rotary angles' cosines and sines, MAX_SEQ_LEN × dim / 2 each: angle = position ·
/// base^(-2i / dim), in f32 as the reference implementations take it. The powers, cosines and
/// sines are computed in f64 and rounded once: f32's `powf`, `cos` and `sin` come from the
/// platform's maths library (glibc natively, a port of musl's in wasm), which differed in last
/// bits, and one such difference grows through the layers (see tests/gpu.rs). f64's functions
/// come from the same libraries, but their last-bit differences survive rounding to f32 only for
/// values within about 2⁻²⁹ of a rounding boundary, so the CLI, the page and the GPU (which is
/// given these tables) start from the same numbers (`tests/wasm` checks the CLI and the page
/// agree).
fn rotary_tables(dim: usize, base: f32, device: &Device) -> Result<(Tensor, Tensor)> {
    let freqs: Vec<f32> =
        (0..dim).step_by(2).map(|i| (1.0 / (base as f64).powf(i as f64 / dim as f64)) as f32).collect();
    let angles = (0..MAX_SEQ_LEN).flat_map(|p| freqs.iter().map(move |&f| (p as f32 * f) as f64));
    let (cos, sin): (Vec<f32>, Vec<f32>) = angles.map(|a| (a.cos() as f32, a.sin() as f32)).unzip();
    let shape = (MAX_SEQ_LEN, dim / 2);
    Ok((Tensor::from_vec(cos, shape, device)?, Tensor::from_vec(sin, shape, device)?))
}

/// The same tables as candle-transformers computes them (f32 throughout, so the platform's
/// maths library decides their last bits): for `Weights::CandleKernels`, the reference.
fn rotary_tables_as_candle(dim: usize, base: f32, device: &Device) -> Result<(Tensor, Tensor)> {
    let freqs: Vec<f32> = (0..dim).step_by(2).map(|i| 1.0 / base.powf(i as f32 / dim as f32)).collect();
    let freqs = Tensor::new(freqs.as_slice(), device)?.reshape((1, dim / 2))?;
    let positions = Tensor::arange(0, MAX_SEQ_LEN as u32, device)?.to_dtype(DType::F32)?.reshape((MAX_SEQ_LEN, 1))?;
    let angles = positions.matmul(&freqs)?;
    Ok((angles.cos()?, angles.sin()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forward pass at a position out of step with the cache is our bug, not the user's input:
    /// it says so (Error::Internal) on both paths, the one-token decode and the prompt slice.
    #[test]
    fn a_position_out_of_step_with_the_cache_is_an_internal_error() {
        let bytes = crate::llm::tiny::tiny_gguf();
        let ct = crate::llm::read_header(&bytes, "tiny.gguf").unwrap();
        let mut model =
            Llama::from_gguf(&ct, &mut std::io::Cursor::new(&bytes), Weights::Quantized, &Device::Cpu).unwrap();
        let one = Tensor::new(&[[5u32]], &Device::Cpu).unwrap();
        model.forward(&one, 0).unwrap();
        let two = Tensor::new(&[[5u32, 6]], &Device::Cpu).unwrap();
        for (tokens, pos) in [(&one, 3), (&two, 4), (&one, MAX_SEQ_LEN + 1)] {
            match model.forward(tokens, pos) {
                Err(Error::Internal(why)) => assert!(why.contains("position"), "{why}"),
                other => panic!("position {pos}: expected an internal error, got {:?}", other.map(|t| t.shape().clone())),
            }
        }
    }

    /// A GGUF whose metadata gives a shape the forward pass cannot run (a zero head count, a
    /// rotary dimension other than the head size) is refused with the reason when it loads,
    /// instead of dividing by zero or slicing out of bounds later.
    #[test]
    fn a_model_whose_shape_cannot_run_is_refused() {
        use candle_core::quantized::gguf_file::{self, Value};
        let bytes = crate::llm::tiny::tiny_gguf();
        let header = crate::llm::read_header(&bytes, "model").unwrap();
        // Metadata only: the shape is checked before any tensor is read.
        let with = |key: &str, value: u32| {
            let mut md: Vec<(String, Value)> = header.metadata.clone().into_iter().collect();
            md.retain(|(k, _)| k != key);
            md.push((key.to_string(), Value::U32(value)));
            let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            gguf_file::write(&mut out, &md, &[]).unwrap();
            let err = crate::llm::Generator::from_gguf_bytes(out.get_ref(), "crafted.gguf").err().unwrap();
            err.to_string()
        };
        for (key, value) in [
            ("llama.attention.head_count", 0),
            ("llama.attention.head_count_kv", 0),
            ("llama.attention.head_count", 7),
            ("llama.attention.head_count_kv", 5),
            ("llama.rope.dimension_count", 32),
            ("llama.rope.dimension_count", 4096),
            ("llama.block_count", 0),
        ] {
            let err = with(key, value);
            assert!(err.contains("crafted.gguf") && err.contains("unusable model shape"), "{key} = {value}: {err}");
        }
        // The real shape passes the check and fails only for want of tensors.
        let head = header.metadata["llama.attention.head_count"].to_u32().unwrap();
        let err = with("llama.attention.head_count", head);
        assert!(!err.contains("unusable model shape"), "{err}");
    }

    /// A tiny model whose metadata is sound and whose weights follow it loads and generates; one
    /// whose matrix does not fit the metadata is refused at load, naming the matrix, instead of
    /// panicking in the first product.
    #[test]
    fn a_model_whose_weights_do_not_fit_its_metadata_is_refused() {
        use candle_core::quantized::{gguf_file, QTensor};
        let bytes = crate::llm::tiny::tiny_gguf();
        let header = crate::llm::read_header(&bytes, "model").unwrap();
        let vocab = header.tensor_infos["token_embd.weight"].shape.dims()[0];
        let (dim, hidden) = (8usize, 16usize);
        let mut md: Vec<(String, gguf_file::Value)> = header.metadata.clone().into_iter().collect();
        for (key, value) in [
            ("llama.attention.head_count", 2),
            ("llama.attention.head_count_kv", 1),
            ("llama.block_count", 1),
            ("llama.embedding_length", dim as u32),
            ("llama.rope.dimension_count", 4),
        ] {
            md.retain(|(k, _)| k != key);
            md.push((key.to_string(), gguf_file::Value::U32(value)));
        }
        let md: Vec<(&str, &gguf_file::Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let write = |q_rows: usize| {
            let t = |dims: &[usize], seed: u64| {
                let n = dims.iter().product();
                let w = Tensor::from_vec(crate::kernels::random::pseudo_random(n, seed), dims, &Device::Cpu).unwrap();
                QTensor::quantize(&w, GgmlDType::F32).unwrap()
            };
            let tensors = [
                ("token_embd.weight", t(&[vocab, dim], 1)),
                ("output_norm.weight", t(&[dim], 2)),
                ("blk.0.attn_q.weight", t(&[q_rows, dim], 3)),
                ("blk.0.attn_k.weight", t(&[4, dim], 4)),
                ("blk.0.attn_v.weight", t(&[4, dim], 5)),
                ("blk.0.attn_output.weight", t(&[dim, dim], 6)),
                ("blk.0.ffn_gate.weight", t(&[hidden, dim], 7)),
                ("blk.0.ffn_up.weight", t(&[hidden, dim], 8)),
                ("blk.0.ffn_down.weight", t(&[dim, hidden], 9)),
                ("blk.0.attn_norm.weight", t(&[dim], 10)),
                ("blk.0.ffn_norm.weight", t(&[dim], 11)),
            ];
            let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
            let mut out = std::io::Cursor::new(Vec::new());
            gguf_file::write(&mut out, &md, &refs).unwrap();
            out.into_inner()
        };
        let mut good = crate::llm::Generator::from_gguf_bytes(&write(dim), "tiny.gguf").unwrap();
        let params = crate::llm::GenerateParams { max_tokens: 3, ..Default::default() };
        let prompt = good.encode("Hello, tiny model").unwrap();
        let out = good.generate(&prompt, &params, &mut |_| {}, &|| false).unwrap();
        assert!(out.tokens.len() <= 3 && out.prompt_tokens == prompt.len(), "{out:?}");
        let err = crate::llm::Generator::from_gguf_bytes(&write(dim - 2), "tiny.gguf").err().unwrap().to_string();
        assert!(err.contains("tiny.gguf") && err.contains("blk.0.attn_q.weight is [6, 8]"), "{err}");
    }

    /// The wasm build's prompt products (our kernel, W read in place from the tensor) against
    /// candle's, on a weight matrix that is a row range of a larger one, as a thread's share is.
    #[test]
    fn our_dense_products_match_candles() -> Result<()> {
        let (n, k, rows) = (7, 64, 40);
        let x = Tensor::from_vec(crate::kernels::random::pseudo_random(n * k, 1), (1, n, k), &Device::Cpu)?;
        let whole = Tensor::from_vec(crate::kernels::random::pseudo_random(3 * rows * k, 2), (3 * rows, k), &Device::Cpu)?;
        for w in [whole.clone(), whole.narrow(0, rows, rows)?] {
            let (ours, candles) = (dense_product_with(&x, &w, true)?, dense_product_with(&x, &w, false)?);
            let off = (ours - candles)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(off < 1e-5, "off by {off}");
        }
        Ok(())
    }
}
