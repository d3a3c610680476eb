// Extracts the text of PDFs in a wasm instance of its own. The PDF parser panics on some
// malformed files, and a panic kills the wasm instance it runs in: here that costs only this
// worker, which the engine's worker then replaces.
import init, { extractPdfPages } from './pkg/pocketrag.js';

// The first message is the compiled module, shared with the engine's worker.
let ready = null;

self.onmessage = async ({ data: { id, bytes, module } }) => {
  if (module !== undefined) {
    ready = init({ module_or_path: module ?? 'pkg/pocketrag_bg.wasm' });
    return;
  }
  try {
    await ready;
  } catch (e) {
    // A module that failed to start must answer this file, not leave it waiting; marked as a
    // crash, this worker is replaced for the next one.
    self.postMessage({ id, crashed: true, error: `cannot start the PDF reader: ${e.message || e}` });
    return;
  }
  try {
    self.postMessage({ id, pages: extractPdfPages(new Uint8Array(bytes)) });
  } catch (e) {
    const crashed = e instanceof WebAssembly.RuntimeError;
    self.postMessage({
      id,
      crashed,
      error: crashed ? 'cannot read this PDF: the PDF parser failed on this file (malformed PDF?)' : String(e.message || e),
    });
  }
};
