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

function addDocument(name, bytes) {
  post({ type: 'doc', name, state: 'indexing' });
  try {
    const report = engine.addDocument(name, bytes, (done, total) => post({ type: 'doc', name, state: 'indexing', done, total }));
    post({ type: 'doc', name, state: 'indexed', chunks: report.chunks });
  } catch (e) {
    post({ type: 'doc', name, state: 'error', reason: String(e.message || e) });
  }
}

async function loadSamples() {
  const res = await fetch('samples/index.json');
  if (!res.ok) return;
  const names = await res.json();
  const files = await Promise.all(names.map(async (n) => [n, new Uint8Array(await (await fetch(`samples/${n}`)).arrayBuffer())]));
  for (const [name, bytes] of files) addDocument(name, bytes);
}

const handlers = {
  async init({ cancelBuffer }) {
    if (cancelBuffer) cancel = new Int32Array(cancelBuffer);
    await init({ module_or_path: 'pkg/pocketrag_bg.wasm' });
    const [w, t, c, g] = await fetchAll([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig, MODELS.generator]);
    engine = new Engine(w, t, c, g);
    post({ type: 'ready', backend: 'cpu' });
    if (engine.documents().length === 0) await loadSamples();
    post({ type: 'idle' });
  },
  add({ files }) {
    for (const { name, bytes } of files) addDocument(name, new Uint8Array(bytes));
    post({ type: 'idle' });
  },
  remove({ name }) {
    engine.removeDocument(name);
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
