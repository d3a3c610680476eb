// One embedding helper: its own wasm instance with the embedder only. The engine's worker hands
// each helper batches of chunk texts and puts the vectors back in order, so indexing uses every
// core without shared memory.
import { MODELS, loadModels } from './models.js';

// The first message is the compiled module (shared with the engine's worker, or the relaxed SIMD
// build's), the bindings it was built with and the precision to embed in (helpers.js).
let ready = null;

self.onmessage = async ({ data: { id, texts, module, bindings, precision } }) => {
  if (module !== undefined) {
    ready = (async () => {
      const pkg = await import(`./${bindings ?? 'pkg'}/pocketrag.js`);
      await pkg.default({ module_or_path: module ?? `${bindings ?? 'pkg'}/pocketrag_bg.wasm` });
      const [w, t, c] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig]);
      const embedder = new pkg.Embedder(w, t, c);
      embedder.setPrecision(precision ?? 'f32');
      return embedder;
    })();
    return;
  }
  try {
    const vectors = (await ready).embed(texts);
    self.postMessage({ id, vectors }, [vectors.buffer]);
  } catch (e) {
    self.postMessage({ id, error: String(e.message || e) });
  }
};
