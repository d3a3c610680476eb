//! The engine: documents in, cited answers out. This is the seam both front ends use — the CLI
//! and the browser worker call the same methods and get the same structured results, including
//! the scores, the prompt and the timings that the teaching view shows.

pub mod cite;
pub mod constrain;
pub mod decide;
pub mod evidence;
pub mod prompt;
pub mod reading;
mod sentences;
pub mod support;
mod terms;

mod answer;
mod fit;
mod quote;
mod written;

pub use answer::*;

use crate::chunk::{self, ChunkConfig};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::gpu::Backend;
use crate::index::HnswConfig;
use crate::ingest;
use crate::library::Library;
use crate::llm::lora::Adapter;
use crate::llm::{GenerateParams, Generator, Step, StopReason};
use crate::time::Stopwatch;
pub use prompt::NOT_FOUND;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
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
        Settings { min_relevance: 0.25, context_budget: 2048, generate: GenerateParams::default(), memory_limit: None }
    }
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
    /// Whether the support gate reads the best sentence with the generator (see
    /// [`Engine::set_reading`]).
    reading: bool,
}

impl Engine {
    /// An engine with an empty library. Without a generator it can index and search but not
    /// answer (the indexing CLI does not need to load the language model).
    pub fn new(embedder: Embedder, generator: Option<Generator>) -> Self {
        let library = Library::new(EMBEDDER_NAME, ChunkConfig::default(), HnswConfig::default());
        Engine {
            embedder,
            generator,
            library,
            settings: Settings::default(),
            adapter: None,
            tuned: false,
            reading: false,
        }
    }

    /// Let the support gate read the best evidence sentence with the generator, where one is
    /// loaded (true), or not (false, the default: measured, the reading did not yet help).
    pub fn set_reading(&mut self, on: bool) {
        self.reading = on;
    }

    /// Whether the gate reads with the generator: asked for and a generator on the CPU is loaded.
    pub fn reads(&self) -> bool {
        self.reading && self.generator.as_ref().is_some_and(|g| g.backend() == Backend::Cpu)
    }

    /// The ranker and gate fitted for the evidence this engine makes.
    pub fn scorer(&self) -> &'static evidence::Scorer {
        if self.reads() {
            &evidence::READ
        } else {
            &evidence::PLAIN
        }
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

    /// See [`Library::set_graph_threshold`].
    pub fn set_graph_threshold(&mut self, chunks: usize) {
        self.library.set_graph_threshold(chunks);
    }

    /// See [`Library::needs_graph`].
    pub fn needs_graph(&self) -> bool {
        self.library.needs_graph()
    }

    /// See [`Library::adopt_graph`].
    pub fn adopt_graph(&mut self, graph: &[u8]) -> Result<bool> {
        self.library.adopt_graph(graph)
    }

    pub fn search(&self, query: &str, k: usize) -> Result<SearchResult> {
        Ok(self.search_with_vector(query, k)?.0)
    }

    /// [`Engine::search`], also returning the query's embedding for reuse.
    pub fn search_with_vector(&self, query: &str, k: usize) -> Result<(SearchResult, Vec<f32>)> {
        let query = check_question(query)?;
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
        Ok((
            SearchResult {
                hits,
                timings_ms: Timings { embed, search, ..Default::default() },
                index: self.index_kind(),
            },
            qv,
        ))
    }

    fn index_kind(&self) -> String {
        self.library.index().vectors.kind().to_string()
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

    /// Retrieve and, in the default mode, answer; otherwise build the prompt (the model has not
    /// run yet). Drive the answer with [`Engine::step_answer`] until it is done, then collect it
    /// with [`Engine::finish_answer`].
    pub fn begin_answer(&mut self, question: &str, mode: Mode, k: usize) -> Result<PendingAnswer> {
        let question = check_question(question)?;
        if mode.uses_model() && self.generator.is_none() {
            return Err(Error::Input("no language model is loaded".into()));
        }
        let mut timings = Timings::default();
        let ready = |answer: Answer| Ok(PendingAnswer::Ready { answer, said: false });
        let (sources, prompt_text, ids) = match mode {
            Mode::NoRag => {
                let (text, ids) = self.render(&prompt::plain_messages(question))?;
                (vec![], text, ids)
            }
            Mode::Quote | Mode::Copy | Mode::Rag => {
                let (found, qv) = self.search_with_vector(question, k)?;
                timings.embed = found.timings_ms.embed;
                timings.search = found.timings_ms.search;
                let best = found.hits.iter().map(|h| h.score).fold(f32::NEG_INFINITY, f32::max);
                if found.hits.is_empty() || best < self.settings.min_relevance {
                    return ready(self.not_found(mode, found.hits, None, vec![], timings));
                }
                // Sources far below the relevance bar only distract.
                let relevant: Vec<Source> =
                    found.hits.into_iter().filter(|h| h.score >= self.settings.min_relevance).collect();
                if mode == Mode::Quote {
                    let clock = Stopwatch::start();
                    let ranked = self.evidence(question, &qv, &relevant)?;
                    timings.evidence = clock.ms();
                    return ready(self.quote(question, relevant, ranked, timings));
                }
                if mode == Mode::Copy {
                    let clock = Stopwatch::start();
                    let ranked = self.evidence(question, &qv, &relevant)?;
                    timings.evidence = clock.ms();
                    let support = evidence::support(&ranked, self.scorer());
                    if ranked.is_empty() || support < self.scorer().threshold {
                        return ready(self.not_found(mode, relevant, Some(support), ranked, timings));
                    }
                }
                self.fit_sources(question, relevant)?
            }
        };
        let generator = self.generator.as_mut().expect("checked above");
        let mut params = self.settings.generate.clone();
        params.max_tokens = params.max_tokens.min(self.settings.context_budget.saturating_sub(ids.len()).max(1));
        let mut run = generator.start(&ids, &params)?;
        if mode == Mode::Copy {
            run.constrain(Box::new(self.quote_constraint(&sources)?));
        }
        Ok(PendingAnswer::Generating {
            run: Box::new(run),
            mode,
            sources,
            prompt: prompt_text,
            timings,
            tuned: self.tuned,
            // A copied run is cited once it ends; cut short, copy mode's answer would have
            // none. Its runs are bounded by the sources anyway.
            sentences_max: if mode == Mode::Copy { None } else { support::sentences_wanted(question) },
            cut: None,
        })
    }

    /// One bounded piece of work on a pending answer: a slice of the prompt, or one token.
    pub fn step_answer(&mut self, pending: &mut PendingAnswer) -> Result<Step> {
        crate::gpu::now(self.step_answer_async(pending))?
    }

    /// [`Engine::step_answer`], for callers that can await the GPU (the browser's worker).
    pub async fn step_answer_async(&mut self, pending: &mut PendingAnswer) -> Result<Step> {
        match pending {
            PendingAnswer::Ready { said, answer } if !*said => {
                *said = true;
                Ok(Step::Token { text: answer.answer.clone() })
            }
            PendingAnswer::Ready { .. } => Ok(Step::Done { stop: StopReason::EndOfText }),
            PendingAnswer::Generating { cut: Some((_, stop)), .. } => Ok(Step::Done { stop: *stop }),
            PendingAnswer::Generating { run, cut, sentences_max, .. } => {
                let generator =
                    self.generator.as_mut().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
                let step = generator.step_async(run).await?;
                if let Step::Token { text } = &step {
                    if text.contains(['.', '!', '?', '\n']) {
                        let found =
                            support::repeat_start(run.text()).map(|at| (at, StopReason::Repeated)).or_else(|| {
                                let at = support::sentences_end(run.text(), (*sentences_max)?)?;
                                Some((at, StopReason::Sentences))
                            });
                        if let Some((at, stop)) = found {
                            *cut = Some((at, stop));
                            run.cancel();
                            return Ok(Step::Done { stop });
                        }
                    }
                }
                Ok(step)
            }
        }
    }

    /// The finished answer with its citations. Works on a cancelled answer too: it holds the
    /// text produced before Stop.
    pub fn finish_answer(&self, pending: PendingAnswer) -> Result<Answer> {
        let (run, mode, sources, prompt, mut timings, tuned, cut) = match pending {
            PendingAnswer::Ready { answer, .. } => return Ok(answer),
            PendingAnswer::Generating { run, mode, sources, prompt, timings, tuned, cut, .. } => {
                (run.finish(), mode, sources, prompt, timings, tuned, cut)
            }
        };
        timings.prefill = run.prefill_ms;
        timings.decode = run.decode_ms;
        let kept = match cut {
            Some((at, _)) => &run.text[..at],
            None => &run.text[..],
        };
        let answer = kept.trim().to_string();
        let clock = Stopwatch::start();
        let (sentences, citations) = if mode == Mode::Copy {
            (vec![], self.copied(&run.tokens, &sources)?)
        } else {
            self.check(&answer, &sources)?
        };
        timings.evidence += clock.ms();
        Ok(Answer {
            answer,
            citations,
            sources,
            abstained: false,
            mode,
            support: None,
            evidence: vec![],
            sentences,
            prompt,
            prompt_tokens: run.prompt_tokens,
            generated_tokens: run.tokens.len(),
            stop: Some(cut.map_or(run.stop, |(_, stop)| stop)),
            timings_ms: timings,
            index: self.index_kind(),
            tuned,
            decision: None,
        })
    }

    pub fn save(&self) -> Result<Vec<u8>> {
        self.library.save()
    }

    /// Replace the library with one read from `bytes`. On error the current library is kept.
    pub fn load(&mut self, bytes: &[u8]) -> Result<()> {
        let library = Library::load(bytes, EMBEDDER_NAME)?;
        // The name matched; the numbers must too, or the first search would compare vectors of
        // different lengths.
        if let Some(dim) = library.vector_dim().filter(|&d| d != self.embedder.dim()) {
            let want = self.embedder.dim();
            return Err(Error::Index(format!(
                "the file is damaged: its vectors have {dim} numbers, the embedder's {want}"
            )));
        }
        self.library = library;
        Ok(())
    }
}
