// The helper workers the engine's worker hands work to, each a wasm instance of its own made from
// the module the engine's worker compiled once (`shareModule`): PDF text (parse-worker.js),
// embedding (embed-worker.js, one per core) and the search graph (graph-worker.js). Each kind is
// started when first needed; one that dies costs the work it held, never the engine.
let wasmModule = null;
export function shareModule(module) {
  wasmModule = module;
}

// ---- PDF text, from a worker started at the first PDF and replaced after a crash: the PDF
// parser panics on some malformed files, and a panic kills the wasm instance it runs in.
let parser = null;
let parseId = 0;
const parsing = new Map();
export function extractPdf(bytes) {
  if (!parser) {
    parser = new Worker('parse-worker.js', { type: 'module' });
    parser.postMessage({ module: wasmModule });
    parser.onmessage = ({ data }) => {
      const { resolve, reject } = parsing.get(data.id);
      parsing.delete(data.id);
      if (data.crashed) { parser.terminate(); parser = null; }
      if (data.error) reject(new Error(data.error)); else resolve(data.pages);
    };
    // A worker that dies or cannot start answers no message: every file it holds fails (the
    // queue names each one) and the next PDF gets a new worker.
    parser.onerror = (e) => {
      e.preventDefault?.();
      for (const { reject } of parsing.values()) reject(new Error(`the PDF reader stopped (${e.message || 'worker error'})`));
      parsing.clear();
      parser?.terminate();
      parser = null;
    };
  }
  const id = ++parseId;
  return new Promise((resolve, reject) => {
    parsing.set(id, { resolve, reject });
    parser.postMessage({ id, bytes });
  });
}

// ---- embedding spread over `count` helpers, one per core the page may use (?threads=N), so
// indexing uses every core without shared memory. Started at the first document that needs
// them; if they cannot start, indexing goes on without them (`embeddersUsable`).
let helpers = null;
const EMBED_BATCH = 16;

// A module of one function using one relaxed SIMD instruction (i32x4.relaxed_dot_i8x16_i7x16_add_s):
// it validates only where the browser has relaxed SIMD.
const RELAXED_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 96, 3, 123, 123, 123, 1, 123,
  3, 2, 1, 0, 10, 13, 1, 11, 0, 32, 0, 32, 1, 32, 2, 253, 147, 2, 11]);
export const hasRelaxedSimd = () => WebAssembly.validate(RELAXED_PROBE);

// The helpers' wasm build and the numbers their products are taken in (`configureEmbedders`).
let embedSetup = { module: null, bindings: 'pkg', precision: 'f32' };

/// `module` compiled from `bindings`/pocketrag_bg.wasm (pkg, or pkg-relaxed: the same library
/// built with relaxed SIMD), and "f32" or "int8" products. Before the first document.
export function configureEmbedders(setup) {
  embedSetup = setup;
}

function startEmbedders(count) {
  helpers = [];
  for (let i = 0; i < count; i++) {
    const worker = new Worker('embed-worker.js', { type: 'module' });
    worker.postMessage({ ...embedSetup, module: embedSetup.module ?? wasmModule });
    const waiting = new Map();
    let id = 0;
    worker.onmessage = ({ data }) => {
      const { resolve, reject } = waiting.get(data.id);
      waiting.delete(data.id);
      if (data.error) reject(new Error(data.error)); else resolve(data.vectors);
    };
    // Handled here (the file falls back to the engine), so not reported on up to the page.
    worker.onerror = (e) => {
      e.preventDefault?.();
      for (const { reject } of waiting.values()) reject(new Error(e.message || 'the embedding worker stopped'));
      waiting.clear();
    };
    const embed = (texts) => new Promise((resolve, reject) => {
      waiting.set(++id, { resolve, reject });
      worker.postMessage({ id, texts });
    });
    helpers.push({ worker, embed });
  }
}

/// Whether the embedding helpers may still be used: not once they have been stopped.
export const embeddersUsable = () => helpers?.length !== 0;

export function stopEmbedders() {
  for (const h of helpers ?? []) h.worker.terminate();
  helpers = [];
}

/// The vectors of `texts`, in order, one after another; batches go to whichever helper is free.
export async function embedSpread(texts, count, progress) {
  if (helpers === null) startEmbedders(count);
  const parts = [];
  let next = 0;
  let done = 0;
  await Promise.all(helpers.map(async (h) => {
    while (next < texts.length) {
      const start = next;
      next += EMBED_BATCH;
      const batch = texts.slice(start, start + EMBED_BATCH);
      parts[start / EMBED_BATCH] = await h.embed(batch);
      done += batch.length;
      progress(done, texts.length);
    }
  }));
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// ---- the search graph of a saved index, built in a worker of its own: seconds per 10,000
// chunks, during which the engine goes on answering by exact search. One build at a time; after
// a build fails no other is started in this visit (search stays exact, which is slower but right).
let graphWorker = null;
let graphFailed = false;

/// Start building the graph of `saved` unless a build is under way or one has failed; calls
/// `onGraph(graph)` (null: the collection is small enough to scan) or `onError(reason)`.
export function buildGraph(saved, onGraph, onError) {
  if (graphWorker || graphFailed) return;
  graphWorker = new Worker('graph-worker.js', { type: 'module' });
  graphWorker.postMessage({ module: wasmModule });
  const done = () => { graphWorker?.terminate(); graphWorker = null; };
  graphWorker.onmessage = ({ data }) => {
    done();
    if (data.error) {
      graphFailed = true;
      onError(data.error);
    } else {
      onGraph(data.graph ?? null);
    }
  };
  graphWorker.onerror = (e) => {
    e.preventDefault?.();
    done();
    graphFailed = true;
    onError(e.message || 'worker error');
  };
  graphWorker.postMessage({ saved });
}
