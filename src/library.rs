//! The collection a user has built: documents, their chunks, and the index over the chunks — and
//! its file format. Everything derivable (BM25 postings, the HNSW graph) is rebuilt on load rather
//! than stored, so the file holds only what cannot be recomputed without the embedder.

use crate::chunk::{Chunk, ChunkConfig};
use crate::error::{Error, Result};
use crate::index::{Hit, HnswConfig, HybridIndex};
use crate::ingest::{Block, Document, Format};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 16] = b"POCKETRAG-INDEX\0";
/// Bump on any change to `Saved`; older files are refused with a message to re-index.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredDocument {
    pub id: u32,
    pub name: String,
    pub format: Format,
    pub text: String,
    pub blocks: Vec<Block>,
    /// Index slots of this document's chunks, in document order.
    pub slots: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkEntry {
    pub doc: u32,
    pub chunk: Chunk,
}

pub struct Library {
    /// Identifies the embedding model; vectors from another model are meaningless here.
    pub embedder: String,
    pub chunk_config: ChunkConfig,
    docs: Vec<StoredDocument>,
    /// By index slot; `None` where a chunk was removed.
    chunks: Vec<Option<ChunkEntry>>,
    index: HybridIndex,
    next_id: u32,
}

/// What `save` writes, borrowed from the library: serde encodes a reference as the value, so the
/// bytes are `Saved`'s, without first copying every document, chunk and vector (which made a save
/// cost three times the index's size in memory).
#[derive(Serialize)]
struct SavedRef<'a> {
    embedder: &'a str,
    chunk_config: ChunkConfig,
    hnsw: HnswConfig,
    next_id: u32,
    docs: &'a [StoredDocument],
    chunks: Vec<Option<(&'a ChunkEntry, &'a [f32])>>,
}

/// What `load` reads. Tests also write it, as `save` wrote it before it borrowed.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct Saved {
    embedder: String,
    chunk_config: ChunkConfig,
    hnsw: HnswConfig,
    next_id: u32,
    docs: Vec<StoredDocument>,
    chunks: Vec<Option<(ChunkEntry, Vec<f32>)>>,
}

impl Library {
    pub fn new(embedder: &str, chunk_config: ChunkConfig, hnsw: HnswConfig) -> Self {
        Library {
            embedder: embedder.to_string(),
            chunk_config,
            docs: vec![],
            chunks: vec![],
            index: HybridIndex::new(hnsw),
            next_id: 0,
        }
    }

    pub fn documents(&self) -> &[StoredDocument] {
        &self.docs
    }

    pub fn document(&self, id: u32) -> Option<&StoredDocument> {
        self.docs.iter().find(|d| d.id == id)
    }

    pub fn chunk(&self, slot: u32) -> Option<&ChunkEntry> {
        self.chunks.get(slot as usize)?.as_ref()
    }

    pub fn chunk_count(&self) -> usize {
        self.index.vectors.len()
    }

    pub fn index(&self) -> &HybridIndex {
        &self.index
    }

    /// Add a document with its chunks and their vectors (same order). A document with the same
    /// name is replaced. Returns the new document's id.
    pub fn add(&mut self, doc: Document, chunks: Vec<Chunk>, vectors: Vec<Vec<f32>>) -> u32 {
        assert_eq!(chunks.len(), vectors.len(), "one vector per chunk");
        self.remove(&doc.name);
        let id = self.next_id;
        self.next_id += 1;
        let mut slots = Vec::with_capacity(chunks.len());
        for (chunk, vector) in chunks.into_iter().zip(vectors) {
            let slot = self.index.add(vector, &chunk.text);
            debug_assert_eq!(slot as usize, self.chunks.len());
            self.chunks.push(Some(ChunkEntry { doc: id, chunk }));
            slots.push(slot);
        }
        self.docs.push(StoredDocument {
            id,
            name: doc.name,
            format: doc.format,
            text: doc.text,
            blocks: doc.blocks,
            slots,
        });
        id
    }

    /// Remove a document by name; returns whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(pos) = self.docs.iter().position(|d| d.name == name) else { return false };
        let doc = self.docs.remove(pos);
        for slot in doc.slots {
            if let Some(entry) = self.chunks[slot as usize].take() {
                self.index.remove(slot, &entry.chunk.text);
            }
        }
        true
    }

    /// Fold pending additions and removals into the vector graph when they have grown large.
    /// Cheap to call after every batch.
    pub fn maintain(&mut self) -> bool {
        self.index.vectors.maintain()
    }

    pub fn search(&self, query_vector: &[f32], query_text: &str, k: usize) -> Vec<Hit> {
        self.index.search(query_vector, query_text, k)
    }

    /// The library as one file. Fails, changing nothing, when the memory for the file cannot be
    /// had (in wasm running out would otherwise end the instance).
    pub fn save(&self) -> Result<Vec<u8>> {
        let saved = SavedRef {
            embedder: &self.embedder,
            chunk_config: self.chunk_config,
            hnsw: *self.index.vectors.config(),
            next_id: self.next_id,
            docs: &self.docs,
            chunks: self
                .chunks
                .iter()
                .enumerate()
                .map(|(slot, e)| Some((e.as_ref()?, self.index.vectors.get(slot as u32)?)))
                .collect(),
        };
        // Measured first (a quick pass that writes nothing), so that the file is written once,
        // straight after its header, into a buffer of its exact size.
        let len = postcard::serialize_with_flavor(&saved, postcard::ser_flavors::Size::default())
            .expect("library serialises");
        let total = MAGIC.len() + 4 + 8 + len + 4;
        let mut out = Vec::new();
        out.try_reserve_exact(total)
            .map_err(|_| Error::Index(format!("not enough memory to save the index ({} MB)", total >> 20)))?;
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(len as u64).to_le_bytes());
        let header = out.len();
        let mut out = postcard::to_extend(&saved, out).expect("library serialises");
        let crc = crc32fast::hash(&out[header..]);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Read a saved library. `expect_embedder` guards against mixing vector spaces.
    pub fn load(bytes: &[u8], expect_embedder: &str) -> Result<Self> {
        let header = MAGIC.len() + 4 + 8;
        if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
            return Err(Error::Index("not a pocketrag index file".into()));
        }
        let version = u32::from_le_bytes(bytes[16..20].try_into().unwrap());
        if version != FORMAT_VERSION {
            return Err(Error::Index(format!(
                "made by a different version of pocketrag (format {version}, this build reads {FORMAT_VERSION}); index the documents again"
            )));
        }
        let len = u64::from_le_bytes(bytes[20..28].try_into().unwrap()) as usize;
        if bytes.len() != header + len + 4 {
            return Err(Error::Index(format!(
                "file is damaged or truncated ({} bytes, expected {})",
                bytes.len(),
                header.saturating_add(len).saturating_add(4)
            )));
        }
        let payload = &bytes[header..header + len];
        let crc = u32::from_le_bytes(bytes[header + len..].try_into().unwrap());
        if crc32fast::hash(payload) != crc {
            return Err(Error::Index("checksum mismatch: the file is damaged".into()));
        }
        reserve_for_load(bytes.len());
        let saved: Saved = postcard::from_bytes(payload).map_err(|e| Error::Index(format!("cannot decode: {e}")))?;
        if saved.embedder != expect_embedder {
            return Err(Error::Index(format!(
                "built with embedder {:?}, but this engine uses {:?}; index the documents again",
                saved.embedder, expect_embedder
            )));
        }
        consistent(&saved).map_err(|why| Error::Index(format!("the file is damaged: {why}")))?;
        let mut lib = Library::new(&saved.embedder, saved.chunk_config, saved.hnsw);
        lib.next_id = saved.next_id;
        lib.docs = saved.docs;
        for entry in saved.chunks {
            match entry {
                Some((entry, vector)) => {
                    lib.index.add(vector, &entry.chunk.text);
                    lib.chunks.push(Some(entry));
                }
                None => {
                    lib.index.vectors.push_removed();
                    lib.index.keywords.add_removed();
                    lib.chunks.push(None);
                }
            }
        }
        // No graph yet: until `maintain` builds one, search is an exact scan, which is what a
        // short-lived process (one CLI query) wants anyway — building the graph costs about 1 ms
        // per vector, a scan of 10k vectors under 1 ms.
        Ok(lib)
    }
}

/// Why a decoded file cannot be a library this build wrote, if it cannot. The checksum catches
/// damage by accident; this catches a file made by hand (or by a bug) whose numbers point
/// outside what it holds, which would otherwise panic at the first search or answer.
fn consistent(saved: &Saved) -> std::result::Result<(), String> {
    let range_ok = |text: &str, start: usize, end: usize| {
        start <= end && end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end)
    };
    let mut ids = std::collections::HashMap::new();
    // Which document lists each slot as its own.
    let mut owner: Vec<Option<u32>> = vec![None; saved.chunks.len()];
    for (i, doc) in saved.docs.iter().enumerate() {
        if ids.insert(doc.id, i).is_some() {
            return Err(format!("two documents have id {}", doc.id));
        }
        if doc.id >= saved.next_id {
            return Err(format!("document id {} is not below the next id {}", doc.id, saved.next_id));
        }
        if let Some(b) = doc.blocks.iter().find(|b| !range_ok(&doc.text, b.start, b.end)) {
            return Err(format!("{}: a block ({}..{}) lies outside its text", doc.name, b.start, b.end));
        }
        for &slot in &doc.slots {
            match (saved.chunks.get(slot as usize), owner.get_mut(slot as usize)) {
                (Some(Some((entry, _))), Some(o @ None)) if entry.doc == doc.id => *o = Some(doc.id),
                _ => return Err(format!("{}: chunk slot {slot} is not one of its chunks", doc.name)),
            }
        }
    }
    let dim = saved.chunks.iter().flatten().map(|(_, v)| v.len()).next();
    for (slot, (entry, vector)) in saved.chunks.iter().enumerate().filter_map(|(i, c)| Some((i, c.as_ref()?))) {
        if Some(vector.len()) != dim || vector.is_empty() || vector.iter().any(|x| !x.is_finite()) {
            return Err(format!("chunk {slot}: its vector is not like the others"));
        }
        let Some(&d) = ids.get(&entry.doc) else {
            return Err(format!("chunk {slot} belongs to no document (id {})", entry.doc));
        };
        let doc = &saved.docs[d];
        if !range_ok(&doc.text, entry.chunk.start, entry.chunk.end) || owner[slot] != Some(doc.id) {
            return Err(format!("chunk {slot} does not lie in {}", doc.name));
        }
    }
    Ok(())
}

/// In wasm the allocator grows linear memory as it runs out, a few pages at a time, and each
/// growth is slow (measured under Node: loading a 315 MB file grew memory ~600 MB, and the growing
/// took half of the 13 s the load took). Reserving about what loading needs, once, and handing it
/// back to the allocator makes one growth of it. wasm memory never shrinks, so this costs nothing
/// the load would not take anyway; if the memory cannot be had, loading goes on without it.
fn reserve_for_load(file_len: usize) {
    if cfg!(target_arch = "wasm32") {
        let mut room: Vec<u8> = Vec::new();
        let _ = room.try_reserve_exact(file_len.saturating_mul(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(name: &str, text: &str) -> (Document, Vec<Chunk>, Vec<Vec<f32>>) {
        let doc = crate::ingest::ingest(name, text.as_bytes()).unwrap();
        let chunks: Vec<Chunk> = text
            .split(". ")
            .scan(0, |at, part| {
                let start = *at;
                *at += part.len() + 2;
                Some(Chunk {
                    start,
                    end: start + part.len(),
                    text: part.to_string(),
                    heading: None,
                    page: None,
                    tokens: 3,
                })
            })
            .collect();
        let vectors = (0..chunks.len()).map(|i| vec![i as f32, 1.0, -0.5, 0.25]).collect();
        (doc, chunks, vectors)
    }

    /// The library in the owned form that `save` wrote before it borrowed.
    fn owned(lib: &Library) -> Saved {
        Saved {
            embedder: lib.embedder.clone(),
            chunk_config: lib.chunk_config,
            hnsw: *lib.index.vectors.config(),
            next_id: lib.next_id,
            docs: lib.docs.clone(),
            chunks: lib
                .chunks
                .iter()
                .enumerate()
                .map(|(slot, e)| Some((e.clone()?, lib.index.vectors.get(slot as u32)?.to_vec())))
                .collect(),
        }
    }

    #[test]
    fn save_writes_the_same_bytes_as_before_and_loads_back() {
        let mut lib = Library::new("test-embedder", ChunkConfig::default(), HnswConfig::default());
        for (name, text) in [("a.txt", "One. Two. Three"), ("b.txt", "Four. Five"), ("c.txt", "Six")] {
            let (doc, chunks, vectors) = document(name, text);
            lib.add(doc, chunks, vectors);
        }
        assert!(lib.remove("b.txt"));
        let bytes = lib.save().unwrap();

        // The bytes must not have changed since `save` borrowed, or files saved by earlier
        // builds of this format version would no longer load.
        let payload = postcard::to_stdvec(&owned(&lib)).unwrap();
        assert_eq!(&bytes[28..bytes.len() - 4], payload.as_slice());
        assert_eq!(u64::from_le_bytes(bytes[20..28].try_into().unwrap()) as usize, payload.len());

        let back = Library::load(&bytes, "test-embedder").unwrap();
        assert_eq!(back.documents().iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["a.txt", "c.txt"]);
        assert_eq!(back.chunk_count(), lib.chunk_count());
        assert_eq!(back.save().unwrap(), bytes);
    }
    /// A file with a good checksum whose numbers point outside what it holds is refused as
    /// damaged, for each way a number can be wrong; none of them panics.
    #[test]
    fn a_crafted_index_is_refused_not_trusted() {
        let mut lib = Library::new("test-embedder", ChunkConfig::default(), HnswConfig::default());
        for (name, text) in [("a.txt", "One. Two. Three"), ("é.txt", "Déjà vu. Encore")] {
            let (doc, chunks, vectors) = document(name, text);
            lib.add(doc, chunks, vectors);
        }
        let good = || owned(&lib);
        let file = |saved: &Saved| {
            let payload = postcard::to_stdvec(saved).unwrap();
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            out
        };
        assert!(Library::load(&file(&good()), "test-embedder").is_ok());
        let crafted: Vec<(&str, Box<dyn Fn(&mut Saved)>)> = vec![
            ("slot past the end", Box::new(|s| s.docs[0].slots.push(99))),
            ("slot of another document", Box::new(|s| s.docs[0].slots[0] = s.docs[1].slots[0])),
            ("slot listed twice", Box::new(|s| s.docs[0].slots[1] = s.docs[0].slots[0])),
            (
                "short vector",
                Box::new(|s| {
                    s.chunks[1].as_mut().unwrap().1.pop();
                }),
            ),
            ("NaN in a vector", Box::new(|s| s.chunks[0].as_mut().unwrap().1[0] = f32::NAN)),
            ("chunk past its text", Box::new(|s| s.chunks[0].as_mut().unwrap().0.chunk.end = 10_000)),
            // "Déjà": byte 2 is inside "é".
            ("chunk inside a character", Box::new(|s| s.chunks[3].as_mut().unwrap().0.chunk.start = 2)),
            ("chunk of no document", Box::new(|s| s.chunks[0].as_mut().unwrap().0.doc = 77)),
            ("block past its text", Box::new(|s| s.docs[1].blocks[0].end = 10_000)),
            ("two documents with one id", Box::new(|s| s.docs[1].id = s.docs[0].id)),
            ("id not below next_id", Box::new(|s| s.next_id = 0)),
        ];
        for (what, change) in crafted {
            let mut saved = good();
            change(&mut saved);
            match Library::load(&file(&saved), "test-embedder") {
                Err(Error::Index(why)) => assert!(why.contains("damaged"), "{what}: {why}"),
                Err(e) => panic!("{what}: {e}"),
                Ok(_) => panic!("{what}: loaded"),
            }
        }
    }
}
