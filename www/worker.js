// The worker owns the wasm Engine, so indexing and generation never block the page. It receives
// requests ({type, ...}) and answers with events: download, doc, token, answer, error, ready.
import init, { Engine } from './pkg/pocketrag.js';

const MODELS = {
  embedderWeights: 'models/minilm/model.safetensors',
  embedderTokenizer: 'models/minilm/tokenizer.json',
  embedderConfig: 'models/minilm/config.json',
  generator: 'models/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf',
};

let engine = null;
// Shared with the page when it is cross-origin isolated: the page sets cancel[0] = 1 on Stop,
// and generation (which blocks this worker's event loop) polls it between tokens.
let cancel = null;

const post = (msg) => self.postMessage(msg);

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

/// Bring back what the user had: the saved index if it loads, else re-index the stored documents.
async function restore() {
  const names = await storedDocNames();
  if (names.length === 0) return false;
  const saved = await storedIndex();
  if (saved) {
    try {
      engine.load(saved);
      announceDocuments();
      return true;
    } catch (e) {
      post({ type: 'notice', message: `The stored index could not be used (${e.message}); re-indexing your documents.` });
    }
  }
  for (const name of names) addDocument(name, new Uint8Array(await storedDoc(name)));
  await saveIndex();
  return true;
}

async function fetchAll(urls) {
  // Sizes first, so the progress bar covers all files at once.
  const heads = await Promise.all(urls.map((u) => fetch(u, { method: 'HEAD' })));
  const total = heads.reduce((n, r) => n + Number(r.headers.get('content-length') || 0), 0);
  let loaded = 0;
  return Promise.all(urls.map(async (url) => {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`cannot download ${url}: HTTP ${res.status}`);
    const reader = res.body.getReader();
    const parts = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      loaded += value.length;
      post({ type: 'download', loaded, total });
    }
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { bytes.set(p, at); at += p.length; }
    return bytes;
  }));
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

async function loadSamples() {
  const res = await fetch('samples/index.json');
  if (!res.ok) return;
  const names = await res.json();
  const files = await Promise.all(names.map(async (name) => ({ name, bytes: new Uint8Array(await (await fetch(`samples/${name}`)).arrayBuffer()) })));
  await addAndStore(files);
}

const handlers = {
  async init({ cancelBuffer }) {
    if (cancelBuffer) cancel = new Int32Array(cancelBuffer);
    await init({ module_or_path: 'pkg/pocketrag_bg.wasm' });
    const [w, t, c, g] = await fetchAll([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig, MODELS.generator]);
    engine = new Engine(w, t, c, g);
    post({ type: 'ready', backend: 'cpu' });
    db = await openDb();
    // First visit: nothing stored yet, so start with the sample articles.
    if (!(await restore())) await loadSamples();
    post({ type: 'idle' });
  },
  async add({ files }) {
    await addAndStore(files.map(({ name, bytes }) => ({ name, bytes: new Uint8Array(bytes) })));
    post({ type: 'idle' });
  },
  async remove({ name }) {
    engine.removeDocument(name);
    await deleteDoc(name);
    await saveIndex();
    post({ type: 'removed', name });
  },
  text({ name }) {
    post({ type: 'text', name, text: engine.documentText(name) ?? '' });
  },
  ask({ question, rag, k }) {
    if (cancel) Atomics.store(cancel, 0, 0);
    const answer = engine.answer(question, rag, k, (t) => post({ type: 'token', text: t }),
      () => cancel !== null && Atomics.load(cancel, 0) === 1);
    post({ type: 'answer', answer });
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
