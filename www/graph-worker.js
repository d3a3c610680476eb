// Builds the search graph of a saved index in a wasm instance of its own: seconds per 10,000
// chunks, during which the engine's worker goes on answering by exact search. The engine takes
// the graph back with `adoptGraph`, which checks that it still fits the collection.
import init, { buildSearchGraph } from './pkg/pocketrag.js';

// The first message is the compiled module, shared with the engine's worker; then one saved
// index per request, answered with { graph } (undefined: too small to need one) or { error }.
let ready = null;

self.onmessage = async ({ data: { module, saved } }) => {
  if (module !== undefined) {
    ready = init({ module_or_path: module });
    return;
  }
  try {
    await ready;
    const graph = buildSearchGraph(saved);
    self.postMessage({ graph }, graph ? [graph.buffer] : []);
  } catch (e) {
    self.postMessage({ error: String(e.message || e) });
  }
};
