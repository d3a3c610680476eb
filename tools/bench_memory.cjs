// `make bench-memory`: how much wasm memory a 50 MB document set takes, under Node with the same
// wasm the page runs (target/wasm-node). The text is the sample articles, repeated and numbered
// into FILES files (1,000 by default, each one different), read and chunked for real; the embeddings are random
// unit vectors instead of the embedder's, because embedding ~140k chunks takes hours on a CPU and
// memory does not depend on the vectors' values. Prints one JSON object.
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const { Engine } = require(path.join(root, 'target', 'wasm-node', 'pocketrag.js'));
const model = (p) => fs.readFileSync(path.join(root, 'models', p));
const MB = 2 ** 20;
const target = Number(process.env.MEGABYTES || 50) * MB;
const fileBytes = Math.ceil(target / Number(process.env.FILES || 1000));

const engine = new Engine(model('minilm/model.safetensors'), model('minilm/tokenizer.json'), model('minilm/config.json'));
// The page's limit (www/worker.js): documents past it are refused, one by one, with a message.
engine.setMemoryLimit(3.5 * 2 ** 30);
const samples = path.join(root, 'samples');
const corpus = fs.readdirSync(samples).sort().map((f) => fs.readFileSync(path.join(samples, f), 'utf8')).join('\n\n');
const dim = 384;
let seed = 1;
const random = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 - 0.5; };

const start = engine.memoryInUse();
const t0 = performance.now();
let bytes = 0;
let files = 0;
let refused = 0;
while (bytes < target && refused < 10) {
  let text = '';
  while (text.length < fileBytes) text += `Part ${files}-${text.length}. ${corpus}`;
  text = text.slice(0, fileBytes);
  const data = Buffer.from(text);
  bytes += data.length;
  try {
    const texts = engine.prepareDocument(`doc${files}.md`, data);
    const vectors = new Float32Array(texts.length * dim);
    for (let i = 0; i < texts.length; i++) {
      let norm = 0;
      for (let j = 0; j < dim; j++) { const v = random(); vectors[i * dim + j] = v; norm += v * v; }
      norm = Math.sqrt(norm);
      for (let j = 0; j < dim; j++) vectors[i * dim + j] /= norm;
    }
    engine.addPrepared(vectors, 0);
  } catch (e) {
    bytes -= data.length;
    refused++;
    if (refused === 1) console.error(`refused: ${e.message}`);
  }
  files++;
}
const indexed = engine.memoryInUse();
const indexSeconds = (performance.now() - t0) / 1000;
const t1 = performance.now();
const file = engine.save();
const saveSeconds = (performance.now() - t1) / 1000;
const saved = engine.memoryInUse();
const t2 = performance.now();
engine.load(file);
const loadSeconds = (performance.now() - t2) / 1000;
console.log(JSON.stringify({
  text_mb: +(bytes / MB).toFixed(1),
  files,
  refused,
  chunks: engine.documents().reduce((n, d) => n + d.chunks, 0),
  wasm_memory_mb_at_start: Math.round(start / MB),
  wasm_memory_mb_indexed: Math.round(indexed / MB),
  wasm_memory_mb_after_save: Math.round(saved / MB),
  wasm_memory_mb_after_load: Math.round(engine.memoryInUse() / MB),
  index_file_mb: Math.round(file.length / MB),
  read_and_chunk_s: +indexSeconds.toFixed(1),
  save_s: +saveSeconds.toFixed(2),
  load_s: +loadSeconds.toFixed(2),
}));
