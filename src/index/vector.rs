//! Nearest-neighbour search over unit vectors (dot product = cosine similarity).
//!
//! Two segments: an HNSW graph (instant-distance) over most vectors, and an exact "delta" segment
//! for vectors added since the graph was built, because instant-distance graphs cannot take
//! insertions. Removals are tombstones. `maintain` folds the delta and the tombstones into a new
//! graph once they grow large. Below `exact_below` live vectors there is no graph at all: a plain
//! scan is faster than HNSW at that size and always exact (see the README for the measured
//! crossover).
//!
//! Only the vectors are persisted; the graph is rebuilt deterministically (fixed seed) on load, so
//! the file format does not depend on the HNSW crate's internal layout.

use instant_distance::{Builder, HnswMap, Point, Search};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Collections with fewer live vectors than this are searched exactly.
    pub exact_below: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    pub seed: u64,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig { exact_below: 10_000, ef_construction: 100, ef_search: 200, seed: 0x5eed }
    }
}

#[derive(Clone, Debug)]
struct Vector(Arc<[f32]>);

impl Point for Vector {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four independent accumulators let the compiler vectorise the loop.
    let mut acc = [0f32; 4];
    let (ca, ra) = a.split_at(a.len() / 4 * 4);
    let (cb, rb) = b.split_at(ca.len());
    for (x, y) in ca.chunks_exact(4).zip(cb.chunks_exact(4)) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[derive(Default)]
pub struct VectorIndex {
    config: HnswConfig,
    /// By slot; `None` once removed.
    slots: Vec<Option<Vector>>,
    graph: Option<HnswMap<Vector, u32>>,
    /// Slots at or above this are not in the graph.
    graph_upto: usize,
    /// Removed slots that are still in the graph.
    dead_in_graph: usize,
    live: usize,
}

impl VectorIndex {
    pub fn new(config: HnswConfig) -> Self {
        VectorIndex { config, ..Default::default() }
    }

    pub fn config(&self) -> &HnswConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of slots ever handed out (live or removed); the next `push` gets this slot.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, slot: u32) -> Option<&[f32]> {
        self.slots.get(slot as usize)?.as_ref().map(|v| &*v.0)
    }

    /// Add a vector; returns its slot. It is searchable at once (exactly, in the delta segment).
    pub fn push(&mut self, v: Vec<f32>) -> u32 {
        self.slots.push(Some(Vector(v.into())));
        self.live += 1;
        (self.slots.len() - 1) as u32
    }

    /// Keep a slot number taken but empty (used when loading a file that had removals).
    pub fn push_removed(&mut self) -> u32 {
        self.slots.push(None);
        (self.slots.len() - 1) as u32
    }

    pub fn remove(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            if s.take().is_some() {
                self.live -= 1;
                if (slot as usize) < self.graph_upto && self.graph.is_some() {
                    self.dead_in_graph += 1;
                }
            }
        }
    }

    /// Whether the graph is stale enough to rebuild: a large delta makes every search scan it,
    /// many tombstones make the graph return dead results that are filtered out.
    pub fn needs_rebuild(&self) -> bool {
        if self.live < self.config.exact_below {
            return self.graph.is_some();
        }
        let graph_size = self.graph_upto.saturating_sub(self.dead_in_graph).max(1);
        let delta = self.slots.len() - self.graph_upto;
        self.graph.is_none() || delta > 1024.max(graph_size / 4) || self.dead_in_graph * 5 > graph_size
    }

    /// Rebuild the graph if `needs_rebuild`. Returns whether it did.
    pub fn maintain(&mut self) -> bool {
        if !self.needs_rebuild() {
            return false;
        }
        self.rebuild();
        true
    }

    pub fn rebuild(&mut self) {
        self.dead_in_graph = 0;
        self.graph_upto = self.slots.len();
        if self.live < self.config.exact_below {
            self.graph = None;
            return;
        }
        let (points, values): (Vec<Vector>, Vec<u32>) =
            self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|v| (v.clone(), i as u32))).unzip();
        let graph = Builder::default()
            .ef_construction(self.config.ef_construction)
            .ef_search(self.config.ef_search)
            .seed(self.config.seed)
            .build(points, values);
        self.graph = Some(graph);
    }

    /// The `k` most similar live vectors, best first, as (slot, cosine similarity).
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        match &self.graph {
            None => self.exact(query, k, 0),
            Some(graph) => {
                let q = Vector(query.into());
                let mut search = Search::default();
                let mut hits: Vec<(u32, f32)> = graph
                    .search(&q, &mut search)
                    .filter(|item| self.slots[*item.value as usize].is_some())
                    .take(k)
                    .map(|item| (*item.value, 1.0 - item.distance))
                    .collect();
                hits.extend(self.exact(query, k, self.graph_upto));
                sort_and_truncate(&mut hits, k);
                hits
            }
        }
    }

    /// Exact search over live slots from `from` on.
    pub fn exact(&self, query: &[f32], k: usize, from: usize) -> Vec<(u32, f32)> {
        let mut hits: Vec<(u32, f32)> = self.slots[from.min(self.slots.len())..]
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|v| ((from + i) as u32, dot(query, &v.0))))
            .collect();
        sort_and_truncate(&mut hits, k);
        hits
    }
}

fn sort_and_truncate(hits: &mut Vec<(u32, f32)>, k: usize) {
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        hits.truncate(k);
    }
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.truncate(k);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        // xorshift: deterministic pseudo-random vectors without a dependency.
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn exact_and_graph_agree_and_delta_and_removal_work() {
        let cfg = HnswConfig { exact_below: 100, ..Default::default() };
        let mut idx = VectorIndex::new(cfg);
        for i in 0..600 {
            idx.push(unit(i, 32));
        }
        assert!(idx.maintain());
        // Added after the build: found through the delta segment.
        let late = idx.push(unit(10_000, 32));
        let q = unit(10_000, 32);
        assert_eq!(idx.search(&q, 1)[0].0, late);
        // Removed: never returned again.
        idx.remove(late);
        assert!(idx.search(&q, 10).iter().all(|h| h.0 != late));
        // Recall of the graph against exact search.
        let mut found = 0;
        for t in 0..50 {
            let q = unit(20_000 + t, 32);
            let exact: Vec<u32> = idx.exact(&q, 10, 0).iter().map(|h| h.0).collect();
            let approx: Vec<u32> = idx.search(&q, 10).iter().map(|h| h.0).collect();
            found += approx.iter().filter(|s| exact.contains(s)).count();
        }
        assert!(found as f64 / 500.0 > 0.9, "recall@10 {found}/500");
    }
}
