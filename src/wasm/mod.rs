//! The browser's (and Node's) door into the engine: wasm-bindgen types in, plain JS values out.
//! Nothing here knows an algorithm; every method forwards to `rag::Engine`.

use crate::embed::Embedder;
use crate::gpu::Backend;
use crate::llm::llama::Weights;
use crate::llm::Generator;
use crate::rag::{Engine, Mode, PendingAnswer, PreparedDocument};
use js_sys::Function;
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[cfg(feature = "bench")]
mod bench;
mod extras;
pub use extras::*;

// The shapes of the plain objects the methods below return (serde turns the Rust structs into
// them). Kept next to the bindings so the two change together.
#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A retrieved passage and how it scored. `start`/`end` are byte offsets into documentText(doc). */
export interface Source {
  doc: string;
  text: string;
  /** Cosine similarity between the question and the passage. */
  score: number;
  /** BM25 score, when the passage matched a keyword of the question. */
  keyword_score: number | null;
  /** Reciprocal-rank fusion of the two rankings. */
  fused_score: number;
  start: number;
  end: number;
  page: number | null;
  heading: string | null;
}
/**
 * A quote the answer rests on. `quote` is documentText(doc) between the byte offsets
 * `start`/`end`; `text` is the retrieved passage it stands in (`passage_start`/`passage_end`).
 * `by`: "quote" (the answer is this quote), "model" (the model cited [n] on a sentence the check
 * found here) or "match" (the check found the sentence here).
 */
export interface Citation {
  n: number;
  by: "quote" | "model" | "match";
  doc: string;
  quote: string;
  start: number;
  end: number;
  text: string;
  passage_start: number;
  passage_end: number;
  score: number;
  keyword_score: number | null;
  fused_score: number;
  page: number | null;
  heading: string | null;
}
/** "quote": the documents' own sentences (the default); "copy": the model copies runs of the
 * retrieved passages, each cited; "rag": the model writes from them; "no_rag": the model alone. */
export type Mode = "quote" | "copy" | "rag" | "no_rag";
/** A sentence of a retrieved passage, scored as an answer to the question. */
export interface Evidence {
  source: number;
  doc: string;
  start: number;
  end: number;
  text: string;
  heading?: string;
  features: Record<string, number>;
  score: number;
}
/** A written sentence (free mode) and whether the sources support it; `cited` is the n of its citation. */
export interface SentenceSupport { text: string; start: number; end: number; cited: number | null; similarity: number; covered: number }
export interface Timings { embed: number; search: number; evidence: number; prefill: number; decode: number }
export type StopReason = "end_of_text" | "max_tokens" | "context_full" | "cancelled" | "repeated" | "sentences";
export interface Answer {
  answer: string;
  citations: Citation[];
  /** Every source placed in the prompt (or quoted from), numbered from 1 in this order. */
  sources: Source[];
  /** True when the engine said the documents do not contain the answer; `sources` are then the closest passages. */
  abstained: boolean;
  mode: Mode;
  /** The support gate's probability that the sources answer the question. */
  support: number | null;
  /** The best-scored sentences of the sources, best first. */
  evidence: Evidence[];
  /** Free mode: each written sentence with its support mark. */
  sentences: SentenceSupport[];
  prompt: string;
  prompt_tokens: number;
  generated_tokens: number;
  stop: StopReason | null;
  timings_ms: Timings;
  /** "hnsw" or "exact": which vector search found the sources. */
  index: string;
  /** Whether our fine-tuned adapter was applied. */
  tuned: boolean;
}
/** What loadAdapter read: the LoRA settings and the provenance recorded by `pocketrag tune`. */
export interface AdapterInfo { rank: number; alpha: number; targets: string[]; matrices: number; parameters: number; info: Record<string, string> }
export interface SearchResult { hits: Source[]; timings_ms: Timings; /** "hnsw" or "exact": which vector search answered. */ index: string }
export interface DocReport { name: string; chunks: number; chars: number; embed_ms: number }
export interface DocInfo { name: string; chunks: number }
export type Step =
  | { type: "prefill"; done: number; total: number }
  | { type: "token"; text: string }
  | { type: "done"; stop: StopReason };
"#;

/// A panic aborts the instance, and JS sees only `RuntimeError: unreachable`. The hook, which runs
/// before the abort, leaves the message where the page can read it without calling into the dead
/// instance: `globalThis.pocketragPanic` (and the console).
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = JsValue::from_str(&info.to_string());
        let _ = js_sys::Reflect::set(&js_sys::global(), &JsValue::from_str("pocketragPanic"), &message);
        console_error(&message);
    }));
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &JsValue);
}

#[wasm_bindgen(js_name = Engine)]
pub struct WasmEngine {
    inner: Engine,
    /// The answer that `step` is driving, between `beginAnswer` and `finishAnswer`.
    pending: Option<PendingAnswer>,
    /// The document waiting for its vectors, between `prepareDocument` and `addPrepared`.
    prepared: Option<PreparedDocument>,
}

fn to_js<T: Serialize>(value: &T) -> Result<JsValue, JsError> {
    value.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| JsError::new(&e.to_string()))
}

/// Indexing progress `(done, total)` forwarded to an optional JS callback; a throwing callback
/// must not stop the indexing, so its result is ignored.
fn progress_callback(progress: &Option<Function>) -> impl FnMut(usize, usize) + '_ {
    move |done, total| {
        if let Some(f) = progress {
            let _ = f.call2(&JsValue::NULL, &(done as u32).into(), &(total as u32).into());
        }
    }
}

fn js_err(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

#[wasm_bindgen(js_class = Engine)]
impl WasmEngine {
    /// Build an engine from model bytes: the embedder's safetensors, tokenizer.json and
    /// config.json, and optionally the generator's GGUF (without it the engine can index and
    /// search but not answer).
    ///
    /// `densePrefill`: also keep the generator's weights as f32 for reading prompts, which is
    /// about 1.85x faster here and takes about 425 MB more memory (see `llm::llama::Weights`).
    #[wasm_bindgen(constructor)]
    pub fn new(
        embedder_weights: &[u8],
        embedder_tokenizer: &[u8],
        embedder_config: &[u8],
        generator_gguf: Option<Vec<u8>>,
        dense_prefill: Option<bool>,
    ) -> Result<WasmEngine, JsError> {
        let embedder = Embedder::from_bytes(embedder_weights, embedder_tokenizer, embedder_config).map_err(js_err)?;
        let weights = match dense_prefill {
            Some(true) => Weights::QuantizedAndDense,
            _ => Weights::Quantized,
        };
        let generator = generator_gguf
            .map(|bytes| Generator::from_gguf_bytes_with(&bytes, "generator GGUF", weights))
            .transpose()
            .map_err(js_err)?;
        Ok(WasmEngine { inner: Engine::new(embedder, generator), pending: None, prepared: None })
    }

    /// Index one file. `progress(done, total)` is called as chunks are embedded. Returns
    /// `{name, chunks, chars, embed_ms}`; throws with a readable message for a bad file.
    #[wasm_bindgen(js_name = addDocument, unchecked_return_type = "DocReport")]
    pub fn add_document(
        &mut self,
        name: &str,
        bytes: &[u8],
        #[wasm_bindgen(unchecked_param_type = "((done: number, total: number) => void) | null")] progress: Option<
            Function,
        >,
    ) -> Result<JsValue, JsError> {
        let r = self.inner.add_document(name, bytes, &mut progress_callback(&progress)).map_err(js_err)?;
        to_js(&r)
    }

    /// Index a PDF from the text of its pages, as `extractPdfPages` returned it (in another worker:
    /// see there). Same return value and errors as `addDocument`.
    #[wasm_bindgen(js_name = addPdfPages, unchecked_return_type = "DocReport")]
    pub fn add_pdf_pages(
        &mut self,
        name: &str,
        pages: Vec<String>,
        #[wasm_bindgen(unchecked_param_type = "((done: number, total: number) => void) | null")] progress: Option<
            Function,
        >,
    ) -> Result<JsValue, JsError> {
        let doc = crate::ingest::ingest_pdf_pages(name, &pages).map_err(js_err)?;
        to_js(&self.inner.add_ingested(doc, &mut progress_callback(&progress)).map_err(js_err)?)
    }

    /// Read and chunk a file without embedding it: returns the texts to embed (one per chunk),
    /// which the caller may spread over `Embedder`s in other workers, then passes back to
    /// `addPrepared`. Throws like `addDocument` for a bad file. Replaces any prepared document.
    #[wasm_bindgen(js_name = prepareDocument)]
    pub fn prepare_document(&mut self, name: &str, bytes: &[u8]) -> Result<Vec<String>, JsError> {
        self.prepared = None;
        let doc = self.inner.read(name, bytes).map_err(js_err)?;
        Ok(self.keep_prepared(doc))
    }

    /// `prepareDocument` for a PDF whose pages `extractPdfPages` returned.
    #[wasm_bindgen(js_name = preparePdfPages)]
    pub fn prepare_pdf_pages(&mut self, name: &str, pages: Vec<String>) -> Result<Vec<String>, JsError> {
        self.prepared = None;
        let doc = crate::ingest::ingest_pdf_pages(name, &pages).map_err(js_err)?;
        Ok(self.keep_prepared(doc))
    }

    /// Index the prepared document with `vectors`: the embeddings of its texts, in order, one
    /// after another (`texts.length * dim` floats). `embedMs` is reported back as `embed_ms`.
    #[wasm_bindgen(js_name = addPrepared, unchecked_return_type = "DocReport")]
    pub fn add_prepared(&mut self, vectors: Vec<f32>, embed_ms: f64) -> Result<JsValue, JsError> {
        let prepared = self.prepared.take().ok_or_else(|| JsError::new("no document is prepared"))?;
        let dim = self.inner.embedder().dim();
        let vectors: Vec<Vec<f32>> = vectors.chunks(dim).map(<[f32]>::to_vec).collect();
        to_js(&self.inner.add_prepared(prepared, vectors, embed_ms).map_err(js_err)?)
    }

    #[wasm_bindgen(js_name = removeDocument)]
    pub fn remove_document(&mut self, name: &str) -> bool {
        self.inner.remove_document(name)
    }

    /// The indexed documents, in the order they were added: `[{name, chunks}]`.
    #[wasm_bindgen(unchecked_return_type = "DocInfo[]")]
    pub fn documents(&self) -> Result<JsValue, JsError> {
        #[derive(Serialize)]
        struct Doc<'a> {
            name: &'a str,
            chunks: usize,
        }
        let docs: Vec<Doc> =
            self.inner.library().documents().iter().map(|d| Doc { name: &d.name, chunks: d.slots.len() }).collect();
        to_js(&docs)
    }

    /// The extracted text of a document (what chunk offsets refer to), for showing a cited
    /// passage in context.
    #[wasm_bindgen(js_name = documentText)]
    pub fn document_text(&self, name: &str) -> Option<String> {
        self.inner.library().documents().iter().find(|d| d.name == name).map(|d| d.text.clone())
    }

    #[wasm_bindgen(unchecked_return_type = "SearchResult")]
    pub fn search(&self, query: &str, k: usize) -> Result<JsValue, JsError> {
        to_js(&self.inner.search(query, k).map_err(js_err)?)
    }

    /// Answer a question in `mode` ("quote", "copy", "rag" or "no_rag"). `onToken(text)` receives the
    /// answer as it is generated; `shouldCancel()` is polled between tokens. Returns the same
    /// object as `pocketrag ask --json`.
    #[wasm_bindgen(unchecked_return_type = "Answer")]
    pub fn answer(
        &mut self,
        question: &str,
        #[wasm_bindgen(unchecked_param_type = "Mode")] mode: &str,
        k: usize,
        #[wasm_bindgen(unchecked_param_type = "((text: string) => void) | null")] on_token: Option<Function>,
        #[wasm_bindgen(unchecked_param_type = "(() => boolean) | null")] should_cancel: Option<Function>,
    ) -> Result<JsValue, JsError> {
        self.refuse_on_gpu("answer")?;
        let mode = Mode::parse(mode).map_err(js_err)?;
        let mut stream = |piece: &str| {
            if let Some(f) = &on_token {
                let _ = f.call1(&JsValue::NULL, &JsValue::from_str(piece));
            }
        };
        let cancel =
            || should_cancel.as_ref().and_then(|f| f.call0(&JsValue::NULL).ok()).is_some_and(|v| v.is_truthy());
        let a = self.inner.answer(question, mode, k, &mut stream, &cancel).map_err(js_err)?;
        to_js(&a)
    }

    /// Start answering a question, one step at a time: a worker that calls `step()` in a loop
    /// and yields to its event loop in between can hear a Stop message, with no shared memory.
    /// Replaces any answer still pending.
    #[wasm_bindgen(js_name = beginAnswer)]
    pub fn begin_answer(
        &mut self,
        question: &str,
        #[wasm_bindgen(unchecked_param_type = "Mode")] mode: &str,
        k: usize,
    ) -> Result<(), JsError> {
        let mode = Mode::parse(mode).map_err(js_err)?;
        self.pending = None;
        self.pending = Some(self.inner.begin_answer(question, mode, k).map_err(js_err)?);
        Ok(())
    }

    /// One step of the pending answer: `{type: "prefill", done, total}`, `{type: "token", text}`
    /// (text may be empty while a character is incomplete) or `{type: "done", stop}`.
    #[wasm_bindgen(unchecked_return_type = "Step")]
    pub fn step(&mut self) -> Result<JsValue, JsError> {
        self.refuse_on_gpu("step")?;
        let pending = self.pending.as_mut().ok_or_else(|| JsError::new("no answer is pending"))?;
        to_js(&self.inner.step_answer(pending).map_err(js_err)?)
    }

    /// `step()`, awaiting the GPU when the model runs there (`useGpu`); on the CPU it resolves
    /// at once with what `step()` returns.
    #[wasm_bindgen(js_name = stepAsync, unchecked_return_type = "Promise<Step>")]
    pub async fn step_async(&mut self) -> Result<JsValue, JsError> {
        let pending = self.pending.as_mut().ok_or_else(|| JsError::new("no answer is pending"))?;
        to_js(&self.inner.step_answer_async(pending).await.map_err(js_err)?)
    }

    /// Generate on WebGPU from now on: open the browser's GPU adapter, upload the model, and
    /// check a few tokens against the CPU (`Generator::use_gpu`). Resolves to the adapter's
    /// description; rejects with the reason (no WebGPU, no adapter, a software adapter unless
    /// `allowSoftware`, a failed self-test), leaving the engine on the CPU.
    ///
    /// Given `embedderWeights` (the safetensors bytes the engine was made with), documents are
    /// embedded on the same GPU too (`embedAsync`), after their own self-test; if that fails the
    /// embedder stays on the CPU and the description ends with why.
    #[wasm_bindgen(js_name = useGpu)]
    pub async fn use_gpu(
        &mut self,
        allow_software: bool,
        embedder_weights: Option<Vec<u8>>,
    ) -> Result<String, JsError> {
        if self.pending.is_some() {
            return Err(JsError::new("an answer is pending; finish it before switching to the GPU"));
        }
        let gpu = crate::gpu::Gpu::new().await.map_err(js_err)?;
        let mut description = gpu.describe();
        if gpu.is_software() && !allow_software {
            return Err(JsError::new(&format!("the GPU adapter is a software one ({description}); the CPU is faster")));
        }
        let gpu = std::sync::Arc::new(gpu);
        let generator = self.inner.generator_mut().ok_or_else(|| JsError::new("no language model is loaded"))?;
        let test = generator.use_gpu(gpu.clone()).await.map_err(js_err)?;
        description.push_str(&format!("; {test}"));
        if let Some(weights) = embedder_weights {
            if let Err(e) = self.inner.embedder_mut().use_gpu(gpu, &weights).await {
                description.push_str(&format!("; documents are embedded on the CPU: {e}"));
            }
        }
        Ok(description)
    }

    /// "gpu" or "cpu": where answers are generated.
    pub fn backend(&self) -> String {
        self.inner.generator().map_or(Backend::Cpu, |g| g.backend()).name().to_string()
    }

    /// Stop the pending answer at its next step, keeping what it has said.
    #[wasm_bindgen(js_name = cancelAnswer)]
    pub fn cancel_answer(&mut self) {
        if let Some(p) = self.pending.as_mut() {
            p.cancel();
        }
    }

    /// The pending answer, finished: the same object as `answer()` returns.
    #[wasm_bindgen(js_name = finishAnswer, unchecked_return_type = "Answer")]
    pub fn finish_answer(&mut self) -> Result<JsValue, JsError> {
        let pending = self.pending.take().ok_or_else(|| JsError::new("no answer is pending"))?;
        to_js(&self.inner.finish_answer(pending).map_err(js_err)?)
    }

    /// Load our fine-tuned LoRA adapter (a `.safetensors` file written by `pocketrag tune`). It is
    /// applied on top of the base weights only while `useAdapter(true)`, so the page can switch
    /// between base and tuned without a second model download.
    #[wasm_bindgen(js_name = loadAdapter, unchecked_return_type = "AdapterInfo")]
    pub fn load_adapter(&mut self, bytes: &[u8]) -> Result<JsValue, JsError> {
        let adapter = crate::llm::lora::Adapter::from_bytes(bytes, "adapter").map_err(js_err)?;
        let info = adapter.summary();
        self.inner.load_adapter(adapter).map_err(js_err)?;
        to_js(&info)
    }

    /// Answer with the fine-tuned model (true) or the base model (false).
    #[wasm_bindgen(js_name = useAdapter)]
    pub fn use_adapter(&mut self, tuned: bool) -> Result<(), JsError> {
        self.inner.use_adapter(tuned).map_err(js_err)
    }

    /// Refuse documents whose indexing would grow this instance's memory past `bytes` (0: no
    /// limit but what the browser gives). The page lowers it below the browser's ceiling so a
    /// refusal comes with a message rather than a dead instance.
    #[wasm_bindgen(js_name = setMemoryLimit)]
    pub fn set_memory_limit(&mut self, bytes: f64) {
        self.inner.settings.memory_limit = (bytes > 0.0).then_some(bytes as usize);
    }

    /// Bytes of linear memory this instance has grown to.
    #[wasm_bindgen(js_name = memoryInUse)]
    pub fn memory_in_use(&self) -> f64 {
        crate::memory::in_use().unwrap_or(0) as f64
    }

    /// The library as one index file (the same format the CLI writes); throws, keeping
    /// everything, if there is no memory for the file.
    pub fn save(&self) -> Result<Vec<u8>, JsError> {
        self.inner.save().map_err(js_err)
    }

    /// Replace the library with a saved one; throws (and keeps the current one) if the file is
    /// from another version or damaged.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), JsError> {
        self.inner.load(bytes).map_err(js_err)
    }

    /// Build a search graph from this many chunks on (10,000 by default, where it starts to pay;
    /// the page's ?graph=N lowers it to show the graph at work on a small collection).
    #[wasm_bindgen(js_name = setGraphThreshold)]
    pub fn set_graph_threshold(&mut self, chunks: usize) {
        self.inner.set_graph_threshold(chunks);
    }

    /// Whether the collection has grown past the size where its search graph pays, or changed
    /// enough since the graph was built: the page then builds one in a worker (`buildSearchGraph`).
    #[wasm_bindgen(js_name = needsGraph)]
    pub fn needs_graph(&self) -> bool {
        self.inner.needs_graph()
    }

    /// Search with a graph `buildSearchGraph` made from an earlier save; false (changing nothing)
    /// when it no longer fits this collection.
    #[wasm_bindgen(js_name = adoptGraph)]
    pub fn adopt_graph(&mut self, graph: &[u8]) -> Result<bool, JsError> {
        self.inner.adopt_graph(graph).map_err(js_err)
    }
}

/// The search graph over the vectors of a saved index (`Engine.save()`), for `Engine.adoptGraph`;
/// undefined when the collection is small enough to be scanned. Building takes seconds per 10k
/// chunks, so the page runs this in a worker of its own while the engine answers by exact search.
#[wasm_bindgen(js_name = buildSearchGraph)]
pub fn build_search_graph(saved: &[u8]) -> Result<Option<Vec<u8>>, JsError> {
    crate::library::Library::build_graph(saved, crate::rag::EMBEDDER_NAME).map_err(js_err)
}

impl WasmEngine {
    /// On the GPU a step must be awaited (the logits come back through the event loop): the
    /// synchronous calls would give up on the read-back half-way and leave its buffer mapped.
    fn refuse_on_gpu(&self, call: &str) -> Result<(), JsError> {
        match self.inner.generator() {
            Some(g) if g.backend() == Backend::Gpu => {
                Err(JsError::new(&format!("{call}() cannot wait for the GPU; use stepAsync()")))
            }
            _ => Ok(()),
        }
    }

    fn keep_prepared(&mut self, doc: crate::ingest::Document) -> Vec<String> {
        let prepared = self.inner.prepare(doc);
        let texts = prepared.texts.clone();
        self.prepared = Some(prepared);
        texts
    }
}
