// The worker owns the wasm Engine, so indexing and generation never block the page. It receives
// requests ({type, ...}) and answers with events: download, doc, prefill, token, answer, error,
// ready.
import init, { Engine } from './pkg/pocketrag.js';

const MODELS = {
  embedderWeights: 'models/minilm/model.safetensors',
  embedderTokenizer: 'models/minilm/tokenizer.json',
  embedderConfig: 'models/minilm/config.json',
  generator: 'models/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf',
};

let engine = null;
// Set by a 'stop' message. Answers are generated one step at a time with a turn of the event
// loop in between, so the message gets through on any page, cross-origin isolated or not.
let stopRequested = false;

const post = (msg) => self.postMessage(msg);

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
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}
let db = null;
const storeDoc = (name, bytes) => tx(db, 'docs', 'readwrite', (s) => s.put(bytes, name));
const deleteDoc = (name) => tx(db, 'docs', 'readwrite', (s) => s.delete(name));
const storedDocNames = () => tx(db, 'docs', 'readonly', (s) => s.getAllKeys());
const storedDoc = (name) => tx(db, 'docs', 'readonly', (s) => s.get(name));
const saveIndex = () => tx(db, 'state', 'readwrite', (s) => s.put(engine.save(), 'index'));
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
    return true;
  } catch (e) {
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
  for (const name of await storedDocNames()) addDocument(name, new Uint8Array(await storedDoc(name)));
  await saveIndex();
  return true;
}

// ---- models: kept in the Cache API under their sha256, so a second visit downloads nothing and
// a changed model is fetched again. Every file is checked against the site's manifest before it
// is cached or used: a truncated or damaged download is refused with its name, not fed to wasm.
const MODEL_CACHE = 'pocketrag-models';

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function download(files, onProgress) {
  // Sizes come from the manifest, so the bar covers every file from the start.
  const total = files.reduce((n, f) => n + f.bytes, 0);
  let loaded = 0;
  return Promise.all(files.map(async (f) => {
    const res = await fetch(f.path);
    if (!res.ok) throw new Error(`cannot download ${f.path}: HTTP ${res.status}`);
    const bytes = new Uint8Array(f.bytes);
    const reader = res.body.getReader();
    let at = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > bytes.length) throw new Error(`${f.path} is larger than the manifest says`);
      bytes.set(value, at);
      at += value.length;
      loaded += value.length;
      onProgress(loaded, total);
    }
    if (at !== bytes.length) throw new Error(`${f.path} arrived truncated (${at} of ${bytes.length} bytes); reload to try again`);
    return bytes;
  }));
}

async function loadModels(names) {
  const res = await fetch('models/manifest.json');
  if (!res.ok) throw new Error(`cannot read models/manifest.json: HTTP ${res.status}`);
  const manifest = await res.json();
  const files = names.map((path) => {
    const f = manifest.files[path];
    if (!f) throw new Error(`models/manifest.json does not list ${path}`);
    return { path, ...f, key: `${path}?sha256=${f.sha256}` };
  });
  const cache = self.caches ? await caches.open(MODEL_CACHE) : null;
  const bytes = await Promise.all(files.map(async (f) => {
    const hit = cache && await cache.match(f.key);
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
  }));
  const missing = files.filter((_, i) => bytes[i] === null);
  const fetched = await download(missing, (loaded, total) => post({ type: 'download', loaded, total }));
  for (const [i, f] of files.entries()) {
    if (bytes[i] === null) bytes[i] = fetched[missing.indexOf(f)];
    if (await sha256(bytes[i]) !== f.sha256) {
      if (cache) await cache.delete(f.key);
      throw new Error(`${f.path} is damaged (its sha256 does not match the manifest); reload to download it again`);
    }
    if (cache && missing.includes(f)) {
      await cache.put(f.key, new Response(bytes[i], { headers: { 'content-type': 'application/octet-stream' } }));
    }
  }
  // Entries for models this site no longer serves would otherwise fill the disk.
  if (cache) {
    const keep = new Set(files.map((f) => new URL(f.key, self.location.href).href));
    for (const req of await cache.keys()) if (!keep.has(req.url)) await cache.delete(req);
  }
  return bytes;
}

/// Index one file; returns whether it was indexed.
function addDocument(name, bytes) {
  post({ type: 'doc', name, state: 'indexing' });
  try {
    const report = engine.addDocument(name, bytes, (done, total) => post({ type: 'doc', name, state: 'indexing', done, total }));
    post({ type: 'doc', name, state: 'indexed', chunks: report.chunks });
    return true;
  } catch (e) {
    post({ type: 'doc', name, state: 'error', reason: String(e.message || e) });
    return false;
  }
}

/// Index files the user gave us and keep them.
async function addAndStore(files) {
  for (const { name, bytes } of files) {
    if (addDocument(name, bytes)) await storeDoc(name, bytes);
  }
  await saveIndex();
}

const handlers = {
  async init() {
    await init({ module_or_path: 'pkg/pocketrag_bg.wasm' });
    const [w, t, c, g] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig, MODELS.generator]);
    engine = new Engine(w, t, c, g);
    post({ type: 'ready', backend: 'cpu' });
    db = await openDb();
    // First visit: nothing stored yet, so start with the site's collection.
    if (!(await restore())) {
      if (await loadShipped()) announceDocuments();
      await saveIndex();
    }
    post({ type: 'idle' });
  },
  async add({ files }) {
    await addAndStore(files.map(({ name, bytes }) => ({ name, bytes: new Uint8Array(bytes) })));
    post({ type: 'idle' });
  },
  async remove({ name }) {
    engine.removeDocument(name);
    if ((await storedDoc(name)) === undefined) {
      await setState('hidden', [...((await getState('hidden')) ?? []), name]);
    }
    await deleteDoc(name);
    await saveIndex();
    post({ type: 'removed', name });
  },
  text({ name }) {
    post({ type: 'text', name, text: engine.documentText(name) ?? '' });
  },
  async ask({ question, rag, k }) {
    stopRequested = false;
    engine.beginAnswer(question, rag, k);
    let cancelled = false;
    for (;;) {
      if (stopRequested && !cancelled) {
        engine.cancelAnswer();
        cancelled = true;
      }
      const step = engine.step();
      if (step.type === 'done') break;
      if (step.type === 'prefill') post({ type: 'prefill', done: step.done, total: step.total });
      else if (step.text) post({ type: 'token', text: step.text });
      await nextTask();
    }
    post({ type: 'answer', answer: engine.finishAnswer() });
  },
  stop() {
    stopRequested = true;
  },
};

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    await handlers[msg.type](msg);
  } catch (e) {
    post({ type: 'error', during: msg.type, message: String(e.message || e) });
  }
};
