//! The bindings beside the engine: the engine's embedder (its numbers, where it runs, embedding
//! outside an indexing call), a bare embedder for the helper workers that embed while the
//! engine's worker does the rest, the thread pool of the threaded build, and PDF text for the
//! parse worker.

use super::{js_err, progress_callback, WasmEngine};
use crate::embed::Embedder;
use js_sys::Function;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(js_class = Engine)]
impl WasmEngine {
    /// The numbers the embedder's CPU products are taken in: "f32" (the default) or "int8"
    /// (`embed::Precision`). Set it after `useGpu`: the GPU's self-test compares against f32.
    #[wasm_bindgen(js_name = setEmbedderPrecision)]
    pub fn set_embedder_precision(&mut self, precision: &str) -> Result<(), JsError> {
        self.inner.embedder_mut().set_precision(precision.parse().map_err(js_err)?);
        Ok(())
    }

    #[wasm_bindgen(js_name = embedderPrecision)]
    pub fn embedder_precision(&self) -> String {
        self.inner.embedder().precision().to_string()
    }

    /// "gpu" or "cpu": where `embedAsync` embeds documents.
    #[wasm_bindgen(js_name = embedderBackend)]
    pub fn embedder_backend(&self) -> String {
        self.inner.embedder().backend().name().to_string()
    }

    /// Unit vectors for `texts`, one after another (`texts.length * dim` floats, the form
    /// `addPrepared` takes), computed on the GPU once `useGpu` put the embedder there, otherwise
    /// on the CPU. `progress(done, total)` is called after each batch.
    #[wasm_bindgen(js_name = embedAsync, unchecked_return_type = "Promise<Float32Array>")]
    pub async fn embed_async(&self, texts: Vec<String>, progress: Option<Function>) -> Result<JsValue, JsError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors =
            self.inner.embedder().embed_async(&refs, &mut progress_callback(&progress)).await.map_err(js_err)?;
        Ok(js_sys::Float32Array::from(vectors.concat().as_slice()).into())
    }
}

/// The embedder on its own, for helper workers that embed while the engine's worker does the
/// rest (and for `make bench-web`).
#[wasm_bindgen(js_name = Embedder)]
pub struct WasmEmbedder {
    pub(super) inner: Embedder,
}

#[wasm_bindgen(js_class = Embedder)]
impl WasmEmbedder {
    #[wasm_bindgen(constructor)]
    pub fn new(weights: &[u8], tokenizer: &[u8], config: &[u8]) -> Result<WasmEmbedder, JsError> {
        Ok(WasmEmbedder { inner: Embedder::from_bytes(weights, tokenizer, config).map_err(js_err)? })
    }

    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// "f32" (as shipped, the default) or "int8": the numbers the products are taken in
    /// (`embed::Precision`).
    #[wasm_bindgen(js_name = setPrecision)]
    pub fn set_precision(&mut self, precision: &str) -> Result<(), JsError> {
        self.inner.set_precision(precision.parse().map_err(js_err)?);
        Ok(())
    }

    pub fn precision(&self) -> String {
        self.inner.precision().to_string()
    }

    /// Unit vectors for `texts`, one after another in one array (`texts.length * dim()` floats).
    pub fn embed(&self, texts: Vec<String>) -> Result<Vec<f32>, JsError> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok(self.inner.embed(&refs).map_err(js_err)?.concat())
    }
}

/// Starts the pool of Web Workers that rayon (and so our matrix products) runs on; JS awaits
/// `initThreadPool(n)` once, after `init`. Only in the threaded build (`--features threads`).
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// How many threads the generator's matrix products use: 1 unless this is the threaded build with
/// its pool started.
#[wasm_bindgen(js_name = threadCount)]
pub fn thread_count() -> usize {
    rayon::current_num_threads()
}

/// Whether `addDocument` would read these bytes as a PDF (by content, then by name).
#[wasm_bindgen(js_name = isPdf)]
pub fn is_pdf(name: &str, bytes: &[u8]) -> bool {
    crate::ingest::detect_format(name, bytes) == crate::ingest::Format::Pdf
}

/// The text of each page of a PDF. The PDF parser panics on some malformed files, and a panic
/// aborts this wasm instance, so the page calls this in a worker of its own that it can throw
/// away, never in the engine's.
#[wasm_bindgen(js_name = extractPdfPages)]
pub fn extract_pdf_pages(bytes: &[u8]) -> Result<Vec<String>, JsError> {
    crate::ingest::extract_pdf_pages(bytes).map_err(|e| JsError::new(&format!("cannot read this PDF: {e}")))
}
