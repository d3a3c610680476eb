//! Sentence embeddings with all-MiniLM-L6-v2: a 6-layer BERT whose token vectors are averaged
//! (ignoring padding) and scaled to unit length, so a dot product is a cosine similarity.

pub mod bert;
pub mod gpu;

use crate::error::{Error, Result};
use crate::gpu::{Backend, Gpu};
use bert::{Bert, BertShape};
use gpu::GpuBert;
use serde::Deserialize;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The numbers the encoder's matrix products are taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32, as the model is shipped.
    #[default]
    F32,
    /// Weights rounded to 8 bits at load, one scale per output row, and each position's
    /// activations rounded the same way at every product (`kernels::int8`).
    Int8,
}

crate::named::named_enum!(Precision, "embedder precision", { F32 => "f32", Int8 => "int8" });

/// sentence-transformers' `max_seq_length` for this model; longer inputs are cut there, exactly as
/// the reference implementation does, so our vectors match its vectors.
pub const MAX_SEQ_LEN: usize = 256;
/// How many texts go through the model at once, and between progress reports. The GPU pads a
/// batch to its longest text, so texts are sorted by length first; the CPU packs them unpadded.
const BATCH: usize = 16;
const _: () = assert!(BATCH * MAX_SEQ_LEN <= gpu::MAX_POSITIONS, "a batch must fit one GPU pass");

pub struct Embedder {
    model: Bert,
    tokenizer: Tokenizer,
    /// A second tokenizer without truncation or padding, for counting tokens while chunking.
    counter: Tokenizer,
    /// The model on the GPU, when embedding runs there (`use_gpu`).
    gpu: Option<GpuBert>,
}

/// How close (cosine) the GPU's vectors must be to the CPU's in the start-up self-test: the
/// issue's contract, which `tests/gpu.rs` checks on more texts.
pub const GPU_MIN_COSINE: f32 = 0.9999;

impl Embedder {
    /// Load from the three files of a sentence-transformers folder.
    pub fn from_bytes(weights: &[u8], tokenizer_json: &[u8], config_json: &[u8]) -> Result<Self> {
        let config: Config =
            serde_json::from_slice(config_json).map_err(|e| Error::model("embedder config.json", e))?;
        let mut counter =
            Tokenizer::from_bytes(tokenizer_json).map_err(|e| Error::model("embedder tokenizer.json", e))?;
        counter.with_truncation(None).map_err(|e| Error::model("embedder tokenizer.json", e))?;
        counter.with_padding(None);
        let mut tokenizer = counter.clone();
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_SEQ_LEN, ..Default::default() }))
            .map_err(|e| Error::model("embedder tokenizer.json", e))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        if config.hidden_act != "gelu" {
            return Err(Error::model(
                "embedder config.json",
                format!("activation {:?}; the embedder runs \"gelu\"", config.hidden_act),
            ));
        }
        let shape = BertShape {
            layers: config.num_hidden_layers,
            heads: config.num_attention_heads,
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            eps: config.layer_norm_eps as f32,
        };
        let model = Bert::from_safetensors(weights, shape)?;
        Ok(Embedder { model, tokenizer, counter, gpu: None })
    }

    pub fn dim(&self) -> usize {
        self.model.shape().hidden
    }

    /// Embed on `gpu` from now on (`weights`: the same safetensors bytes the embedder was loaded
    /// from), after a self-test: texts of several lengths embedded both ways, every pair of
    /// vectors within cosine `GPU_MIN_COSINE`. On failure the embedder stays on the CPU and the
    /// error says why. Natively it completes at once (`crate::gpu::now`).
    pub async fn use_gpu(&mut self, gpu: std::sync::Arc<Gpu>, weights: &[u8]) -> Result<()> {
        let on_gpu = GpuBert::new(gpu, weights, self.model.shape())?;
        let texts = ["Hello.", "Retrieval finds the passages; the model answers from them and cites them."];
        let cpu = self.embed(&texts)?;
        let (ids, mask, len) = self.tokenize(&texts)?;
        let gpu = on_gpu.embed(&ids, &mask, len).await?;
        for (c, g) in cpu.iter().zip(&gpu) {
            let cosine = crate::kernels::vecmath::dot(c, g);
            if !(cosine >= GPU_MIN_COSINE) {
                return Err(Error::Gpu(format!("embedder self-test failed: cosine {cosine} to the CPU's vector")));
            }
        }
        self.gpu = Some(on_gpu);
        Ok(())
    }

    /// The numbers the CPU's products are taken in (`Precision::F32` unless set); the GPU's are
    /// f32 either way.
    pub fn set_precision(&mut self, precision: Precision) {
        self.model.set_precision(precision, crate::kernels::int8::Form::FASTEST);
    }

    /// `set_precision` with the 8-bit products in `form`, not the build's fastest: tests check
    /// the relaxed SIMD build's numbers (`Form::Bytes`) natively this way.
    pub fn set_precision_in(&mut self, precision: Precision, form: crate::kernels::int8::Form) {
        self.model.set_precision(precision, form);
    }

    pub fn precision(&self) -> Precision {
        self.model.precision()
    }

    /// Where texts are embedded.
    pub fn backend(&self) -> Backend {
        if self.gpu.is_some() {
            Backend::Gpu
        } else {
            Backend::Cpu
        }
    }

    /// Length of `text` in word pieces, without [CLS]/[SEP]; what the chunker budgets with.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.counter.encode_fast(text, false).map(|e| e.len()).unwrap_or(text.len() / 4)
    }

    /// Embed texts; returns one unit vector per input, in input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_with_progress(texts, &mut |_, _| {})
    }

    /// As `embed`, calling `progress(done, total)` after each batch. Natively it runs on the GPU
    /// once `use_gpu` has succeeded. In the browser a GPU read-back completes only after control
    /// returns to the event loop, which a synchronous call cannot do, so there it stays on the CPU
    /// and `embed_async` is the way to the GPU.
    pub fn embed_with_progress(&self, texts: &[&str], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Vec<f32>>> {
        let gpu = if cfg!(target_arch = "wasm32") { None } else { self.gpu.as_ref() };
        crate::gpu::now(self.embed_on(gpu, texts, progress))?
    }

    /// As `embed_with_progress`, on the GPU when `use_gpu` succeeded, awaiting its read-backs.
    pub async fn embed_async(&self, texts: &[&str], progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Vec<f32>>> {
        self.embed_on(self.gpu.as_ref(), texts, progress).await
    }

    /// Texts sorted by length go through in batches, so each batch pads little on the GPU.
    async fn embed_on(
        &self,
        gpu: Option<&GpuBert>,
        texts: &[&str],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut done = 0;
        for batch in order.chunks(BATCH) {
            let inputs: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let (ids, mask, len) = self.tokenize(&inputs)?;
            let vectors = match gpu {
                Some(gpu) => gpu.embed(&ids, &mask, len).await?,
                None => self.embed_batch(ids, mask, len)?,
            };
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
            done += batch.len();
            progress(done, texts.len());
        }
        Ok(out)
    }

    /// Token ids and padding mask of a batch, texts padded to its longest; and that length.
    fn tokenize(&self, texts: &[&str]) -> Result<(Vec<u32>, Vec<u32>, usize)> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Input(format!("cannot tokenize text for embedding: {e}")))?;
        let len = encodings.first().map_or(0, |e| e.len());
        let mut ids = Vec::with_capacity(encodings.len() * len);
        let mut mask = Vec::with_capacity(encodings.len() * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        Ok((ids, mask, len))
    }

    /// One tokenized batch (`tokenize`) on the CPU: each text without its padding.
    fn embed_batch(&self, ids: Vec<u32>, mask: Vec<u32>, len: usize) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<&[u32]> = ids
            .chunks_exact(len.max(1))
            .zip(mask.chunks_exact(len.max(1)))
            .map(|(ids, mask)| &ids[..mask.iter().filter(|&&m| m != 0).count()])
            .collect();
        self.model.forward(&texts)
    }
}

/// The fields of the model's config.json the embedder reads.
#[derive(Deserialize)]
struct Config {
    num_hidden_layers: usize,
    num_attention_heads: usize,
    hidden_size: usize,
    intermediate_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
}
