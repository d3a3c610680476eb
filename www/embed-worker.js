// One embedding helper: its own wasm instance with the embedder only. The engine's worker hands
// each helper batches of chunk texts and puts the vectors back in order, so indexing uses every
// core without shared memory.
import init, { Embedder } from './pkg/pocketrag.js';
import { MODELS, loadModels } from './models.js';

const ready = (async () => {
  await init({ module_or_path: 'pkg/pocketrag_bg.wasm' });
  const [w, t, c] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig]);
  return new Embedder(w, t, c);
})();

self.onmessage = async ({ data: { id, texts } }) => {
  try {
    const vectors = (await ready).embed(texts);
    self.postMessage({ id, vectors }, [vectors.buffer]);
  } catch (e) {
    self.postMessage({ id, error: String(e.message || e) });
  }
};
