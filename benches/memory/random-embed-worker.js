// A stand-in for www/embed-worker.js, served in its place by `make bench-memory` (serve.py
// --replace) and nowhere else: the same messages (docs/WORKERS.md), and the same wasm instance
// with the embedder loaded, so it holds the memory the real helper holds; but each chunk gets a
// random unit vector instead of MiniLM's. Embedding 50 MB of text takes hours in wasm on a 2-core
// CPU, and the memory and storage a collection needs do not depend on the vectors' values.
import { MODELS, loadModels } from './models.js';

const DIM = 384;
let seed = 1;
const random = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31 - 0.5; };
let ready = null;

self.onmessage = async ({ data: { id, texts, module, bindings } }) => {
  if (module !== undefined) {
    ready = (async () => {
      const pkg = await import(`./${bindings ?? 'pkg'}/pocketrag.js`);
      await pkg.default({ module_or_path: module ?? `${bindings ?? 'pkg'}/pocketrag_bg.wasm` });
      const [w, t, c] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig]);
      return new pkg.Embedder(w, t, c);
    })();
    return;
  }
  await ready;
  const vectors = new Float32Array(texts.length * DIM);
  for (let i = 0; i < texts.length; i++) {
    const row = vectors.subarray(i * DIM, (i + 1) * DIM);
    let norm = 0;
    for (let j = 0; j < DIM; j++) { row[j] = random(); norm += row[j] * row[j]; }
    for (let j = 0; j < DIM; j++) row[j] /= Math.sqrt(norm);
  }
  self.postMessage({ id, vectors }, [vectors.buffer]);
};
