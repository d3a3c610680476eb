//! The generator: a quantized llama-architecture model (SmolLM2-135M-Instruct) read from one GGUF
//! file, its tokenizer and chat template taken from the same file, and a decode loop with
//! streaming, stop tokens, sampling and cancellation.

pub mod quantize;
pub mod tokenizer;

use crate::error::{Error, Result};
use crate::time::Stopwatch;
use candle_core::quantized::gguf_file::{self, Content};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{ModelWeights, MAX_SEQ_LEN};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use tokenizers::Tokenizer;

/// Prompts are fed to the model in slices of this many tokens: it bounds the attention matrix
/// (and so peak memory) and gives cancellation a chance between slices.
const PREFILL_SLICE: usize = 256;

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
    model: ModelWeights,
    tokenizer: Tokenizer,
    template: String,
    stop_ids: Vec<u32>,
    context: usize,
    device: Device,
}

impl Generator {
    /// Load a GGUF model. `file` names the file in error messages.
    pub fn from_gguf_bytes(bytes: &[u8], file: &str) -> Result<Self> {
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
        let trained = ct
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map(|v| v as usize)
            .unwrap_or(2048);
        let device = Device::Cpu;
        let model = ModelWeights::from_gguf(ct, &mut reader, &device)
            .map_err(|e| Error::model(file, format!("cannot load weights ({e})")))?;
        Ok(Generator { model, tokenizer, template, stop_ids, context: trained.min(MAX_SEQ_LEN), device })
    }

    /// The most tokens (prompt plus answer) one generation can hold.
    pub fn context_size(&self) -> usize {
        self.context
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids for text that may contain chat markup (special tokens are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| Error::Input(format!("cannot tokenize: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Render a conversation with the model's own chat template, ready for the assistant's turn.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let env = minijinja::Environment::new();
        env.render_str(
            &self.template,
            minijinja::context! { messages => messages, add_generation_prompt => true },
        )
        .map_err(|e| Error::Input(format!("chat template failed: {e}")))
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
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        self.model.clear_kv_cache();

        let clock = Stopwatch::start();
        let mut logits = None;
        for (i, slice) in prompt_ids.chunks(PREFILL_SLICE).enumerate() {
            if cancel() {
                let stop = StopReason::Cancelled;
                return Ok(Generation { text: String::new(), tokens: vec![], prompt_tokens: prompt_ids.len(), stop, prefill_ms: clock.ms(), decode_ms: 0.0 });
            }
            let input = Tensor::new(slice, &self.device)?.unsqueeze(0)?;
            logits = Some(self.model.forward(&input, i * PREFILL_SLICE)?);
        }
        let prefill_ms = clock.ms();
        let mut logits = logits.expect("prompt is not empty");

        let clock = Stopwatch::start();
        let mut history: Vec<u32> = prompt_ids.to_vec();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut stream = self.tokenizer.decode_stream(true);
        let stop = loop {
            let logits_1d = logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?;
            let logits_1d = if params.repeat_penalty != 1.0 {
                let from = history.len().saturating_sub(params.repeat_last_n);
                candle_transformers::utils::apply_repeat_penalty(&logits_1d, params.repeat_penalty, &history[from..])?
            } else {
                logits_1d
            };
            let next = sampler.sample(&logits_1d)?;
            if self.stop_ids.contains(&next) {
                break StopReason::EndOfText;
            }
            tokens.push(next);
            history.push(next);
            if let Some(piece) = stream.step(next).map_err(|e| Error::Input(format!("cannot decode token {next}: {e}")))? {
                on_token(&piece);
                text.push_str(&piece);
            }
            if tokens.len() >= params.max_tokens {
                break StopReason::MaxTokens;
            }
            if history.len() >= self.context {
                break StopReason::ContextFull;
            }
            if cancel() {
                break StopReason::Cancelled;
            }
            let input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
            logits = self.model.forward(&input, history.len() - 1)?;
        };
        let decode_ms = clock.ms();
        Ok(Generation { text, tokens, prompt_tokens: prompt_ids.len(), stop, prefill_ms, decode_ms })
    }
}

fn meta_str(ct: &Content, key: &str) -> Option<String> {
    ct.metadata.get(key).and_then(|v| v.to_string().ok()).cloned()
}

/// A truncated download still has a valid header; without this check it would fail deep inside
/// weight loading with an error that names no file.
pub(crate) fn check_complete(ct: &Content, len: u64, file: &str) -> Result<()> {
    let mut needed = ct.tensor_data_offset;
    for (name, info) in &ct.tensor_infos {
        let dtype = info.ggml_dtype;
        let elems = info.shape.elem_count();
        if elems % dtype.block_size() != 0 {
            return Err(Error::model(file, format!("tensor {name} has a shape that does not fit its type")));
        }
        let bytes = (elems / dtype.block_size() * dtype.type_size()) as u64;
        needed = needed.max(ct.tensor_data_offset + info.offset + bytes);
    }
    if needed > len {
        return Err(Error::model(
            file,
            format!("file is truncated: it has {len} bytes but its tensors need {needed} (download it again)"),
        ));
    }
    Ok(())
}

/// Read just the GGUF header (for tools that rewrite the file).
pub(crate) fn read_header(bytes: &[u8], file: &str) -> Result<Content> {
    let ct = gguf_file::Content::read(&mut Cursor::new(bytes))
        .map_err(|e| Error::model(file, format!("not a readable GGUF file ({e})")))?;
    check_complete(&ct, bytes.len() as u64, file)?;
    Ok(ct)
}
