//! One position's attention over the cached keys and values (a decode step's new position, or each
//! of a prompt's in turn): the part of a decode step that grows with the context. After a RAG prompt (~500 to 750 cached positions) it was almost half of
//! a decode step in wasm (profiled under Node: the dot products, the weighted sum and `expf`), so
//! it is written here on four-lane vectors.
//!
//! Query heads that share a key/value head (grouped-query attention) are done together, so each
//! cached key and value is read once per group rather than once per query head, and the cache
//! keeps each head's positions together (`llama::Cache`): its keys are read front to back, its
//! values in columns of eight numbers that sweep the same few hundred KB.

use crate::kernels::f4::F4;
use crate::kernels::vecmath::{dot_lanes, softmax_in_place};

/// `q`: one position's query heads, `n_head × head_dim`; `keys[h]`, `values[h]`: key/value head
/// `h` at every cached position, `cached × head_dim`, so one head's keys are read front to back,
/// of which the first `positions` are seen (a prompt's position sees itself and those before it);
/// `out`: `n_head × head_dim`. `scores` is scratch space, kept by the caller so a decode step
/// allocates nothing here.
///
/// Every shape computes the same numbers in the same order (each score a four-lane dot product,
/// `vecmath::dot_lanes`), which the GPU's attention kernels repeat (src/llm/shaders/attn_*.wgsl).
pub fn attend(
    q: &[f32],
    keys: &[Vec<f32>],
    values: &[Vec<f32>],
    head_dim: usize,
    positions: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    if positions == 0 || keys.is_empty() {
        out.fill(0.0);
        return;
    }
    assert!(keys[0].len() >= positions * head_dim, "attending to {positions} positions of a shorter cache");
    let group = q.len() / (keys.len() * head_dim);
    // The head size and group are constants inside the kernel, so its loops unroll into straight
    // vector code without bounds checks (about 1.3x faster in wasm than the same loops over
    // run-time sizes, in a scratch benchmark under Node). Other shapes take the plain loops.
    macro_rules! shapes {
        ($(($hd:literal, $g:literal)),*) => {
            match (head_dim, group) {
                $(($hd, $g) => return attend_heads::<$hd, $g>(q, keys, values, positions, scores, out),)*
                _ => {}
            }
        };
    }
    shapes!((64, 1), (64, 2), (64, 3), (64, 4), (128, 1), (128, 2), (128, 4));
    // Any other head size and group: the same computation, one query head at a time.
    let scale = 1.0 / (head_dim as f32).sqrt();
    scores.resize(positions, 0.0);
    for (head, (query, out)) in q.chunks_exact(head_dim).zip(out.chunks_exact_mut(head_dim)).enumerate() {
        let (keys, values) = (&keys[head / group], &values[head / group]);
        for (s, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
            *s = dot_lanes(query, key) * scale;
        }
        softmax_in_place(scores);
        out.fill(0.0);
        for (&w, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
            out.iter_mut().zip(value).for_each(|(o, v)| *o += w * v);
        }
    }
}

/// `attend` for query heads of `HD` numbers, `G` of them per key/value head.
fn attend_heads<const HD: usize, const G: usize>(
    q: &[f32],
    keys: &[Vec<f32>],
    values: &[Vec<f32>],
    positions: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let scale = 1.0 / (HD as f32).sqrt();
    scores.resize(G * positions, 0.0);
    for (kv, (keys, values)) in keys.iter().zip(values).enumerate() {
        let queries: [&[[f32; 4]]; G] = std::array::from_fn(|g| q[(kv * G + g) * HD..][..HD].as_chunks().0);
        let mut weights: [&mut [f32]; G] = {
            let mut rows = scores.chunks_exact_mut(positions);
            std::array::from_fn(|_| rows.next().expect("G rows of scores"))
        };
        // Scores: each key is read once and met by the group's G queries.
        for (t, key) in keys[..positions * HD].chunks_exact(HD).enumerate() {
            let mut acc = [F4::ZERO; G];
            for (c, k) in key.as_chunks::<4>().0.iter().enumerate() {
                let k = F4::from(k);
                for (acc, query) in acc.iter_mut().zip(&queries) {
                    *acc = acc.add_product(F4::from(&query[c]), k);
                }
            }
            for (row, acc) in weights.iter_mut().zip(acc) {
                row[t] = acc.sum() * scale;
            }
        }
        weights.iter_mut().for_each(|row| softmax_in_place(row));
        // Weighted sum of the values, eight numbers of each head's output at a time, kept in
        // registers across every position.
        for c in (0..HD).step_by(8) {
            let mut acc = [[F4::ZERO; 2]; G];
            for (t, value) in values[..positions * HD].chunks_exact(HD).enumerate() {
                let value = value[c..c + 8].as_chunks::<4>().0;
                let (v0, v1) = (F4::from(&value[0]), F4::from(&value[1]));
                for (acc, row) in acc.iter_mut().zip(&weights) {
                    let w = F4::splat(row[t]);
                    acc[0] = acc[0].add_product(w, v0);
                    acc[1] = acc[1].add_product(w, v1);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                let out = out[(kv * G + g) * HD + c..][..8].as_chunks_mut::<4>().0;
                acc[0].store(&mut out[0]);
                acc[1].store(&mut out[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain definition: softmax(q·kᵀ / √d) v, one query head at a time.
    fn reference(q: &[f32], keys: &[f32], values: &[f32], n_kv_head: usize, head_dim: usize) -> Vec<f32> {
        let kv_dim = n_kv_head * head_dim;
        let positions = keys.len() / kv_dim;
        let group = q.len() / kv_dim;
        let mut out = vec![0f32; q.len()];
        for (head, out) in out.chunks_exact_mut(head_dim).enumerate() {
            let at = head / group * head_dim;
            let qh = &q[head * head_dim..][..head_dim];
            let s: Vec<f64> = (0..positions)
                .map(|t| {
                    let k = &keys[t * kv_dim + at..][..head_dim];
                    qh.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>() / (head_dim as f64).sqrt()
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..positions).map(|t| e[t] / total * values[t * kv_dim + at + i] as f64).sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn grouped_heads_match_the_definition() {
        // The shipped model's shape, other unrolled shapes, and shapes for the plain loops.
        for (n_head, n_kv_head, head_dim, positions) in
            [(9, 3, 64, 37), (8, 2, 128, 5), (4, 4, 64, 1), (4, 2, 20, 5), (2, 1, 7, 3)]
        {
            let kv_dim = n_kv_head * head_dim;
            let q = crate::kernels::random::pseudo_random(n_head * head_dim, 1);
            let keys = crate::kernels::random::pseudo_random(positions * kv_dim, 2);
            let values = crate::kernels::random::pseudo_random(positions * kv_dim, 3);
            // The cache keeps each key/value head's positions together.
            let by_head = |rows: &[f32]| -> Vec<Vec<f32>> {
                (0..n_kv_head)
                    .map(|h| rows.chunks_exact(kv_dim).flat_map(|r| &r[h * head_dim..][..head_dim]).copied().collect())
                    .collect()
            };
            let (mut scores, mut out) = (Vec::new(), vec![0f32; n_head * head_dim]);
            attend(&q, &by_head(&keys), &by_head(&values), head_dim, positions, &mut scores, &mut out);
            let want = reference(&q, &keys, &values, n_kv_head, head_dim);
            let off = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(off < 1e-5, "{n_head}/{n_kv_head} heads of {head_dim}, {positions} positions: off by {off}");
        }
    }
}
