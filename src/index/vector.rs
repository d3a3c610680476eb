//! Nearest-neighbour search over unit vectors (dot product = cosine similarity).
//!
//! Two segments: an HNSW graph (instant-distance) over most vectors, and an exact "delta" segment
//! for vectors added since the graph was built, because instant-distance graphs cannot take
//! insertions. Removals are tombstones. `maintain` folds the delta and the tombstones into a new
//! graph once they grow large. Below `exact_below` live vectors there is no graph at all: a plain
//! scan is faster than HNSW at that size and always exact (see the README for the measured
//! crossover).
//!
//! The graph is saved with the library ([`VectorIndex::graph_bytes`]), each point written as its
//! slot number only, so a reload does not spend a second per thousand vectors rebuilding it. Its
//! layout is instant-distance's own, so the bytes carry [`GRAPH_LAYOUT`]: a graph of another
//! layout is dropped (and rebuilt when needed), and one of this layout is checked number by
//! number before use, because the crate indexes with them unchecked.

use instant_distance::{Builder, HnswMap, Point, Search};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::sync::Arc;

/// The graph layout this build writes and reads: instant-distance 0.6 with M = 32 (its
/// `HnswMap` as serde writes it). Changing the crate's version means changing this.
pub const GRAPH_LAYOUT: &str = "instant-distance 0.6 M=32";

/// Neighbours per node in the graph's upper layers (instant-distance's `M`; twice that in
/// layer zero).
const M: usize = 32;

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
        HnswConfig { exact_below: 10_000, ef_construction: 100, ef_search: 100, seed: 0x5eed }
    }
}

/// A stored vector and its slot. Serialised as the slot alone: the numbers are saved once, with
/// the library's chunks, and found again through [`LOADING`] when a graph is read.
#[derive(Clone, Debug)]
struct Vector {
    slot: u32,
    data: Arc<[f32]>,
}

impl Point for Vector {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.data, &other.data)
    }
}

thread_local! {
    /// The vectors by slot while a saved graph is read: serde's derive gives `Vector::deserialize`
    /// no other way to reach them.
    static LOADING: RefCell<Vec<Option<Vector>>> = const { RefCell::new(Vec::new()) };
}

impl Serialize for Vector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.slot)
    }
}

impl<'de> Deserialize<'de> for Vector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let slot = u32::deserialize(d)?;
        LOADING
            .with(|l| l.borrow().get(slot as usize).cloned().flatten())
            .ok_or_else(|| serde::de::Error::custom(format!("the graph names slot {slot}, which holds no vector")))
    }
}

/// The graph's numbers as its bytes hold them, to check before the crate trusts them: every
/// neighbour must be a node of its layer (or the end marker), every value a live slot.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct MapLayout {
    hnsw: HnswLayout,
    values: Vec<u32>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct HnswLayout {
    ef_search: usize,
    points: Vec<u32>,
    zero: Vec<[[u32; M]; 2]>,
    layers: Vec<Vec<[u32; M]>>,
}

/// instant-distance's "no neighbour" mark.
const NO_NEIGHBOUR: u32 = u32::MAX;

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

    /// Set the size from which there is a graph; it is kept in the saved index. The graph
    /// itself follows at the next `maintain` (or `rebuild`).
    pub fn set_exact_below(&mut self, chunks: usize) {
        self.config.exact_below = chunks;
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
        self.slots.get(slot as usize)?.as_ref().map(|v| &*v.data)
    }

    /// Which search answers now: "hnsw" (the graph, plus an exact scan of vectors added since it
    /// was built) or "exact" (a scan of every vector).
    pub fn kind(&self) -> &'static str {
        if self.graph.is_some() {
            "hnsw"
        } else {
            "exact"
        }
    }

    /// The graph to save beside the vectors, when there is one without removed vectors in it
    /// (those are not saved, so the graph could not be read back).
    pub fn graph_bytes(&self) -> Option<Vec<u8>> {
        let graph = self.graph.as_ref().filter(|_| self.dead_in_graph == 0)?;
        Some(postcard::to_allocvec(&(GRAPH_LAYOUT, self.graph_upto as u64, graph)).expect("graph serialises"))
    }

    /// Take back a graph saved by [`VectorIndex::graph_bytes`], once every vector is pushed.
    /// Ok(false): it has another layout and was left out (`maintain` rebuilds). Err: it does not
    /// fit these vectors; nothing changes.
    pub fn restore_graph(&mut self, bytes: &[u8]) -> Result<bool, String> {
        let (layout, rest): (String, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| format!("search graph: {e}"))?;
        if layout != GRAPH_LAYOUT {
            return Ok(false);
        }
        let (upto, rest): (u64, &[u8]) = postcard::take_from_bytes(rest).map_err(|e| format!("search graph: {e}"))?;
        let upto = usize::try_from(upto)
            .ok()
            .filter(|&u| u <= self.slots.len())
            .ok_or("the search graph covers slots that do not exist")?;
        let map: MapLayout = postcard::from_bytes(rest).map_err(|e| format!("search graph: {e}"))?;
        let h = &map.hnsw;
        let n = h.points.len();
        let live_below = self.slots[..upto].iter().filter(|s| s.is_some()).count();
        if n != live_below || map.values.len() != n || h.zero.len() != n {
            return Err(format!("the search graph holds {n} points for {live_below} vectors"));
        }
        let mut seen = vec![false; upto];
        for (&p, &v) in h.points.iter().zip(&map.values) {
            let fresh = (p as usize) < upto
                && p == v
                && self.slots[p as usize].is_some()
                && !std::mem::replace(&mut seen[p as usize], true);
            if !fresh {
                return Err(format!("the search graph names slot {p} wrongly"));
            }
        }
        let fits = |ids: &[u32], nodes: usize| ids.iter().all(|&i| i == NO_NEIGHBOUR || (i as usize) < nodes);
        if !h.zero.iter().all(|z| fits(&z[0], n) && fits(&z[1], n)) {
            return Err("a neighbour in the search graph's lowest layer is not a point".into());
        }
        // Search descends from the last layer to the first, carrying node numbers down: each
        // layer must hold at most as many nodes as the one below it.
        let mut below = n;
        for layer in &h.layers {
            if layer.is_empty() || layer.len() > below || !layer.iter().all(|node| fits(node, layer.len())) {
                return Err("an upper layer of the search graph is not a graph".into());
            }
            below = layer.len();
        }
        if h.ef_search == 0 || h.ef_search > 10_000 {
            return Err(format!("the search graph's ef_search is {}", h.ef_search));
        }
        LOADING.with(|l| *l.borrow_mut() = self.slots.clone());
        let graph = postcard::from_bytes::<HnswMap<Vector, u32>>(rest);
        LOADING.with(|l| l.borrow_mut().clear());
        self.graph = Some(graph.map_err(|e| format!("search graph: {e}"))?);
        self.graph_upto = upto;
        self.dead_in_graph = 0;
        Ok(true)
    }

    /// Add a vector; returns its slot. It is searchable at once (exactly, in the delta segment).
    pub fn push(&mut self, v: Vec<f32>) -> u32 {
        let slot = self.slots.len() as u32;
        self.slots.push(Some(Vector { slot, data: v.into() }));
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
                let q = Vector { slot: u32::MAX, data: query.into() };
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
            .filter_map(|(i, s)| s.as_ref().map(|v| ((from + i) as u32, dot(query, &v.data))))
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

    /// A graph of 300 vectors (two removed before it was built) and a search's answer.
    fn built() -> (VectorIndex, Vec<(u32, f32)>) {
        let mut idx = VectorIndex::new(HnswConfig { exact_below: 100, ..Default::default() });
        for i in 0..300 {
            idx.push(unit(i, 16));
        }
        idx.remove(5);
        idx.remove(200);
        idx.rebuild();
        let hits = idx.search(&unit(777, 16), 10);
        (idx, hits)
    }

    /// The same vectors without a graph, as a load pushes them.
    fn reloaded(idx: &VectorIndex) -> VectorIndex {
        let mut back = VectorIndex::new(*idx.config());
        for slot in 0..idx.slots() as u32 {
            match idx.get(slot) {
                Some(v) => back.push(v.to_vec()),
                None => back.push_removed(),
            };
        }
        back
    }

    #[test]
    fn a_saved_graph_comes_back_and_answers_as_before() {
        let (idx, hits) = built();
        let bytes = idx.graph_bytes().expect("a graph without removals in it is saved");
        let mut back = reloaded(&idx);
        assert_eq!(back.kind(), "exact");
        assert_eq!(back.restore_graph(&bytes), Ok(true));
        assert_eq!(back.kind(), "hnsw");
        assert_eq!(back.search(&unit(777, 16), 10), hits);
        // A graph that still holds a removed vector is not saved: it could not be read back.
        let mut stale = back;
        stale.remove(7);
        assert!(stale.graph_bytes().is_none());
    }

    #[test]
    fn a_saved_graph_that_does_not_fit_is_refused_and_another_layout_left_out() {
        let (idx, _) = built();
        let bytes = idx.graph_bytes().unwrap();
        let (_, rest): (String, &[u8]) = postcard::take_from_bytes(&bytes).unwrap();
        let (upto, rest): (u64, &[u8]) = postcard::take_from_bytes(rest).unwrap();
        let good: MapLayout = postcard::from_bytes(rest).unwrap();
        let write = |layout: &str, upto: u64, map: &MapLayout| postcard::to_allocvec(&(layout, upto, map)).unwrap();
        let mut other = reloaded(&idx);
        assert_eq!(other.restore_graph(&write("instant-distance 9.9", upto, &good)), Ok(false));
        assert_eq!(other.kind(), "exact");
        let n = good.hnsw.points.len() as u32;
        let crafted: Vec<(&str, Box<dyn Fn(&mut MapLayout, &mut u64)>)> = vec![
            ("neighbour past the end", Box::new(move |m, _| m.hnsw.zero[3][0][1] = n + 4)),
            (
                "upper neighbour outside its layer",
                Box::new(|m, _| m.hnsw.layers[0][0][0] = m.hnsw.layers[0].len() as u32),
            ),
            ("empty upper layer", Box::new(|m, _| m.hnsw.layers.push(vec![]))),
            (
                "an upper layer larger than the one below (its node 1 would be looked up below)",
                Box::new(|m, _| {
                    m.hnsw.layers.push(vec![[NO_NEIGHBOUR; M]; 1]);
                    let mut top = vec![[NO_NEIGHBOUR; M]; 2];
                    top[0][0] = 1;
                    m.hnsw.layers.push(top);
                }),
            ),
            ("a removed slot as a point", Box::new(|m, _| (m.hnsw.points[0], m.values[0]) = (5, 5))),
            ("a slot twice", Box::new(|m, _| (m.hnsw.points[1], m.values[1]) = (m.values[0], m.values[0]))),
            ("point and value apart", Box::new(|m, _| m.values.swap(0, 1))),
            ("a point too few", Box::new(|m, _| _ = (m.hnsw.points.pop(), m.values.pop(), m.hnsw.zero.pop()))),
            ("covers slots that are not there", Box::new(|_, u| *u = 10_000)),
            ("no ef", Box::new(|m, _| m.hnsw.ef_search = 0)),
        ];
        for (what, change) in crafted {
            let (mut map, mut u): (MapLayout, u64) = (postcard::from_bytes(rest).unwrap(), upto);
            change(&mut map, &mut u);
            let mut target = reloaded(&idx);
            let result = target.restore_graph(&write(GRAPH_LAYOUT, u, &map));
            assert!(result.is_err(), "{what}: {result:?}");
            assert_eq!(target.kind(), "exact", "{what}: nothing changes");
        }
        assert!(reloaded(&idx).restore_graph(&bytes[..bytes.len() / 2]).is_err(), "a truncated graph");
    }
}
