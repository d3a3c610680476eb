// The WebAssembly build of the engine, run under Node on the real models: the same pipeline the
// browser worker will drive. Built by `make wasm` into target/wasm-node/.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..', '..');
const wasm = require(path.join(root, 'target', 'wasm-node', 'pocketrag.js'));
const { Engine, Embedder, buildSearchGraph, isPdf, extractPdfPages } = wasm;
// The build with the benchmark entry points (`make wasm-bench`), which the site does not ship.
const bench = require(path.join(root, 'target', 'wasm-node-bench', 'pocketrag.js'));
const { pdf } = require('../support/pdf.cjs');
const model = (p) => fs.readFileSync(path.join(root, 'models', p));
const doc = (name) => fs.readFileSync(path.join(root, 'tests', 'data', 'library', name));

function embedderOnly() {
  return new Engine(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
}

test('wasm engine indexes, searches, answers with a citation, and round-trips its index', () => {
  const engine = new Engine(
    model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'),
    model('smollm2/SmolLM2-135M-Instruct.Q8_0.gguf'));
  let progressCalls = 0;
  for (const name of ['lighthouse.md', 'sourdough.txt', 'bicycle.html']) {
    const report = engine.addDocument(name, doc(name), () => { progressCalls++; });
    assert.equal(report.name, name);
    assert.ok(report.chunks >= 1);
  }
  assert.ok(progressCalls >= 3);
  assert.deepEqual(engine.documents().map((d) => d.name), ['lighthouse.md', 'sourdough.txt', 'bicycle.html']);
  assert.ok(engine.documents().every((d) => d.chunks >= 1));

  const found = engine.search('vulcanising solution', 3);
  assert.equal(found.index, 'exact');
  assert.equal(found.hits[0].doc, 'bicycle.html');
  assert.ok(found.hits[0].score > 0.3);

  let streamed = '';
  const a = engine.answer('When was the Harrow Point lighthouse first lit?', 'rag', 4, (t) => { streamed += t; }, () => false);
  assert.equal(streamed.trim(), a.answer);
  // The model writes; each of its sentences is checked, and only supported ones are cited (the
  // base model's answer here adds places and dates that the document does not have).
  assert.equal(a.mode, 'rag');
  assert.ok(a.sentences.length >= 1, JSON.stringify(a));
  assert.ok(a.citations.every((c) => c.doc === 'lighthouse.md'), JSON.stringify(a.citations));
  assert.deepEqual([...new Set(a.sentences.filter((s) => s.cited !== null).map((s) => s.cited))].sort(),
                   [...new Set(a.citations.map((c) => c.n))].sort());
  assert.ok(a.prompt_tokens > 50 && a.generated_tokens > 0);

  // Cancellation from the polled callback.
  let n = 0;
  const c = engine.answer('How do I patch an inner tube?', 'rag', 4, () => { n++; }, () => n >= 2);
  assert.equal(c.stop, 'cancelled');

  // The stepping API the browser worker uses: prefill slices, then tokens, then done; the same
  // greedy answer as answer() gives.
  engine.beginAnswer('When was the Harrow Point lighthouse first lit?', 'rag', 4);
  const kinds = [];
  let text = '';
  for (;;) {
    const step = engine.step();
    kinds.push(step.type);
    if (step.type === 'token') text += step.text;
    if (step.type === 'prefill') assert.ok(step.done <= step.total && step.total === a.prompt_tokens);
    if (step.type === 'done') { assert.equal(step.stop, a.stop); break; }
  }
  assert.equal(kinds[0], 'prefill');
  assert.ok(kinds.includes('token'));
  const stepped = engine.finishAnswer();
  assert.equal(stepped.answer, a.answer);
  assert.equal(text.trim(), a.answer);
  assert.deepEqual(stepped.citations.map((x) => x.n), a.citations.map((x) => x.n));
  assert.throws(() => engine.step(), /no answer is pending/);

  // Cancelled between steps: what was said so far is kept.
  engine.beginAnswer('Write a long story about a lighthouse keeper.', 'no_rag', 4);
  let tokens = 0;
  for (;;) {
    const step = engine.step();
    if (step.type === 'token' && ++tokens === 3) engine.cancelAnswer();
    if (step.type === 'done') { assert.equal(step.stop, 'cancelled'); break; }
  }
  const cut = engine.finishAnswer();
  assert.equal(cut.stop, 'cancelled');
  assert.equal(cut.generated_tokens, 3);

  // The saved index loads into a fresh engine and gives the same hits.
  const other = embedderOnly();
  other.load(engine.save());
  assert.deepEqual(other.search('vulcanising solution', 3).hits.map((h) => [h.doc, h.start]),
                   found.hits.map((h) => [h.doc, h.start]));
});

test('the default mode quotes the document without a language model, offsets and all', () => {
  const engine = embedderOnly();
  for (const name of ['lighthouse.md', 'sourdough.txt', 'bicycle.html']) engine.addDocument(name, doc(name), null);
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const a = engine.answer('When was the Harrow Point lighthouse first lit?', 'quote', 4, null, null);
  assert.equal(a.mode, 'quote');
  assert.equal(a.abstained, false, JSON.stringify(a));
  assert.ok(a.answer.includes('1871'), a.answer);
  assert.ok(a.citations.length >= 1 && a.citations.every((c) => c.by === 'quote'));
  for (const c of a.citations) {
    // Offsets are bytes of the document's UTF-8 text, as documentText returns it.
    const bytes = enc.encode(engine.documentText(c.doc));
    assert.equal(dec.decode(bytes.subarray(c.start, c.end)), c.quote);
    assert.ok(a.answer.includes(c.quote));
  }
  const none = engine.answer('What is the capital of France?', 'quote', 4, null, null);
  assert.equal(none.abstained, true);
  assert.equal(none.answer, 'The documents do not contain the answer.');
  assert.equal(none.citations.length, 0);
});

test('wasm engine reports bad input as exceptions with readable messages', () => {
  const engine = embedderOnly();
  assert.throws(() => engine.addDocument('junk.bin', new Uint8Array([0, 1, 2, 0, 255])), /junk\.bin.*binary/);
  assert.throws(() => engine.search('   ', 3), /empty/);
  assert.throws(() => engine.load(new Uint8Array([1, 2, 3])), /not a pocketrag index/);
  const gguf = model('smollm2/SmolLM2-135M-Instruct.Q8_0.gguf');
  assert.throws(() => new Engine(model('minilm/model.safetensors'), model('minilm/tokenizer.json'),
                                 model('minilm/config.json'), gguf.subarray(0, gguf.length >> 1)), /truncated/);
  // Answering needs a generator; this engine has none.
  engine.addDocument('a.txt', Buffer.from('Some text about tides and the moon.'));
  assert.throws(() => engine.answer('tides?', 'rag', 4), /no language model/);
  assert.throws(() => engine.answer('tides?', 'free', 4), /unknown answer mode/);
  assert.throws(() => engine.answer('x'.repeat(10000), 'quote', 4), /characters long/);
  assert.throws(() => engine.answer('tides\u0007?', 'quote', 4), /control character/);
});

test('the standalone embedder agrees with the engine; the benchmark entry points run, in the bench build only', () => {
  const embedder = new Embedder(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
  const dim = embedder.dim();
  const v = embedder.embed(['The lighthouse was first lit in 1871.', 'Feed the starter once a week.']);
  assert.equal(v.length, 2 * dim);
  for (const i of [0, 1]) {
    const norm = Math.hypot(...v.subarray(i * dim, (i + 1) * dim));
    assert.ok(Math.abs(norm - 1) < 1e-4, `norm ${norm}`);
  }
  // The engine ranks a one-chunk document by the same cosine.
  const engine = embedderOnly();
  engine.addDocument('one.txt', Buffer.from('Feed the starter once a week.'));
  const [q] = [embedder.embed(['How often do I feed the starter?'])];
  const cos = q.reduce((s, x, i) => s + x * v[dim + i], 0);
  assert.ok(Math.abs(engine.search('How often do I feed the starter?', 1).hits[0].score - cos) < 1e-4);

  for (const name of ['benchChunks', 'benchKernels', 'benchIndex']) {
    assert.equal(wasm[name], undefined, `${name} is in the site's build`);
    assert.equal(typeof bench[name], 'function', `${name} is missing from the bench build`);
  }
  const benchEmbedder = new bench.Embedder(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
  const chunks = bench.benchChunks(benchEmbedder, fs.readFileSync(path.join(root, 'samples', 'rag.md'), 'utf8'), 3);
  assert.equal(chunks.length, 3);
  const f = bench.benchIndex(500);
  assert.equal(f.chunks, 500);
  assert.ok(f.recall10 > 0.9 && f.search_p50_ms > 0 && f.exact_p50_ms > 0, JSON.stringify(f));
});

test('a document that would not fit in memory is refused with a message, and nothing is lost', () => {
  const engine = embedderOnly();
  engine.addDocument('lighthouse.md', doc('lighthouse.md'));
  const used = engine.memoryInUse();
  assert.ok(used > 50e6, `in use: ${used}`);
  // Leave room for small documents only: a 4 MB one needs more than that.
  engine.setMemoryLimit(used + 20 * 2 ** 20);
  const big = Buffer.from('The tide comes in twice a day. '.repeat(140_000));
  assert.throws(() => engine.addDocument('big.txt', big), /big\.txt.*not enough memory.*already indexed are kept/);
  assert.deepEqual(engine.documents().map((d) => d.name), ['lighthouse.md']);
  assert.equal(engine.search('When was the lighthouse first lit?', 1).hits[0].doc, 'lighthouse.md');
  engine.addDocument('sourdough.txt', doc('sourdough.txt'));
  assert.equal(engine.documents().length, 2);
});

test('a search graph built from a save elsewhere (as the page builds it in a worker) is adopted and saved', () => {
  const engine = embedderOnly();
  for (const name of ['lighthouse.md', 'sourdough.txt', 'bicycle.html']) engine.addDocument(name, doc(name));
  const q = 'When does the return ferry leave?';
  const exact = engine.search(q, 5);
  assert.equal(exact.index, 'exact');
  assert.equal(engine.needsGraph(), false, 'three documents are scanned');
  assert.equal(buildSearchGraph(engine.save()), undefined);
  engine.setGraphThreshold(3);
  assert.equal(engine.needsGraph(), true);
  const graph = buildSearchGraph(engine.save());
  assert.ok(graph instanceof Uint8Array && graph.length > 0);
  assert.equal(engine.adoptGraph(graph), true);
  assert.equal(engine.needsGraph(), false);
  const found = engine.search(q, 5);
  assert.equal(found.index, 'hnsw');
  assert.deepEqual(found.hits.map((h) => [h.doc, h.start]), exact.hits.map((h) => [h.doc, h.start]));
  // Saved with the index: a reload searches with the graph without building it.
  const other = embedderOnly();
  other.load(engine.save());
  assert.equal(other.search(q, 5).index, 'hnsw');
  // After a removal the old graph no longer fits: refused, nothing changes.
  other.removeDocument('bicycle.html');
  assert.equal(other.adoptGraph(graph), false);
  assert.ok(other.search(q, 5).hits.every((h) => h.doc !== 'bicycle.html'));
  assert.throws(() => buildSearchGraph(new Uint8Array([1, 2, 3])), /index/i);
});

test('PDF text extracted separately is indexed with its page numbers', () => {
  const bytes = pdf(['The ferry leaves at seven.', 'The return ferry leaves at nine in the evening.']);
  assert.equal(isPdf('timetable.pdf', bytes), true);
  assert.equal(isPdf('notes.txt', Buffer.from('plain words')), false);
  const pages = extractPdfPages(bytes);
  assert.equal(pages.length, 2);
  const engine = embedderOnly();
  engine.addPdfPages('timetable.pdf', pages);
  const hit = engine.search('When does the return ferry leave?', 1).hits[0];
  assert.equal(hit.doc, 'timetable.pdf');
  assert.equal(hit.page, 2);
  assert.throws(() => engine.addPdfPages('scan.pdf', ['', '  ']), /scan\.pdf.*no extractable text/);
});

test('8-bit embedding in wasm stays within cosine 0.99 of f32 on every sample chunk', () => {
  const embedder = new Embedder(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
  const engine = embedderOnly();
  const samples = fs.readdirSync(path.join(root, 'samples')).filter((f) => /\.(md|txt)$/.test(f));
  const texts = samples.flatMap((f) => engine.prepareDocument(f, fs.readFileSync(path.join(root, 'samples', f))));
  assert.ok(texts.length >= 12, `${texts.length} chunks`);
  const exact = embedder.embed(texts);
  embedder.setPrecision('int8');
  const rounded = embedder.embed(texts);
  const dim = embedder.dim();
  for (let i = 0; i < texts.length; i++) {
    let cos = 0;
    for (let j = i * dim; j < (i + 1) * dim; j++) cos += exact[j] * rounded[j];
    assert.ok(cos > 0.99 && cos < 1 + 1e-4, `chunk ${i}: cosine ${cos}`);
  }
});

test('a document embedded elsewhere (as the page spreads it over workers) indexes like one embedded here', () => {
  const embedder = new Embedder(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
  const here = embedderOnly();
  here.addDocument('sourdough.txt', doc('sourdough.txt'));
  const there = embedderOnly();
  const texts = there.prepareDocument('sourdough.txt', doc('sourdough.txt'));
  assert.equal(texts.length, here.documents()[0].chunks);
  // In two batches, as two workers would return them.
  const half = Math.ceil(texts.length / 2);
  const parts = [embedder.embed(texts.slice(0, half)), embedder.embed(texts.slice(half))];
  const vectors = new Float32Array(parts[0].length + parts[1].length);
  vectors.set(parts[0]);
  vectors.set(parts[1], parts[0].length);
  const report = there.addPrepared(vectors, 12.5);
  assert.equal(report.chunks, texts.length);
  assert.equal(report.embed_ms, 12.5);
  const q = 'How often should I feed a starter kept in the fridge?';
  const a = here.search(q, 3).hits;
  const b = there.search(q, 3).hits;
  assert.deepEqual(b.map((h) => h.start), a.map((h) => h.start));
  assert.ok(Math.abs(a[0].score - b[0].score) < 1e-4);

  // Wrong vectors are refused, and the prepared document is not half-added.
  there.prepareDocument('lighthouse.md', doc('lighthouse.md'));
  assert.throws(() => there.addPrepared(new Float32Array(384), 0), /vectors for .* chunks|not unit vectors/);
  assert.throws(() => there.addPrepared(new Float32Array(0), 0), /no document is prepared/);
  assert.deepEqual(there.documents().map((d) => d.name), ['sourdough.txt']);
});

test('our fine-tuned adapter loads, switches on and off, and a damaged one is refused', () => {
  const engine = new Engine(
    model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'),
    model('smollm2/SmolLM2-135M-Instruct.Q8_0.gguf'), true);
  assert.throws(() => engine.useAdapter(true), /no fine-tuned adapter is loaded/);
  assert.throws(() => engine.loadAdapter(Buffer.from('not an adapter')), /adapter: not a safetensors file/);
  const info = engine.loadAdapter(model('adapters/pubmedqa-lora.safetensors'));
  assert.equal(info.rank, 8);
  assert.equal(info.matrices, 30 * 7);
  assert.equal(info.info.name, 'pocketrag-pubmedqa-lora');
  for (const name of ['lighthouse.md', 'sourdough.txt', 'bicycle.html']) engine.addDocument(name, doc(name), null);
  const questions = {
    'When was the Harrow Point lighthouse first lit?': 'lighthouse.md',
    'How do I patch an inner tube?': 'bicycle.html',
    'How often should a sourdough starter be fed?': 'sourdough.txt',
  };
  // Loading alone changes nothing: answers come from the base model until it is switched on.
  const base = Object.keys(questions).map((q) => engine.answer(q, 'rag', 4, null, null));
  assert.ok(base.every((a) => a.tuned === false));
  engine.useAdapter(true);
  const tuned = Object.keys(questions).map((q) => engine.answer(q, 'rag', 4, null, null));
  assert.ok(tuned.every((a) => a.tuned === true));
  // What the fine-tune teaches, measured on three questions: answers shorter than the base
  // model's (here 21, 66 and 10 tokens against 50, 20 and 61).
  const expected = Object.values(questions);
  const total = (answers) => answers.reduce((n, a) => n + a.generated_tokens, 0);
  assert.ok(total(tuned) < total(base), JSON.stringify({ tuned, base }));
  // Whatever the model cites, a citation is shown only where the check finds the sentence in a
  // source: always the right document here, and at least one answer has one.
  tuned.forEach((a, i) => {
    assert.ok(a.generated_tokens <= 72, JSON.stringify(a.answer));
    assert.ok(a.citations.every((c) => c.doc === expected[i]), JSON.stringify(a));
  });
  assert.ok(tuned.some((a, i) => a.citations.some((c) => c.doc === expected[i])), JSON.stringify(tuned));
  engine.useAdapter(false);
  assert.equal(engine.answer(Object.keys(questions)[0], 'rag', 4, null, null).answer, base[0].answer);
});

// One pipeline, two front ends: the wasm engine and the native CLI compute the same numbers in the
// same order (our kernels fix the order of every f32 addition, and the rotary tables are computed
// without the platform's f32 maths library), so a greedy answer is the same text to the last
// token, from the base model and with our adapter applied at load time.
test('the wasm engine and the native CLI give the same answers, token for token', () => {
  const { spawnSync } = require('node:child_process');
  const engine = new Engine(
    model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'),
    model('smollm2/SmolLM2-135M-Instruct.Q8_0.gguf'), false);
  const adapter = path.join(root, 'models', 'adapters', 'pubmedqa-lora.safetensors');
  const native = (question, extra) => {
    const cli = spawnSync(path.join(root, 'target', 'release', 'pocketrag'),
      ['--models', path.join(root, 'models'), 'ask', '--no-rag', '--low-memory', '--json', ...extra, question],
      { encoding: 'utf8', maxBuffer: 1 << 24 });
    assert.equal(cli.status, 0, cli.stderr);
    return JSON.parse(cli.stdout);
  };
  const asked = [
    ['Why is the sky blue?', []],
    ['What does a lighthouse keeper do?', []],
    ['Does regular exercise lower blood pressure?', ['--adapter', adapter]],
  ];
  for (const [question, extra] of asked) {
    if (extra.length) {
      engine.loadAdapter(fs.readFileSync(adapter));
      engine.useAdapter(true);
    }
    const ours = engine.answer(question, 'no_rag', 4, null, null);
    const theirs = native(question, extra);
    assert.equal(ours.tuned, extra.length > 0);
    assert.ok(ours.generated_tokens >= 16, ours.answer);
    assert.equal(ours.answer, theirs.answer, question);
    assert.equal(ours.generated_tokens, theirs.generated_tokens, question);
  }
});
