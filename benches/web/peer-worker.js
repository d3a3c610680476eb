// One peer measured in a fresh worker (`make bench-web`): transformers.js embedding our chunks
// with MiniLM, or wllama (llama.cpp) reading our RAG prompts and generating with our Q8_0 file.
// A fresh worker per setting because both set their thread count once per instance.
// Everything is loaded from this origin (peers/, fetched by `make peers`); nothing is cached.
const post = (msg) => self.postMessage(msg);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const here = (path) => new URL(path, location.href).href;

let extractor = null;
let wllama = null;

const handlers = {
  // transformers.js 4.3.2 on onnxruntime-web's wasm backend. dtype 'q8' reads
  // onnx/model_quantized.onnx (8-bit weights and activations), 'fp32' onnx/model.onnx.
  async embedInit({ dtype, threads }) {
    const { pipeline, env } = await import('./peers/transformers/transformers.js');
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = new URL('peers/', location.href).pathname;
    env.useBrowserCache = false;
    env.useWasmCache = false;
    env.backends.onnx.wasm.wasmPaths = {
      mjs: here('peers/ort/ort-wasm-simd-threaded.asyncify.mjs'),
      wasm: here('peers/ort/ort-wasm-simd-threaded.asyncify.wasm'),
    };
    env.backends.onnx.wasm.numThreads = threads;
    extractor = await pipeline('feature-extraction', 'minilm', { dtype, device: 'wasm' });
    return {};
  },
  // Mean-pooled, normalised vectors, as our embedder makes them, in batches of `batch`.
  async embed({ texts, batch }) {
    const t0 = performance.now();
    let dims = 0;
    for (let i = 0; i < texts.length; i += batch) {
      const out = await extractor(texts.slice(i, i + batch), { pooling: 'mean', normalize: true });
      dims = out.dims[1];
    }
    return { ms: performance.now() - t0, dims };
  },

  // wllama 3.8.1, CPU only (no WebGPU layers), the GGUF our engine runs.
  async generateInit({ threads, model }) {
    const { Wllama } = await import('./peers/wllama/index.js');
    wllama = new Wllama({ default: here('peers/wllama/wllama.wasm') }, { suppressNativeLog: true });
    wllama.setCompat(null); // no compatibility files from a CDN
    const res = await fetch(model);
    if (!res.ok) throw new Error(`cannot load ${model}: HTTP ${res.status}`);
    await wllama.loadModel([await res.blob()], { n_threads: threads, n_gpu_layers: 0, n_ctx: 2048, warmup: true });
    return { threads: wllama.getNumThreads(), multiThread: wllama.isMultithread() };
  },
  // Each prompt read from scratch (no cached prefix) and `tokens` tokens generated greedily
  // (past an end-of-text token too, so every run decodes as many).
  async generate({ prompts, tokens }) {
    const runs = [];
    for (const [i, prompt] of prompts.entries()) {
      post({ type: 'status', text: `wllama: prompt ${i + 1}/${prompts.length}…` });
      const r = await wllama.createCompletion({ prompt, max_tokens: tokens, temperature: 0, cache_prompt: false, ignore_eos: true });
      const t = r.timings;
      if (!t) throw new Error('wllama returned no timings');
      // Its first token: the prompt read plus one generated token (no retrieval before it).
      runs.push({ prefill: t.prompt_per_second, decode: t.predicted_per_second, prompt: t.prompt_n, generated: t.predicted_n,
        first: t.prompt_ms + t.predicted_per_token_ms });
    }
    return {
      figures: {
        prefill_tok_s: median(runs.map((r) => r.prefill)),
        decode_tok_s: median(runs.map((r) => r.decode)),
        first_token_ms: median(runs.map((r) => r.first)),
        prompt_tokens: median(runs.map((r) => r.prompt)),
        generated_tokens: median(runs.map((r) => r.generated)),
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
