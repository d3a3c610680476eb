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
//! Three ways through it compute the same thing, one file each: `forward` here, for prompts
//! (many positions at once) and any weight format, with candle tensors between the steps;
//! `forward_one` (`decode.rs`), one token on plain f32 buffers, the path every generated token
//! takes with Q8_0 weights (a tensor operation per step cost a third of a step); and the GPU's
//! (`gpu.rs`). All use our Q8_0 kernel (`kernels::q8`, through `linear.rs`), attention position
//! by position (`attend.rs`), RMSNorm, softmax and SiLU (`kernels::vecmath`), so with 8-bit
//! weights they give the same bits. A prompt may instead take f32 weights (`kernels::dense` in
//! wasm, gemm natively).
//! Training's differentiable pass is `tune/forward.rs`; `validate.rs` refuses a model file whose
//! shape cannot run.
//!
//! We own this file, rather than using candle-transformers' `quantized_llama`, because the app
//! needs to change what happens inside: weights kept twice for prompts, our own kernels, low-rank
//! adapters (our fine-tune) and GPU kernels. `tests/llama_parity.rs` holds it to candle's.

use super::attend::attend;
use super::linear::{Linear, Quantized};
use super::lora::Adapter;
use super::validate::{shape_error, tensor_shape_error};
use crate::error::{Error, Result};
use crate::kernels::vecmath::{dot, silu_mul};
use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, IndexOp, Tensor};
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
}

/// The weight matrices that low-rank adapters can target, by their GGUF names.
pub const PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

pub(crate) struct RmsNorm {
    /// The weights as a tensor, for training's differentiable pass (native only).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) weight: Tensor,
    /// The same weights as a plain vector, for the buffer decode path.
    pub(crate) values: Vec<f32>,
    pub(crate) eps: f32,
}

impl RmsNorm {
    /// Each position of `x` (..., dim), as `forward_slice` does it, so that a prompt's positions
    /// get the numbers a decode step (and the GPU's rms_norm.wgsl) would give them.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dim = self.values.len();
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; input.len()];
        for (x, out) in input.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            self.forward_slice(x, out)?;
        }
        Ok(Tensor::from_vec(out, x.shape(), x.device())?)
    }

    /// One position, on plain buffers.
    pub(crate) fn forward_slice(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let mean_square = dot(x, x) / x.len() as f32;
        let inv = 1.0 / (mean_square + self.eps).sqrt();
        for ((o, v), w) in out.iter_mut().zip(x).zip(&self.values) {
            *o = v * inv * w;
        }
        Ok(())
    }
}

/// Keys and values of every position seen so far, one block's: one vector per key/value head,
/// holding that head's keys (or values) position after position. Plain vectors, so that `attend`
/// reads them in place, one head's front to back.
pub(crate) struct Cache {
    pub(crate) keys: Vec<Vec<f32>>,
    pub(crate) values: Vec<Vec<f32>>,
    pub(crate) head_dim: usize,
}

impl Cache {
    pub(crate) fn new(n_kv_head: usize, head_dim: usize) -> Self {
        Cache { keys: vec![Vec::new(); n_kv_head], values: vec![Vec::new(); n_kv_head], head_dim }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys[0].len() / self.head_dim
    }

    pub(crate) fn clear(&mut self) {
        self.keys.iter_mut().chain(&mut self.values).for_each(Vec::clear);
    }

    /// Add positions, their keys and values given head by head: (heads, positions, head_dim).
    pub(crate) fn push(&mut self, keys: &[f32], values: &[f32]) {
        let per_head = keys.len() / self.keys.len();
        for (to, from) in self.keys.iter_mut().zip(keys.chunks_exact(per_head)) {
            to.extend_from_slice(from);
        }
        for (to, from) in self.values.iter_mut().zip(values.chunks_exact(per_head)) {
            to.extend_from_slice(from);
        }
    }
}

pub(crate) struct Block {
    pub(crate) attn_norm: RmsNorm,
    pub(crate) wq: Linear,
    pub(crate) wk: Linear,
    pub(crate) wv: Linear,
    pub(crate) wo: Linear,
    pub(crate) ffn_norm: RmsNorm,
    pub(crate) w1: Linear,
    pub(crate) w2: Linear,
    pub(crate) w3: Linear,
    pub(crate) cache: Cache,
}

impl Block {
    /// The block's projections in the order of `PROJECTIONS`.
    pub(crate) fn linears(&self) -> [&Linear; 7] {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w1, &self.w3, &self.w2]
    }

    pub(crate) fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [&mut self.wq, &mut self.wk, &mut self.wv, &mut self.wo, &mut self.w1, &mut self.w3, &mut self.w2]
    }
}

pub struct Llama {
    pub(crate) embeddings: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: RmsNorm,
    pub(crate) output: Quantized,
    /// The output projection as f32 (`Weights::QuantizedAndDense`), for training (native only).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) output_dense: Option<Tensor>,
    /// Whether the output projection is the token embedding table.
    pub(crate) tied: bool,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) head_dim: usize,
    /// Rotary position tables: (MAX_SEQ_LEN, head_dim / 2).
    pub(crate) cos: Tensor,
    pub(crate) sin: Tensor,
    pub(crate) device: Device,
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
                    Weights::Quantized => None,
                };
                (Quantized::new(t)?, dense, false)
            }
            Err(_) => {
                let dense = (weights == Weights::QuantizedAndDense).then(|| embeddings.clone());
                (Quantized::new(embeddings_q)?, dense, true)
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
        let (cos, sin) = rotary_tables(rope_dim, rope_base, device)?;
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
        let mut x = self.embeddings.embedding(&tokens.flatten_all()?)?.unsqueeze(0)?;
        let (cos, sin) = (self.cos.narrow(0, pos, n)?, self.sin.narrow(0, pos, n)?);
        let shape = (self.n_head, self.n_kv_head, self.head_dim);
        for b in &mut self.blocks {
            let h = b.attn_norm.forward(&x)?;
            x = (x + attention_by_position(b, &h, &cos, &sin, pos, shape)?)?;
            let h = b.ffn_norm.forward(&x)?;
            let (gate, up) = (b.w1.forward(&h)?, b.w3.forward(&h)?);
            x = (x + b.w2.forward(&silu_times(&gate, &up)?)?)?;
        }
        let x = self.norm.forward(&x.i((.., n - 1.., ..))?)?.squeeze(1)?;
        self.output.forward(&x)
    }
}

/// Rotary positions on one position's heads: each interleaved pair (x[2i], x[2i+1]) of every head
/// turned by the angle of frequency i (`cos`, `sin`: head_dim / 2 values for this position).
pub(crate) fn rotate_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
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
