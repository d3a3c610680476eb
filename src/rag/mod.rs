//! The engine: documents in, cited answers out. This is the seam both front ends use — the CLI
//! and the browser worker call the same methods and get the same structured results, including
//! the scores, the prompt and the timings that the teaching view shows.

pub mod cite;
pub mod evidence;
pub mod prompt;

use crate::chunk::{self, ChunkConfig};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::index::HnswConfig;
use crate::ingest;
use crate::library::Library;
use crate::llm::lora::Adapter;
use crate::llm::{GenerateParams, Generator, Run, Step, StopReason};
use crate::time::Stopwatch;
use prompt::PromptSource;
pub use prompt::NOT_FOUND;
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// How many chunks to retrieve for a question.
    pub k: usize,
    /// Below this cosine similarity for the best chunk, the engine abstains without asking the
    /// model: nothing retrieved is about the question.
    pub min_relevance: f32,
    /// Prompt plus answer must fit in this many tokens; sources are dropped (lowest ranked first)
    /// or shortened until they do. Smaller than the model's window because prefill time grows
    /// with it.
    pub context_budget: usize,
    pub generate: GenerateParams,
    /// In WebAssembly, refuse a document whose indexing would take the instance's memory past
    /// this many bytes (None: only what the browser will give). See `memory`.
    pub memory_limit: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            k: 4,
            min_relevance: 0.25,
            context_budget: 2048,
            generate: GenerateParams::default(),
            memory_limit: None,
        }
    }
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Citation {
    /// The source's number in the prompt, `[n]`.
    pub n: usize,
    /// Whether the model wrote `[n]` itself, or the engine matched the answer to the source.
    pub by: CitedBy,
    #[serde(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CitedBy {
    Model,
    Match,
}

/// An answer this similar (cosine) to a source is taken to come from it, when the model cited
/// nothing itself. Measured: answers restating a source score 0.6-0.9 against it, unrelated
/// sources stay below 0.3.
const MATCH_CITATION_MIN: f32 = 0.5;

/// Shorter sentences ("Yes.", "A: 1871.") carry too little meaning to match on their own; they
/// still count as part of the whole answer.
const MATCH_SENTENCE_MIN_WORDS: usize = 4;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub embed: f64,
    pub search: f64,
    pub prefill: f64,
    pub decode: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
    /// Every source placed in the prompt, numbered from 1 in this order.
    pub sources: Vec<Source>,
    /// True when the engine answered NOT_FOUND itself because retrieval found nothing relevant.
    pub abstained: bool,
    pub prompt: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: Option<StopReason>,
    pub timings_ms: Timings,
    /// Whether the fine-tuned adapter was applied (see [`Engine::use_adapter`]).
    pub tuned: bool,
}

/// A document chunked and waiting for the vectors of `texts`: see [`Engine::prepare`].
pub struct PreparedDocument {
    doc: ingest::Document,
    chunks: Vec<chunk::Chunk>,
    /// What to embed, one text per chunk (the chunk with its heading).
    pub texts: Vec<String>,
}

/// An answer under way: see [`Engine::begin_answer`].
pub enum PendingAnswer {
    /// Retrieval found nothing relevant, so the answer is NOT_FOUND without running the model.
    Abstained {
        answer: Answer,
        said: bool,
    },
    Generating {
        run: Box<Run>,
        sources: Vec<Source>,
        prompt: String,
        timings: Timings,
        tuned: bool,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocReport {
    pub name: String,
    pub chunks: usize,
    pub chars: usize,
    pub embed_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Retrieve, then answer from the sources.
    Rag,
    /// Ask the model alone.
    NoRag,
}

pub const EMBEDDER_NAME: &str = "all-MiniLM-L6-v2";

pub struct Engine {
    embedder: Embedder,
    generator: Option<Generator>,
    library: Library,
    pub settings: Settings,
    /// Our fine-tune, when loaded, and whether answers use it. Applied on top of the base
    /// weights, so switching costs nothing.
    adapter: Option<Adapter>,
    tuned: bool,
}

impl Engine {
    /// An engine with an empty library. Without a generator it can index and search but not
    /// answer (the indexing CLI does not need to load the language model).
    pub fn new(embedder: Embedder, generator: Option<Generator>) -> Self {
        let library = Library::new(EMBEDDER_NAME, ChunkConfig::default(), HnswConfig::default());
        Engine { embedder, generator, library, settings: Settings::default(), adapter: None, tuned: false }
    }

    /// Keep `adapter` (checked against the generator's shapes) for [`Engine::use_adapter`].
    /// Answers keep using whichever model they used before.
    pub fn load_adapter(&mut self, adapter: Adapter) -> Result<()> {
        let generator = self.generator.as_mut().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        generator.set_adapter(Some(&adapter))?;
        generator.set_adapter(if self.tuned { Some(&adapter) } else { None })?;
        self.adapter = Some(adapter);
        Ok(())
    }

    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref()
    }

    /// Answer with the fine-tuned model (true) or the base model (false).
    pub fn use_adapter(&mut self, tuned: bool) -> Result<()> {
        if tuned && self.adapter.is_none() {
            return Err(Error::Input("no fine-tuned adapter is loaded".into()));
        }
        let generator = self.generator.as_mut().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        generator.set_adapter(if tuned { self.adapter.as_ref() } else { None })?;
        self.tuned = tuned;
        Ok(())
    }

    pub fn uses_adapter(&self) -> bool {
        self.tuned
    }

    pub fn generator(&self) -> Option<&Generator> {
        self.generator.as_ref()
    }

    pub fn take_generator(&mut self) -> Option<Generator> {
        self.generator.take()
    }

    pub fn set_generator(&mut self, generator: Option<Generator>) {
        self.generator = generator;
    }

    pub fn generator_mut(&mut self) -> Option<&mut Generator> {
        self.generator.as_mut()
    }

    pub fn library(&self) -> &Library {
        &self.library
    }

    pub fn embedder_mut(&mut self) -> &mut Embedder {
        &mut self.embedder
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Parse, chunk, embed and index one file. A document of the same name is replaced. On error
    /// the library is unchanged.
    pub fn add_document(
        &mut self,
        name: &str,
        bytes: &[u8],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<DocReport> {
        let doc = self.read(name, bytes)?;
        self.add_ingested(doc, progress)
    }

    /// A file's text, if there is room to index it (see `memory`).
    pub fn read(&self, name: &str, bytes: &[u8]) -> Result<ingest::Document> {
        // Oversized files get ingest's own message instead.
        if bytes.len() <= ingest::MAX_DOCUMENT_BYTES {
            crate::memory::ensure_room(name, crate::memory::indexing_need(bytes.len()), self.settings.memory_limit)?;
        }
        ingest::ingest(name, bytes)
    }

    /// Chunk, embed and index a document that is already text (the browser extracts PDF text in
    /// a worker of its own, then calls this).
    pub fn add_ingested(&mut self, doc: ingest::Document, progress: &mut dyn FnMut(usize, usize)) -> Result<DocReport> {
        let prepared = self.prepare(doc);
        let refs: Vec<&str> = prepared.texts.iter().map(String::as_str).collect();
        let clock = Stopwatch::start();
        let vectors = self.embedder.embed_with_progress(&refs, progress)?;
        self.add_prepared(prepared, vectors, clock.ms())
    }

    /// Chunk a document and say what to embed, for a caller that embeds elsewhere (the browser
    /// spreads the work over several workers) and then calls [`Engine::add_prepared`].
    pub fn prepare(&self, doc: ingest::Document) -> PreparedDocument {
        let config = self.library.chunk_config;
        let chunks = chunk::chunk(&doc, &config, &|s| self.embedder.count_tokens(s));
        let texts = chunks.iter().map(|c| c.embedding_text()).collect();
        PreparedDocument { doc, chunks, texts }
    }

    /// Index a prepared document with the vectors of its `texts`, in order. The vectors must come
    /// from this engine's embedder model: they are checked for count, size and unit length.
    pub fn add_prepared(
        &mut self,
        prepared: PreparedDocument,
        vectors: Vec<Vec<f32>>,
        embed_ms: f64,
    ) -> Result<DocReport> {
        let PreparedDocument { doc, chunks, .. } = prepared;
        if vectors.len() != chunks.len() {
            return Err(Error::Input(format!("{} vectors for {} chunks of {}", vectors.len(), chunks.len(), doc.name)));
        }
        let dim = self.embedder.dim();
        if let Some(v) = vectors.iter().find(|v| v.len() != dim || (crate::index::vector::dot(v, v) - 1.0).abs() > 1e-3)
        {
            return Err(Error::Input(format!(
                "vectors for {} are not unit vectors of {dim} values (got {} values)",
                doc.name,
                v.len()
            )));
        }
        let report =
            DocReport { name: doc.name.clone(), chunks: chunks.len(), chars: doc.text.chars().count(), embed_ms };
        self.library.add(doc, chunks, vectors);
        Ok(report)
    }

    pub fn remove_document(&mut self, name: &str) -> bool {
        self.library.remove(name)
    }

    /// Build or refresh the vector graph when the collection is large and the graph is missing or
    /// stale. Long-lived front ends call it when idle; a one-shot query does better without it.
    pub fn maintain(&mut self) -> bool {
        self.library.maintain()
    }

    pub fn search(&self, query: &str, k: usize) -> Result<SearchResult> {
        Ok(self.search_with_vector(query, k)?.0)
    }

    /// [`Engine::search`], also returning the query's embedding for reuse.
    pub fn search_with_vector(&self, query: &str, k: usize) -> Result<(SearchResult, Vec<f32>)> {
        let query = query.trim();
        if query.is_empty() {
            return Err(Error::Input("the question is empty".into()));
        }
        if k == 0 {
            return Err(Error::Input("k must be at least 1".into()));
        }
        let clock = Stopwatch::start();
        let qv = self.embedder.embed(&[query])?.remove(0);
        let embed = clock.ms();
        let clock = Stopwatch::start();
        let hits = self.library.search(&qv, query, k);
        let search = clock.ms();
        let hits = hits
            .into_iter()
            .filter_map(|h| {
                let entry = self.library.chunk(h.slot)?;
                let doc = self.library.document(entry.doc)?;
                let c = &entry.chunk;
                Some(Source {
                    slot: h.slot,
                    doc: doc.name.clone(),
                    text: c.text.clone(),
                    score: h.vector_score.unwrap_or(0.0),
                    keyword_score: h.keyword_score,
                    fused_score: h.fused_score,
                    start: c.start,
                    end: c.end,
                    page: c.page,
                    heading: c.heading.clone(),
                })
            })
            .collect();
        Ok((SearchResult { hits, timings_ms: Timings { embed, search, ..Default::default() } }, qv))
    }

    /// The sentences of `hits`, scored as answers to `question` (whose embedding is
    /// `question_vector`), best first. Each sentence's `source` indexes `hits`.
    pub fn evidence(&self, question: &str, question_vector: &[f32], hits: &[Source]) -> Result<Vec<evidence::Scored>> {
        let docs = self.library.documents();
        let passages: Vec<_> = hits
            .iter()
            .enumerate()
            .filter_map(|(i, h)| Some((i, docs.iter().find(|d| d.name == h.doc)?, h.start, h.end)))
            .collect();
        let sentences = evidence::sentences(&passages);
        if sentences.is_empty() {
            return Ok(vec![]);
        }
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        let vectors = self.embedder.embed(&texts)?;
        let similarity: Vec<f32> = vectors.iter().map(|v| crate::index::vector::dot(v, question_vector)).collect();
        let passage_scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
        Ok(evidence::rank(question, sentences, &similarity, &passage_scores, &self.library.index().keywords))
    }

    /// Answer a question. Text is streamed to `on_token` as it is generated; `cancel` is polled
    /// between steps (prompt slices and tokens).
    pub fn answer(
        &mut self,
        question: &str,
        mode: Mode,
        k: usize,
        on_token: &mut dyn FnMut(&str),
        cancel: &dyn Fn() -> bool,
    ) -> Result<Answer> {
        let mut pending = self.begin_answer(question, mode, k)?;
        loop {
            if cancel() {
                pending.cancel();
            }
            match self.step_answer(&mut pending)? {
                Step::Token { text } if !text.is_empty() => on_token(&text),
                Step::Done { .. } => return self.finish_answer(pending),
                _ => {}
            }
        }
    }

    /// Retrieve and build the prompt; the model has not run yet. Drive the answer with
    /// [`Engine::step_answer`] until it is done, then collect it with [`Engine::finish_answer`].
    pub fn begin_answer(&mut self, question: &str, mode: Mode, k: usize) -> Result<PendingAnswer> {
        if question.trim().is_empty() {
            return Err(Error::Input("the question is empty".into()));
        }
        if self.generator.is_none() {
            return Err(Error::Input("no language model is loaded".into()));
        }
        let mut timings = Timings::default();
        let (sources, prompt_text, ids) = match mode {
            Mode::NoRag => {
                let (text, ids) = self.render(&prompt::plain_messages(question))?;
                (vec![], text, ids)
            }
            Mode::Rag => {
                let found = self.search(question, k)?;
                timings.embed = found.timings_ms.embed;
                timings.search = found.timings_ms.search;
                let best = found.hits.iter().map(|h| h.score).fold(f32::NEG_INFINITY, f32::max);
                if found.hits.is_empty() || best < self.settings.min_relevance {
                    return Ok(PendingAnswer::Abstained {
                        said: false,
                        answer: Answer {
                            answer: NOT_FOUND.to_string(),
                            citations: vec![],
                            sources: found.hits,
                            abstained: true,
                            prompt: String::new(),
                            prompt_tokens: 0,
                            generated_tokens: 0,
                            stop: None,
                            timings_ms: timings,
                            tuned: self.tuned,
                        },
                    });
                }
                // Sources far below the relevance bar only distract a small model.
                let relevant: Vec<Source> =
                    found.hits.into_iter().filter(|h| h.score >= self.settings.min_relevance).collect();
                self.fit_sources(question, relevant)?
            }
        };
        let generator = self.generator.as_mut().expect("checked above");
        let mut params = self.settings.generate.clone();
        params.max_tokens = params.max_tokens.min(self.settings.context_budget.saturating_sub(ids.len()).max(1));
        let run = generator.start(&ids, &params)?;
        Ok(PendingAnswer::Generating { run: Box::new(run), sources, prompt: prompt_text, timings, tuned: self.tuned })
    }

    /// One bounded piece of work on a pending answer: a slice of the prompt, or one token.
    pub fn step_answer(&mut self, pending: &mut PendingAnswer) -> Result<Step> {
        crate::gpu::now(self.step_answer_async(pending))?
    }

    /// [`Engine::step_answer`], for callers that can await the GPU (the browser's worker).
    pub async fn step_answer_async(&mut self, pending: &mut PendingAnswer) -> Result<Step> {
        match pending {
            PendingAnswer::Abstained { said, .. } if !*said => {
                *said = true;
                Ok(Step::Token { text: NOT_FOUND.to_string() })
            }
            PendingAnswer::Abstained { .. } => Ok(Step::Done { stop: StopReason::EndOfText }),
            PendingAnswer::Generating { run, .. } => {
                let generator =
                    self.generator.as_mut().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
                generator.step_async(run).await
            }
        }
    }

    /// The finished answer with its citations. Works on a cancelled answer too: it holds the
    /// text produced before Stop.
    pub fn finish_answer(&self, pending: PendingAnswer) -> Result<Answer> {
        let (run, sources, prompt, mut timings, tuned) = match pending {
            PendingAnswer::Abstained { answer, .. } => return Ok(answer),
            PendingAnswer::Generating { run, sources, prompt, timings, tuned } => {
                (run.finish(), sources, prompt, timings, tuned)
            }
        };
        timings.prefill = run.prefill_ms;
        timings.decode = run.decode_ms;
        let answer = run.text.trim().to_string();
        let citations = self.citations(&answer, &sources)?;
        Ok(Answer {
            answer,
            citations,
            sources,
            abstained: false,
            prompt,
            prompt_tokens: run.prompt_tokens,
            generated_tokens: run.tokens.len(),
            stop: Some(run.stop),
            timings_ms: timings,
            tuned,
        })
    }

    /// The sources an answer rests on: those the model cited as `[n]`; failing that (small models
    /// often forget), the sources that the answer, or one of its sentences, closely restates.
    /// Sentences are matched one by one because a model that rambles after a correct first
    /// sentence would otherwise dilute the whole answer's embedding below the bar. Each citation
    /// says which way it was found.
    pub fn citations(&self, answer: &str, sources: &[Source]) -> Result<Vec<Citation>> {
        let by_model: Vec<Citation> = cite::cited(answer, sources.len())
            .into_iter()
            .map(|n| Citation { n, by: CitedBy::Model, source: sources[n - 1].clone() })
            .collect();
        if !by_model.is_empty() || sources.is_empty() || answer.trim().is_empty() || answer.contains(NOT_FOUND) {
            return Ok(by_model);
        }
        let mut pieces = vec![answer];
        pieces.extend(
            answer
                .unicode_sentences()
                .map(str::trim)
                .filter(|s| s.split_whitespace().count() >= MATCH_SENTENCE_MIN_WORDS),
        );
        let vectors = self.embedder.embed(&pieces)?;
        let index = self.library.index();
        let mut matched = std::collections::BTreeSet::new();
        for v in &vectors {
            let best = sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, crate::index::vector::dot(v, index.vectors.get(s.slot)?))))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, sim)) = best {
                if sim >= MATCH_CITATION_MIN {
                    matched.insert(i);
                }
            }
        }
        Ok(matched.into_iter().map(|i| Citation { n: i + 1, by: CitedBy::Match, source: sources[i].clone() }).collect())
    }

    /// A conversation rendered with the model's chat template, and its token ids.
    fn render(&self, messages: &[crate::llm::Message]) -> Result<(String, Vec<u32>)> {
        let generator = self.generator.as_ref().expect("checked by caller");
        let text = generator.render_chat(messages)?;
        let ids = generator.encode(&text)?;
        Ok((text, ids))
    }

    /// Keep the best-ranked sources that fit the context budget with room for the answer, and
    /// return them with the prompt they make. The last one that does not fit whole is shortened
    /// at a word boundary rather than dropped when a useful part of it fits.
    fn fit_sources(&self, question: &str, hits: Vec<Source>) -> Result<(Vec<Source>, String, Vec<u32>)> {
        let budget = self.settings.context_budget.saturating_sub(self.settings.generate.max_tokens);
        self.rag_prompt(question, hits, budget)
    }

    /// The prompt the model gets for `question` answered from `hits` (numbered in this order),
    /// shortened to at most `budget` tokens: the lowest-ranked source is halved, then dropped,
    /// until it fits. Returns the sources as placed, the prompt text and its token ids. The
    /// fine-tuning data is made here too, so it matches what the app sends word for word.
    pub fn rag_prompt(
        &self,
        question: &str,
        mut hits: Vec<Source>,
        budget: usize,
    ) -> Result<(Vec<Source>, String, Vec<u32>)> {
        let render = |hits: &[Source]| {
            let ps: Vec<PromptSource> = hits.iter().map(|s| PromptSource { title: &s.doc, text: &s.text }).collect();
            self.render(&prompt::rag_messages(question, &ps))
        };
        if render(&[])?.1.len() > budget {
            return Err(Error::Input(format!("the question alone is longer than the {budget}-token prompt budget")));
        }
        loop {
            let (text, ids) = render(&hits)?;
            if ids.len() <= budget {
                return Ok((hits, text, ids));
            }
            let last = hits.last_mut().expect("the empty prompt fits, checked above");
            let words: Vec<&str> = last.text.split_inclusive(char::is_whitespace).collect();
            if words.len() > 16 {
                // Halve the last source and try again; a few iterations reach the limit.
                let kept = words[..words.len() / 2].concat().trim_end().to_string();
                last.end = last.start + kept.len();
                last.text = kept + " …";
            } else {
                hits.pop();
            }
        }
    }

    pub fn save(&self) -> Result<Vec<u8>> {
        self.library.save()
    }

    /// Replace the library with one read from `bytes`. On error the current library is kept.
    pub fn load(&mut self, bytes: &[u8]) -> Result<()> {
        self.library = Library::load(bytes, EMBEDDER_NAME)?;
        Ok(())
    }
}
