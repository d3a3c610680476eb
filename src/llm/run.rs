//! A generation in progress: the tokens so far, the text printed so far (held back while it ends
//! inside a UTF-8 character), why it stopped, and the constraint that limits what comes next.
//! `Generator::start` makes one and `Generator::step` moves it on.

use super::{GenerateParams, Generation, StopReason};
use crate::error::{Error, Result};
use candle_core::Tensor;
use candle_transformers::generation::LogitsProcessor;
use serde::Serialize;
use tokenizers::Tokenizer;

/// What one [`Generator::step`] did. Serialised as `{"type": "prefill", "done", "total"}`,
/// `{"type": "token", "text"}` or `{"type": "done", "stop"}` (the wasm API returns it as is).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    /// Fed the prompt up to token `done` of `total`.
    Prefill {
        done: usize,
        total: usize,
    },
    /// Produced one token; the text is empty while a multi-byte character is still incomplete.
    Token {
        text: String,
    },
    Done {
        stop: StopReason,
    },
}

/// A generation in progress. It owns everything but the model, whose KV cache holds the rest.
pub struct Run {
    pub(super) params: GenerateParams,
    pub(super) sampler: LogitsProcessor,
    /// Prompt followed by the generated tokens: the repeat penalty looks back over both.
    pub(super) history: Vec<u32>,
    pub(super) prompt_tokens: usize,
    /// How many prompt tokens the model has seen.
    pub(super) fed: usize,
    pub(super) logits: Option<Tensor>,
    pub(super) tokens: Vec<u32>,
    /// Generated tokens not yet printed because they end inside a UTF-8 character.
    pub(super) unprinted: Vec<u32>,
    pub(super) text: String,
    /// Set when the run ends, by a step or by `cancel`.
    pub(super) stop: Option<StopReason>,
    pub(super) prefill_ms: f64,
    pub(super) decode_ms: f64,
    pub(super) constraint: Option<Box<dyn Constraint>>,
}

/// Limits which tokens generation may produce next: quote-constrained decoding
/// (`rag::constrain`) lets the model copy from its sources and nothing else.
pub trait Constraint: Send {
    /// The tokens allowed next, or None for any. An empty list ends the answer.
    fn allowed(&mut self) -> Option<&[u32]>;
    /// `token` was produced.
    fn advance(&mut self, token: u32);
}

/// A byte-level token may hold part of a character; past this many tokens the bytes are
/// printed anyway (as U+FFFD) rather than held back for ever.
const MAX_UNPRINTED: usize = 4;

/// `logits` with every token but `allowed` made impossible.
pub(super) fn only(logits: &Tensor, allowed: &[u32]) -> Result<Tensor> {
    let all = logits.to_vec1::<f32>()?;
    let mut masked = vec![f32::NEG_INFINITY; all.len()];
    for &t in allowed {
        if let Some(&v) = all.get(t as usize) {
            masked[t as usize] = v;
        }
    }
    Ok(Tensor::from_vec(masked, all.len(), logits.device())?)
}

impl Run {
    /// From the next token on, produce only what `constraint` allows.
    pub fn constrain(&mut self, constraint: Box<dyn Constraint>) {
        self.constraint = Some(constraint);
    }

    /// Stop at the next step. The text so far is kept.
    pub fn cancel(&mut self) {
        self.stop.get_or_insert(StopReason::Cancelled);
    }

    /// Byte-level BPE decodes token by token, so the text of the tokens held back so far is
    /// printable once it no longer ends in a broken character.
    pub(super) fn printable(&mut self, tokenizer: &Tokenizer, next: u32) -> Result<String> {
        self.unprinted.push(next);
        let text = self.held_back(tokenizer)?;
        if text.ends_with('\u{FFFD}') && self.unprinted.len() < MAX_UNPRINTED {
            return Ok(String::new());
        }
        Ok(self.print(text))
    }

    pub(super) fn held_back(&self, tokenizer: &Tokenizer) -> Result<String> {
        tokenizer
            .decode(&self.unprinted, true)
            .map_err(|e| Error::Input(format!("cannot decode tokens {:?}: {e}", self.unprinted)))
    }

    /// `text`, the text of the held-back tokens, is printed.
    pub(super) fn print(&mut self, text: String) -> String {
        self.unprinted.clear();
        self.text.push_str(&text);
        text
    }

    /// The text of the tokens still held back, printed as it stands: the run has stopped, so no
    /// token will complete the character.
    pub(super) fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        if self.unprinted.is_empty() {
            return Ok(String::new());
        }
        let text = self.held_back(tokenizer)?;
        Ok(self.print(text))
    }

    /// The text generated so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn finish(self) -> Generation {
        Generation {
            text: self.text,
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            stop: self.stop.unwrap_or(StopReason::Cancelled),
            prefill_ms: self.prefill_ms,
            decode_ms: self.decode_ms,
        }
    }
}
