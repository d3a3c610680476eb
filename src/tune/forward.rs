//! The generator's forward pass for training (our LoRA fine-tune): the model of `llm::llama`
//! written with operations candle can differentiate. candle's fused `rms_norm`,
//! `softmax_last_dim` and `rope_i` have no backward pass and would silently stop the gradient,
//! so RMSNorm and the interleaved rotation are written out, and softmax keeps candle's kernel
//! inside a custom op that adds its backward pass. The frozen weights go through a custom op
//! that skips their gradient. `tests/lora.rs` holds it to the inference pass and checks its
//! gradients against finite differences.

use crate::error::{Error, Result};
use crate::llm::linear::Linear;
use crate::llm::llama::{Block, Llama, RmsNorm, MAX_SEQ_LEN};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, D};

impl Linear {
    /// The same product for training: W is frozen (no gradient is computed for it), the adapter's
    /// matrices get theirs. Needs the f32 copy of W.
    pub(crate) fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
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

impl RmsNorm {
    /// The same, from differentiable operations.
    pub(crate) fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?.sqrt()?;
        Ok(x.broadcast_div(&rms)?.broadcast_mul(&self.weight)?)
    }
}

impl Llama {
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
