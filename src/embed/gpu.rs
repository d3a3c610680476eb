//! The embedder (all-MiniLM-L6-v2, a 6-layer BERT) on the GPU: the same forward pass as
//! `crate::embed::bert` runs on the CPU, then mean pooling over
//! each text's real tokens. The weights (f32, as shipped) are uploaded once; a batch uploads its
//! token ids and padding mask and reads back one vector per text.
//!
//! embeddings (word + position + type) → layer_norm → per layer:
//!   q, k, v = x W + b                     linear × 3
//!   att = attention(q, k, v, mask)        bert_attention (padding never attended to)
//!   x = layer_norm(x + att W_o + b_o)     linear, layer_norm
//!   x = layer_norm(x + gelu(x W_1 + b_1) W_2 + b_2)   linear (with GELU), linear, layer_norm
//! → mean_pool; the vectors are scaled to unit length on the CPU (a few hundred numbers each).

use super::bert::{unit_length, BertShape, Layer};
use crate::error::{Error, Result};
use crate::gpu::{bytes_u32, groups, per_position, per_value, Gpu, Kernel, Op, Shapes, Signature};
use std::sync::Arc;

/// The most positions (texts × padded length) one batch may hold.
pub const MAX_POSITIONS: usize = 16 * 256;

struct Linear {
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
    rows: usize,
    cols: usize,
}

struct Norm {
    weight: wgpu::Buffer,
    bias: wgpu::Buffer,
}

pub struct GpuBert {
    gpu: Arc<Gpu>,
    shape: BertShape,
    max_len: usize,
    ids: wgpu::Buffer,
    mask: wgpu::Buffer,
    pooled: wgpu::Buffer,
    staging: wgpu::Buffer,
    step: wgpu::Buffer,
    ops: Vec<Op>,
}

impl GpuBert {
    /// Upload the weights from the model's safetensors bytes and record the forward pass.
    pub fn new(gpu: Arc<Gpu>, safetensors: &[u8], shape: BertShape) -> Result<GpuBert> {
        let file = safetensors::SafeTensors::deserialize(safetensors)
            .map_err(|e| Error::model("embedder model.safetensors", e))?;
        let g = &gpu;
        // A tensor's f32 bytes, uploaded as they are, after checking its type and size.
        let upload = |name: &str, dims: &[usize]| -> Result<wgpu::Buffer> {
            let t =
                file.tensor(name).map_err(|e| Error::model("embedder model.safetensors", format!("{name}: {e}")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != dims {
                return Err(Error::model(
                    "embedder model.safetensors",
                    format!("{name} is {:?} {:?}, not F32 {dims:?}", t.dtype(), t.shape()),
                ));
            }
            Ok(g.storage(name, t.data()))
        };
        let (dim, inter) = (shape.hidden, shape.intermediate);
        let linear = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
            Ok(Linear {
                weight: upload(&format!("{name}.weight"), &[rows, cols])?,
                bias: upload(&format!("{name}.bias"), &[rows])?,
                rows,
                cols,
            })
        };
        let norm = |name: &str| -> Result<Norm> {
            Ok(Norm {
                weight: upload(&format!("{name}.weight"), &[dim])?,
                bias: upload(&format!("{name}.bias"), &[dim])?,
            })
        };
        // Rows of a table: its first dimension (the upload then checks the whole shape).
        let rows = |name: &str| -> Result<usize> {
            let t =
                file.tensor(name).map_err(|e| Error::model("embedder model.safetensors", format!("{name}: {e}")))?;
            Ok(t.shape().first().copied().unwrap_or(0))
        };
        let vocabulary = rows("embeddings.word_embeddings.weight")?;
        let max_len = rows("embeddings.position_embeddings.weight")?;
        let words = upload("embeddings.word_embeddings.weight", &[vocabulary, dim])?;
        let positions = upload("embeddings.position_embeddings.weight", &[max_len, dim])?;
        let types = upload("embeddings.token_type_embeddings.weight", &[2, dim])?;
        let embedding_norm = norm("embeddings.LayerNorm")?;
        let layers = Layer::load_all(shape, linear, norm)?;
        if dim % shape.heads != 0 || dim / shape.heads > 64 {
            return Err(Error::Gpu(format!(
                "the GPU attention kernel takes heads of at most 64 values, not {dim}/{}",
                shape.heads
            )));
        }

        let p = MAX_POSITIONS;
        let (ids, mask) = (g.zeros("ids", p), g.zeros("mask", p));
        let (x, h, att) = (g.zeros("x", p * dim), g.zeros("h", p * dim), g.zeros("att", p * dim));
        let (q, k, v) = (g.zeros("q", p * dim), g.zeros("k", p * dim), g.zeros("v", p * dim));
        let up = g.zeros("intermediate", p * inter);
        let texts = MAX_POSITIONS;
        let pooled = g.zeros("pooled", texts * dim);
        let staging = g.staging("pooled staging", texts * dim);
        let step = g.uniform("step", [0; 4]);

        // Each kernel's file is shaders/{name}.wgsl; its bindings, in the order the ops below bind them.
        macro_rules! kernel {
            ($name:literal, $shape:literal, $buffers:expr) => {{
                let signature = Signature { step: "positions: u32, len: u32", shape: $shape, buffers: $buffers };
                Kernel::declared(g, $name, &signature, include_str!(concat!("shaders/", $name, ".wgsl")), "main")
            }};
        }
        let k_embed = kernel!("bert_embed", "dim: u32", &["ids: u32", "words", "positions", "types", "mut x"]);
        let k_norm =
            kernel!("layer_norm", "dim: u32, eps: f32, residual: u32", &["mut x", "residual", "weight", "bias"]);
        let k_linear = kernel!("linear", "rows: u32, cols: u32, gelu: u32", &["x", "w", "b", "mut out"]);
        let k_attention =
            kernel!("bert_attention", "heads: u32, head_dim: u32", &["q", "k", "v", "mask: u32", "mut out"]);
        let k_pool = kernel!("mean_pool", "dim: u32", &["x", "mask: u32", "mut out"]);
        let shapes = Shapes::default();
        let shape_of = |words: [u32; 4]| shapes.get(g, words);
        let dim32 = dim as u32;
        let eps = shape.eps.to_bits();
        let mut ops = Vec::new();
        let linear_op = |ops: &mut Vec<Op>, l: &Linear, input: &wgpu::Buffer, out: &wgpu::Buffer, gelu: bool| {
            let s = shape_of([l.rows as u32, l.cols as u32, gelu as u32, 0]);
            ops.push(Op::new(g, &k_linear, &[&step, &s, input, &l.weight, &l.bias, out], per_value(l.rows as u32)));
        };
        let norm_op = |ops: &mut Vec<Op>, n: &Norm, residual: Option<&wgpu::Buffer>| {
            let s = shape_of([dim32, eps, residual.is_some() as u32, 0]);
            // Without a residual the binding still needs a buffer other than x: any will do.
            ops.push(Op::new(g, &k_norm, &[&step, &s, &x, residual.unwrap_or(&h), &n.weight, &n.bias], per_position()));
        };
        let s = shape_of([dim32, 0, 0, 0]);
        ops.push(Op::new(g, &k_embed, &[&step, &s, &ids, &words, &positions, &types, &x], per_value(dim32)));
        norm_op(&mut ops, &embedding_norm, None);
        let heads = shape.heads as u32;
        let attention_shape = shape_of([heads, (dim / shape.heads) as u32, 0, 0]);
        for l in &layers {
            linear_op(&mut ops, &l.query, &x, &q, false);
            linear_op(&mut ops, &l.key, &x, &k, false);
            linear_op(&mut ops, &l.value, &x, &v, false);
            ops.push(Op::new(
                g,
                &k_attention,
                &[&step, &attention_shape, &q, &k, &v, &mask, &att],
                Box::new(move |positions, _| [groups(positions), heads, 1]),
            ));
            linear_op(&mut ops, &l.output, &att, &h, false);
            norm_op(&mut ops, &l.attention_norm, Some(&h));
            linear_op(&mut ops, &l.up, &x, &up, true);
            linear_op(&mut ops, &l.down, &up, &h, false);
            norm_op(&mut ops, &l.output_norm, Some(&h));
        }
        let s = shape_of([dim32, 0, 0, 0]);
        ops.push(Op::new(
            g,
            &k_pool,
            &[&step, &s, &x, &mask, &pooled],
            Box::new(move |positions, len| [groups(dim32), positions / len.max(1), 1]),
        ));
        gpu.check()?;
        Ok(GpuBert { max_len, gpu, shape, ids, mask, pooled, staging, step, ops })
    }

    /// Unit-length sentence vectors for `texts` texts of `len` token ids each (padded; `mask`
    /// is 1 for real tokens). Natively it completes at once (`crate::gpu::now`); in the browser, await.
    pub async fn embed(&self, ids: &[u32], mask: &[u32], len: usize) -> Result<Vec<Vec<f32>>> {
        let positions = ids.len();
        if len == 0
            || positions % len != 0
            || mask.len() != positions
            || positions > MAX_POSITIONS
            || len > self.max_len
        {
            return Err(Error::Internal(format!("a GPU batch of {positions} positions in texts of {len}")));
        }
        let texts = positions / len;
        let dim = self.shape.hidden;
        let q = &self.gpu.queue;
        q.write_buffer(&self.ids, 0, &bytes_u32(ids));
        q.write_buffer(&self.mask, 0, &bytes_u32(mask));
        q.write_buffer(&self.step, 0, &bytes_u32(&[positions as u32, len as u32, 0, 0]));
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            for op in &self.ops {
                op.record(&mut pass, positions as u32, len as u32);
            }
        }
        encoder.copy_buffer_to_buffer(&self.pooled, 0, &self.staging, 0, (texts * dim * 4) as u64);
        self.gpu.queue.submit([encoder.finish()]);
        let pooled = self.gpu.read(&self.staging, texts * dim).await?;
        Ok(pooled.chunks_exact(dim).map(unit_length).collect())
    }
}
