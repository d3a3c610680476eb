//! The library's file: versioned and checksummed, refused with a message to re-index when it
//! comes from another format version, is damaged, or describes a collection that cannot be
//! (chunks pointing past their document, say). The BM25 postings are rebuilt on load; the HNSW
//! graph, which takes seconds to minutes to build, is stored when there is one.

use super::{ChunkEntry, Library, StoredDocument};
use crate::chunk::ChunkConfig;
use crate::error::{Error, Result};
use crate::index::HnswConfig;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 16] = b"POCKETRAG-INDEX\0";
/// Bump on any change to what is saved. Format 2 added the search graph after format 1's
/// fields; format 1 files still load (their graph is built again when the collection needs
/// one). Anything else is refused with a message to re-index.
pub const FORMAT_VERSION: u32 = 2;

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
    /// The vector index's graph (`VectorIndex::graph_bytes`), when there is one to keep.
    graph: Option<Vec<u8>>,
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
            graph: self.index.vectors.graph_bytes(),
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
        if version != FORMAT_VERSION && version != 1 {
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
        let decode = |e: postcard::Error| Error::Index(format!("cannot decode: {e}"));
        // Postcard writes a struct's fields one after another, so format 2 is format 1's fields
        // and then the graph.
        let (saved, graph): (Saved, Option<Vec<u8>>) = if version == 1 {
            (postcard::from_bytes(payload).map_err(decode)?, None)
        } else {
            postcard::from_bytes(payload).map_err(decode)?
        };
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
        if let Some(graph) = graph {
            lib.index
                .vectors
                .restore_graph(&graph)
                .map_err(|why| Error::Index(format!("the file is damaged: {why}")))?;
        }
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
    // Settings the file carries are used to chunk and to build the graph from here on: each
    // must be one those can run with (found by `make fuzz`: an ef_search of 0 was kept, built
    // into a graph, saved, and then refused when that file was loaded).
    let (c, h) = (&saved.chunk_config, &saved.hnsw);
    if c.max_tokens == 0 || c.max_tokens > 512 || c.overlap_tokens >= c.max_tokens {
        return Err(format!("chunks of {} tokens overlapping by {}", c.max_tokens, c.overlap_tokens));
    }
    if !(1..=10_000).contains(&h.ef_search) || !(1..=10_000).contains(&h.ef_construction) {
        return Err(format!("search graph settings ef_search {}, ef_construction {}", h.ef_search, h.ef_construction));
    }
    let mut ids = std::collections::HashMap::new();
    // Which document lists each slot as its own.
    let mut owner: Vec<Option<u32>> = vec![None; saved.chunks.len()];
    for (i, doc) in saved.docs.iter().enumerate() {
        if ids.insert(doc.id, i).is_some() {
            return Err(format!("two documents have id {}", doc.id));
        }
        // Far more ids than any collection uses, and room left to count up without overflow.
        if saved.next_id > u32::MAX / 2 {
            return Err(format!("the next document id {} is out of range", saved.next_id));
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
    use crate::chunk::Chunk;
    use crate::ingest::Document;

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
        let payload = postcard::to_stdvec(&(owned(&lib), None::<Vec<u8>>)).unwrap();
        assert_eq!(&bytes[28..bytes.len() - 4], payload.as_slice());
        assert_eq!(u64::from_le_bytes(bytes[20..28].try_into().unwrap()) as usize, payload.len());

        let back = Library::load(&bytes, "test-embedder").unwrap();
        assert_eq!(back.documents().iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["a.txt", "c.txt"]);
        assert_eq!(back.chunk_count(), lib.chunk_count());
        assert_eq!(back.save().unwrap(), bytes);
    }
    #[test]
    fn the_search_graph_is_saved_with_the_library_and_format_1_still_loads() {
        let mut lib =
            Library::new("test-embedder", ChunkConfig::default(), HnswConfig { exact_below: 3, ..Default::default() });
        for (name, text) in [("a.txt", "One. Two. Three"), ("b.txt", "Four. Five"), ("c.txt", "Six")] {
            let (doc, chunks, vectors) = document(name, text);
            lib.add(doc, chunks, vectors);
        }
        assert!(lib.maintain());
        assert_eq!(lib.index().vectors.kind(), "hnsw");
        let bytes = lib.save().unwrap();
        let back = Library::load(&bytes, "test-embedder").unwrap();
        assert_eq!(back.index().vectors.kind(), "hnsw", "the graph came back, not rebuilt");
        assert_eq!(back.search(&[5.0, 1.0, -0.5, 0.25], "Five", 3), lib.search(&[5.0, 1.0, -0.5, 0.25], "Five", 3));
        // A file of format 1 (no graph) as builds before this one wrote it.
        let payload = postcard::to_stdvec(&owned(&lib)).unwrap();
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&1u32.to_le_bytes());
        old.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        old.extend_from_slice(&payload);
        old.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        let old = Library::load(&old, "test-embedder").unwrap();
        assert_eq!(old.index().vectors.kind(), "exact");
        assert_eq!(old.chunk_count(), lib.chunk_count());
        let mut future = bytes.clone();
        future[16..20].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(Library::load(&future, "test-embedder").err().unwrap().to_string().contains("different version"));
    }

    /// The page's path: the graph is built from a save elsewhere and handed back, while the
    /// library goes on changing. Added documents stay searchable; a removal meanwhile makes the
    /// graph not fit, and it is refused without harm.
    #[test]
    fn a_graph_built_from_a_save_is_adopted_unless_the_library_lost_a_document_since() {
        let config = HnswConfig { exact_below: 3, ..Default::default() };
        let mut lib = Library::new("test-embedder", ChunkConfig::default(), config);
        for (name, text) in [("a.txt", "One. Two. Three"), ("b.txt", "Four. Five")] {
            let (doc, chunks, vectors) = document(name, text);
            lib.add(doc, chunks, vectors);
        }
        assert!(lib.needs_graph());
        let graph =
            Library::build_graph(&lib.save().unwrap(), "test-embedder").unwrap().expect("a graph over 5 chunks");
        let (doc, chunks, vectors) = document("c.txt", "Six");
        lib.add(doc, chunks, vectors);
        let mut other = Library::load(&lib.save().unwrap(), "test-embedder").unwrap();
        // Every chunk, as a set of slots (the vectors tie, so the order among ties may differ).
        let slots = |lib: &Library| {
            let mut s: Vec<u32> = lib.search(&[0.0, 1.0, -0.5, 0.25], "Six", 6).iter().map(|h| h.slot).collect();
            s.sort();
            s
        };
        let exact = slots(&lib);
        assert_eq!(exact, [0, 1, 2, 3, 4, 5]);
        assert!(lib.adopt_graph(&graph).unwrap());
        assert_eq!(lib.index().vectors.kind(), "hnsw");
        assert!(!lib.needs_graph(), "one new chunk does not call for another build");
        assert_eq!(slots(&lib), exact, "the chunk added after the save is still found");

        assert!(other.remove("a.txt"));
        assert!(!other.adopt_graph(&graph).unwrap());
        assert_eq!(other.index().vectors.kind(), "exact");
        assert!(!other.adopt_graph(b"not a graph").unwrap());
        // Too small for a graph: there is none to build.
        let small = Library::new("test-embedder", ChunkConfig::default(), HnswConfig::default());
        assert!(Library::build_graph(&small.save().unwrap(), "test-embedder").unwrap().is_none());
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
            let payload = postcard::to_stdvec(&(saved, None::<Vec<u8>>)).unwrap();
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
            ("next_id with no room to count up", Box::new(|s| s.next_id = u32::MAX)),
            // Found by `make fuzz` (fuzz/regressions/index/): settings no chunker or graph runs with.
            ("ef_search of 0", Box::new(|s| s.hnsw.ef_search = 0)),
            ("ef_construction of 0", Box::new(|s| s.hnsw.ef_construction = 0)),
            ("chunks of 0 tokens", Box::new(|s| s.chunk_config.max_tokens = 0)),
            ("overlap as long as a chunk", Box::new(|s| s.chunk_config.overlap_tokens = s.chunk_config.max_tokens)),
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
