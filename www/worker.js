// The engine's worker: it owns the wasm Engine, so indexing and generation never block the page.
// It receives requests ({type, ...}) and answers with events; every message between the page,
// this worker and its helpers, with its payload, is listed in docs/WORKERS.md. Storage is
// storage.js, the indexing queue indexing.js, the helper workers helpers.js; this file starts
// the engine, chooses where it runs, drives answers and dispatches requests.
import { MODELS, loadModels } from './models.js';
import * as storage from './storage.js';
import { configureEmbedders, hasRelaxedSimd, shareModule } from './helpers.js';
import {
  addAndStore, announceDocuments, ctx, loadShipped, restore, saveOrSay, setAsideInterrupted, trapMessage,
} from './indexing.js';

// The wasm bindings: pkg-threads/ (the same library built with threads) when more than one
// thread is wanted (one per core up to 4, or ?threads=N) and the page is cross-origin isolated,
// which shared memory needs; otherwise pkg/ (one thread).
let pkg = null;
let engine = null;
// The single-threaded module, compiled once; the helper workers get it too.
let wasmModule = null;
const MEMORY_LIMIT = 3.5 * 2 ** 30;
// Set by a 'stop' message. Answers are generated one step at a time with a turn of the event
// loop in between, so the message gets through on any page, cross-origin isolated or not.
let stopRequested = false;

const post = (msg) => self.postMessage(msg);
ctx.post = post;

// Streaming compilation needs the host to serve .wasm as application/wasm; not every host does.
async function compileWasm(url) {
  try {
    return await WebAssembly.compileStreaming(fetch(url));
  } catch {
    return WebAssembly.compile(await (await fetch(url)).arrayBuffer());
  }
}

// Resolves on the next task of this worker's event loop, after messages already queued (a Stop).
// A MessageChannel does it without the 4 ms a nested setTimeout costs.
const tick = new MessageChannel();
const waiting = [];
tick.port1.onmessage = () => waiting.shift()();
const nextTask = () => new Promise((resolve) => { waiting.push(resolve); tick.port2.postMessage(0); });


/// Load our fine-tuned adapter if the site ships one; the page can still answer with the base
/// model when it does not (or when the file is bad), and says why.
async function loadAdapter(tuned, onProgress) {
  try {
    const [bytes] = await loadModels([MODELS.adapter], onProgress);
    const info = engine.loadAdapter(bytes);
    engine.useAdapter(tuned);
    return { info, tuned };
  } catch (e) {
    return { info: null, tuned: false, reason: String(e.message || e) };
  }
}

/// Generate the pending answer step by step, posting its pieces as `{type: kind, text, ...extra}`
/// and yielding between steps so that a Stop message gets through.
async function drive(kind, extra = {}) {
  for (;;) {
    if (stopRequested) engine.cancelAnswer();
    const step = await nextStep();
    if (step.type === 'done') break;
    if (step.type === 'prefill') post({ type: 'prefill', done: step.done, total: step.total, ...extra });
    else if (step.text) post({ type: kind, text: step.text, ...extra });
    await nextTask();
  }
  return engine.finishAnswer();
}

// Whether answers are generated on the GPU. A step there resolves only after the GPU has run (its
// logits come back through the event loop), and the engine stays borrowed by that pending call
// until then: no other call may touch it meanwhile, so on the GPU requests run one after another
// (`onmessage`).
let onGpu = false;

async function nextStep() {
  return onGpu ? engine.stepAsync() : engine.step();
}

/// Generate on WebGPU when the browser has a GPU adapter that is not a software one and the model
/// passes its self-test there (`Engine.useGpu`); ?backend=webgpu takes a software adapter too,
/// ?backend=cpu never tries. The embedder (`embedderWeights`) goes to the GPU with the model when
/// it passes its own self-test, and documents are then embedded there (`addDocument`). Returns why
/// the engine runs where it does, for the backend label.
async function chooseBackend(asked, embedderWeights) {
  if (asked === 'cpu') return 'WebAssembly on the CPU, as asked (?backend=cpu)';
  if (!self.navigator.gpu) return 'WebAssembly on the CPU: this browser offers no WebGPU';
  try {
    const adapter = await engine.useGpu(asked === 'webgpu', embedderWeights);
    onGpu = true;
    ctx.onGpu = true;
    return `WebGPU: ${adapter}`;
  } catch (e) {
    return `WebAssembly on the CPU: WebGPU not used (${e.message || e})`;
  }
}

// Generation's matrix products run on `threads` Web Workers (rayon's pool, started by the
// threaded build) when more than one is asked for and the page may share memory between
// workers; otherwise on this worker alone.
// Returns why it runs on one thread, or null.
async function loadBindings(threads) {
  let why = threads > 1 ? 'the page is not cross-origin isolated' : 'one thread was asked for (?threads=1) or the device has one core';
  if (threads > 1 && self.crossOriginIsolated) {
    try {
      pkg = await import('./pkg-threads/pocketrag.js');
      await pkg.default({ module_or_path: await compileWasm('pkg-threads/pocketrag_bg.wasm') });
      await pkg.initThreadPool(threads);
      return null;
    } catch (e) {
      why = `threads failed to start (${e.message || e})`;
    }
  }
  pkg = await import('./pkg/pocketrag.js');
  await pkg.default({ module_or_path: wasmModule });
  return why;
}

const handlers = {
  async init({ densePrefill, threads, answerThreads, tuned, backend, graphFrom, embedPrecision }) {
    ctx.helperCount = threads;
    // Compiled once here and handed to the helper workers: V8 shares the compiled (and, once hot,
    // optimised) code between workers that share a module. Fresh workers compiling their own copy
    // ran embedding ~1.7x slower (README, "In the browser").
    wasmModule = await compileWasm('pkg/pocketrag_bg.wasm');
    shareModule(wasmModule);
    // Documents are embedded with 8-bit weights (kernels::int8) unless f32 is asked for; with
    // 'relaxed' (the default, app.js says why), the helpers run the relaxed SIMD build where the
    // browser has it, and the SIMD128 one where it does not or the build cannot be fetched.
    const precision = embedPrecision === 'f32' ? 'f32' : 'int8';
    const relaxed = embedPrecision === 'relaxed' && hasRelaxedSimd()
      ? await compileWasm('pkg-relaxed/pocketrag_bg.wasm').catch(() => null) : null;
    configureEmbedders(relaxed ? { module: relaxed, bindings: 'pkg-relaxed', precision } : { module: wasmModule, bindings: 'pkg', precision });
    const threadsNote = await loadBindings(answerThreads);
    const [w, t, c, g] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig, MODELS.generator],
      (loaded, total) => post({ type: 'download', loaded, total }), { prune: true });
    engine = new pkg.Engine(w, t, c, g, densePrefill);
    Object.assign(ctx, { pkg, engine });
    // wasm32 memory ends at 4 GiB; stopping short of it turns running out into a per-file
    // message (see src/memory.rs) instead of a dead instance.
    engine.setMemoryLimit(MEMORY_LIMIT);
    const adapter = await loadAdapter(tuned, (loaded, total) => post({ type: 'download', loaded, total }));
    const backendNote = await chooseBackend(backend, w);
    // After the GPU's self-test, which compares against the CPU's f32 vectors.
    engine.setEmbedderPrecision(precision);
    post({
      type: 'ready', backend: engine.backend() === 'gpu' ? 'webgpu' : 'cpu', backendNote,
      embedder: engine.embedderBackend() === 'gpu' ? 'webgpu' : 'cpu',
      densePrefill, adapter, threads: pkg.threadCount(), threadsNote,
      embedPrecision: precision, embedSimd: relaxed ? 'relaxed' : 'simd128',
    });
    await storage.openStorage();
    await setAsideInterrupted();
    // First visit: nothing stored yet, so start with the site's collection.
    if (!(await restore())) {
      if (await loadShipped()) announceDocuments();
      await saveOrSay();
    }
    if (graphFrom) engine.setGraphThreshold(graphFrom);
    // A collection stored before graphs were saved, or just lowered below its size: the save
    // starts the graph's build.
    if (engine.needsGraph()) await saveOrSay();
    initialised = true;
    post({ type: 'idle' });
  },
  async add({ files }) {
    await addAndStore(files.map(({ name, bytes }) => ({ name, bytes: new Uint8Array(bytes) })));
    post({ type: 'idle' });
  },
  async remove({ name }) {
    engine.removeDocument(name);
    if ((await storage.storedDocCount(name)) === 0) {
      await storage.setState('hidden', [...((await storage.getState('hidden')) ?? []), name]);
    }
    await storage.deleteDoc(name);
    await saveOrSay();
    post({ type: 'removed', name });
  },
  text({ name }) {
    post({ type: 'text', name, text: engine.documentText(name) ?? '' });
  },
  model({ tuned }) {
    engine.useAdapter(tuned);
    post({ type: 'model', tuned });
  },
  async ask({ question, mode, k }) {
    stopRequested = false;
    engine.beginAnswer(question, mode, k);
    post({ type: 'answer', answer: await drive('token') });
  },
  /// One question, five ways: quoted from the documents, then base and tuned model, each without
  /// and with retrieval. Stop ends the one under way and skips the rest.
  async compare({ question, k, tuned }) {
    stopRequested = false;
    try {
      for (const config of ['quote', 'base-norag', 'base-rag', 'tuned-norag', 'tuned-rag']) {
        if (stopRequested) break;
        engine.useAdapter(config.startsWith('tuned'));
        engine.beginAnswer(question, config === 'quote' ? 'quote' : config.endsWith('-rag') ? 'rag' : 'no_rag', k);
        post({ type: 'compare-answer', config, answer: await drive('compare-token', { config }) });
      }
    } finally {
      engine.useAdapter(tuned);
      post({ type: 'compare-done' });
    }
  },
  stop() {
    stopRequested = true;
  },
};

// On the CPU, requests interleave at their awaits (a document dropped during an answer is indexed
// between two of its tokens); on the GPU they queue (see `onGpu`), all but Stop, which only sets a
// flag. Until `init` has finished everything queues behind it: a file dropped while the models
// load (or the GPU self-tests) waits for the engine.
let queue = Promise.resolve();
ctx.enqueue = (fn) => { queue = queue.then(fn); };
let initialised = false;

self.onmessage = (event) => {
  const msg = event.data;
  if (msg.type === 'stop' || (initialised && !onGpu)) return handle(msg);
  queue = queue.then(() => handle(msg));
};

async function handle(msg) {
  try {
    await handlers[msg.type](msg);
  } catch (e) {
    // A trap (a panic or running out of memory) leaves the wasm instance unusable: the page
    // replaces this worker (app.js, `restartEngine`).
    if (e instanceof WebAssembly.RuntimeError) {
      post({ type: 'error', during: msg.type, message: trapMessage(e), engineStopped: true });
    } else {
      post({ type: 'error', during: msg.type, message: String(e.message || e) });
    }
  }
}
