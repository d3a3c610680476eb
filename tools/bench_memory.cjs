// `make bench-memory`: what a large collection costs, in three places, on the same document set
// (tools/load_corpus.cjs: 1,000 files, 50 MB, by default; FILES=N and MEGABYTES=N change it).
// PARTS=wasm,page,cli (the default: all three) picks which run. Prints one JSON object.
//
// - wasm: the page's wasm under Node (target/wasm-node): wasm memory high-water marks as the set
//   is read, chunked, indexed, saved and loaded back.
// - page: the site (dist/, `make site`) in headless Chromium, the set dropped on it as a user
//   would: the time until every file is indexed, stored and the search graph built, the peak
//   memory of Chromium's processes, the storage used, and a reload that must bring every file
//   back and answer a question.
// - cli: `pocketrag index` on the same files, with the real embedder: time and peak memory.
//
// The first two put random unit vectors where the embedder's would be (under Node, directly; in
// the page, a stand-in for the embedding helper, benches/memory/random-embed-worker.js, served in
// its place): embedding ~140k chunks takes hours on a 2-core CPU in wasm, and memory does not
// depend on the vectors' values. The cli part embeds for real, so its time is the embedder's.
// EMBED=real runs the page with its own embedding helpers instead (8-bit products with relaxed
// SIMD in Chromium: about half an hour for the default set here).
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { corpusFiles, writeCorpus, MB } = require('./load_corpus.cjs');

const root = path.resolve(__dirname, '..');
const options = { megabytes: Number(process.env.MEGABYTES || 50), files: Number(process.env.FILES || 1000) };
const parts = (process.env.PARTS || 'wasm,page,cli').split(',');
// `HnswConfig::exact_below`: smaller collections are scanned, and no graph is built.
const EXACT_BELOW = 10_000;
const seconds = (t0) => +((performance.now() - t0) / 1000).toFixed(1);

function wasmPart() {
  const { Engine } = require(path.join(root, 'target', 'wasm-node', 'pocketrag.js'));
  const model = (p) => fs.readFileSync(path.join(root, 'models', p));
  const engine = new Engine(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
  // The page's limit (www/worker.js): documents past it are refused, one by one, with a message.
  engine.setMemoryLimit(3.5 * 2 ** 30);
  const dim = 384;
  let seed = 1;
  const random = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 - 0.5; };

  const start = engine.memoryInUse();
  const t0 = performance.now();
  let bytes = 0;
  let files = 0;
  let refused = 0;
  for (const { name, text } of corpusFiles(options)) {
    const data = Buffer.from(text);
    try {
      const texts = engine.prepareDocument(name, data);
      const vectors = new Float32Array(texts.length * dim);
      for (let i = 0; i < texts.length; i++) {
        let norm = 0;
        for (let j = 0; j < dim; j++) { const v = random(); vectors[i * dim + j] = v; norm += v * v; }
        norm = Math.sqrt(norm);
        for (let j = 0; j < dim; j++) vectors[i * dim + j] /= norm;
      }
      engine.addPrepared(vectors, 0);
      bytes += data.length;
      files++;
    } catch (e) {
      refused++;
      if (refused === 1) console.error(`refused: ${e.message}`);
    }
  }
  const indexed = engine.memoryInUse();
  const indexSeconds = seconds(t0);
  const t1 = performance.now();
  const file = engine.save();
  const saveSeconds = seconds(t1);
  const saved = engine.memoryInUse();
  const t2 = performance.now();
  engine.load(file);
  return {
    text_mb: +(bytes / MB).toFixed(1),
    files,
    refused,
    chunks: engine.documents().reduce((n, d) => n + d.chunks, 0),
    wasm_memory_mb_at_start: Math.round(start / MB),
    wasm_memory_mb_indexed: Math.round(indexed / MB),
    wasm_memory_mb_after_save: Math.round(saved / MB),
    wasm_memory_mb_after_load: Math.round(engine.memoryInUse() / MB),
    index_file_mb: Math.round(file.length / MB),
    read_and_chunk_s: indexSeconds,
    save_s: saveSeconds,
    load_s: seconds(t2),
  };
}

/// The resident memory of every process whose command line holds `marker` (Chromium's
/// processes all carry the profile folder), summed, and the largest one, in MB.
function residentMb(marker) {
  let total = 0;
  let largest = 0;
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker)) continue;
      const kb = Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
      total += kb / 1024;
      largest = Math.max(largest, kb / 1024);
    } catch { /* the process ended while being read */ }
  }
  return { total, largest };
}

async function pagePart(paths) {
  const { serve, launch } = require(path.join(root, 'tests', 'support', 'browser.cjs'));
  const realEmbedder = process.env.EMBED === 'real';
  const server = realEmbedder ? await serve()
    : await serve('--replace', `/embed-worker.js=${path.join(root, 'benches', 'memory', 'random-embed-worker.js')}`);
  const context = await launch();
  const peak = { total: 0, largest: 0 };
  const sampler = setInterval(() => {
    const now = residentMb(context.profile);
    peak.total = Math.max(peak.total, now.total);
    peak.largest = Math.max(peak.largest, now.largest);
  }, 500);
  try {
    const page = context.pages()[0] || await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const states = () => page.$$eval('[data-testid="doc-status"]', (els) => {
      const count = {};
      for (const e of els) count[e.dataset.state] = (count[e.dataset.state] ?? 0) + 1;
      return count;
    });
    const ready = (timeout) => page.waitForFunction(() => document.getElementById('status').textContent === 'ready', null, { timeout });
    const names = new Set(paths.map((p) => path.basename(p)));
    const allIndexed = (timeout) => page.waitForFunction((n) => [...document.querySelectorAll('[data-testid="doc-status"][data-state="indexed"]')]
      .filter((e) => /^doc\d+\.md$/.test(e.dataset.doc)).length >= n, names.size, { timeout, polling: 1000 });
    await page.goto(`${server.url}?threads=2`);
    await ready(240_000);
    const before = residentMb(context.profile);
    const backend = await page.$eval('[data-testid="backend"]', (e) => ({ ...e.dataset }));
    const embedder = realEmbedder ? `the page's (${backend.embedPrecision}, ${backend.embedSimd})` : 'stand-in (random vectors)';

    const t0 = performance.now();
    await page.setInputFiles('[data-testid="file-input"]', paths);
    let indexed;
    try {
      await allIndexed(3 * 3600_000);
      indexed = seconds(t0);
    } catch (e) {
      throw new Error(`not every file was indexed: ${JSON.stringify(await states())}; ${errors.join(' | ')}; ${e.message}`);
    }
    await ready(3600_000);
    const storedAt = seconds(t0);
    const chunks = await page.$$eval('[data-testid="doc-status"][data-state="indexed"] .state',
      (els) => els.reduce((n, e) => n + Number(/\((\d+) chunks\)/.exec(e.textContent)?.[1] ?? 0), 0));
    // The graph is built in its own worker once the collection passes exact_below (src/index).
    let graphAt = null;
    if (chunks >= EXACT_BELOW) {
      await page.waitForFunction(() => document.querySelector('[data-testid="backend"]').dataset.index === 'hnsw', null, { timeout: 3 * 3600_000, polling: 1000 });
      graphAt = seconds(t0);
    }
    const storage = await page.evaluate(async () => (await navigator.storage.estimate()).usage);
    const notices = await page.$$eval('[data-testid="notice"]', (els) => els.map((e) => e.dataset.text));

    const t1 = performance.now();
    await page.reload();
    await allIndexed(3600_000);
    await ready(3600_000);
    const reloaded = seconds(t1);
    await page.fill('[data-testid="question"]', 'Which browser API lets the page run the model on the GPU?');
    await page.press('[data-testid="question"]', 'Enter');
    await page.waitForSelector('[data-testid="answer"][data-state="done"]', { timeout: 600_000 });
    const timings = await page.textContent('[data-testid="timings"]');
    const after = residentMb(context.profile);
    return {
      embedder,
      files: names.size,
      chunks,
      states: await states(),
      indexed_s: indexed,
      indexed_and_saved_s: storedAt,
      graph_built_s: graphAt,
      reload_to_ready_s: reloaded,
      answer_timings: timings.trim(),
      storage_used_mb: Math.round(storage / MB),
      chromium_rss_mb_models_loaded: Math.round(before.total),
      chromium_rss_mb_peak: Math.round(peak.total),
      chromium_rss_mb_peak_largest_process: Math.round(peak.largest),
      chromium_rss_mb_after_answer: Math.round(after.total),
      notices,
      page_errors: errors,
    };
  } finally {
    clearInterval(sampler);
    await context.close();
    server.proc.kill();
    fs.rmSync(context.profile, { recursive: true, force: true });
  }
}

function cliPart(dir) {
  const out = path.join(os.tmpdir(), `pocketrag-load-${process.pid}.idx`);
  const bin = path.join(root, 'target', 'release', 'pocketrag');
  // Python reports the child's peak resident memory (getrusage), which Node cannot.
  const peakOf = 'import resource, subprocess, sys\n'
    + 'r = subprocess.run(sys.argv[1:])\n'
    + 'print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n'
    + 'sys.exit(r.returncode)\n';
  const t0 = performance.now();
  const run = spawnSync('python3', ['-c', peakOf, bin, '--models', path.join(root, 'models'), 'index', '--fresh', '--out', out, dir],
    { encoding: 'utf8', maxBuffer: 64 * MB });
  const indexSeconds = seconds(t0);
  if (run.status !== 0) throw new Error(`pocketrag index failed: ${run.stderr.slice(-2000)}`);
  const lines = run.stderr.trim().split('\n');
  const search = spawnSync(bin, ['--models', path.join(root, 'models'), 'search', '--index', out, '--json', '--k', '5',
    'Which browser API lets the page run the model on the GPU?'], { encoding: 'utf8', maxBuffer: 64 * MB });
  if (search.status !== 0) throw new Error(`pocketrag search failed: ${search.stderr}`);
  const result = {
    index_s: indexSeconds,
    peak_rss_mb: Math.round(Number(lines.at(-1)) / 1024),
    index_file_mb: Math.round(fs.statSync(out).size / MB),
    report: lines.filter((l) => /^(indexed|built)/.test(l)),
    search_answered_by: JSON.parse(search.stdout).index,
  };
  fs.rmSync(out);
  return result;
}

(async () => {
  const result = { text_mb: options.megabytes, files: options.files };
  if (parts.includes('wasm')) result.wasm = wasmPart();
  if (parts.includes('page') || parts.includes('cli')) {
    const dir = path.join(os.tmpdir(), `pocketrag-load-${options.megabytes}mb-${options.files}`);
    const paths = writeCorpus(dir, options);
    if (parts.includes('page')) result.page = await pagePart(paths);
    if (parts.includes('cli')) result.cli = cliPart(dir);
  }
  console.log(JSON.stringify(result, null, 1));
})().catch((e) => { console.error(e); process.exit(1); });
