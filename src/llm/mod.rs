//! The generator: a quantized llama-architecture model (SmolLM2-135M-Instruct) read from one GGUF
//! file, its tokenizer and chat template taken from the same file, and a decode loop with
//! streaming, stop tokens, sampling and cancellation.

pub(crate) mod attend;
mod decode;
pub mod gpu;
pub(crate) mod linear;
pub mod llama;
pub mod lora;
pub mod quantize;
mod run;
pub mod tiny;
pub mod tokenizer;
mod validate;

use crate::error::{Error, Result};
use crate::gpu::{Backend, Gpu};
use crate::time::Stopwatch;
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use gpu::GpuLlama;
use llama::{Llama, Weights, MAX_SEQ_LEN};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;
use tokenizers::Tokenizer;

use run::only;
pub use run::{Constraint, Run, Step};
use validate::meta_str;
pub(crate) use validate::read_header;

/// How far the GPU's logits may be from the CPU's in the start-up self-test. The GPU's kernels
/// do the CPU's arithmetic in the CPU's order, so on an adapter with the CPU's f32 arithmetic
/// (lavapipe) they are the same bits. Adapters that fuse multiply-adds differ in last bits, which
/// the 8-bit rounding of activations amplifies: before the kernels followed the CPU's order,
/// lavapipe's logits were up to 1.41 off over 130 steps (`tests/gpu.rs`), on logits up to ~30;
/// a wrong kernel is off by far more.
pub const GPU_TOLERANCE: f32 = 2.0;

/// What the GPU self-test measured: the largest difference between the two paths' logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfTest {
    pub worst: f32,
}

impl std::fmt::Display for SelfTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.worst {
            0.0 => write!(f, "self-test: the CPU's logits exactly"),
            w => write!(f, "self-test: logits within {w:.3} of the CPU's"),
        }
    }
}

/// Prompts are fed to the model in slices of this many tokens: it bounds the attention matrix
/// (and so peak memory) and is how long Stop may wait during prefill. Measured natively on a
/// 531-token prompt (best of 5): slices of 256 / 128 / 64 gave 177 / 168 / 159 tok/s; 128 keeps
/// Stop within about 2.5 s at the browser's single-thread prefill speed.
const PREFILL_SLICE: usize = 128;
const _: () = assert!(PREFILL_SLICE <= gpu::MAX_POSITIONS, "a prompt slice must fit one GPU pass");

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Message { role: role.to_string(), content: content.into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Penalise tokens seen in the last `repeat_last_n` tokens; 1.0 turns it off. Small models
    /// fall into loops under greedy decoding without it.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 0.9,
            seed: 299792458,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndOfText,
    MaxTokens,
    ContextFull,
    Cancelled,
    /// The answer began to repeat a sentence it had already written (the repeat is cut off).
    Repeated,
    /// The answer reached the number of sentences the question wants (see
    /// `rag::support::sentences_wanted`).
    Sentences,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

pub struct Generator {
    model: Llama,
    tokenizer: Tokenizer,
    template: String,
    stop_ids: Vec<u32>,
    context: usize,
    device: Device,
    /// The model on the GPU, when generation runs there (`use_gpu`).
    gpu: Option<GpuLlama>,
}

impl Generator {
    /// Load a GGUF model, keeping its weights as stored. `file` names the file in error messages.
    pub fn from_gguf_bytes(bytes: &[u8], file: &str) -> Result<Self> {
        Self::from_gguf_bytes_with(bytes, file, Weights::Quantized)
    }

    /// Load a GGUF model, choosing how its weights are kept (see [`Weights`]).
    pub fn from_gguf_bytes_with(bytes: &[u8], file: &str, weights: Weights) -> Result<Self> {
        let ct = read_header(bytes, file)?;
        let mut reader = Cursor::new(bytes);
        let arch = meta_str(&ct, "general.architecture").unwrap_or_default();
        if arch != "llama" {
            return Err(Error::model(file, format!("architecture {arch:?} is not supported (expected llama)")));
        }
        let tokenizer = tokenizer::from_gguf(&ct, file)?;
        let template = meta_str(&ct, "tokenizer.chat_template")
            .ok_or_else(|| Error::model(file, "no tokenizer.chat_template in the GGUF metadata"))?;
        let mut stop_ids = Vec::new();
        if let Some(id) = ct.metadata.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()) {
            stop_ids.push(id);
        }
        // The chat template ends a turn with <|im_end|>; <|endoftext|> ends a document. Either
        // ends an answer, whatever the metadata calls the EOS token.
        for t in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.token_to_id(t) {
                if !stop_ids.contains(&id) {
                    stop_ids.push(id);
                }
            }
        }
        let trained =
            ct.metadata.get("llama.context_length").and_then(|v| v.to_u32().ok()).map(|v| v as usize).unwrap_or(2048);
        let device = Device::Cpu;
        let model = Llama::from_gguf(&ct, &mut reader, weights, &device)
            .map_err(|e| Error::model(file, format!("cannot load weights ({e})")))?;
        Ok(Generator { model, tokenizer, template, stop_ids, context: trained.min(MAX_SEQ_LEN), device, gpu: None })
    }

    pub fn model(&self) -> &Llama {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut Llama {
        &mut self.model
    }

    /// Answer with a fine-tuned adapter applied on top of the base weights, or without (`None`).
    pub fn set_adapter(&mut self, adapter: Option<&lora::Adapter>) -> Result<()> {
        self.model.set_adapter(adapter)?;
        if let Some(gpu) = &mut self.gpu {
            if let Err(e) = gpu.sync_adapter(&self.model) {
                // The CPU model has the new adapter; rather than answer with the old one on the
                // GPU, go back to the CPU.
                self.gpu = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Generate on `gpu` from now on, if the model can go there and passes a self-test: a few
    /// tokens run on both paths, the logits compared. On any failure the generator stays on the
    /// CPU and the error says why. Natively this completes at once (`crate::gpu::now`); in the
    /// browser, await it.
    pub async fn use_gpu(&mut self, gpu: Arc<Gpu>) -> Result<SelfTest> {
        let mut on_gpu = GpuLlama::new(gpu, &self.model, self.context)?;
        let chat = self.render_chat(&[Message::new("user", "Say hello.")])?;
        let ids = self.encode(&chat)?;
        let mut worst = 0f32;
        // One token at a time: that is the path where both sides compute the same thing (a
        // prompt slice may take the f32 weights on the CPU, `Weights::QuantizedAndDense`).
        for (pos, &id) in ids.iter().enumerate().take(8) {
            let cpu = self.model.forward(&Tensor::new(&[id], &self.device)?.unsqueeze(0)?, pos)?;
            let cpu: Vec<f32> = cpu.squeeze(0)?.to_vec1()?;
            let gpu = on_gpu.forward(&[id], pos).await?;
            if gpu.len() != cpu.len() || gpu.iter().any(|v| !v.is_finite()) {
                return Err(Error::Gpu("self-test failed: the GPU's logits are not numbers".into()));
            }
            worst = cpu.iter().zip(&gpu).map(|(c, g)| (c - g).abs()).fold(worst, f32::max);
        }
        self.model.clear_cache();
        if worst > GPU_TOLERANCE {
            return Err(Error::Gpu(format!("self-test failed: logits differ from the CPU's by {worst}")));
        }
        self.gpu = Some(on_gpu);
        Ok(SelfTest { worst })
    }

    /// Where the next generation runs.
    pub fn backend(&self) -> Backend {
        if self.gpu.is_some() {
            Backend::Gpu
        } else {
            Backend::Cpu
        }
    }

    /// Logits (1, vocabulary) for the last of `ids`, placed at `pos..`, on the GPU or the CPU.
    async fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Tensor> {
        match &mut self.gpu {
            Some(gpu) => {
                let logits = gpu.forward(ids, pos).await?;
                let n = logits.len();
                Ok(Tensor::from_vec(logits, (1, n), &self.device)?)
            }
            None => self.model.forward(&Tensor::new(ids, &self.device)?.unsqueeze(0)?, pos),
        }
    }

    /// The log-probability of each token of `continuation` after `context` and the tokens of
    /// `continuation` before it, on the CPU (the model's cache is cleared first and after).
    /// The prompt's slices go through at once; each later token is one decoding step.
    pub fn log_probs(&mut self, context: &[u32], continuation: &[u32]) -> Result<Vec<f32>> {
        self.check_reads(context, continuation.len())?;
        self.model.clear_cache();
        let mut out = Vec::with_capacity(continuation.len());
        let mut logits = self.logits_at(context, 0)?;
        for (i, &t) in continuation.iter().enumerate() {
            let z =
                *logits.get(t as usize).ok_or_else(|| Error::Internal(format!("token {t} outside the vocabulary")))?;
            out.push(z - log_sum_exp(&logits));
            if i + 1 < continuation.len() {
                logits = self.logits_at(&[t], context.len() + i)?;
            }
        }
        self.model.clear_cache();
        Ok(out)
    }

    /// The log-probability of every token of the vocabulary coming next after `context`, on the
    /// CPU (the model's cache is cleared first and after): one prompt pass for all of them.
    pub fn next_log_probs(&mut self, context: &[u32]) -> Result<Vec<f32>> {
        self.check_reads(context, 0)?;
        self.model.clear_cache();
        let logits = self.logits_at(context, 0)?;
        self.model.clear_cache();
        let lse = log_sum_exp(&logits);
        Ok(logits.iter().map(|z| z - lse).collect())
    }

    /// Refuse an empty context, or one that with `more` tokens after it overflows the window.
    fn check_reads(&self, context: &[u32], more: usize) -> Result<()> {
        if context.is_empty() || context.len() + more >= self.context {
            return Err(Error::Input(format!(
                "{} + {more} tokens to read; the model's context holds {}",
                context.len(),
                self.context
            )));
        }
        Ok(())
    }

    /// The logits after `ids` placed at `pos`, as plain numbers.
    fn logits_at(&mut self, ids: &[u32], pos: usize) -> Result<Vec<f32>> {
        let logits = self.model.forward(&Tensor::new(ids, &self.device)?.unsqueeze(0)?, pos)?;
        Ok(logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids for text that may contain chat markup (special tokens are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode_fast(text, false).map_err(|e| Error::Input(format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Generator::encode`], with each token's byte range in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<(usize, usize)>)> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::Input(format!("cannot tokenize: {e}")))?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    /// The tokens that end generation.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Render a conversation with the model's own chat template, ready for the assistant's turn.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let env = minijinja::Environment::new();
        env.render_str(&self.template, minijinja::context! { messages => messages, add_generation_prompt => true })
            .map_err(|e| Error::Input(format!("chat template failed: {e}")))
    }

    /// Begin a generation. Nothing runs yet: call [`Generator::step`] until it returns
    /// [`Step::Done`], then [`Run::finish`]. Stepping lets a caller with no threads to spare (a
    /// browser worker) look at its messages between steps, which is how Stop works there.
    pub fn start(&mut self, prompt_ids: &[u32], params: &GenerateParams) -> Result<Run> {
        if prompt_ids.is_empty() {
            return Err(Error::Input("empty prompt".into()));
        }
        if prompt_ids.len() >= self.context {
            return Err(Error::Input(format!(
                "prompt is {} tokens; the model's context holds {}",
                prompt_ids.len(),
                self.context
            )));
        }
        let sampling = if params.temperature <= 0.0 {
            Sampling::ArgMax
        } else {
            Sampling::TopP { p: params.top_p, temperature: params.temperature }
        };
        self.model.clear_cache();
        Ok(Run {
            params: params.clone(),
            sampler: LogitsProcessor::from_sampling(params.seed, sampling),
            history: prompt_ids.to_vec(),
            prompt_tokens: prompt_ids.len(),
            fed: 0,
            logits: None,
            tokens: Vec::new(),
            unprinted: Vec::new(),
            text: String::new(),
            stop: None,
            prefill_ms: 0.0,
            decode_ms: 0.0,
            constraint: None,
        })
    }

    /// Do one bounded piece of work: feed the next slice of the prompt, or produce one token.
    /// Completes at once except on the GPU in the browser, which must await `step_async`.
    pub fn step(&mut self, run: &mut Run) -> Result<Step> {
        crate::gpu::now(self.step_async(run))?
    }

    /// [`Generator::step`], for callers that can await the GPU.
    pub async fn step_async(&mut self, run: &mut Run) -> Result<Step> {
        if let Some(stop) = run.stop {
            // A stop inside a character still gives the bytes produced (as U+FFFD).
            let rest = run.flush(&self.tokenizer)?;
            return Ok(if rest.is_empty() { Step::Done { stop } } else { Step::Token { text: rest } });
        }
        let clock = Stopwatch::start();
        if run.fed < run.prompt_tokens {
            let end = (run.fed + PREFILL_SLICE).min(run.prompt_tokens);
            let slice = run.history[run.fed..end].to_vec();
            run.logits = Some(self.forward(&slice, run.fed).await?);
            run.fed = end;
            run.prefill_ms += clock.ms();
            return Ok(Step::Prefill { done: run.fed, total: run.prompt_tokens });
        }
        // A step either samples from the logits of the last forward pass and runs the model on
        // the sampled token, or finds a reason to stop.
        let Some(logits) = run.logits.take() else {
            return Err(Error::Input("the previous step of this answer failed; start it again".into()));
        };
        let logits = logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?;
        let logits = if run.params.repeat_penalty != 1.0 {
            let from = run.history.len().saturating_sub(run.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(&logits, run.params.repeat_penalty, &run.history[from..])?
        } else {
            logits
        };
        let (logits, ended) = match run.constraint.as_mut().and_then(|c| c.allowed()) {
            Some([]) => (logits, true),
            Some(allowed) => (only(&logits, allowed)?, false),
            None => (logits, false),
        };
        let next = if ended { self.stop_ids.first().copied().unwrap_or(0) } else { run.sampler.sample(&logits)? };
        if let Some(c) = run.constraint.as_mut() {
            c.advance(next);
        }
        let piece = if ended || self.stop_ids.contains(&next) {
            run.stop = Some(StopReason::EndOfText);
            String::new()
        } else {
            run.tokens.push(next);
            run.history.push(next);
            let piece = run.printable(&self.tokenizer, next)?;
            if run.tokens.len() >= run.params.max_tokens {
                run.stop = Some(StopReason::MaxTokens);
            } else if run.history.len() >= self.context {
                run.stop = Some(StopReason::ContextFull);
            } else {
                run.logits = Some(self.forward(&[next], run.history.len() - 1).await?);
            }
            piece
        };
        run.decode_ms += clock.ms();
        let piece = if run.stop.is_some() { piece + &run.flush(&self.tokenizer)? } else { piece };
        Ok(match run.stop {
            Some(stop) if piece.is_empty() => Step::Done { stop },
            _ => Step::Token { text: piece },
        })
    }

    /// Run the model on `prompt_ids` and decode until a stop token, `max_tokens`, a full context
    /// or `cancel()`. Each piece of text is passed to `on_token` as soon as it is complete UTF-8.
    pub fn generate(
        &mut self,
        prompt_ids: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> Result<Generation> {
        let mut run = self.start(prompt_ids, params)?;
        loop {
            if cancel() {
                run.cancel();
            }
            match self.step(&mut run)? {
                Step::Prefill { .. } => {}
                Step::Token { text } => {
                    if !text.is_empty() {
                        on_token(&text);
                    }
                }
                Step::Done { .. } => return Ok(run.finish()),
            }
        }
    }
}

/// log Σ eᶻ, with the largest z taken out first so that it stays finite.
fn log_sum_exp(z: &[f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    z.iter().map(|v| (v - max).exp()).sum::<f32>().ln() + max
}
