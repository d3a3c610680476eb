// The page: renders what the worker reports. Everything that comes from a document or the model
// is set with textContent, never as HTML.
const $ = (id) => document.getElementById(id);
// The engine's worker; replaced by a fresh one if its wasm instance traps (`restartEngine`).
let worker = null;
const params = new URLSearchParams(location.search);
let busy = false;
let lastAnswer = null;

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function setStatus(text) { $('status').textContent = text; }

/// Something the user should know that outlasts the status line (a save that failed, a worker
/// that stopped): kept in a list until dismissed. The same notice twice is shown once.
function addNotice(text) {
  const list = $('notices');
  if ([...list.children].some((li) => li.dataset.text === text)) return;
  const li = el('li', { 'data-testid': 'notice', 'data-text': text });
  const dismiss = el('button', { type: 'button' }, 'dismiss');
  dismiss.addEventListener('click', () => li.remove());
  li.append(el('span', {}, text), ' ', dismiss);
  list.append(li);
}

function setBusy(b) {
  busy = b;
  $('ask-button').disabled = b;
  $('compare-button').disabled = b;
  $('model').disabled = b || !adapterLoaded;
  $('stop-button').disabled = !b;
}
let adapterLoaded = false;

// ---- documents ----
function docRow(name) {
  let row = [...$('doc-list').children].find((li) => li.dataset.doc === name);
  if (!row) {
    row = el('li', { 'data-testid': 'doc-status', 'data-doc': name });
    row.append(el('span', { class: 'name' }, name), el('span', { class: 'state' }));
    const remove = el('button', { type: 'button', 'aria-label': `Remove ${name}` }, '✕');
    remove.addEventListener('click', () => worker.postMessage({ type: 'remove', name }));
    row.append(remove);
    $('doc-list').append(row);
  }
  return row;
}

function onDoc({ name, state, done, total, reason, chunks, workers }) {
  const row = docRow(name);
  row.dataset.state = state;
  const label = state === 'indexing' ? (total ? `indexing ${done}/${total} chunks${workers === 'gpu' ? ' on the GPU' : workers > 1 ? ` on ${workers} workers` : ''}${timeLeft(row, done, total)}` : 'indexing…')
    : state === 'indexed' ? `indexed (${chunks} chunks)` : `error: ${reason}`;
  row.querySelector('.state').textContent = label;
  if (state !== 'indexing') delete row.started;
}

/// ", about 4 min left" from the document's embedding rate so far (a long document on a CPU
/// embeds at a few chunks per second), once there is enough of it to go by.
function timeLeft(row, done, total) {
  const now = performance.now();
  if (!row.started || done < (row.startDone ?? 0)) Object.assign(row, { started: now, startDone: done });
  const seconds = (now - row.started) / 1000;
  const rate = (done - row.startDone) / seconds;
  if (seconds < 5 || !(rate > 0) || done >= total) return '';
  const left = (total - done) / rate;
  return left < 90 ? `, about ${Math.ceil(left / 10) * 10} s left` : `, about ${Math.round(left / 60)} min left`;
}

// The engine refuses bigger files anyway (src/ingest.rs); refusing here saves reading them.
const MAX_FILE_BYTES = 64 * 1024 * 1024;
// What a folder contributes (as the CLI's `index` does); a file chosen by itself is always tried.
const DOCUMENT_EXTENSIONS = /\.(pdf|md|markdown|html?|xhtml|txt|text|rst)$/i;
const hidden = (path) => path.split('/').some((part) => part.startsWith('.'));

/// `entries` are {file, name}; `name` is the path inside a dropped or chosen folder.
async function addFiles(entries) {
  const files = [];
  for (const { file, name } of entries) {
    if (file.size > MAX_FILE_BYTES) {
      onDoc({ name, state: 'error', reason: `file is ${Math.round(file.size / 2 ** 20)} MB; the limit is 64 MB` });
      continue;
    }
    files.push({ name, bytes: await file.arrayBuffer() });
  }
  for (const f of files) onDoc({ name: f.name, state: 'indexing' });
  if (files.length) worker.postMessage({ type: 'add', files }, files.map((f) => f.bytes));
}

/// From a folder's files, the documents pocketrag reads; the others are named to the user, so a
/// folder that looks indexed is not silently missing files. Hidden files are skipped quietly.
function documentsOf(entries) {
  const visible = entries.filter(({ name }) => !hidden(name));
  showLeftOut(visible.filter(({ name }) => !DOCUMENT_EXTENSIONS.test(name)).map(({ name }) => name));
  return visible.filter(({ name }) => DOCUMENT_EXTENSIONS.test(name));
}

function showLeftOut(names) {
  const box = $('left-out');
  box.hidden = names.length === 0;
  if (box.hidden) return;
  const shown = names.slice(0, 10).map((n) => {
    const ext = /\.[^./]+$/.exec(n);
    return ext ? `${n} (${ext[0]})` : `${n} (no extension)`;
  });
  const more = names.length > 10 ? `, and ${names.length - 10} more` : '';
  const s = names.length === 1 ? '' : 's';
  box.textContent = `Left out ${names.length} file${s} of a type pocketrag does not read: ${shown.join(', ')}${more}`;
}

/// Every file under a dropped folder entry (FileSystemDirectoryEntry reads in batches).
async function walk(entry) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ file, name: entry.fullPath.replace(/^\//, '') }];
  }
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) return out;
    for (const child of batch) if (!child.name.startsWith('.')) out.push(...await walk(child));
  }
}

// Copy the FileList first: clearing the input empties the live list while files are being read.
$('file-input').addEventListener('change', (e) => {
  addFiles([...e.target.files].map((file) => ({ file, name: file.name })));
  e.target.value = '';
});
$('folder-input').addEventListener('change', (e) => {
  addFiles(documentsOf([...e.target.files].map((file) => ({ file, name: file.webkitRelativePath || file.name }))));
  e.target.value = '';
});
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  // Entries must be taken while the event lasts; folders are walked afterwards.
  const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
  if (entries.length === 0) {
    addFiles([...e.dataTransfer.files].map((file) => ({ file, name: file.name })));
    return;
  }
  // A file dropped by itself is always tried (the engine says why it cannot read one); files
  // found inside dropped folders are filtered by type, and the ones left out are listed.
  const picked = [];
  const inFolders = [];
  for (const entry of entries) {
    if (entry.isFile) picked.push(...await walk(entry));
    else inFolders.push(...await walk(entry));
  }
  addFiles([...picked, ...documentsOf(inFolders)]);
});

// ---- asking ----
$('ask-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const question = $('question').value.trim();
  if (!question || busy) return;
  setBusy(true);
  $('answer').textContent = '';
  $('answer').dataset.state = 'streaming';
  clearAnswer();
  $('compare').hidden = true;
  worker.postMessage({ type: 'ask', question, mode: $('mode').value, k: 4 });
});

function clearAnswer() {
  $('citations').replaceChildren();
  $('closest').hidden = true;
  $('closest-list').replaceChildren();
  $('viewer').hidden = true;
}

$('model').addEventListener('change', () => worker.postMessage({ type: 'model', tuned: $('model').value === 'tuned' }));

// ---- compare: one question, base and tuned model, without and with retrieval ----
const CONFIGS = {
  quote: 'Quoted from your documents (no model)',
  'base-norag': 'Base model, no retrieval',
  'base-rag': 'Base model + retrieval',
  'tuned-norag': 'Tuned model, no retrieval',
  'tuned-rag': 'Tuned model + retrieval',
};
const card = (config) => $('compare').querySelector(`[data-config="${config}"]`);

$('compare-button').addEventListener('click', () => {
  const question = $('question').value.trim();
  if (!question || busy || !adapterLoaded) return;
  setBusy(true);
  $('answer').textContent = '';
  $('answer').dataset.state = 'idle';
  clearAnswer();
  const grid = $('compare');
  grid.replaceChildren();
  for (const [config, title] of Object.entries(CONFIGS)) {
    const c = el('article', { class: 'card', 'data-testid': 'compare-card', 'data-config': config, 'data-state': 'waiting' });
    c.append(el('h4', {}, title), el('p', { class: 'card-answer' }), el('ol', { class: 'card-citations' }),
      el('p', { class: 'card-stats' }, 'waiting…'));
    grid.append(c);
  }
  grid.hidden = false;
  worker.postMessage({ type: 'compare', question, k: 4, tuned: $('model').value === 'tuned' });
});

function onCompareToken({ config, text }) {
  const c = card(config);
  c.dataset.state = 'streaming';
  c.querySelector('.card-stats').textContent = 'answering…';
  c.querySelector('.card-answer').textContent += text;
}

function onCompareAnswer({ config, answer: a }) {
  const c = card(config);
  c.dataset.state = 'done';
  renderAnswerText(c.querySelector('.card-answer'), a);
  const list = c.querySelector('.card-citations');
  list.replaceChildren();
  for (const cit of a.citations) {
    const b = el('button', { type: 'button', 'data-testid': 'compare-citation', 'data-doc': cit.doc },
      `[${cit.n}] ${cit.doc}${cit.by === 'match' ? ' (matched by the check)' : ''}`);
    b.addEventListener('click', () => showSource(cit));
    const li = el('li');
    li.append(b);
    list.append(li);
  }
  const t = a.timings_ms;
  c.querySelector('.card-stats').textContent = a.abstained ? 'the documents do not answer this; the model was not asked'
    : a.mode === 'quote' ? `quoted; support ${a.support.toFixed(2)}`
    : `${a.prompt_tokens} prompt tokens, ${a.generated_tokens} generated, ${((t.prefill + t.decode) / 1000).toFixed(1)} s` +
      (a.stop === 'cancelled' ? ' (stopped)' : '');
}

function stop() { if (busy) worker.postMessage({ type: 'stop' }); }
$('stop-button').addEventListener('click', stop);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') stop(); });

/// The answer's text; in free mode each written sentence carries its support mark (the source
/// that holds it, or "not found in your documents").
function renderAnswerText(box, a) {
  box.replaceChildren();
  box.dataset.abstained = String(a.abstained);
  if (!a.sentences.length) {
    box.textContent = a.answer;
    return;
  }
  let at = 0;
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const bytes = enc.encode(a.answer);
  const part = (s, e) => dec.decode(bytes.subarray(s, e));
  for (const s of a.sentences) {
    if (s.start > at) box.append(document.createTextNode(part(at, s.start)));
    const supported = s.cited !== null;
    box.append(el('span', { class: 'claim', 'data-testid': 'claim', 'data-supported': supported ? 'yes' : 'no' }, s.text),
      el('span', { class: 'claim-mark' }, supported ? ` (supported by [${s.cited}])` : ' (not found in your documents)'));
    at = s.end;
  }
  if (at < bytes.length) box.append(document.createTextNode(part(at, bytes.length)));
}

function onAnswer(a) {
  lastAnswer = a;
  renderAnswerText($('answer'), a);
  $('answer').dataset.state = 'done';
  $('answer').dataset.stop = a.stop ?? (a.abstained ? 'abstained' : 'quoted');
  const list = $('citations');
  list.replaceChildren();
  for (const c of a.citations) {
    const li = el('li');
    const b = el('button', { type: 'button', 'data-testid': 'citation', 'data-doc': c.doc, 'data-n': String(c.n) },
      `[${c.n}] ${c.doc}${c.heading ? ' — ' + c.heading : ''}${c.page ? `, page ${c.page}` : ''}${c.by === 'match' ? ' (matched by the check)' : ''}`);
    b.addEventListener('click', () => showSource(c));
    li.append(b, el('q', { 'data-testid': 'quote' }, c.quote));
    list.append(li);
  }
  // An abstained answer lists what came closest, so the user can judge for themselves.
  if (a.abstained && a.sources.length) {
    const closest = $('closest-list');
    for (const s of a.sources) {
      const li = el('li');
      const b = el('button', { type: 'button', 'data-testid': 'closest-passage', 'data-doc': s.doc },
        `${s.doc}${s.heading ? ' — ' + s.heading : ''}${s.page ? `, page ${s.page}` : ''} (cosine ${s.score.toFixed(2)})`);
      b.addEventListener('click', () => showSource(s));
      li.append(b, el('q', {}, s.text.length > 300 ? s.text.slice(0, 300) + '…' : s.text));
      closest.append(li);
    }
    $('closest').hidden = false;
  }
  renderHow(a);
  setStatus('ready');
  setBusy(false);
}

let pendingSource = null;
function showSource(source) {
  pendingSource = source;
  worker.postMessage({ type: 'text', name: source.doc });
}

function onText({ name, text }) {
  const s = pendingSource;
  if (!s || s.doc !== name) return;
  $('viewer-title').textContent = name + (s.page ? `, page ${s.page}` : '');
  // The engine's offsets count UTF-8 bytes; JavaScript strings count UTF-16 units.
  const bytes = new TextEncoder().encode(text);
  const dec = new TextDecoder();
  const before = dec.decode(bytes.subarray(0, s.start));
  const passage = dec.decode(bytes.subarray(s.start, s.end));
  const after = dec.decode(bytes.subarray(s.end));
  const mark = el('mark', { 'data-testid': 'highlight' }, passage);
  $('viewer-text').replaceChildren(document.createTextNode(before), mark, document.createTextNode(after));
  $('viewer').hidden = false;
  mark.scrollIntoView({ block: 'center' });
}

function renderHow(a) {
  const body = $('how-body');
  body.replaceChildren();
  const t = a.timings_ms;
  const tps = t.decode > 0 ? (a.generated_tokens / (t.decode / 1000)).toFixed(1) : '–';
  const support = a.support == null ? '' : ` The support gate gave ${a.support.toFixed(2)}.`;
  if (a.mode === 'quote') {
    const read = a.evidence.find((e) => e.features.reading !== undefined);
    const model = read
      ? ` The language model wrote nothing: it only read the best sentence for the check (the question's least supported word changed by ${read.features.reading.toFixed(2)} in log-probability).`
      : ' No language model was run.';
    body.append(el('p', {}, a.abstained
      ? `No sentence of the retrieved passages answers the question well enough, so the answer says so.${model}${support}`
      : `Answer quoted from your documents: the best-scored sentences below, word for word.${model}${support}`));
  } else {
    body.append(el('p', {}, `Model: ${a.tuned ? 'SmolLM2-135M-Instruct with our LoRA fine-tune' : 'SmolLM2-135M-Instruct (base)'}.`));
    body.append(el('p', {}, a.abstained
      ? 'No passage was relevant enough (best cosine below the threshold), so the model was not asked.'
      : `${a.prompt_tokens} prompt tokens, ${a.generated_tokens} generated${a.stop === 'repeated' ? ' (stopped when it began to repeat itself)' : a.stop === 'sentences' ? ' (stopped at three sentences)' : ''}. `));
  }
  const index = a.index === 'hnsw' ? 'the HNSW graph' : 'an exact scan of every vector';
  body.append(el('p', { 'data-testid': 'timings' }, `Embed ${t.embed.toFixed(0)} ms · search ${t.search.toFixed(1)} ms (${index}) · evidence ${(t.evidence ?? 0).toFixed(0)} ms` +
    (a.mode === 'quote' ? '.' : ` · prefill ${t.prefill.toFixed(0)} ms · decode ${t.decode.toFixed(0)} ms (${tps} tok/s).`)));
  if (a.evidence.length) {
    const quoted = (e) => a.citations.some((c) => c.doc === e.doc && c.start <= e.start && e.end <= c.end);
    const table = el('table', { 'data-testid': 'evidence' });
    const head = el('tr');
    for (const h of ['source', 'sentence', 'score', 'meaning (cosine)', 'question words', 'with neighbours', 'model reading', 'quoted']) head.append(el('th', {}, h));
    table.append(head);
    for (const e of a.evidence) {
      const row = el('tr', { 'data-chosen': quoted(e) ? 'yes' : 'no' });
      const f = e.features;
      row.append(el('td', {}, `[${e.source + 1}]`), el('td', {}, e.text), el('td', {}, e.score.toFixed(3)),
        el('td', {}, f.similarity.toFixed(2)), el('td', {}, f.overlap.toFixed(2)), el('td', {}, f.context_overlap.toFixed(2)),
        el('td', { title: 'the lowest change in log-probability the sentence brings to a word of the question (best sentence only)' },
          f.reading === undefined ? '' : f.reading.toFixed(2)),
        el('td', {}, quoted(e) ? 'yes' : ''));
      table.append(row);
    }
    body.append(el('h4', {}, 'Evidence: sentences of the retrieved passages, scored as answers'), table);
  }
  if (a.sentences.length) {
    const table = el('table', { 'data-testid': 'support' });
    const head = el('tr');
    for (const h of ['written sentence', 'closest source sentence (cosine)', 'its words found', 'verdict']) head.append(el('th', {}, h));
    table.append(head);
    for (const s of a.sentences) {
      const row = el('tr');
      row.append(el('td', {}, s.text), el('td', {}, s.similarity.toFixed(2)), el('td', {}, s.covered.toFixed(2)),
        el('td', {}, s.cited === null ? 'not found in your documents' : `supported by [${s.cited}]`));
      table.append(row);
    }
    body.append(el('h4', {}, 'Support check of the written answer'), table);
  }
  if (a.sources.length) {
    const table = el('table');
    const head = el('tr');
    for (const h of ['#', 'document', 'vector (cosine)', 'keyword (BM25)', 'fused (RRF)', 'passage']) head.append(el('th', {}, h));
    table.append(head);
    a.sources.forEach((s, i) => {
      const row = el('tr');
      row.append(el('td', {}, String(i + 1)), el('td', {}, s.doc), el('td', {}, s.score.toFixed(3)),
        el('td', {}, s.keyword_score == null ? '–' : s.keyword_score.toFixed(2)), el('td', {}, s.fused_score.toFixed(4)),
        el('td', {}, s.text));
      table.append(row);
    });
    body.append(el('h4', {}, 'Retrieved passages'), table);
  }
  if (a.prompt) body.append(el('h4', {}, 'Exact prompt sent to the model'), el('pre', {}, a.prompt));
}

// ---- worker events ----
function onWorkerMessage({ data: m }) {
  switch (m.type) {
    case 'download': {
      const p = $('download');
      p.hidden = m.loaded >= m.total;
      p.max = m.total || 1;
      p.value = m.loaded;
      setStatus(`downloading models: ${(m.loaded / 1e6).toFixed(1)} / ${(m.total / 1e6).toFixed(1)} MB`);
      break;
    }
    case 'ready':
      adapterLoaded = m.adapter.info !== null;
      $('model').value = m.adapter.tuned ? 'tuned' : 'base';
      $('model').title = adapterLoaded
        ? `LoRA rank ${m.adapter.info.rank} on ${m.adapter.info.matrices} matrices, trained on ${m.adapter.info.info.data_file ?? 'unknown data'}`
        : `the fine-tuned model is unavailable: ${m.adapter.reason}`;
      $('compare-button').title = adapterLoaded ? $('compare-button').title : $('model').title;
      setBusy(busy);
      $('backend').textContent = m.backend;
      $('backend').title = m.backendNote;
      if (m.embedder === 'webgpu') $('backend').title += '; documents embedded on the GPU';
      $('backend').dataset.embedder = m.embedder;
      $('backend').dataset.embedPrecision = m.embedPrecision;
      $('backend').dataset.embedSimd = m.embedSimd;
      if (m.embedder !== 'webgpu') {
        $('backend').title += m.embedPrecision === 'int8'
          ? `; documents embedded with 8-bit products (${m.embedSimd === 'relaxed' ? 'relaxed SIMD' : 'SIMD128'})`
          : '; documents embedded in f32';
      }
      $('backend').title += m.densePrefill ? '; prompts read with f32 weights' : '; prompts read with 8-bit weights';
      $('backend').title += m.threadsNote ? `; one thread: ${m.threadsNote}` : `; answers computed on ${m.threads} threads`;
      $('backend').dataset.threads = m.threads;
      setStatus('loading documents…');
      break;
    case 'idle': setStatus('ready'); break;
    case 'notice': addNotice(m.message); break;
    case 'graph':
      $('backend').dataset.index = 'hnsw';
      $('backend').title = $('backend').title.replace(/; search: .*$/, '') + `; search: the HNSW graph over ${m.chunks} chunks`;
      break;
    case 'doc': onDoc(m); break;
    case 'removed': docRow(m.name).remove(); break;
    case 'prefill': setStatus(`reading the prompt: ${m.done} / ${m.total} tokens`); break;
    case 'token':
      if ($('answer').textContent === '') setStatus('answering…');
      $('answer').textContent += m.text;
      break;
    case 'answer': onAnswer(m.answer); break;
    case 'model': $('model').value = m.tuned ? 'tuned' : 'base'; break;
    case 'compare-token': onCompareToken(m); break;
    case 'compare-answer': onCompareAnswer(m); break;
    case 'compare-done': setStatus('ready'); setBusy(false); break;
    case 'text': onText(m); break;
    case 'error':
      if (m.engineStopped) {
        restartEngine(m.during, m.message);
      } else if (m.during === 'compare') {
        setStatus(`error: ${m.message}`);
        setBusy(false);
      } else if (m.during === 'ask') {
        $('answer').textContent = m.message;
        $('answer').dataset.state = 'error';
        setBusy(false);
      } else {
        setStatus(`error: ${m.message}`);
      }
      break;
  }
}

// A trap (a panic, or the wasm instance running out of memory) leaves the engine unusable, but
// everything the user added is stored: a fresh worker loads the saved index and indexes the
// stored documents it lacks, as a reload would. A few restarts per visit, so that something that
// traps at every start cannot loop forever.
const MAX_RESTARTS = 3;
let restarts = 0;
function restartEngine(during, why) {
  worker.terminate();
  setBusy(false);
  if (during === 'ask') {
    $('answer').textContent = `The engine stopped while answering (${why}).`;
    $('answer').dataset.state = 'error';
  }
  if (restarts >= MAX_RESTARTS) {
    addNotice(`The engine stopped unexpectedly again (${why}). Reload the page; your stored documents are kept.`);
    setStatus('stopped');
    return;
  }
  restarts++;
  addNotice(`The engine stopped unexpectedly (${why}); it was restarted, and your stored documents are kept.`);
  setStatus('restarting the engine…');
  startEngine();
}

setBusy(false);
// Prompts are read with the 8-bit weights (kernels::q8_prompt): as fast as with f32 copies of
// them, with the same greedy answers on 49 of 50 eval questions, and ~425 MB smaller
// (docs/PERFORMANCE.md). ?prefill=dense keeps the f32 copies.
const densePrefill = params.get('prefill') === 'dense';
// Indexing spreads embedding over this many workers (?threads=N), one per core up to 4.
const threads = Math.max(1, Math.min(16, Number(params.get('threads')) || Math.min(navigator.hardwareConcurrency || 1, 4)));
// Answers run on as many threads (where the page is cross-origin isolated; otherwise on one): on
// the 2-core machine we measure on, two threads read a 493-token prompt 1.3x as fast and reach the
// first token in 0.79x the time, and decode 3-13 % slower (README, "In the browser").
const answerThreads = threads;
// Answers come from the base model unless ?model=tuned asks for our fine-tune (the switch on the
// page changes it at any time; both share one download). The base model is the default because
// the adapter still refuses too many answerable questions (models/adapters/README.md).
const tuned = params.get('model') === 'tuned';
// Answers are generated on WebGPU when the browser has a real GPU and the model passes a
// self-test there, otherwise on the CPU; ?backend=cpu|webgpu decides (webgpu also takes a
// software adapter). The backend label's tooltip says which and why.
const backend = ['cpu', 'webgpu'].includes(params.get('backend')) ? params.get('backend') : 'auto';
// ?graph=N: build the HNSW search graph from N chunks on instead of 10,000, to watch it work on a
// small collection (the teaching view says which search answered).
const graphFrom = Number(params.get('graph')) || 0;
// Documents are embedded with 8-bit weights (kernels::int8), within cosine 0.99 of f32 on every
// chunk measured (docs/PERFORMANCE.md), by the relaxed SIMD build where the browser has it (its
// one-byte products are the fastest on every CPU measured, on some twice the SIMD128 build's) and
// by the SIMD128 build elsewhere. ?embed=int8 keeps the SIMD128 build; ?embed=f32 takes the
// model's own f32.
const embedPrecision = ['f32', 'int8'].includes(params.get('embed')) ? params.get('embed') : 'relaxed';
function startEngine() {
  worker = new Worker('worker.js', { type: 'module' });
  worker.onmessage = onWorkerMessage;
  worker.postMessage({ type: 'init', densePrefill, threads, answerThreads, tuned: restarts === 0 ? tuned : $('model').value === 'tuned', backend, graphFrom, embedPrecision });
}
startEngine();

// The service worker keeps the page itself (and the wasm) for offline visits; the models are
// cached by the worker above.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('sw.js').catch((e) => console.warn('offline support unavailable:', e));
}
