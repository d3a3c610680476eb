// Offline support. Everything the page needs except the models (which the engine's worker caches
// by sha256 itself) is answered from the network when it can be, so a new release shows up on
// the next visit, and from the last copy seen when it cannot, so the page opens offline.
const SHELL_CACHE = 'pocketrag-shell';
const SHELL = ['./', 'index.html', 'app.js', 'worker.js', 'storage.js', 'indexing.js', 'helpers.js', 'models.js', 'parse-worker.js', 'embed-worker.js', 'graph-worker.js', 'style.css', 'pkg/pocketrag.js',
  'pkg/pocketrag_bg.wasm', 'models/manifest.json'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(self.clients.claim());
});

async function networkFirst(request) {
  const cache = await caches.open(SHELL_CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch (offline) {
    // ?backend= and ?threads= do not change the page's bytes.
    const hit = await cache.match(request, { ignoreSearch: true });
    if (hit) return hit;
    throw offline;
  }
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  // Model files are large and cached by the worker under their hash; copying them here too would
  // double the disk they take.
  if (url.pathname.includes('/models/') && !url.pathname.endsWith('/manifest.json')) return;
  event.respondWith(networkFirst(event.request));
});
