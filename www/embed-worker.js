// One embedding helper: its own wasm instance with the embedder only. The engine's worker hands
// each helper batches of chunk texts and puts the vectors back in order, so indexing uses every
// core without shared memory.
import init, { Embedder } from './pkg/pocketrag.js';
import { MODELS, loadModels } from './models.js';

// The first message is the compiled module, shared with the engine's worker.
let ready = null;

self.onmessage = async ({ data: { id, texts, module } }) => {
  if (module !== undefined) {
    ready = (async () => {
      await init({ module_or_path: module ?? 'pkg/pocketrag_bg.wasm' });
      const [w, t, c] = await loadModels([MODELS.embedderWeights, MODELS.embedderTokenizer, MODELS.embedderConfig]);
      return new Embedder(w, t, c);
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
