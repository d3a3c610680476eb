// The worker owns the wasm Engine, so indexing and generation never block the page. It receives
// requests ({type, ...}) and answers with events; every message between the page, this worker
// and its helpers, with its payload, is listed in docs/WORKERS.md.
import { MODELS, loadModels } from './models.js';

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

// ---- storage: IndexedDB keeps the original bytes of every document and the saved index. The
// documents are the source of truth: an index that cannot be loaded (another version, damaged)
// is rebuilt from them, so nothing the user added is lost.
const DB = 'pocketrag';
function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore('docs');
      req.result.createObjectStore('state');
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
function tx(db, store, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const result = fn(t.objectStore(store));
    t.oncomplete = () => resolve(result && 'result' in result ? result.result : undefined);
    // A failed request says why on itself; the transaction's own error is set only at its abort
    // (a full quota shows up there, at commit).
    t.onerror = (e) => reject(e.target?.error ?? t.error);
    t.onabort = () => reject(t.error ?? new Error('the storage transaction was aborted'));
  });
}
let db = null;
const storeDoc = (name, bytes) => tx(db, 'docs', 'readwrite', (s) => s.put(bytes, name));
const deleteDoc = (name) => tx(db, 'docs', 'readwrite', (s) => s.delete(name));
const storedDocNames = () => tx(db, 'docs', 'readonly', (s) => s.getAllKeys());
const storedDoc = (name) => tx(db, 'docs', 'readonly', (s) => s.get(name));
const storedDocCount = (name) => tx(db, 'docs', 'readonly', (s) => s.count(name));
// How long the last save took: saving grows with the collection (50 MB of text makes a ~300 MB
// index file), so a batch saves less often as it grows (`addAndStore`).
let saveMs = 0;
async function saveIndex() {
  const t0 = performance.now();
  // Serialised first: a save that fails for memory throws here, before the transaction.
  const bytes = engine.save();
  await tx(db, 'state', 'readwrite', (s) => s.put(bytes, 'index'));
  saveMs = performance.now() - t0;
  if (engine.needsGraph()) buildGraph(bytes);
}

// ---- the search graph: built from a save by graph-worker.js when the collection has grown past
// the size where it pays, then adopted and saved with the index; until then, and for chunks added
// since, search scans the vectors exactly. One build at a time; a build that fails is not retried
// in this visit (search stays exact, which is slower but right).
let graphWorker = null;
let graphFailed = false;
function buildGraph(saved) {
  if (graphWorker || graphFailed) return;
  graphWorker = new Worker('graph-worker.js', { type: 'module' });
  graphWorker.postMessage({ module: wasmModule });
  const done = () => { graphWorker?.terminate(); graphWorker = null; };
  graphWorker.onmessage = ({ data }) => {
    done();
    if (data.error) {
      graphFailed = true;
      post({ type: 'notice', message: `The search graph could not be built (${data.error}); search scans every chunk instead.` });
    } else if (data.graph) {
      // On the GPU the engine may be borrowed by a pending step: wait for the queue there.
      const adopt = async () => {
        if (!engine.adoptGraph(data.graph)) return;
        post({ type: 'graph', chunks: engine.documents().reduce((n, d) => n + d.chunks, 0) });
        await saveOrSay();
      };
      if (onGpu) queue = queue.then(adopt); else adopt();
    }
  };
  graphWorker.onerror = (e) => {
    e.preventDefault?.();
    done();
    graphFailed = true;
    post({ type: 'notice', message: `The search graph could not be built (${e.message || 'worker error'}); search scans every chunk instead.` });
  };
  graphWorker.postMessage({ saved });
}
const storedIndex = () => tx(db, 'state', 'readonly', (s) => s.get('index'));

function announceDocuments() {
  for (const d of engine.documents()) post({ type: 'doc', name: d.name, state: 'indexed', chunks: d.chunks });
}

const getState = (key) => tx(db, 'state', 'readonly', (s) => s.get(key));
const setState = (key, value) => tx(db, 'state', 'readwrite', (s) => s.put(value, key));

/// The site's own document collection: an index file made by `pocketrag index` (`make site
/// DOCS=folder`), loaded as it is, so a visitor asks questions without embedding anything.
async function loadShipped() {
  const res = await fetch('library.idx');
  if (!res.ok) return false;
  engine.load(new Uint8Array(await res.arrayBuffer()));
  // Shipped documents the user removed stay removed.
  for (const name of (await getState('hidden')) ?? []) engine.removeDocument(name);
  await setState('shipped', true);
  return true;
}

/// Bring back what the user had: the saved index if it loads, else rebuild it from the site's
/// collection and the user's stored documents. Returns false on a first visit.
async function restore() {
  const saved = await storedIndex();
  if (!saved) return false;
  try {
    engine.load(saved);
    announceDocuments();
    // Documents stored after the last save (the tab closed mid-batch) are indexed again.
    const have = new Set(engine.documents().map((d) => d.name));
    const unsaved = retryOrder((await storedDocNames()).filter((name) => !have.has(name)));
    for (const name of unsaved) await indexStored(name, new Uint8Array(await storedDoc(name)));
    if (unsaved.length) await saveOrSay();
    return true;
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw e;
    post({ type: 'notice', message: `The stored index could not be used (${e.message}); re-indexing your documents.` });
  }
  if (await getState('shipped')) {
    try {
      await loadShipped();
    } catch (e) {
      post({ type: 'notice', message: `The site's document collection could not be loaded: ${e.message}` });
    }
  }
  announceDocuments();
  for (const name of retryOrder(await storedDocNames())) await indexStored(name, new Uint8Array(await storedDoc(name)));
  await saveOrSay();
  return true;
}

let retryFirst = null;
const retryOrder = (names) => [...names].sort((a, b) => (b === retryFirst) - (a === retryFirst));

/// A file that visits have twice stopped while indexing (the tab ran out of memory on it, or was
/// closed) is set aside, not tried again: a file that kills the tab would otherwise kill every
/// visit after it. Once is forgiven: a reload mid-batch is not the file's fault. Its name is
/// given, so the user can add it again.
async function setAsideInterrupted() {
  const under = await getState('indexing');
  if (!under) return;
  // Retried first, so that its count of tries is not lost to the files after it.
  if (under.tries < 2) { retryFirst = under.name; return; }
  const { name } = under;
  await deleteDoc(name);
  await setState('indexing', null);
  post({ type: 'notice', message: `Visits twice stopped while indexing ${name}; it was set aside. Add it again to retry.` });
}

// ---- PDF text comes from a separate worker (see parse-worker.js), started when first needed and
// replaced after a crash.
let parser = null;
let parseId = 0;
const parsing = new Map();
function extractPdf(bytes) {
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

// ---- embedding spread over helper workers (embed-worker.js), one per core the page may use
// (?threads=N; 1 means the engine's worker embeds by itself). Started at the first document that
// needs embedding; if they cannot start, indexing goes on without them.
let helperCount = 1;
let helpers = null;
const EMBED_BATCH = 16;

function startHelpers() {
  helpers = [];
  for (let i = 0; i < helperCount; i++) {
    const worker = new Worker('embed-worker.js', { type: 'module' });
    worker.postMessage({ module: wasmModule });
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

function stopHelpers() {
  for (const h of helpers ?? []) h.worker.terminate();
  helpers = [];
}

/// The vectors of `texts`, in order, one after another; batches go to whichever helper is free.
async function embedSpread(texts, progress) {
  if (helpers === null) startHelpers();
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

// Documents are indexed one at a time even when requests overlap: the engine holds one prepared
// document while its vectors are computed elsewhere.
let indexing = Promise.resolve();
function serially(fn) {
  const run = indexing.then(fn);
  indexing = run.catch(() => {});
  return run;
}

// Whether documents may still be embedded on the GPU (when the embedder is there): false once
// it has failed, after which the CPU embeds.
let gpuEmbedding = true;

/// Index one file; returns whether it was indexed.
function addDocument(name, bytes) {
  return serially(async () => {
    post({ type: 'doc', name, state: 'indexing' });
    // Decided here, not in `progress`: that runs inside engine calls, where the engine is
    // borrowed and may not be called again.
    let embedOn = onGpu && gpuEmbedding && engine.embedderBackend() === 'gpu' ? 'gpu' : helperCount;
    const progress = (done, total) => post({ type: 'doc', name, state: 'indexing', done, total, workers: embedOn });
    try {
      const pages = pkg.isPdf(name, bytes) ? await extractPdf(bytes) : null;
      let report = null;
      // Embedded outside the engine's synchronous call: on the GPU by this worker, awaiting each
      // batch's read-back (helpers on the CPU would only be slower), or by the helper workers. If
      // that fails (not the document: it was read first), the engine embeds it itself, on this
      // worker's CPU, and so do the documents after it.
      const elsewhere = embedOn === 'gpu' ? (texts) => engine.embedAsync(texts, progress)
        : helperCount > 1 && helpers?.length !== 0 ? (texts) => embedSpread(texts, progress) : null;
      if (elsewhere) {
        const texts = pages ? engine.preparePdfPages(name, pages) : engine.prepareDocument(name, bytes);
        const t0 = performance.now();
        try {
          report = engine.addPrepared(await elsewhere(texts), performance.now() - t0);
        } catch (e) {
          if (embedOn === 'gpu') {
            post({ type: 'notice', message: `Embedding on the GPU failed (${e.message || e}); embedding on the CPU.` });
            gpuEmbedding = false;
          } else {
            post({ type: 'notice', message: `Embedding workers stopped (${e.message}); indexing on one thread.` });
            stopHelpers();
          }
          embedOn = 1;
        }
      }
      report ??= pages ? engine.addPdfPages(name, pages, progress) : engine.addDocument(name, bytes, progress);
      post({ type: 'doc', name, state: 'indexed', chunks: report.chunks });
      return true;
    } catch (e) {
      // The engine is dead: the batch must stop here (`addAndStore`).
      if (e instanceof WebAssembly.RuntimeError) throw e;
      post({ type: 'doc', name, state: 'error', reason: String(e.message || e) });
      return false;
    }
  });
}

// What a trap (a panic, or running out of memory) said: the panic hook (src/wasm.rs) leaves the
// message here, since the dead instance cannot be asked.
const trapMessage = (e) => String(self.pocketragPanic ?? e.message);

/// Index a document whose bytes are stored, noting it as the one under way (see
/// `setAsideInterrupted`). A file that cannot be indexed is not kept, unless an earlier version of
/// it is in the index (that one stays).
async function indexStored(name, bytes) {
  const under = await getState('indexing');
  await setState('indexing', { name, tries: under?.name === name ? under.tries + 1 : 1 });
  const added = await addDocument(name, bytes);
  if (!added && !engine.documents().some((d) => d.name === name)) await deleteDoc(name);
  await setState('indexing', null);
  return added;
}

const notStored = (e) => (e?.name === 'QuotaExceededError'
  ? "not added: this browser's storage for the page is full; remove documents you no longer need, then add it again"
  : `not added: it could not be stored (${e?.message || e})`);

// A batch is stored before any of it is indexed: a reload or a closed tab mid-batch loses none
// of it, since the next visit indexes the stored documents its saved index lacks (`restore`).
// A file that cannot be stored (a full quota) is refused by name, and what is stored stays.
//
// Saving serialises the whole index, so during a long batch it happens every few seconds rather
// than after every file, and no sooner than 20 times the last save's duration, which keeps saving
// under ~5 % of the work however large the collection grows.
const SAVE_EVERY_MS = 5000;

async function addAndStore(files) {
  const stored = [];
  for (const file of files) {
    try {
      await storeDoc(file.name, file.bytes);
      stored.push(file);
    } catch (e) {
      post({ type: 'doc', name: file.name, state: 'error', reason: notStored(e) });
    }
  }
  let saved = performance.now();
  for (const [i, { name, bytes }] of stored.entries()) {
    // Removed by the user while it waited its turn (requests interleave on the CPU).
    if ((await storedDocCount(name)) === 0) continue;
    try {
      await indexStored(name, bytes);
    } catch (e) {
      if (!(e instanceof WebAssembly.RuntimeError)) throw e;
      // The engine stopped on this file. It is not kept (it would stop the next visit too); the
      // files after it are stored, so the next visit indexes them.
      await deleteDoc(name);
      await setState('indexing', null);
      post({ type: 'doc', name, state: 'error', reason: `the engine stopped on this file (${trapMessage(e)}); it was not kept` });
      for (const rest of stored.slice(i + 1)) {
        post({ type: 'doc', name: rest.name, state: 'error', reason: 'stored; it will be indexed when the page is reloaded' });
      }
      throw e;
    }
    if (performance.now() - saved > Math.max(SAVE_EVERY_MS, 20 * saveMs)) {
      await saveOrSay();
      saved = performance.now();
    }
  }
  await saveOrSay();
}

/// A save that fails (no memory for the file) does not stop a batch: the files are stored, and
/// those the saved index lacks are indexed again at the next visit.
async function saveOrSay() {
  try {
    await saveIndex();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw e;
    post({ type: 'notice', message: `The index could not be saved (${e.message || e}); your documents are stored and will be indexed again on your next visit.` });
  }
}

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
  async init({ densePrefill, threads, answerThreads, tuned, backend, graphFrom }) {
    helperCount = threads;
    // Compiled once here and handed to the helper workers: V8 shares the compiled (and, once hot,
    // optimised) code between workers that share a module. Fresh workers compiling their own copy
    // ran embedding ~1.7x slower (README, "In the browser").
    wasmModule = await compileWasm('pkg/pocketrag_bg.wasm');
    const threadsNote = await loadBindings(answerThreads);
    const [w, t, c, g] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig, MODELS.generator],
      (loaded, total) => post({ type: 'download', loaded, total }), { prune: true });
    engine = new pkg.Engine(w, t, c, g, densePrefill);
    // wasm32 memory ends at 4 GiB; stopping short of it turns running out into a per-file
    // message (see src/memory.rs) instead of a dead instance.
    engine.setMemoryLimit(MEMORY_LIMIT);
    const adapter = await loadAdapter(tuned, (loaded, total) => post({ type: 'download', loaded, total }));
    const backendNote = await chooseBackend(backend, w);
    post({
      type: 'ready', backend: engine.backend() === 'gpu' ? 'webgpu' : 'cpu', backendNote,
      embedder: engine.embedderBackend() === 'gpu' ? 'webgpu' : 'cpu',
      densePrefill, adapter, threads: pkg.threadCount(), threadsNote,
    });
    db = await openDb();
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
    if ((await storedDocCount(name)) === 0) {
      await setState('hidden', [...((await getState('hidden')) ?? []), name]);
    }
    await deleteDoc(name);
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
    // A trap (a panic or running out of memory) leaves the wasm instance unusable.
    const message = e instanceof WebAssembly.RuntimeError
      ? `the engine stopped unexpectedly (${trapMessage(e)}); reload the page: your stored documents are kept`
      : String(e.message || e);
    post({ type: 'error', during: msg.type, message });
  }
}
