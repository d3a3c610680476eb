// Model files for the workers: kept in the Cache API under their sha256, so a second visit
// downloads nothing and a changed model is fetched again. Every file is checked against the
// site's manifest (written by `make site`) before it is cached or used: a truncated or damaged
// download is refused with its name, not fed to wasm.
const MODEL_CACHE = 'pocketrag-models';

export const MODELS = {
  embedderWeights: 'models/minilm/model.safetensors',
  embedderTokenizer: 'models/minilm/tokenizer.json',
  embedderConfig: 'models/minilm/config.json',
  generator: 'models/smollm2/SmolLM2-135M-Instruct.Q8_0.gguf',
  // Our LoRA fine-tune (models/adapters/README.md), applied on top of the generator.
  adapter: 'models/adapters/pubmedqa-lora.safetensors',
};

async function sha256(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function download(files, onProgress) {
  // Sizes come from the manifest, so the bar covers every file from the start.
  const total = files.reduce((n, f) => n + f.bytes, 0);
  let loaded = 0;
  return Promise.all(files.map(async (f) => {
    const res = await fetch(f.path);
    if (!res.ok) throw new Error(`cannot download ${f.path}: HTTP ${res.status}`);
    const bytes = new Uint8Array(f.bytes);
    const reader = res.body.getReader();
    let at = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > bytes.length) throw new Error(`${f.path} is larger than the manifest says`);
      bytes.set(value, at);
      at += value.length;
      loaded += value.length;
      onProgress(loaded, total);
    }
    if (at !== bytes.length) throw new Error(`${f.path} arrived truncated (${at} of ${bytes.length} bytes); reload to try again`);
    return bytes;
  }));
}

/// The bytes of the model files named (paths from MODELS), from the cache or the network.
/// `onProgress(loaded, total)` follows the bytes actually downloaded. With `prune`, cached files
/// this site no longer serves are deleted; they would otherwise fill the disk.
export async function loadModels(names, onProgress = () => {}, { prune = false } = {}) {
  const res = await fetch('models/manifest.json');
  if (!res.ok) throw new Error(`cannot read models/manifest.json: HTTP ${res.status}`);
  const manifest = await res.json();
  const key = (path) => `${path}?sha256=${manifest.files[path].sha256}`;
  const files = names.map((path) => {
    if (!manifest.files[path]) throw new Error(`models/manifest.json does not list ${path}`);
    return { path, ...manifest.files[path], key: key(path) };
  });
  const cache = self.caches ? await caches.open(MODEL_CACHE) : null;
  // A cached file was checked before it was stored, under a key naming its hash.
  const bytes = await Promise.all(files.map(async (f) => {
    const hit = cache && await cache.match(f.key);
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
  }));
  const missing = files.filter((_, i) => bytes[i] === null);
  const fetched = await download(missing, onProgress);
  for (const [j, f] of missing.entries()) {
    if (await sha256(fetched[j]) !== f.sha256) {
      throw new Error(`${f.path} is damaged (its sha256 does not match the manifest); reload to download it again`);
    }
    if (cache) await cache.put(f.key, new Response(fetched[j], { headers: { 'content-type': 'application/octet-stream' } }));
    bytes[files.indexOf(f)] = fetched[j];
  }
  if (cache && prune) {
    const keep = new Set(Object.keys(manifest.files).map((path) => new URL(key(path), self.location.href).href));
    for (const req of await cache.keys()) if (!keep.has(req.url)) await cache.delete(req);
  }
  return bytes;
}
