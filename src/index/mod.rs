//! Hybrid retrieval: vector search and BM25 over the same chunks, merged by reciprocal-rank
//! fusion. The index knows chunks only by slot number and text; what a slot means (which
//! document, which span) is the library's business.

pub mod bm25;
pub mod vector;

use serde::{Deserialize, Serialize};
pub use vector::{HnswConfig, VectorIndex};

/// RRF's constant: ranks below ~60 contribute little, so one list cannot dominate by a single
/// lucky hit (Cormack et al. 2009 use 60).
const RRF_K: f32 = 60.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub slot: u32,
    /// Cosine similarity, when the vector search found this chunk.
    pub vector_score: Option<f32>,
    /// BM25 score, when the keyword search found it.
    pub keyword_score: Option<f32>,
    /// Reciprocal-rank fusion of the two; what the hits are sorted by.
    pub fused_score: f32,
}

#[derive(Default)]
pub struct HybridIndex {
    pub vectors: VectorIndex,
    pub keywords: bm25::Bm25,
}

impl HybridIndex {
    pub fn new(config: HnswConfig) -> Self {
        HybridIndex { vectors: VectorIndex::new(config), keywords: Default::default() }
    }

    pub fn add(&mut self, vector: Vec<f32>, text: &str) -> u32 {
        let slot = self.vectors.push(vector);
        self.keywords.add(slot, text);
        slot
    }

    pub fn remove(&mut self, slot: u32, text: &str) {
        self.vectors.remove(slot);
        self.keywords.remove(slot, text);
    }

    /// Top `k` chunks for a query, fused from both searches. Each side contributes its own top
    /// candidates (more than `k`, so fusion has something to merge).
    pub fn search(&self, query_vector: &[f32], query_text: &str, k: usize) -> Vec<Hit> {
        let depth = (k * 4).max(20);
        let by_vector = self.vectors.search(query_vector, depth);
        let by_keyword = self.keywords.search(query_text, depth);
        let mut hits: std::collections::HashMap<u32, Hit> = std::collections::HashMap::new();
        for (rank, &(slot, score)) in by_vector.iter().enumerate() {
            let h = hits.entry(slot).or_insert(Hit { slot, vector_score: None, keyword_score: None, fused_score: 0.0 });
            h.vector_score = Some(score);
            h.fused_score += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
        for (rank, &(slot, score)) in by_keyword.iter().enumerate() {
            let h = hits.entry(slot).or_insert(Hit { slot, vector_score: None, keyword_score: None, fused_score: 0.0 });
            h.keyword_score = Some(score);
            h.fused_score += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
        // A keyword-only hit has no cosine yet; compute it so every hit shows both signals.
        for h in hits.values_mut() {
            if h.vector_score.is_none() {
                h.vector_score = self.vectors.get(h.slot).map(|v| vector::dot(v, query_vector));
            }
        }
        let mut hits: Vec<Hit> = hits.into_values().collect();
        hits.sort_by(|a, b| b.fused_score.total_cmp(&a.fused_score).then(a.slot.cmp(&b.slot)));
        hits.truncate(k);
        hits
    }
}
