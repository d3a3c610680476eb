// The benchmark page: runs each measurement in workers (as the app does) and prints one JSON
// object into #result, with data-state="done" (or "error") when finished.
import { MODELS } from './models.js';

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const status = (text) => { $('status').textContent = text; };

function start(role, script = 'bench-worker.js') {
  const w = new Worker(script, { type: 'module' });
  const replies = [];
  const waiters = [];
  w.onmessage = ({ data }) => {
    if (data.type === 'status') return status(data.text);
    if (waiters.length) waiters.shift()(data); else replies.push(data);
  };
  w.onerror = (e) => fail(new Error(e.message));
  const next = () => new Promise((resolve) => (replies.length ? resolve(replies.shift()) : waiters.push(resolve)));
  const request = async (msg) => {
    w.postMessage(msg);
    const reply = await next();
    if (reply.type === 'error') throw new Error(reply.message);
    return reply;
  };
  return { request, terminate: () => w.terminate(), role };
}

function fail(e) {
  $('result').textContent = JSON.stringify({ error: String(e.message || e) });
  $('result').dataset.state = 'error';
}

async function run() {
  const result = { backend: 'cpu' };
  // `?only=generation` (`make bench-web ONLY=generation`): the default generation setting on one
  // thread and on two, nothing else: a quick before/after for work on generation; `?only=embedding`
  // likewise for the embedder.
  const only = new URLSearchParams(location.search).get('only');
  // `?precision=f32` (`make bench-web PRECISION=f32`): the embedder's products in f32; by default
  // in 8 bits, as the page embeds.
  const precision = new URLSearchParams(location.search).get('precision') ?? 'int8';
  result.embed_precision = precision;

  // One thread: generation (and time to first token) on the app's own pipeline, the embedder,
  // and the vector index.
  // Generation as the app runs it by default (prompts through f32 copies of the weights), then
  // with the 8-bit weights only (the low-memory setting), each in a fresh worker.
  // One compiled module for every worker, as the app does.
  const module = await WebAssembly.compileStreaming(fetch('pkg-bench/pocketrag_bg.wasm'));
  // The RAG prompts our generator read, for wllama to read the same text.
  let prompts = null;
  // Generation figures from a fresh worker set up by `init`, which is then let go.
  const generation = async (role, init) => {
    const w = start(role);
    let figures;
    try {
      await w.request({ type: 'init', precision, generator: true, module, ...init });
      const reply = await w.request({ type: 'generation' });
      figures = reply.figures;
      prompts ??= reply.prompts;
    } finally {
      w.terminate();
    }
    // A terminated worker's memory (over a gigabyte) is released on other threads for a while
    // after; measuring meanwhile would count that work against the next measurement.
    await sleep(5000);
    return figures;
  };
  // Two threads for generation: the threaded build (cross-origin isolated pages only), rayon's
  // pool of two workers splitting every matrix product's rows.
  // Prompts read with f32 copies of the weights (`densePrefill`), then with the 8-bit weights.
  const twoThreads = async () => {
    if (!self.crossOriginIsolated) return { prefill_tok_s_2t: null, decode_tok_s_2t: null };
    status('generating on two threads…');
    const t = await generation('threaded', { densePrefill: true, threads: 2 });
    const q = await generation('threaded', { densePrefill: false, threads: 2 });
    return {
      prefill_tok_s_2t: t.prefill_tok_s_1t, decode_tok_s_2t: t.decode_tok_s_1t, ttft_ms_500_2t: t.ttft_ms_500, threads_2t: t.threads,
      prefill_tok_s_2t_quantized: q.prefill_tok_s_1t, decode_tok_s_2t_quantized: q.decode_tok_s_1t, ttft_ms_500_2t_quantized: q.ttft_ms_500,
    };
  };
  const quantized = async () => {
    const q = await generation('quantized', { densePrefill: false });
    return { prefill_tok_s_1t_quantized: q.prefill_tok_s_1t, decode_tok_s_1t_quantized: q.decode_tok_s_1t, ttft_ms_500_quantized: q.ttft_ms_500, ttft_prompt_tokens: q.ttft_prompt_tokens };
  };
  if (only === 'generation') {
    Object.assign(result, await generation('main', { densePrefill: true }), await quantized(), await twoThreads(), { only });
    return finish(result);
  }
  // Embedding rates are the median of three timed rounds after one untimed round.
  const embedOne = async (w, chunks) => {
    await w.request({ type: 'embed', texts: chunks });
    const rounds = [];
    for (let i = 0; i < 3; i++) rounds.push((await w.request({ type: 'embed', texts: chunks })).ms);
    return chunks.length / (median(rounds) / 1000);
  };
  // Two threads for embedding: two workers with their own wasm instance, each embedding half the
  // chunks, which is how indexing can use both cores without shared memory.
  const embedTwo = async (chunks) => {
    status('embedding on two workers…');
    const pair = [start('a'), start('b')];
    await Promise.all(pair.map((w) => w.request({ type: 'init', precision, generator: false, module })));
    const half = Math.ceil(chunks.length / 2);
    const round = async () => {
      const t0 = performance.now();
      await Promise.all(pair.map((w, i) => w.request({ type: 'embed', texts: chunks.slice(i * half, (i + 1) * half) })));
      return performance.now() - t0;
    };
    await round();
    const rounds = [await round(), await round(), await round()];
    pair.forEach((w) => w.terminate());
    return chunks.length / (median(rounds) / 1000);
  };
  // `?only=peers`: our default generation and embedding on one thread and on two, then the
  // peers on the same inputs.
  if (only === 'peers') {
    Object.assign(result, await quantized(), await twoThreads());
    const w = start('main');
    await w.request({ type: 'init', precision, generator: true, module });
    const { chunks } = await w.request({ type: 'chunks', n: 64 });
    result.embed_chunks_s_1t = await embedOne(w, chunks);
    w.terminate();
    await sleep(5000);
    result.embed_chunks_s_2t = await embedTwo(chunks);
    Object.assign(result, await peers({ chunks, prompts, result }));
    return finish({ ...result, only });
  }
  // `?only=embedding`: the embedder on one thread and on two, nothing else.
  if (only === 'embedding') {
    const w = start('main');
    // The engine (and so the generator) is loaded for the shipped library, the chunks' source.
    await w.request({ type: 'init', precision, generator: true, module });
    const { chunks } = await w.request({ type: 'chunks', n: 64 });
    result.embed_chunks_s_1t = await embedOne(w, chunks);
    w.terminate();
    await sleep(5000); // as after `generation`: let the closed worker's memory go first
    result.embed_chunks_s_2t = await embedTwo(chunks);
    return finish({ ...result, only });
  }
  Object.assign(result, await quantized());
  const main = start('main');
  await main.request({ type: 'init', precision, generator: true, densePrefill: true, module });
  Object.assign(result, (await main.request({ type: 'generation' })).figures);
  const { chunks } = await main.request({ type: 'chunks', n: 64 });
  result.embed_chunks_s_1t = await embedOne(main, chunks);
  Object.assign(result, (await main.request({ type: 'index', n: 10_000 })).figures);
  Object.assign(result, (await main.request({ type: 'kernels' })).figures);
  main.terminate();
  await sleep(5000);

  Object.assign(result, await twoThreads());
  result.embed_chunks_s_2t = await embedTwo(chunks);
  Object.assign(result, await peers({ chunks, prompts, result }));

  // WebGPU: timed on a real GPU only. A software adapter (headless Chromium's SwiftShader, with
  // --enable-unsafe-webgpu) is named but not timed: it says nothing about GPUs.
  result.gpu_adapter = await gpuAdapter();
  result.prefill_tok_s_gpu = result.decode_tok_s_gpu = result.ttft_ms_500_gpu = null;
  if (result.gpu_adapter.startsWith('hardware')) {
    status('generating on the GPU…');
    try {
      const g = await generation('gpu', { densePrefill: false, gpu: true });
      result.prefill_tok_s_gpu = g.prefill_tok_s_1t;
      result.decode_tok_s_gpu = g.decode_tok_s_1t;
      result.ttft_ms_500_gpu = g.ttft_ms_500;
    } catch (e) {
      // A GPU that fails the self-test costs its own figures, not the CPU's.
      result.gpu_adapter += ` (not timed: ${e.message || e})`;
    }
  }

  result.threads_note = 'generation on two threads: our Q8_0 products and the f32 prompt products split over rayon workers '
    + '(threaded build); embedding uses two workers';
  result.cross_origin_isolated = self.crossOriginIsolated === true;
  result.user_agent = navigator.userAgent;
  finish(result);
}

// The peers on our inputs, each setting in a fresh worker (peer-worker.js), one after another:
// transformers.js embedding the same 64 chunks with MiniLM in int8 (its default, q8) and fp32,
// wllama reading the same RAG prompts with the same Q8_0 generator. Then our figures over theirs.
const PEER_BATCH = 16; // chunks per transformers.js call (padded to the longest of the batch)
const PEER_TOKENS = 48; // tokens wllama generates per prompt
async function peers({ chunks, prompts, result }) {
  const out = {};
  const threadCounts = self.crossOriginIsolated ? [1, 2] : [1];
  const inWorker = async (init, measure) => {
    const w = start('peer', 'peer-worker.js');
    try {
      const info = await w.request(init);
      return await measure(w, info);
    } finally {
      w.terminate();
      await sleep(5000); // as after `generation`: let the closed worker's memory go first
    }
  };
  for (const [dtype, name] of [['q8', 'int8'], ['fp32', 'fp32']]) {
    for (const threads of threadCounts) {
      status(`transformers.js, MiniLM ${name}, ${threads} thread(s)…`);
      out[`transformers_js_${name}_chunks_s_${threads}t`] = await inWorker({ type: 'embedInit', dtype, threads }, async (w) => {
        const embed = async () => (await w.request({ type: 'embed', texts: chunks, batch: PEER_BATCH })).ms;
        await embed(); // untimed, as for ours
        const rounds = [await embed(), await embed(), await embed()];
        return chunks.length / (median(rounds) / 1000);
      });
    }
  }
  for (const threads of threadCounts) {
    status(`wllama, ${threads} thread(s)…`);
    const f = await inWorker({ type: 'generateInit', threads, model: MODELS.generator }, async (w, info) => ({
      ...(await w.request({ type: 'generate', prompts, tokens: PEER_TOKENS })).figures,
      threads: info.threads,
    }));
    out[`wllama_threads_${threads}t`] = f.threads;
    out[`wllama_prefill_tok_s_${threads}t`] = f.prefill_tok_s;
    out[`wllama_decode_tok_s_${threads}t`] = f.decode_tok_s;
    out[`wllama_first_token_ms_${threads}t`] = f.first_token_ms;
    out.wllama_prompt_tokens = f.prompt_tokens;
  }
  const ratio = (a, b) => (a != null && b ? a / b : null);
  const r = { ...result, ...out };
  out.peer_ratios = {
    embed_vs_transformers_js_int8_1t: ratio(r.embed_chunks_s_1t, r.transformers_js_int8_chunks_s_1t),
    embed_vs_transformers_js_int8_2t: ratio(r.embed_chunks_s_2t, r.transformers_js_int8_chunks_s_2t),
    embed_vs_transformers_js_fp32_1t: ratio(r.embed_chunks_s_1t, r.transformers_js_fp32_chunks_s_1t),
    embed_vs_transformers_js_fp32_2t: ratio(r.embed_chunks_s_2t, r.transformers_js_fp32_chunks_s_2t),
    // Ours with the page's default prompt path (the 8-bit weights), as wllama reads them.
    prefill_vs_wllama_1t: ratio(r.prefill_tok_s_1t_quantized, r.wllama_prefill_tok_s_1t),
    prefill_vs_wllama_2t: ratio(r.prefill_tok_s_2t_quantized, r.wllama_prefill_tok_s_2t),
    decode_vs_wllama_1t: ratio(r.decode_tok_s_1t_quantized, r.wllama_decode_tok_s_1t),
    decode_vs_wllama_2t: ratio(r.decode_tok_s_2t_quantized, r.wllama_decode_tok_s_2t),
  };
  out.peers_note = `transformers.js 4.3.2 (onnxruntime-web 1.31.0-dev wasm, ${PEER_BATCH} chunks per call), `
    + `wllama 3.8.1 (CPU, ${PEER_TOKENS} tokens per prompt); our prompt tokens: ${r.ttft_prompt_tokens ?? 'n/a'}`;
  return out;
}

/// Print the result and mark the page done, for tools/bench_web.cjs.
function finish(result) {
  $('result').textContent = JSON.stringify(result);
  $('result').dataset.state = 'done';
  status('done');
}

/// "hardware: ...", "software: ..." or "none: ..." for this browser's WebGPU adapter.
async function gpuAdapter() {
  if (!navigator.gpu) return 'none: this browser offers no WebGPU';
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return 'none: no WebGPU adapter (headless Chromium offers one only with --enable-unsafe-webgpu)';
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'unnamed';
  return `${info.isFallbackAdapter ? 'software' : 'hardware'}: ${name}`;
}

run().catch(fail);
