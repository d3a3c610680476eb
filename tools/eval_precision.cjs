// The 8-bit embedder against f32 on a collection nobody here wrote (`make eval-precision`):
// PubMedQA's abstracts indexed three times in headless Chromium, through the page's own path
// (prepareDocument, an Embedder, addPrepared) and its own builds, and each question searched as
// the page searches:
//   f32      the model's own numbers (pkg/, the plain SIMD128 build)
//   relaxed  8-bit products by pkg-relaxed/ (relaxed SIMD), as the page's helpers embed where the
//            browser has relaxed SIMD; questions in 8 bits by the engine (pkg/)
//   simd128  8-bit products by pkg/, the page's fallback
// Prints one JSON object: for each, recall@1, recall@5 and MRR of the question's own abstract by
// the engine's search (hybrid: what answers use) and by vectors alone, and the cosine of each
// chunk's 8-bit vector to its f32 one (worst, mean, how many under 0.99).
// In Chromium, not Node: Node 20's relaxed SIMD (behind a flag) gives wrong sums on the first
// call of a function compiled by its baseline compiler (Liftoff); `--no-liftoff` or a later call
// gives the right ones.
// Usage: node tools/eval_precision.cjs PUBMEDQA.json [LIMIT]
const fs = require('node:fs');
const { withPage } = require('../tests/support/browser.cjs');

const [file, limitArg] = process.argv.slice(2);
if (!file) throw new Error('usage: eval_precision.cjs PUBMEDQA.json [LIMIT]');
const entries = Object.entries(JSON.parse(fs.readFileSync(file, 'utf8'))).slice(0, Number(limitArg) || undefined);
// As `tune::data`: one document per entry, its contexts joined by blank lines.
const documents = entries.map(([id, e]) => ({ name: `pubmedqa/${id}`, text: e.CONTEXTS.join('\n\n'), question: e.QUESTION }));

// Runs in the page.
async function evaluate(documents) {
  const DIM = 384;
  const BATCH = 16;
  const plain = await import('/pkg/pocketrag.js');
  await plain.default();
  const relaxedBuild = await import('/pkg-relaxed/pocketrag.js');
  await relaxedBuild.default();
  const model = async (name) => new Uint8Array(await (await fetch(`/models/minilm/${name}`)).arrayBuffer());
  const [w, t, c] = await Promise.all(['model.safetensors', 'tokenizer.json', 'config.json'].map(model));
  const embedder = (build, precision) => {
    const e = new build.Embedder(w, t, c);
    e.setPrecision(precision);
    return e;
  };
  // Rank (from 1) of `gold` among documents in order of first appearance, as `eval::doc_rank`.
  const docRank = (docs, gold) => {
    const seen = new Set();
    for (const d of docs) {
      if (seen.has(d)) continue;
      seen.add(d);
      if (d === gold) return seen.size;
    }
    return null;
  };
  const scores = (ranks) => {
    const sum = (f) => ranks.reduce((s, r) => s + (r === null ? 0 : f(r)), 0) / ranks.length;
    return { 'recall@1': sum((r) => Number(r === 1)), 'recall@5': sum((r) => Number(r <= 5)), mrr: sum((r) => 1 / r) };
  };
  const run = (docEmbedder, precision) => {
    const t0 = performance.now();
    const engine = new plain.Engine(w, t, c, null, false);
    engine.setEmbedderPrecision(precision);
    const queries = embedder(plain, precision);
    const chunkDocs = [];
    const parts = [];
    for (const d of documents) {
      const texts = engine.prepareDocument(d.name, new TextEncoder().encode(d.text));
      const v = new Float32Array(texts.length * DIM);
      for (let i = 0; i < texts.length; i += BATCH) v.set(docEmbedder.embed(texts.slice(i, i + BATCH)), i * DIM);
      engine.addPrepared(v, 0);
      parts.push(v);
      for (let i = 0; i < texts.length; i++) chunkDocs.push(d.name);
    }
    const embedSeconds = (performance.now() - t0) / 1000;
    const vectors = new Float32Array(chunkDocs.length * DIM);
    parts.reduce((at, v) => { vectors.set(v, at); return at + v.length; }, 0);
    const hybrid = [];
    const vectorsOnly = [];
    for (const d of documents) {
      hybrid.push(docRank(engine.search(d.question, 50).hits.map((h) => h.doc), d.name));
      const q = queries.embed([d.question]);
      const order = chunkDocs.map((doc, i) => {
        let s = 0;
        for (let j = 0; j < DIM; j++) s += q[j] * vectors[i * DIM + j];
        return [s, doc];
      }).sort((a, b) => b[0] - a[0]);
      vectorsOnly.push(docRank(order.map(([, doc]) => doc), d.name));
    }
    engine.free();
    queries.free();
    return { vectors, chunks: chunkDocs.length, embed_seconds: embedSeconds, hybrid: scores(hybrid), vectors_only: scores(vectorsOnly) };
  };
  const cosines = (a, b) => {
    const out = [];
    for (let i = 0; i < a.length / DIM; i++) {
      let [dot, na, nb] = [0, 0, 0];
      for (let j = i * DIM; j < (i + 1) * DIM; j++) { dot += a[j] * b[j]; na += a[j] * a[j]; nb += b[j] * b[j]; }
      out.push(dot / Math.sqrt(na * nb));
    }
    return { worst: Math.min(...out), mean: out.reduce((s, x) => s + x, 0) / out.length, under_0_99: out.filter((x) => x < 0.99).length };
  };
  const f32 = run(embedder(plain, 'f32'), 'f32');
  const runs = { f32, relaxed: run(embedder(relaxedBuild, 'int8'), 'int8'), simd128: run(embedder(plain, 'int8'), 'int8') };
  const report = { questions: documents.length, chunks: f32.chunks, runs: {} };
  for (const [name, { vectors, ...rest }] of Object.entries(runs)) {
    report.runs[name] = name === 'f32' ? rest : { ...rest, cosine_to_f32: cosines(vectors, f32.vectors) };
  }
  return report;
}

async function main() {
  const report = await withPage(async (page, server) => {
    // A blank page on the site's origin, for the module imports.
    await page.route(`${server.url}eval.html`, (r) => r.fulfill({ contentType: 'text/html', body: '<!doctype html><title>eval</title>' }));
    await page.goto(`${server.url}eval.html`);
    page.setDefaultTimeout(0);
    return { ...(await page.evaluate(evaluate, documents)), browser: page.context().browser()?.version() ?? null };
  });
  console.log(JSON.stringify(report, null, 2));
}

main().catch((e) => { console.error(e); process.exit(1); });
