//! The entry points `make bench-web` measures, in the wasm build with `--features bench` only
//! (`make wasm-bench`): the site's own builds do not carry them.

use super::extras::WasmEmbedder;
use super::to_js;
use wasm_bindgen::prelude::*;

/// `n` different texts of about 128 word pieces cut from `corpus`: the benchmark's chunks.
#[wasm_bindgen(js_name = benchChunks)]
pub fn bench_chunks(embedder: &WasmEmbedder, corpus: &str, n: usize) -> Vec<String> {
    crate::bench::chunk_texts(&embedder.inner, corpus, n)
}

/// Our Q8_0 kernel against candle's on one matrix: microseconds per product (the same workload as
/// `make bench`).
#[wasm_bindgen(js_name = benchKernels, unchecked_return_type = "object")]
pub fn bench_kernels() -> Result<JsValue, JsError> {
    to_js(&crate::bench::q8_kernel_figures()?)
}

/// The embedder's products in f32 and in 8 bits, microseconds on this thread.
#[wasm_bindgen(js_name = benchEmbedKernels, unchecked_return_type = "object")]
pub fn bench_embed_kernels() -> Result<JsValue, JsError> {
    to_js(&crate::bench::embed_kernel_figures())
}

/// Vector-index figures at `n` synthetic chunks: build time, graph and exact search latency,
/// recall@10 (the same workload as `make bench`).
#[wasm_bindgen(js_name = benchIndex, unchecked_return_type = "object")]
pub fn bench_index(n: usize) -> Result<JsValue, JsError> {
    to_js(&crate::bench::index_figures(n))
}
