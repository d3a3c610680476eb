//! What the engine hands back: the retrieved sources, the answer with its citations and
//! timings, the modes an answer can be made in, and the check every question passes first.

use super::{evidence, support};
use crate::error::{Error, Result};
use crate::llm::{Run, StopReason};
use crate::{chunk, ingest};
use serde::{Deserialize, Serialize};

/// A retrieved chunk, with where it came from and how it scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    /// The chunk's index slot (internal; lets the engine reuse its stored vector).
    #[serde(skip)]
    pub slot: u32,
    /// The document's name as indexed.
    pub doc: String,
    pub text: String,
    /// Cosine similarity between question and chunk.
    pub score: f32,
    pub keyword_score: Option<f32>,
    pub fused_score: f32,
    /// Byte range of the chunk in the document's extracted text.
    pub start: usize,
    pub end: usize,
    pub page: Option<u32>,
    pub heading: Option<String>,
}

/// A quote the answer rests on, and the retrieved passage it stands in. `quote` is always the
/// document's own text: `quote == documentText(doc)[start..end]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Citation {
    /// The source's number, `[n]`: its place in `Answer::sources`, from 1.
    pub n: usize,
    /// How the quote came to be cited.
    pub by: CitedBy,
    pub doc: String,
    pub quote: String,
    /// Byte range of the quote in the document's extracted text.
    pub start: usize,
    pub end: usize,
    /// The whole retrieved passage, and its byte range in the document.
    pub text: String,
    pub passage_start: usize,
    pub passage_end: usize,
    pub score: f32,
    pub keyword_score: Option<f32>,
    pub fused_score: f32,
    pub page: Option<u32>,
    pub heading: Option<String>,
}

impl Citation {
    pub(super) fn new(n: usize, by: CitedBy, source: &Source, quote: &evidence::Sentence) -> Citation {
        Citation {
            n,
            by,
            doc: source.doc.clone(),
            quote: quote.text.clone(),
            start: quote.start,
            end: quote.end,
            text: source.text.clone(),
            passage_start: source.start,
            passage_end: source.end,
            score: source.score,
            keyword_score: source.keyword_score,
            fused_score: source.fused_score,
            page: source.page,
            heading: source.heading.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CitedBy {
    /// The answer is this quote (the default mode).
    Quote,
    /// The model wrote `[n]` on a sentence that the check found in this quote.
    Model,
    /// The model cited nothing (or another source) and the check found the sentence here.
    Match,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub embed: f64,
    pub search: f64,
    /// Splitting the passages into sentences, embedding and scoring them (and, in free mode,
    /// checking the written sentences against them).
    #[serde(default)]
    pub evidence: f64,
    pub prefill: f64,
    pub decode: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
    /// Every source placed in the prompt, numbered from 1 in this order.
    pub sources: Vec<Source>,
    /// True when the engine answered NOT_FOUND itself: retrieval found nothing relevant, or (in
    /// the default mode) no sentence of what it found answers the question. `sources` are then
    /// the closest passages.
    pub abstained: bool,
    pub mode: Mode,
    /// The support gate's probability that the sources answer the question (modes with
    /// retrieval; None when retrieval found nothing relevant).
    pub support: Option<f32>,
    /// The best-scored sentences of the sources, best first: what the default mode chose from.
    pub evidence: Vec<evidence::Scored>,
    /// Free mode: each written sentence and whether the sources support it.
    pub sentences: Vec<support::SentenceSupport>,
    pub prompt: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: Option<StopReason>,
    pub timings_ms: Timings,
    /// Which vector search found the sources: "hnsw" or "exact" (see [`SearchResult::index`]).
    #[serde(default)]
    pub index: String,
    /// Whether the fine-tuned adapter was applied (see [`Engine::use_adapter`]).
    pub tuned: bool,
    /// A yes/no question in the default mode: the decision the engine read from the best quote
    /// (see [`decide`]); the answer opens with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// The answer to a yes/no question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Yes,
    No,
}

impl Decision {
    pub fn word(self) -> &'static str {
        match self {
            Decision::Yes => "Yes",
            Decision::No => "No",
        }
    }
}

impl From<bool> for Decision {
    fn from(yes: bool) -> Decision {
        if yes {
            Decision::Yes
        } else {
            Decision::No
        }
    }
}

/// A document chunked and waiting for the vectors of `texts`: see [`Engine::prepare`].
pub struct PreparedDocument {
    pub(super) doc: ingest::Document,
    pub(super) chunks: Vec<chunk::Chunk>,
    /// What to embed, one text per chunk (the chunk with its heading).
    pub texts: Vec<String>,
}

/// An answer under way: see [`Engine::begin_answer`].
pub enum PendingAnswer {
    /// The answer is known without running the model (a quoted answer, or NOT_FOUND); it is
    /// streamed as one piece.
    Ready { answer: Answer, said: bool },
    Generating {
        run: Box<Run>,
        mode: Mode,
        sources: Vec<Source>,
        prompt: String,
        timings: Timings,
        tuned: bool,
        /// At most this many sentences are written (None: as many as the model writes).
        sentences_max: Option<usize>,
        /// Where the answer was cut and why: it began to repeat itself, or it reached
        /// `sentences_max`.
        cut: Option<(usize, StopReason)>,
    },
}

impl PendingAnswer {
    /// Stop at the next step, keeping what was generated.
    pub fn cancel(&mut self) {
        if let PendingAnswer::Generating { run, .. } = self {
            run.cancel();
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResult {
    pub hits: Vec<Source>,
    pub timings_ms: Timings,
    /// Which vector search answered: "hnsw" (the graph, plus a scan of what was added since it
    /// was built) or "exact" (a scan of every vector).
    #[serde(default)]
    pub index: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocReport {
    pub name: String,
    pub chunks: usize,
    pub chars: usize,
    pub embed_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Retrieve, then answer with the sentences of the sources that answer the question, quoted
    /// as they stand, or say that the documents do not contain the answer. The default: nothing
    /// in the answer can be invented.
    Quote,
    /// Retrieve, then let the model write the answer from the sources; each written sentence is
    /// checked against them and only supported ones are cited.
    Rag,
    /// Retrieve, and when the support gate finds an answer, let the model write it by copying
    /// runs of the sources, each followed by its citation (quote-constrained decoding,
    /// `rag::constrain`): the model chooses what to quote, and cannot write anything else.
    Copy,
    /// Ask the model alone.
    NoRag,
}

crate::named::named_enum!(Mode, "answer mode", { Quote => "quote", Copy => "copy", Rag => "rag", NoRag => "no_rag" });

impl Mode {
    /// The names are the ones the JSON output uses.
    pub fn parse(name: &str) -> Result<Mode> {
        name.parse()
    }

    pub fn uses_model(self) -> bool {
        self != Mode::Quote
    }
}

/// Longer questions are refused: a question is a sentence or two, and a pasted document would
/// only crowd the sources out of the prompt.
pub const MAX_QUESTION_CHARS: usize = 2000;

/// The question, trimmed, or why it cannot be asked.
pub fn check_question(question: &str) -> Result<&str> {
    let q = question.trim();
    if q.is_empty() {
        return Err(Error::Input("the question is empty".into()));
    }
    let chars = q.chars().count();
    if chars > MAX_QUESTION_CHARS {
        return Err(Error::Input(format!(
            "the question is {chars} characters long; ask in at most {MAX_QUESTION_CHARS}"
        )));
    }
    if let Some(c) = q.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        return Err(Error::Input(format!(
            "the question contains a control character (U+{:04X}); type it again without it",
            c as u32
        )));
    }
    Ok(q)
}
