// One benchmark worker: loads the models (from the cache the app fills) and measures what the
// page asks for, replying with one message per request.
import { MODELS, loadModels } from './models.js';

// pkg-bench/ (one thread: the site's build plus the benchmark entry points, `make wasm-bench`)
// or, for the two-thread figures, pkg-threads/ with rayon's pool started.
let pkg = null;

let engine = null;
let embedder = null;
const post = (msg) => self.postMessage(msg);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Questions about the shipped sample articles that retrieve four sources each, making prompts of
// 464-494 tokens (checked with `pocketrag ask --json` on dist/library.idx).
const QUESTIONS = [
  'How does retrieval-augmented generation find passages and answer?',
  'What is the difference between fine-tuning and retrieval?',
  'How do embeddings, vector search and retrieval work together?',
];

const handlers = {
  async init({ generator, densePrefill, module, threads, gpu, precision }) {
    if (threads > 1) {
      pkg = await import('./pkg-threads/pocketrag.js');
      await pkg.default({ module_or_path: 'pkg-threads/pocketrag_bg.wasm' });
      await pkg.initThreadPool(threads);
    } else {
      pkg = await import('./pkg-bench/pocketrag.js');
      await pkg.default({ module_or_path: module ?? 'pkg-bench/pocketrag_bg.wasm' });
    }
    const { Engine, Embedder } = pkg;
    const names = [MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig];
    const [w, t, c, g] = await loadModels(generator ? [...names, MODELS.generator] : names,
      (loaded, total) => post({ type: 'status', text: `downloading models: ${(loaded / 1e6).toFixed(0)} / ${(total / 1e6).toFixed(0)} MB` }));
    embedder = new Embedder(w, t, c);
    embedder.setPrecision(precision ?? 'f32');
    if (generator) {
      engine = new Engine(w, t, c, g, densePrefill);
      const res = await fetch('library.idx');
      if (!res.ok) throw new Error(`cannot load library.idx: HTTP ${res.status}`);
      engine.load(new Uint8Array(await res.arrayBuffer()));
      if (gpu) return { gpu: await engine.useGpu(false) };
    }
    return {};
  },
  // Time to first token is measured from the question (embedding and search included) to the
  // first piece of answer text, exactly as a user waits for it.
  async generation() {
    const runs = [];
    for (const [i, q] of QUESTIONS.entries()) {
      post({ type: 'status', text: `generating ${i + 1}/${QUESTIONS.length}…` });
      const t0 = performance.now();
      engine.beginAnswer(q, 'rag', 4);
      let ttft = null;
      for (;;) {
        // On the CPU stepAsync resolves at once; on the GPU it waits for the read-back.
        const step = await engine.stepAsync();
        if (ttft === null && step.type === 'token' && step.text) ttft = performance.now() - t0;
        if (step.type === 'done') break;
      }
      const a = engine.finishAnswer();
      runs.push({
        ttft,
        prompt: a.prompt_tokens,
        prefill: a.prompt_tokens / (a.timings_ms.prefill / 1000),
        decode: a.generated_tokens / (a.timings_ms.decode / 1000),
        text: a.prompt,
      });
    }
    return {
      figures: {
        prefill_tok_s_1t: median(runs.map((r) => r.prefill)),
        decode_tok_s_1t: median(runs.map((r) => r.decode)),
        ttft_ms_500: median(runs.map((r) => r.ttft)),
        ttft_prompt_tokens: median(runs.map((r) => r.prompt)),
        threads: pkg.threadCount(),
      },
      // The prompts as the generator read them, for the peers to read the same.
      prompts: runs.map((r) => r.text),
    };
  },
  chunks({ n }) {
    const corpus = engine.documents().map((d) => engine.documentText(d.name)).join('\n\n');
    return { chunks: pkg.benchChunks(embedder, corpus, n) };
  },
  embed({ texts }) {
    const t0 = performance.now();
    embedder.embed(texts);
    return { ms: performance.now() - t0 };
  },
  kernels() {
    post({ type: 'status', text: 'Q8_0 kernels…' });
    const f = pkg.benchKernels();
    const e = pkg.benchEmbedKernels();
    return {
      figures: {
        // The embedder's products in 8 bits (kernels::int8) against f32 (kernels::dense).
        embed_int8_kernel_speedup: e.f32_us / e.int8_us,
        // With relaxed SIMD, which of kernels::int8's two ways of adding up bytes measured faster.
        embed_bytes_kernel: e.bytes_kernel,
        q8_matvec_speedup: f.candle_matvec_us / f.ours_matvec_us,
        q8_matmul128_speedup: f.candle_matmul128_us / f.ours_matmul128_us,
        // A prompt's products with the 8-bit weights (kernels::q8_prompt) against the f32 copy.
        q8_prompt_vs_f32: f.prompt_f32_us / f.prompt_q8_us,
        q8_matvec_us: { ours: f.ours_matvec_us, candle: f.candle_matvec_us, rows: f.rows, cols: f.cols },
      },
    };
  },
  index({ n }) {
    post({ type: 'status', text: `vector index at ${n} chunks…` });
    const f = pkg.benchIndex(n);
    return {
      figures: {
        search_p50_ms_10k: f.search_p50_ms,
        recall10_10k: f.recall10,
        hnsw_build_ms_10k: f.build_ms,
        exact_p50_ms_10k: f.exact_p50_ms,
      },
    };
  },
};

self.onmessage = async ({ data }) => {
  try {
    post({ type: 'ok', ...(await handlers[data.type](data)) });
  } catch (e) {
    post({ type: 'error', message: String(e.message || e) });
  }
};
