//! The collection a user has built: documents, their chunks, and the index over the chunks.
//! Its file format is `file.rs`.

use crate::chunk::{Chunk, ChunkConfig};
use crate::error::Result;
use crate::index::{Hit, HnswConfig, HybridIndex};
use crate::ingest::{Block, Document, Format};
use serde::{Deserialize, Serialize};

mod file;

pub use file::FORMAT_VERSION;

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

    /// How many numbers each vector has; None while there are none.
    pub fn vector_dim(&self) -> Option<usize> {
        (0..self.index.vectors.slots() as u32).find_map(|s| self.index.vectors.get(s)).map(<[f32]>::len)
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

    /// Build a search graph from this many chunks on (normally `HnswConfig::default()`'s
    /// measured threshold; lower to watch the graph work on a small collection).
    pub fn set_graph_threshold(&mut self, chunks: usize) {
        self.index.vectors.set_exact_below(chunks);
    }

    /// Whether the collection wants its search graph (re)built: the page builds it elsewhere
    /// (`build_graph`, in a worker of its own) and hands it back (`adopt_graph`).
    pub fn needs_graph(&self) -> bool {
        self.index.vectors.needs_rebuild()
    }

    /// The search graph of a saved library, built from its vectors, as `adopt_graph` takes it;
    /// None when the collection is small enough to be scanned.
    pub fn build_graph(saved: &[u8], expect_embedder: &str) -> Result<Option<Vec<u8>>> {
        let mut lib = Library::load(saved, expect_embedder)?;
        lib.index.vectors.rebuild();
        Ok(lib.index.vectors.graph_bytes())
    }

    /// Take a graph that `build_graph` made from an earlier save of this library. Vectors added
    /// since are searched exactly until the next build. Ok(false): the graph no longer fits (a
    /// document was removed meanwhile, or another build made it); nothing changes.
    pub fn adopt_graph(&mut self, graph: &[u8]) -> Result<bool> {
        Ok(self.index.vectors.restore_graph(graph).unwrap_or(false))
    }

    pub fn search(&self, query_vector: &[f32], query_text: &str, k: usize) -> Vec<Hit> {
        self.index.search(query_vector, query_text, k)
    }
}
