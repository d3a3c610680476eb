//! Low-rank adapters (LoRA): our fine-tune, kept as a small file beside the base model.
//!
//! A targeted weight matrix W (out × in) acts as W + (alpha / rank) · B A, where A is rank × in and
//! B is out × rank. Training changes only A and B: for rank 8 on every projection of SmolLM2-135M
//! that is ~2.4 M numbers, under 2% of the model. B starts at zero, so an untrained adapter leaves
//! the model exactly as it was.
//!
//! An adapter can be applied at load time (`Llama::set_adapter`, which lets the page switch between
//! base and tuned without a second download) or merged into the weights of a new GGUF file
//! ([`merge_into_gguf`]) for the fastest inference.

use super::quantize;
use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What to adapt and how strongly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Projection names, from `llama::PROJECTIONS` (e.g. "attn_q", "ffn_down").
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn check(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::Input("LoRA rank must be at least 1".into()));
        }
        if self.targets.is_empty() {
            return Err(Error::Input("LoRA needs at least one target projection".into()));
        }
        for t in &self.targets {
            if !super::llama::PROJECTIONS.contains(&t.as_str()) {
                return Err(Error::Input(format!(
                    "unknown LoRA target {t:?} (known: {})",
                    super::llama::PROJECTIONS.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// The low-rank update of one matrix.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// (rank, in)
    pub a: Tensor,
    /// (out, rank)
    pub b: Tensor,
    pub scale: f64,
    /// For an adapter read from a file: the two matrices transposed once, for `forward`. Such a
    /// pair is never changed afterwards (`a`, `b` and `scale` are read, not written, outside
    /// training, whose pairs have none of this). A pair being trained is transposed at each call.
    fixed: Option<Arc<Transposed>>,
}

/// Aᵀ (in, rank) and Bᵀ (rank, out): each loop of `LoraPair::forward` then runs along a row.
#[derive(Debug)]
struct Transposed {
    a: Vec<f32>,
    b: Vec<f32>,
    rank: usize,
}

impl Transposed {
    fn of(a: &Tensor, b: &Tensor) -> Result<Transposed> {
        let transposed = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.t()?.flatten_all()?.to_vec1::<f32>()?) };
        Ok(Transposed { a: transposed(a)?, b: transposed(b)?, rank: a.dim(0)? })
    }
}

impl LoraPair {
    /// A pair that will not change, as read from a file.
    fn fixed(a: Tensor, b: Tensor, scale: f64) -> Result<LoraPair> {
        let fixed = Transposed::of(&a, &b)?;
        Ok(LoraPair { a, b, scale, fixed: Some(Arc::new(fixed)) })
    }

    /// The update's contribution to `x W^T`: scale · (x A^T) B^T, never forming B A.
    ///
    /// Each number is a plain sum taken in order (over `in`, then over the rank), as the GPU's
    /// matmul_f32.wgsl takes it, so that the tuned model gives the same bits on both
    /// (`tests/gpu.rs`); candle's products would leave the order to gemm. The loops run along
    /// rows of Aᵀ and Bᵀ, so they vectorise across the rank and the outputs.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&self.a.dim(1)?) {
            return Err(Error::Internal(format!(
                "input of shape {dims:?} for an adapter of {} inputs",
                self.a.dim(1)?
            )));
        }
        let y = self.update(&x.flatten_all()?.to_vec1::<f32>()?)?;
        if let Some(last) = dims.last_mut() {
            *last = self.b.dim(0)?;
        }
        Ok(Tensor::from_vec(y, dims, x.device())?)
    }

    /// `forward` on plain rows (`input`: positions × in), for the decode path's buffers.
    pub(crate) fn update(&self, input: &[f32]) -> Result<Vec<f32>> {
        let transposed;
        let t = match &self.fixed {
            Some(t) => t.as_ref(),
            None => {
                transposed = Transposed::of(&self.a, &self.b)?;
                &transposed
            }
        };
        let (inner, rank, scale) = (t.a.len() / t.rank, t.rank, self.scale as f32);
        let out = t.b.len() / rank;
        if input.is_empty() || input.len() % inner != 0 {
            return Err(Error::Internal(format!("{} numbers for an adapter of {inner} inputs", input.len())));
        }
        let mut y = vec![0f32; input.len() / inner * out];
        let mut h = vec![0f32; rank];
        for (x, y) in input.chunks_exact(inner).zip(y.chunks_exact_mut(out)) {
            h.fill(0.0);
            for (&v, a) in x.iter().zip(t.a.chunks_exact(rank)) {
                h.iter_mut().zip(a).for_each(|(h, a)| *h += v * a);
            }
            for (&h, b) in h.iter().zip(t.b.chunks_exact(out)) {
                let h = scale * h;
                y.iter_mut().zip(b).for_each(|(y, b)| *y += h * b);
            }
        }
        Ok(y)
    }

    /// The same update from candle's differentiable operations, for training.
    pub fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        // As 2-D products: broadcast_matmul on (batch, seq, in) would first broadcast A and B to
        // 3-D. The scale goes on the rank-wide middle result, the smallest tensor.
        let mut dims = x.dims().to_vec();
        let inner = dims.pop().unwrap_or(1);
        let rows: usize = dims.iter().product();
        let h = (x.reshape((rows, inner))?.matmul(&self.a.t()?)? * self.scale)?;
        let y = h.matmul(&self.b.t()?)?;
        dims.push(y.dim(1)?);
        Ok(y.reshape(dims)?)
    }

    /// scale · B A, the change to W (out, in).
    pub fn delta(&self) -> Result<Tensor> {
        Ok((self.b.matmul(&self.a)? * self.scale)?)
    }
}

/// A trained (or training) adapter: one pair per adapted matrix, named "blk.{i}.{projection}".
#[derive(Debug, Clone)]
pub struct Adapter {
    pub config: LoraConfig,
    pub pairs: BTreeMap<String, LoraPair>,
    /// Provenance written into the file (base model, data hash, ...), shown in the model card.
    pub info: BTreeMap<String, String>,
}

/// What an adapter is, in one shape for every front end (`pocketrag adapter`, the wasm
/// `loadAdapter`): its LoRA settings, how many matrices it adapts and with how many numbers, and
/// the provenance written into it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<String>,
    pub matrices: usize,
    pub parameters: usize,
    pub info: BTreeMap<String, String>,
}

impl Adapter {
    pub fn summary(&self) -> AdapterSummary {
        AdapterSummary {
            rank: self.config.rank,
            alpha: self.config.alpha,
            targets: self.config.targets.clone(),
            matrices: self.pairs.len(),
            parameters: self.pairs.values().map(|p| p.a.elem_count() + p.b.elem_count()).sum(),
            info: self.info.clone(),
        }
    }
}

/// The trainable variables of an adapter: (name, A, B).
pub type AdapterVars = Vec<(String, Var, Var)>;

const FORMAT: &str = "pocketrag-lora";
const VERSION: &str = "1";

impl Adapter {
    /// A fresh adapter for the matrices `projections` (names and (out, in) shapes, from
    /// `Llama::projections`) that the config targets. A is drawn uniformly from ±1/sqrt(in); B is 0.
    pub fn new_trainable(
        config: &LoraConfig,
        projections: &[(String, (usize, usize))],
        seed: u64,
        device: &Device,
    ) -> Result<(Adapter, AdapterVars)> {
        config.check()?;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut pairs = BTreeMap::new();
        let mut vars = Vec::new();
        for (name, (out, inp)) in projections {
            let projection = name.rsplit('.').next().unwrap_or_default();
            if !config.targets.iter().any(|t| t == projection) {
                continue;
            }
            let bound = 1.0 / (*inp as f32).sqrt();
            let a: Vec<f32> = (0..config.rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (config.rank, *inp), device)?)?;
            let b = Var::zeros((*out, config.rank), DType::F32, device)?;
            pairs.insert(
                name.clone(),
                LoraPair { a: a.as_tensor().clone(), b: b.as_tensor().clone(), scale: config.scale(), fixed: None },
            );
            vars.push((name.clone(), a, b));
        }
        if pairs.is_empty() {
            return Err(Error::Input("the LoRA targets match no matrix of this model".into()));
        }
        Ok((Adapter { config: config.clone(), pairs, info: BTreeMap::new() }, vars))
    }

    /// The adapter as a safetensors file of f32 matrices; config and provenance go in its
    /// metadata.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.to_bytes_as(DType::F32)
    }

    /// The same with the matrices stored as `dtype`: F16 halves the file we ship (reading it
    /// back gives f32 again).
    pub fn to_bytes_as(&self, dtype: DType) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (name, pair) in &self.pairs {
            tensors.push((format!("{name}.lora_a"), pair.a.detach().to_dtype(dtype)?));
            tensors.push((format!("{name}.lora_b"), pair.b.detach().to_dtype(dtype)?));
        }
        let mut meta: HashMap<String, String> = self.info.clone().into_iter().collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("version".into(), VERSION.into());
        meta.insert("config".into(), serde_json::to_string(&self.config).expect("config serialises"));
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
            .map_err(|e| Error::Internal(format!("cannot write the adapter: {e}")))
    }

    /// Read an adapter written by [`Adapter::to_bytes`]. `file` names it in error messages.
    pub fn from_bytes(bytes: &[u8], file: &str) -> Result<Adapter> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::model(file, format!("not a safetensors file ({e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(Error::model(file, "not a pocketrag LoRA adapter (no format=pocketrag-lora in its metadata)"));
        }
        if meta.get("version").map(String::as_str) != Some(VERSION) {
            return Err(Error::model(
                file,
                format!("adapter format version {:?}; this build reads version {VERSION}", meta.get("version")),
            ));
        }
        let config: LoraConfig = serde_json::from_str(meta.get("config").map(String::as_str).unwrap_or(""))
            .map_err(|e| Error::model(file, format!("unreadable adapter config ({e})")))?;
        config.check().map_err(|e| Error::model(file, e))?;
        let mut tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| Error::model(file, format!("cannot read the adapter's tensors ({e})")))?;
        let names: Vec<String> = tensors.keys().filter_map(|k| k.strip_suffix(".lora_a")).map(str::to_string).collect();
        let mut pairs = BTreeMap::new();
        for name in names {
            let a = tensors.remove(&format!("{name}.lora_a")).expect("listed above");
            let b = tensors
                .remove(&format!("{name}.lora_b"))
                .ok_or_else(|| Error::model(file, format!("{name} has an A matrix but no B")))?;
            let (a, b) = (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?);
            let ok = a.rank() == 2 && b.rank() == 2 && a.dim(0)? == config.rank && b.dim(1)? == config.rank;
            if !ok {
                return Err(Error::model(
                    file,
                    format!("{name}: shapes {:?} and {:?} do not match rank {}", a.dims(), b.dims(), config.rank),
                ));
            }
            pairs.insert(name, LoraPair::fixed(a, b, config.scale())?);
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::model(file, format!("unexpected tensor {extra}")));
        }
        if pairs.is_empty() {
            return Err(Error::model(file, "the adapter holds no matrices"));
        }
        let info = meta.into_iter().filter(|(k, _)| !["format", "version", "config"].contains(&k.as_str())).collect();
        Ok(Adapter { config, pairs, info })
    }
}

/// A new GGUF file with the adapter folded into the base weights: each adapted W becomes
/// W + scale · B A, re-quantized to W's own format. The file records which adapter it holds.
pub fn merge_into_gguf(bytes: &[u8], file: &str, adapter: &Adapter) -> Result<Vec<u8>> {
    let mut merged = 0;
    let label = adapter.info.get("name").cloned().unwrap_or_else(|| "lora".into());
    let out =
        quantize::rewrite(bytes, file, None, &[("pocketrag.adapter".into(), Value::String(label))], |name, t| {
            let Some(pair) = name.strip_suffix(".weight").and_then(|n| adapter.pairs.get(n)) else { return Ok(t) };
            let w = t.dequantize(&Device::Cpu)?;
            if w.dims() != [pair.b.dim(0)?, pair.a.dim(1)?] {
                return Err(Error::Input(format!("{name} is {:?}; the adapter does not fit it", w.dims())));
            }
            merged += 1;
            Ok(QTensor::quantize(&(w + pair.delta()?)?, t.dtype())?)
        })?;
    if merged != adapter.pairs.len() {
        return Err(Error::Input(format!(
            "the adapter has {} matrices but only {merged} were found in {file}",
            adapter.pairs.len()
        )));
    }
    Ok(out)
}
