// The indexing queue of the engine's worker: documents are stored, then indexed one at a time,
// with the index saved as it grows, and what a visit had is brought back at the next one
// (`restore`). It uses the engine and the page's channel through `ctx`, which the engine's worker
// (worker.js) fills in at start.
import * as storage from './storage.js';
import { buildGraph, embedSpread, embeddersUsable, extractPdf, stopEmbedders } from './helpers.js';

export const ctx = {
  /// The wasm bindings and the Engine.
  pkg: null,
  engine: null,
  /// Sends an event to the page.
  post: null,
  /// Whether answers run on the GPU (see worker.js): then engine calls must wait their turn,
  /// through `enqueue`.
  onGpu: false,
  enqueue: null,
  /// How many embedding helpers to spread a document over (1: the engine embeds by itself).
  helperCount: 1,
};
const post = (msg) => ctx.post(msg);

// How long the last save took: saving grows with the collection (50 MB of text makes a ~300 MB
// index file), so a batch saves less often as it grows (`addAndStore`).
let saveMs = 0;
async function saveIndex() {
  const t0 = performance.now();
  // Serialised first: a save that fails for memory throws here, before the transaction.
  const bytes = ctx.engine.save();
  await storage.putIndex(bytes);
  saveMs = performance.now() - t0;
  if (ctx.engine.needsGraph()) buildGraph(bytes, adoptGraph, graphFailed);
}

// The graph is adopted when it still fits the collection, and saved with the index; the page
// hears of it once it is saved, so that a reload from then on finds it.
function adoptGraph(graph) {
  if (!graph) return;
  // On the GPU the engine may be borrowed by a pending step: wait for the queue there.
  const adopt = async () => {
    if (!ctx.engine.adoptGraph(graph)) return;
    await saveOrSay();
    post({ type: 'graph', chunks: ctx.engine.documents().reduce((n, d) => n + d.chunks, 0) });
  };
  if (ctx.onGpu) ctx.enqueue(adopt); else adopt();
}

const graphFailed = (why) => post({ type: 'notice', message: `The search graph could not be built (${why}); search scans every chunk instead.` });

export function announceDocuments() {
  for (const d of ctx.engine.documents()) post({ type: 'doc', name: d.name, state: 'indexed', chunks: d.chunks });
}

/// The site's own document collection: an index file made by `pocketrag index` (`make site
/// DOCS=folder`), loaded as it is, so a visitor asks questions without embedding anything.
export async function loadShipped() {
  const res = await fetch('library.idx');
  if (!res.ok) return false;
  ctx.engine.load(new Uint8Array(await res.arrayBuffer()));
  // Shipped documents the user removed stay removed.
  for (const name of (await storage.getState('hidden')) ?? []) ctx.engine.removeDocument(name);
  await storage.setState('shipped', true);
  return true;
}

/// Bring back what the user had: the saved index if it loads, else rebuild it from the site's
/// collection and the user's stored documents. Returns false on a first visit.
export async function restore() {
  const saved = await storage.storedIndex();
  if (!saved) return false;
  try {
    ctx.engine.load(saved);
    announceDocuments();
    // Documents stored after the last save (the tab closed mid-batch) are indexed again.
    const have = new Set(ctx.engine.documents().map((d) => d.name));
    const unsaved = retryOrder((await storage.storedDocNames()).filter((name) => !have.has(name)));
    for (const name of unsaved) await indexStored(name, new Uint8Array(await storage.storedDoc(name)));
    if (unsaved.length) await saveOrSay();
    return true;
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw e;
    post({ type: 'notice', message: `The stored index could not be used (${e.message}); re-indexing your documents.` });
  }
  if (await storage.getState('shipped')) {
    try {
      await loadShipped();
    } catch (e) {
      post({ type: 'notice', message: `The site's document collection could not be loaded: ${e.message}` });
    }
  }
  announceDocuments();
  for (const name of retryOrder(await storage.storedDocNames())) await indexStored(name, new Uint8Array(await storage.storedDoc(name)));
  await saveOrSay();
  return true;
}

let retryFirst = null;
const retryOrder = (names) => [...names].sort((a, b) => (b === retryFirst) - (a === retryFirst));

/// A file that visits have twice stopped while indexing (the tab ran out of memory on it, or was
/// closed) is set aside, not tried again: a file that kills the tab would otherwise kill every
/// visit after it. Once is forgiven: a reload mid-batch is not the file's fault. Its name is
/// given, so the user can add it again.
export async function setAsideInterrupted() {
  const under = await storage.getState('indexing');
  if (!under) return;
  // Retried first, so that its count of tries is not lost to the files after it.
  if (under.tries < 2) { retryFirst = under.name; return; }
  const { name } = under;
  await storage.deleteDoc(name);
  await storage.setState('indexing', null);
  post({ type: 'notice', message: `Visits twice stopped while indexing ${name}; it was set aside. Add it again to retry.` });
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
    let embedOn = ctx.onGpu && gpuEmbedding && ctx.engine.embedderBackend() === 'gpu' ? 'gpu' : ctx.helperCount;
    const progress = (done, total) => post({ type: 'doc', name, state: 'indexing', done, total, workers: embedOn });
    try {
      const pages = ctx.pkg.isPdf(name, bytes) ? await extractPdf(bytes) : null;
      let report = null;
      // Embedded outside the engine's synchronous call: on the GPU by this worker, awaiting each
      // batch's read-back (helpers on the CPU would only be slower), or by the helper workers. If
      // that fails (not the document: it was read first), the engine embeds it itself, on this
      // worker's CPU, and so do the documents after it.
      const elsewhere = embedOn === 'gpu' ? (texts) => ctx.engine.embedAsync(texts, progress)
        : ctx.helperCount > 1 && embeddersUsable() ? (texts) => embedSpread(texts, ctx.helperCount, progress) : null;
      if (elsewhere) {
        const texts = pages ? ctx.engine.preparePdfPages(name, pages) : ctx.engine.prepareDocument(name, bytes);
        const t0 = performance.now();
        try {
          report = ctx.engine.addPrepared(await elsewhere(texts), performance.now() - t0);
        } catch (e) {
          if (embedOn === 'gpu') {
            post({ type: 'notice', message: `Embedding on the GPU failed (${e.message || e}); embedding on the CPU.` });
            gpuEmbedding = false;
          } else {
            post({ type: 'notice', message: `Embedding workers stopped (${e.message}); indexing on one thread.` });
            stopEmbedders();
          }
          embedOn = 1;
        }
      }
      report ??= pages ? ctx.engine.addPdfPages(name, pages, progress) : ctx.engine.addDocument(name, bytes, progress);
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
export const trapMessage = (e) => String(self.pocketragPanic ?? e.message);

/// Index a document whose bytes are stored, noting it as the one under way (see
/// `setAsideInterrupted`). A file that cannot be indexed is not kept, unless an earlier version of
/// it is in the index (that one stays).
async function indexStored(name, bytes) {
  const under = await storage.getState('indexing');
  await storage.setState('indexing', { name, tries: under?.name === name ? under.tries + 1 : 1 });
  const added = await addDocument(name, bytes);
  if (!added && !ctx.engine.documents().some((d) => d.name === name)) await storage.deleteDoc(name);
  await storage.setState('indexing', null);
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

export async function addAndStore(files) {
  const stored = [];
  for (const file of files) {
    try {
      await storage.storeDoc(file.name, file.bytes);
      stored.push(file);
    } catch (e) {
      post({ type: 'doc', name: file.name, state: 'error', reason: notStored(e) });
    }
  }
  let saved = performance.now();
  for (const [i, { name, bytes }] of stored.entries()) {
    // Removed by the user while it waited its turn (requests interleave on the CPU).
    if ((await storage.storedDocCount(name)) === 0) continue;
    try {
      await indexStored(name, bytes);
    } catch (e) {
      if (!(e instanceof WebAssembly.RuntimeError)) throw e;
      // The engine stopped on this file. It is not kept (it would stop the next visit too); the
      // files after it are stored, so the next visit indexes them.
      await storage.deleteDoc(name);
      await storage.setState('indexing', null);
      post({ type: 'doc', name, state: 'error', reason: `the engine stopped on this file (${trapMessage(e)}); it was not kept` });
      for (const rest of stored.slice(i + 1)) {
        post({ type: 'doc', name: rest.name, state: 'error', reason: 'stored; it will be indexed when the engine restarts' });
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
export async function saveOrSay() {
  try {
    await saveIndex();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw e;
    post({ type: 'notice', message: `The index could not be saved (${e.message || e}); your documents are stored and will be indexed again on your next visit.` });
  }
}

