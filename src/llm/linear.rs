//! A weight matrix and its product `x Wᵀ`: Q8_0 through our kernel (`kernels::q8`), any
//! other stored format through candle's, an f32 copy for prompts where one is kept, and an
//! adapter's low-rank update on top.

use super::llama::Weights;
use super::lora::LoraPair;
use crate::error::{Error, Result};
use crate::kernels::q8::Q8Matrix;
use candle_core::quantized::QMatMul;
use candle_core::{CpuStorage, Device, Module, Tensor, D};

/// A quantized weight matrix: Q8_0 (the format we ship) goes through our own kernel
/// (`q8.rs`), any other format through candle's.
pub(crate) enum Quantized {
    Q8(Q8Matrix),
    Candle(QMatMul),
}

impl Quantized {
    pub(crate) fn new(q: candle_core::quantized::QTensor) -> Result<Self> {
        Ok(match Q8Matrix::from_qtensor(&q)? {
            Some(m) => Quantized::Q8(m),
            None => Quantized::Candle(QMatMul::from_qtensor(q)?),
        })
    }

    /// (out, in) of W.
    pub(crate) fn shape(&self) -> Result<(usize, usize)> {
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

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Quantized::Q8(m) => m.forward(x),
            Quantized::Candle(q) => Ok(q.forward(x)?),
        }
    }
}

/// `x W^T` for a weight matrix W, plus an adapter's low-rank update when one is set.
pub(crate) struct Linear {
    pub(crate) quantized: Quantized,
    /// W in f32, for prompts (`Weights::QuantizedAndDense`).
    pub(crate) dense: Option<Tensor>,
    pub(crate) lora: Option<LoraPair>,
}

impl Linear {
    pub(crate) fn new(q: candle_core::quantized::QTensor, weights: Weights, device: &Device) -> Result<Self> {
        let dense = match weights {
            Weights::Quantized => None,
            Weights::QuantizedAndDense => Some(q.dequantize(device)?),
        };
        Ok(Linear { quantized: Quantized::new(q)?, dense, lora: None })
    }

    /// (out, in) of W.
    pub(crate) fn shape(&self) -> Result<(usize, usize)> {
        self.quantized.shape()
    }

    /// `x` is (batch, positions, features).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
    pub(crate) fn matvec(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let Quantized::Q8(m) = &self.quantized else {
            return Err(Error::Internal("the buffer decode path needs Q8_0 weights".into()));
        };
        m.matmul(x, out);
        if let Some(lora) = &self.lora {
            out.iter_mut().zip(lora.update(x)?).for_each(|(o, d)| *o += d);
        }
        Ok(())
    }
}

/// `x Wᵀ` for many positions with W in f32, W's rows split over threads (`split_over_threads`):
/// each thread reads only its share of the weights and writes its own columns of the result. In
/// wasm the products are our kernel's (`dense.rs`), natively candle's.
pub(crate) fn dense_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    dense_product_with(x, w, cfg!(target_arch = "wasm32"))
}

/// `dense_product` with the kernel chosen by the caller, so native tests can run the wasm path.
pub(crate) fn dense_product_with(x: &Tensor, w: &Tensor, ours: bool) -> Result<Tensor> {
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
pub(crate) fn split_over_threads(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The wasm build's prompt products (our kernel, W read in place from the tensor) against
    /// candle's, on a weight matrix that is a row range of a larger one, as a thread's share is.
    #[test]
    fn our_dense_products_match_candles() -> Result<()> {
        let (n, k, rows) = (7, 64, 40);
        let x = Tensor::from_vec(crate::kernels::random::pseudo_random(n * k, 1), (1, n, k), &Device::Cpu)?;
        let whole =
            Tensor::from_vec(crate::kernels::random::pseudo_random(3 * rows * k, 2), (3 * rows, k), &Device::Cpu)?;
        for w in [whole.clone(), whole.narrow(0, rows, rows)?] {
            let (ours, candles) = (dense_product_with(&x, &w, true)?, dense_product_with(&x, &w, false)?);
            let off = (ours - candles)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(off < 1e-5, "off by {off}");
        }
        Ok(())
    }
}
