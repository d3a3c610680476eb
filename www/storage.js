// IndexedDB keeps the original bytes of every document and the saved index. The documents are
// the source of truth: an index that cannot be loaded (another version, damaged) is rebuilt from
// them, so nothing the user added is lost. Only the engine's worker opens it.
const DB = 'pocketrag';
let db = null;

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore('docs');
      req.result.createObjectStore('state');
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function tx(store, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const result = fn(t.objectStore(store));
    t.oncomplete = () => resolve(result && 'result' in result ? result.result : undefined);
    // A failed request says why on itself; the transaction's own error is set only at its abort
    // (a full quota shows up there, at commit).
    t.onerror = (e) => reject(e.target?.error ?? t.error);
    t.onabort = () => reject(t.error ?? new Error('the storage transaction was aborted'));
  });
}

export async function openStorage() {
  db = await openDb();
}

// The user's documents, by name, as the bytes they added.
export const storeDoc = (name, bytes) => tx('docs', 'readwrite', (s) => s.put(bytes, name));
export const deleteDoc = (name) => tx('docs', 'readwrite', (s) => s.delete(name));
export const storedDocNames = () => tx('docs', 'readonly', (s) => s.getAllKeys());
export const storedDoc = (name) => tx('docs', 'readonly', (s) => s.get(name));
export const storedDocCount = (name) => tx('docs', 'readonly', (s) => s.count(name));

// The saved index (`Engine.save`), and the little state that outlasts a visit: `shipped` (the
// site's collection was loaded once), `hidden` (its documents the user removed), `indexing` (the
// file under way, with its count of tries).
export const storedIndex = () => tx('state', 'readonly', (s) => s.get('index'));
export const putIndex = (bytes) => tx('state', 'readwrite', (s) => s.put(bytes, 'index'));
export const getState = (key) => tx('state', 'readonly', (s) => s.get(key));
export const setState = (key, value) => tx('state', 'readwrite', (s) => s.put(value, key));
