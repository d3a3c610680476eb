//! The engine: documents in, cited answers out. This is the seam both front ends use — the CLI
//! and the browser worker call the same methods and get the same structured results, including
//! the scores, the prompt and the timings that the teaching view shows.

pub mod cite;
pub mod constrain;
pub mod decide;
pub mod evidence;
pub mod prompt;
pub mod reading;
pub mod support;

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
    fn new(n: usize, by: CitedBy, source: &Source, quote: &evidence::Sentence) -> Citation {
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

/// Shorter sentences ("Yes.", "A: 1871.") carry too little meaning to check on their own.
const CHECK_SENTENCE_MIN_WORDS: usize = 4;

/// How many of the best evidence sentences an answer carries for the teaching view.
const EVIDENCE_SHOWN: usize = 8;

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
    doc: ingest::Document,
    chunks: Vec<chunk::Chunk>,
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

impl Mode {
    /// "quote", "copy", "rag" or "no_rag" (the names the JSON output uses).
    pub fn parse(name: &str) -> Result<Mode> {
        match name {
            "quote" => Ok(Mode::Quote),
            "rag" => Ok(Mode::Rag),
            "no_rag" => Ok(Mode::NoRag),
            "copy" => Ok(Mode::Copy),
            other => Err(Error::Input(format!("unknown answer mode {other:?}: use quote, copy, rag or no_rag"))),
        }
    }

    pub fn uses_model(self) -> bool {
        self != Mode::Quote
    }
}

pub const EMBEDDER_NAME: &str = "all-MiniLM-L6-v2";

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
        self.reading && self.generator.as_ref().is_some_and(|g| g.backend() == "cpu")
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

    /// The sentences of `hits`, scored as answers to `question` (whose embedding is
    /// `question_vector`), best first. Each sentence's `source` indexes `hits`.
    pub fn evidence(
        &mut self,
        question: &str,
        question_vector: &[f32],
        hits: &[Source],
    ) -> Result<Vec<evidence::Scored>> {
        let sentences = evidence::sentences(&self.passages(hits));
        if sentences.is_empty() {
            return Ok(vec![]);
        }
        let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
        let vectors = self.embedder.embed(&texts)?;
        let similarity: Vec<f32> = vectors.iter().map(|v| crate::index::vector::dot(v, question_vector)).collect();
        let passage_scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
        let mut ranked =
            evidence::rank(question, sentences, &similarity, &passage_scores, &self.library.index().keywords);
        if self.reads() {
            if let (Some(generator), Some(top)) = (self.generator.as_mut(), ranked.first_mut()) {
                top.features.reading = Some(reading::question_pmi(generator, &top.sentence.text, question)?);
            }
        }
        Ok(ranked)
    }

    /// Each hit as `(its index, its document, start, end)`, what `evidence::sentences` splits.
    fn passages(&self, hits: &[Source]) -> Vec<(usize, &crate::library::StoredDocument, usize, usize)> {
        hits.iter().enumerate().filter_map(|(i, h)| Some((i, self.document(&h.doc)?, h.start, h.end))).collect()
    }

    fn document(&self, name: &str) -> Option<&crate::library::StoredDocument> {
        self.library.documents().iter().find(|d| d.name == name)
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

    /// The constraint for copy mode over `sources` (numbered from 1 as in the prompt).
    pub fn quote_constraint(&self, sources: &[Source]) -> Result<constrain::QuoteConstraint> {
        let generator = self.generator.as_ref().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        let mut texts = Vec::with_capacity(sources.len());
        for s in sources {
            texts.push(generator.encode(&s.text)?);
        }
        let cites = (1..=sources.len()).map(|n| generator.encode(&format!(" [{n}]"))).collect::<Result<Vec<_>>>()?;
        let mut joiners = Vec::new();
        for j in constrain::JOINERS {
            if let [t] = generator.encode(j)?[..] {
                joiners.push(t);
            }
        }
        Ok(constrain::QuoteConstraint::new(texts, cites, joiners, generator.stop_ids().to_vec(), constrain::MIN_RUN))
    }

    /// Copy mode's citations: each copied run, found again by replaying the answer's tokens
    /// through the constraint, as the byte range of its source it came from.
    fn copied(&self, tokens: &[u32], sources: &[Source]) -> Result<Vec<Citation>> {
        use crate::llm::Constraint;
        let generator = self.generator.as_ref().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
        let mut c = self.quote_constraint(sources)?;
        for &t in tokens {
            c.advance(t);
        }
        let offsets =
            sources.iter().map(|s| Ok(generator.encode_with_offsets(&s.text)?.1)).collect::<Result<Vec<_>>>()?;
        let mut out: Vec<Citation> = Vec::new();
        for span in c.spans() {
            let source = &sources[span.source];
            let offsets = &offsets[span.source];
            let (Some(first), Some(last)) = (offsets.get(span.from), offsets.get(span.to.saturating_sub(1))) else {
                continue;
            };
            let piece = &source.text[first.0..last.1];
            let lead = piece.len() - piece.trim_start().len();
            let (from, to) = (first.0 + lead, first.0 + piece.trim_end().len());
            let quote = evidence::Sentence {
                source: span.source,
                doc: source.doc.clone(),
                start: source.start + from,
                end: source.start + to,
                text: source.text[from..to].to_string(),
                heading: None,
                lead: None,
            };
            // A source shortened for the prompt ends in " …", which is not the document's.
            if self.document(&source.doc).and_then(|d| d.text.get(quote.start..quote.end)) != Some(quote.text.as_str())
            {
                continue;
            }
            out.push(Citation::new(span.source + 1, CitedBy::Model, source, &quote));
        }
        Ok(out)
    }

    /// An answer saying that the documents do not contain the answer, listing the closest
    /// passages.
    fn not_found(
        &self,
        mode: Mode,
        sources: Vec<Source>,
        support: Option<f32>,
        ranked: Vec<evidence::Scored>,
        timings: Timings,
    ) -> Answer {
        Answer {
            answer: NOT_FOUND.to_string(),
            citations: vec![],
            sources,
            abstained: true,
            mode,
            support,
            evidence: ranked.into_iter().take(EVIDENCE_SHOWN).collect(),
            sentences: vec![],
            prompt: String::new(),
            prompt_tokens: 0,
            generated_tokens: 0,
            stop: None,
            timings_ms: timings,
            index: self.index_kind(),
            tuned: self.tuned,
            decision: None,
        }
    }

    /// The default mode's answer: the best evidence sentences, quoted and cited, when the gate
    /// finds that they answer the question; NOT_FOUND otherwise.
    /// A yes/no question's answer opens with the decision the best sentence supports.
    fn quote(&self, question: &str, sources: Vec<Source>, ranked: Vec<evidence::Scored>, timings: Timings) -> Answer {
        let support = evidence::support(&ranked, self.scorer());
        if ranked.is_empty() || support < self.scorer().threshold {
            return self.not_found(Mode::Quote, sources, Some(support), ranked, timings);
        }
        let chosen = self.complete(evidence::select(&ranked, evidence::QUOTE_RELATIVE));
        let citations: Vec<Citation> = self
            .join_adjacent(chosen)
            .iter()
            .map(|s| Citation::new(s.source + 1, CitedBy::Quote, &sources[s.source], s))
            .collect();
        let quotes = citations.iter().map(|c| format!("{} [{}]", c.quote, c.n)).collect::<Vec<_>>().join(" ");
        let decision = decide::yes_no(question, &ranked[0].sentence.text).map(Decision::from);
        let answer = match decision {
            Some(d) => format!("{}: {quotes}", d.word()),
            None => quotes,
        };
        // The same shape as an abstention, with the quotes in place of NOT_FOUND.
        Answer {
            answer,
            citations,
            abstained: false,
            decision,
            ..self.not_found(Mode::Quote, sources, Some(support), ranked, timings)
        }
    }

    /// The chosen sentences, each once (the same sentence can stand in two documents), and each
    /// carried on into the sentences after it while it ends without a full stop: "you can run"
    /// before a code block, "the options are:" before a list.
    fn complete(&self, chosen: Vec<&evidence::Scored>) -> Vec<evidence::Sentence> {
        let key = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out: Vec<evidence::Sentence> = Vec::new();
        let mut said: Vec<String> = Vec::new();
        for s in chosen {
            let text = key(&s.sentence.text);
            if said.contains(&text) {
                continue;
            }
            said.push(text);
            let mut sentence = s.sentence.clone();
            if let Some(doc) = self.document(&sentence.doc) {
                // A defined term's heading opens the quote: "--shuffle", then what it does.
                if let Some(lead) = sentence.lead {
                    sentence.start = lead;
                }
                sentence.end = evidence::carry(doc, sentence.end);
                sentence.text = doc.text[sentence.start..sentence.end].to_string();
            }
            // Carried on, it can now be a quote already made from another document.
            if out.iter().any(|o| key(&o.text) == key(&sentence.text)) {
                continue;
            }
            out.push(sentence);
        }
        out
    }

    /// Quotes that follow each other in a document become one quote, read in the document's
    /// order; otherwise the best comes first.
    fn join_adjacent(&self, best_first: Vec<evidence::Sentence>) -> Vec<evidence::Sentence> {
        let mut out: Vec<evidence::Sentence> = Vec::new();
        for s in best_first {
            let doc = self.document(&s.doc);
            // b follows a, or overlaps it (a sentence carried on into the next may meet another).
            let joins = |a: &evidence::Sentence, b: &evidence::Sentence| {
                a.doc == b.doc
                    && a.start <= b.start
                    && (b.start <= a.end
                        || doc.is_some_and(|d| d.text.get(a.end..b.start).is_some_and(|gap| gap.trim().is_empty())))
            };
            let text = |start: usize, end: usize| doc.map(|d| d.text[start..end].to_string());
            if let Some(q) = out.iter_mut().find(|q| joins(q, &s) || joins(&s, q)) {
                let (start, end) = (q.start.min(s.start), q.end.max(s.end));
                if let Some(t) = text(start, end) {
                    (q.start, q.end, q.text) = (start, end, t);
                    q.source = q.source.min(s.source);
                    continue;
                }
            }
            out.push(s);
        }
        out
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

    /// Free mode's check: each written sentence against the sentences of `sources`. A sentence
    /// is supported by the source sentence most similar to it when that one is similar enough
    /// and holds most of its content words (see [`support`]); supported sentences are cited
    /// with that quote, `Model` when the model's own `[n]` on the sentence names its source.
    pub fn check(&self, answer: &str, sources: &[Source]) -> Result<(Vec<support::SentenceSupport>, Vec<Citation>)> {
        let claims = support::claims(answer);
        if sources.is_empty() || claims.is_empty() || answer.contains(NOT_FOUND) {
            return Ok((vec![], vec![]));
        }
        let quotes = evidence::sentences(&self.passages(sources));
        let plain: Vec<String> = claims.iter().map(|&(s, e)| support::without_marks(&answer[s..e])).collect();
        let checked: Vec<usize> =
            (0..claims.len()).filter(|&i| plain[i].split_whitespace().count() >= CHECK_SENTENCE_MIN_WORDS).collect();
        let mut texts: Vec<&str> = checked.iter().map(|&i| plain[i].as_str()).collect();
        texts.extend(quotes.iter().map(|q| q.text.as_str()));
        let vectors = if quotes.is_empty() || checked.is_empty() { vec![] } else { self.embedder.embed(&texts)? };
        let (claim_vecs, quote_vecs) = vectors.split_at(checked.len().min(vectors.len()));
        let mut citations: Vec<Citation> = Vec::new();
        let mut out = Vec::new();
        for (i, &(s, e)) in claims.iter().enumerate() {
            let mut mark = support::SentenceSupport {
                text: answer[s..e].to_string(),
                start: s,
                end: e,
                cited: None,
                similarity: 0.0,
                covered: 0.0,
            };
            if let Some(c) = checked.iter().position(|&j| j == i).and_then(|c| claim_vecs.get(c)) {
                // Names and words may come from the sentences around a quote ("It was lit in
                // 1871" follows the sentence naming the lighthouse).
                let around = |q: usize| {
                    let quote = &quotes[q];
                    [q.wrapping_sub(1), q, q + 1]
                        .iter()
                        .filter_map(|&j| quotes.get(j))
                        .filter(|o| o.doc == quote.doc)
                        .map(|o| o.text.as_str())
                        .chain(quote.heading.as_deref())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                // The quote is the passing sentence that holds most of the claim itself, so the
                // highlight lands on "in 1871" rather than on the sentence before it.
                let best = quote_vecs
                    .iter()
                    .enumerate()
                    .map(|(q, v)| (q, crate::index::vector::dot(c, v)))
                    .filter(|&(_, sim)| sim >= support::MIN_SIMILARITY)
                    .map(|(q, sim)| (q, sim, support::covered(&plain[i], &around(q))))
                    .max_by(|a, b| {
                        let key = |&(q, sim, cov): &(usize, f32, f32)| {
                            (cov >= support::MIN_COVERED, support::shared(&plain[i], &quotes[q].text) + sim)
                        };
                        let (ka, kb) = (key(a), key(b));
                        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
                    });
                let closest = quote_vecs.iter().map(|v| crate::index::vector::dot(c, v)).fold(0.0, f32::max);
                mark.similarity = closest;
                if let Some((q, sim, cov)) = best {
                    mark.covered = cov;
                    if cov >= support::MIN_COVERED {
                        let quote = &quotes[q];
                        mark.similarity = sim;
                        let n = quote.source + 1;
                        let by = if cite::cited(&mark.text, sources.len()).contains(&n) {
                            CitedBy::Model
                        } else {
                            CitedBy::Match
                        };
                        if !citations.iter().any(|c| c.doc == quote.doc && c.start == quote.start) {
                            citations.push(Citation::new(n, by, &sources[quote.source], quote));
                        }
                        mark.cited = Some(n);
                    }
                }
            }
            out.push(mark);
        }
        Ok((out, citations))
    }

    /// A conversation rendered with the model's chat template, and its token ids.
    fn render(&self, messages: &[crate::llm::Message]) -> Result<(String, Vec<u32>)> {
        let generator = self.generator.as_ref().ok_or_else(|| Error::Input("no language model is loaded".into()))?;
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
