//! The model on plain f32 buffers, for Q8_0 weights in our kernel's form: the one-token pass
//! every generated token takes (`forward_one`, which `Llama::forward` hands single tokens to),
//! and the same weights as the GPU forward pass (`super::gpu`) uploads them.

use super::attend::attend;
use super::linear::{Linear, Quantized};
use super::llama::{rotate_pairs, Llama, MAX_SEQ_LEN};
use super::lora::LoraPair;
use crate::error::{Error, Result};
use crate::kernels::q8::Q8Matrix;
use crate::kernels::vecmath::silu_mul;
use candle_core::Tensor;

impl Llama {
    /// Whether one-token steps can take `forward_one`: every matrix is Q8_0 in our kernel's form.
    pub(crate) fn decodes_on_buffers(&self) -> bool {
        let ours = |q: &Quantized| matches!(q, Quantized::Q8(_));
        ours(&self.output) && self.blocks.iter().all(|b| b.linears().iter().all(|l| ours(&l.quantized)))
    }

    /// One token at position `pos`, on plain f32 buffers: the path every generated token takes.
    /// It computes what `forward` computes, without a tensor operation per step of the way: those
    /// cost about a third of a decode step (measured natively on one thread: 33 ms per token
    /// against 22 ms for the matrix products alone), for vectors of a few hundred numbers.
    pub(crate) fn forward_one(&mut self, token: u32, pos: usize) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::llama::Weights;
    use candle_core::Device;

    /// A forward pass at a position out of step with the cache is our bug, not the user's input:
    /// it says so (Error::Internal) on both paths, the one-token decode and the prompt slice.
    #[test]
    fn a_position_out_of_step_with_the_cache_is_an_internal_error() {
        let (bytes, ct) = crate::llm::tiny::tiny_with_header();
        let mut model =
            Llama::from_gguf(&ct, &mut std::io::Cursor::new(&bytes), Weights::Quantized, &Device::Cpu).unwrap();
        let one = Tensor::new(&[[5u32]], &Device::Cpu).unwrap();
        model.forward(&one, 0).unwrap();
        let two = Tensor::new(&[[5u32, 6]], &Device::Cpu).unwrap();
        for (tokens, pos) in [(&one, 3), (&two, 4), (&one, MAX_SEQ_LEN + 1)] {
            match model.forward(tokens, pos) {
                Err(Error::Internal(why)) => assert!(why.contains("position"), "{why}"),
                other => {
                    panic!("position {pos}: expected an internal error, got {:?}", other.map(|t| t.shape().clone()))
                }
            }
        }
    }
}
