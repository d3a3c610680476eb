//! Products with Q8_0 weight matrices: our own kernel, used instead of candle's for the format we
//! ship.
//!
//! Q8_0 stores each row of a matrix in blocks of 32 signed bytes with one scale per block:
//! w[i] ≈ scale · q[i]. The input vector is rounded in blocks of 32 too, each block to a
//! power-of-two scale that puts its largest magnitude in 8192..=16384 (`blocks::quantize_rows`;
//! ggml, candle and llama.cpp round inputs to 8 bits like the weights, and greedy answers then
//! part from the f32 path's on most prompts, `docs/PERFORMANCE.md`), so each block's 32 products
//! are an exact integer sum, scaled once. Widened to 16 bits, as the weights are for wasm's
//! `i32x4.dot_i16x8_s` in any case, the finer rounding costs nothing, every partial sum of eight
//! products stays within 2²⁴, exact in f32, and the rounding is exact arithmetic on every backend
//! (the GPU's too). Decoding a token is almost
//! nothing but these products (every weight matrix times one vector), so their speed is decode
//! speed. Compared with candle 0.11's kernel, ours
//! - converts the weights' f16 scales to f32 once, at load: wasm has no f16 instructions, and
//!   candle converts two scales in software for every 32 products;
//! - does four rows at a time, so the vector is loaded once for four rows,
//!   with those rows' blocks stored interleaved so that they are read as one stream;
//! - reads a group of four rows once for all the positions of a prompt, while it is in cache.
//!
//! `make bench` and `make bench-web` time it against candle's on the same matrix (`q8_matvec`).

use super::blocks::{quantize_rows, round_weights, QuantizedRows};
use crate::error::{Error, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;
use half::f16;

/// Values per block.
pub const BLOCK: usize = 32;

/// Rows computed together: they share the loads of the input vector.
pub(super) const GROUP: usize = 4;

/// Rows per parallel task (a multiple of GROUP).
const TASK_ROWS: usize = 64;

/// Products smaller than this many multiply-adds run on the calling thread even when there are
/// more: waking a sleeping pool thread costs tens of microseconds (measured natively in this VM:
/// a 1536x576 product by one vector, ~0.1 ms, was no faster on two threads), so of a decode step's
/// 211 products only the output projection (49152x576) is worth sharing, while a prompt's
/// products always are.
const PARALLEL_MIN_MACS: usize = 8 << 20;

/// A Q8_0 matrix (rows × cols), scales already in f32, stored group by group: the four rows of a
/// group interleaved block by block (row 0's first block, row 1's first block, ..., row 0's second
/// block, ...). A group is then read as one sequential stream. Kept row after row, the four
/// rows would be four streams 576 bytes apart, advancing 32 bytes at a time, which the CPU's
/// prefetcher did not follow: measured natively, decoding streamed the whole model's matrices
/// at half the speed of candle's kernel that way, though faster than it on a matrix in cache.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    /// rows × cols quantized weights, in the group order above.
    quants: Vec<i8>,
    /// One scale per block, in the same order: rows × cols / 32.
    scales: Vec<f32>,
}

impl Q8Matrix {
    /// A 2-D Q8_0 tensor from a GGUF file, or `None` for any other format or a shape our kernel
    /// does not take (those stay with candle's kernels).
    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        let &[rows, cols] = q.shape().dims() else { return Ok(None) };
        if q.dtype() != GgmlDType::Q8_0 || cols % BLOCK != 0 || rows % GROUP != 0 {
            return Ok(None);
        }
        // The GGUF layout of one block: the scale as little-endian f16, then 32 signed bytes.
        const BYTES: usize = 2 + BLOCK;
        let data = q.data()?;
        if data.len() != rows * cols / BLOCK * BYTES {
            return Err(Error::Internal(format!("a Q8_0 matrix of {rows}x{cols} holding {} bytes", data.len())));
        }
        let mut quants = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(rows * cols / BLOCK);
        for_each_block_in_group_order(rows, cols, |r, b| {
            let block = &data[(r * cols / BLOCK + b) * BYTES..][..BYTES];
            scales.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
            quants.extend(block[2..].iter().map(|&v| v as i8));
        });
        Ok(Some(Q8Matrix { rows, cols, quants, scales }))
    }

    /// Round an f32 matrix to Q8_0 (as the GGUF writer does): for tests and benchmarks.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Self {
        assert!(cols.is_multiple_of(BLOCK) && rows.is_multiple_of(GROUP) && w.len() == rows * cols);
        let (q, s) = round_weights(w);
        let (mut quants, mut scales) = (Vec::with_capacity(w.len()), Vec::with_capacity(s.len()));
        for_each_block_in_group_order(rows, cols, |r, b| {
            let at = r * cols / BLOCK + b;
            scales.push(s[at]);
            quants.extend_from_slice(&q[at * BLOCK..][..BLOCK]);
        });
        Q8Matrix { rows, cols, quants, scales }
    }

    /// (rows, cols).
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Group `g`'s quantized weights and scales, in the order kept.
    pub(super) fn group(&self, g: usize) -> Group<'_> {
        let blocks = self.cols / BLOCK;
        (
            &self.quants[g * GROUP * self.cols..][..GROUP * self.cols],
            &self.scales[g * GROUP * blocks..][..GROUP * blocks],
        )
    }

    /// The weight at (row, col), dequantized.
    pub fn weight(&self, row: usize, col: usize) -> f32 {
        let blocks = self.cols / BLOCK;
        let at = ((row / GROUP * blocks + col / BLOCK) * GROUP) + row % GROUP;
        self.quants[at * BLOCK + col % BLOCK] as f32 * self.scales[at]
    }

    /// The quantized weights and their scales row after row, block after block: the plain Q8_0
    /// layout (less the f16 scales), which the GPU kernels read.
    pub fn row_major(&self) -> (Vec<i8>, Vec<f32>) {
        let blocks = self.cols / BLOCK;
        let (mut quants, mut scales) = (Vec::with_capacity(self.quants.len()), Vec::with_capacity(self.scales.len()));
        for r in 0..self.rows {
            for b in 0..blocks {
                let at = (r / GROUP * blocks + b) * GROUP + r % GROUP;
                quants.extend_from_slice(&self.quants[at * BLOCK..][..BLOCK]);
                scales.push(self.scales[at]);
            }
        }
        (quants, scales)
    }

    /// `x Wᵀ` for `x` of shape (..., cols); the result has shape (..., rows).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        if dims.last() != Some(&self.cols) {
            return Err(Error::Internal(format!("input of shape {dims:?} for a matrix of {} columns", self.cols)));
        }
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; x.len() / self.cols * self.rows];
        self.matmul(&x, &mut out);
        if let Some(last) = dims.last_mut() {
            *last = self.rows;
        }
        Ok(Tensor::from_vec(out, dims, &candle_core::Device::Cpu)?)
    }

    /// `out` (n × rows) = `x` (n × cols) · Wᵀ.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let n = x.len() / self.cols;
        assert!(x.len() == n * self.cols && out.len() == n * self.rows, "matmul: wrong buffer sizes");
        let parallel = n * self.rows * self.cols >= PARALLEL_MIN_MACS;
        if n == 1 {
            let xq = quantize_rows(x);
            for_each_task(out, TASK_ROWS, parallel, |first, out| self.rows_against_one(&xq, first, out));
            return;
        }
        // Many positions (a prompt): tasks own ranges of positions, so that each writes whole rows
        // of `out`, and each reads all of W, group by group, meeting every one of its positions
        // while the group is in cache. (Tasks that owned ranges of W's rows wrote a transposed
        // result, and transposing it back cost a fifth of the product's time in wasm.) Each task
        // rounds its own positions: done once for all on the calling thread, the rounding was a
        // tenth of a prompt's time (Node profile) that a second thread could not share.
        let tasks = if parallel { rayon::current_num_threads() } else { 1 };
        let cols = self.cols;
        for_each_task(out, n.div_ceil(tasks) * self.rows, parallel, |first, out| {
            let (p, np) = (first / self.rows, out.len() / self.rows);
            let xq = quantize_rows(&x[p * cols..][..np * cols]);
            if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
                super::q8_prompt::positions_against(self, &xq.quants, &xq.scales, out);
            } else {
                self.positions_against(&xq.quants, &xq.scales, out);
            }
        });
    }

    /// Rows `first..first + out.len()` (whole groups) against one input row.
    fn rows_against_one(&self, x: &QuantizedRows, first: usize, out: &mut [f32]) {
        for (g, out) in (first / GROUP..).zip(out.chunks_exact_mut(GROUP)) {
            out.copy_from_slice(&dot4(self.group(g), &x.quants, &x.scales));
        }
    }

    /// `out` (positions × rows) for positions `xq` (quantized values, row after row) with block
    /// scales `xs`, one position at a time against each group.
    fn positions_against(&self, xq: &[i16], xs: &[f32], out: &mut [f32]) {
        let blocks = self.cols / BLOCK;
        let n = xq.len() / self.cols;
        in_passes(self.rows, out, |g, t| {
            let group = self.group(g);
            for p in 0..n {
                let d = dot4(group, &xq[p * self.cols..][..self.cols], &xs[p * blocks..][..blocks]);
                t[p * PASS_WIDTH..][..GROUP].copy_from_slice(&d);
            }
        });
    }
}

/// Groups per pass of `in_passes`, and the width of its buffer.
const PASS: usize = 16;
pub(super) const PASS_WIDTH: usize = PASS * GROUP;

/// Fills `out` (positions × rows) group by group: `group(g, t)` writes group g's four sums of
/// position p at `t[p * PASS_WIDTH..][..4]`. The sums land in a small buffer first, PASS groups
/// at a time, and are copied to `out` in runs of PASS_WIDTH. Written straight into `out`, four
/// at a time, each position's row is 6 KB from the next (1,536 columns), all in the same two sets
/// of the first-level cache: the transpose this replaced lost a fifth of the product's time to
/// that pattern. Measured under Node, the buffer and four-at-a-time writes ran alike (5.4–5.9 ms
/// on 1536×576 × 128 positions before the tiles' store trick); it is kept for the cache pattern,
/// which other shapes and machines may feel more.
pub(super) fn in_passes(rows: usize, out: &mut [f32], mut group: impl FnMut(usize, &mut [f32])) {
    let n = out.len() / rows;
    let mut t = vec![0f32; n * PASS_WIDTH];
    for g0 in (0..rows / GROUP).step_by(PASS) {
        let groups = PASS.min(rows / GROUP - g0);
        for g in g0..g0 + groups {
            group(g, &mut t[(g - g0) * GROUP..]);
        }
        for (p, o) in out.chunks_exact_mut(rows).enumerate() {
            o[g0 * GROUP..][..groups * GROUP].copy_from_slice(&t[p * PASS_WIDTH..][..groups * GROUP]);
        }
    }
}

/// Calls `f(row, block)` for every block of a rows × cols matrix in the order Q8Matrix keeps them.
fn for_each_block_in_group_order(rows: usize, cols: usize, mut f: impl FnMut(usize, usize)) {
    for g in 0..rows / GROUP {
        for b in 0..cols / BLOCK {
            for j in 0..GROUP {
                f(g * GROUP + j, b);
            }
        }
    }
}

/// Run `f(first_element, chunk)` over `out` in chunks of `chunk` elements: with `parallel`, on
/// every thread rayon has (natively its pool; in the threaded wasm build, Web Workers; otherwise
/// none, and the chunks run one after another).
fn for_each_task(out: &mut [f32], chunk: usize, parallel: bool, f: impl Fn(usize, &mut [f32]) + Sync) {
    if !parallel || rayon::current_num_threads() <= 1 {
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            f(i * chunk, c);
        }
    } else {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i * chunk, c));
    }
}

/// A group's quantized weights and scales, in Q8Matrix's order.
pub(super) type Group<'a> = (&'a [i8], &'a [f32]);

/// A block's 32 products as four partial sums, lane k holding products 2k and 2k + 1 of each
/// eight: the lanes wasm's `i32x4_dot_i16x8` gives (see `simd128::dot4`).
#[inline(always)]
fn lane_sums(w: &[i8], x: &[i16]) -> [i32; 4] {
    let mut lanes = [0i32; 4];
    for (w, x) in w.chunks_exact(8).zip(x.chunks_exact(8)) {
        for (k, lane) in lanes.iter_mut().enumerate() {
            *lane += w[2 * k] as i32 * x[2 * k] as i32 + w[2 * k + 1] as i32 * x[2 * k + 1] as i32;
        }
    }
    lanes
}

/// A group's four dot products with one quantized vector.
#[inline]
pub(super) fn dot4(group: Group, xq: &[i16], xs: &[f32]) -> [f32; 4] {
    // The unsafe kernels below read by pointer: these bounds make that sound.
    assert!(
        group.0.len() >= GROUP * BLOCK * xs.len() && group.1.len() >= GROUP * xs.len() && xq.len() >= BLOCK * xs.len()
    );
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: simd128 is enabled for this build; the group holds 4 × xs.len() blocks and the
        // vector xs.len() (asserted above).
        unsafe { simd128::dot4(group, xq, xs) }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { dot4_avx2(group, xq, xs) };
        }
        dot4_portable(group, xq, xs)
    }
    #[cfg(not(any(target_arch = "x86_64", all(target_arch = "wasm32", target_feature = "simd128"))))]
    dot4_portable(group, xq, xs)
}

/// Plain Rust that the compiler vectorises. Each row keeps four running sums, one per lane of
/// `lane_sums`, added up at the end as ((l0 + l1) + l2) + l3: the order in which wasm's
/// vectors (`simd128::dot4`) and the GPU (matmul_q8.wgsl) add the same numbers, so that all
/// three give the same bits. A different order of the f32 additions would move an activation
/// across a rounding step now and then, and the difference would grow from there
/// (`tests/gpu.rs`).
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
#[inline(always)]
pub(super) fn dot4_portable((wq, ws): Group, xq: &[i16], xs: &[f32]) -> [f32; 4] {
    let mut acc = [[0f32; 4]; GROUP];
    for (b, (x, sx)) in xq.chunks_exact(BLOCK).zip(xs).enumerate() {
        for (j, acc) in acc.iter_mut().enumerate() {
            let at = b * GROUP + j;
            let (lanes, scale) = (lane_sums(&wq[at * BLOCK..][..BLOCK], x), ws[at] * sx);
            for (a, lane) in acc.iter_mut().zip(lanes) {
                *a += lane as f32 * scale;
            }
        }
    }
    acc.map(|[l0, l1, l2, l3]| ((l0 + l1) + l2) + l3)
}

/// `dot4_portable` in AVX2 (chosen at run time, as candle does, so one binary runs on any
/// x86-64), which the compiler does not find by itself from `lane_sums`: 16-bit products added
/// in pairs (`madd`), whose eight 32-bit lanes fold onto `lane_sums`' four, then scaled as there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot4_avx2((wq, ws): Group, xq: &[i16], xs: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let widen = |p: *const i8| _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i));
    let load = |p: *const i16| _mm256_loadu_si256(p as *const __m256i);
    let mut acc = [_mm_setzero_ps(); GROUP];
    let mut wp = wq.as_ptr();
    for (b, &sx) in xs.iter().enumerate() {
        let xp = xq.as_ptr().add(b * BLOCK);
        let (x0, x1) = (load(xp), load(xp.add(16)));
        for (j, a) in acc.iter_mut().enumerate() {
            let (w0, w1) = (widen(wp), widen(wp.add(16)));
            wp = wp.add(BLOCK);
            // Lane m: products 2m and 2m + 1 of each half, so lanes m and m + 4 are lane m of
            // `lane_sums`.
            let pairs = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
            let lanes = _mm_add_epi32(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256::<1>(pairs));
            let scale = _mm_set1_ps(ws[b * GROUP + j] * sx);
            *a = _mm_add_ps(*a, _mm_mul_ps(_mm_cvtepi32_ps(lanes), scale));
        }
    }
    acc.map(|a| {
        let mut l = [0f32; 4];
        _mm_storeu_ps(l.as_mut_ptr(), a);
        ((l[0] + l[1]) + l[2]) + l[3]
    })
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(super) mod simd128 {
    use super::{Group, BLOCK, GROUP};
    use core::arch::wasm32::*;

    #[inline(always)]
    unsafe fn load<T>(p: *const T) -> v128 {
        // wasm loads need no alignment.
        std::ptr::read_unaligned(p as *const v128)
    }

    /// The vector's 32 values are loaded once per block and used for four rows; each row then
    /// costs two loads, four widenings and four 8-lane multiply-adds per block, and its sum stays
    /// in a vector register until the end. `dot4_portable` adds in the same order.
    #[inline(always)]
    pub unsafe fn dot4((wq, ws): Group, xq: &[i16], xs: &[f32]) -> [f32; 4] {
        let mut acc = [f32x4_splat(0.0); 4];
        let mut wp = wq.as_ptr();
        for (b, &sx) in xs.iter().enumerate() {
            let xp = xq.as_ptr().add(b * BLOCK);
            let x = [load(xp), load(xp.add(8)), load(xp.add(16)), load(xp.add(24))];
            for (j, a) in acc.iter_mut().enumerate() {
                let (w0, w1) = (load(wp), load(wp.add(16)));
                wp = wp.add(BLOCK);
                let s = i32x4_add(
                    i32x4_add(
                        i32x4_dot_i16x8(i16x8_extend_low_i8x16(w0), x[0]),
                        i32x4_dot_i16x8(i16x8_extend_high_i8x16(w0), x[1]),
                    ),
                    i32x4_add(
                        i32x4_dot_i16x8(i16x8_extend_low_i8x16(w1), x[2]),
                        i32x4_dot_i16x8(i16x8_extend_high_i8x16(w1), x[3]),
                    ),
                );
                let scale = f32x4_splat(*ws.get_unchecked(b * GROUP + j) * sx);
                *a = f32x4_add(*a, f32x4_mul(f32x4_convert_i32x4(s), scale));
            }
        }
        acc.map(lanes_total)
    }

    /// ((l0 + l1) + l2) + l3: the order every kernel adds a row's four lanes in.
    #[inline(always)]
    pub(in crate::kernels) fn lanes_total(v: v128) -> f32 {
        f32x4_extract_lane::<0>(v)
            + f32x4_extract_lane::<1>(v)
            + f32x4_extract_lane::<2>(v)
            + f32x4_extract_lane::<3>(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        crate::kernels::random::pseudo_random(n, seed as u64)
    }

    /// The kernel against the definition: dequantized weights times the dequantized vector, in
    /// f64. Only f32 rounding of the block sums separates them.
    #[test]
    fn products_equal_the_dequantized_definition() {
        for (rows, cols, n) in [(8, 64, 1), (68, 96, 3), (132, 32, 5), (4, 576, 2)] {
            let w = pseudo_random(rows * cols, rows as u32);
            let x = pseudo_random(n * cols, cols as u32);
            let m = Q8Matrix::quantize(&w, rows, cols);
            let xq = quantize_rows(&x);
            let mut out = vec![0f32; n * rows];
            m.matmul(&x, &mut out);
            for p in 0..n {
                for r in 0..rows {
                    let want: f64 = (0..cols)
                        .map(|i| {
                            let wv = m.weight(r, i) as f64;
                            let xv = xq.quants[p * cols + i] as f64 * xq.scales[(p * cols + i) / BLOCK] as f64;
                            wv * xv
                        })
                        .sum();
                    let got = out[p * rows + r] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{rows}x{cols} row {r} pos {p}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn grouped_layout_keeps_every_weight() {
        let (rows, cols) = (8, 64);
        let w = pseudo_random(rows * cols, 3);
        let m = Q8Matrix::quantize(&w, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                let (q, s) = (m.weight(r, c), m.scales.iter().fold(0f32, |a, v| a.max(*v)));
                assert!((q - w[r * cols + c]).abs() <= s, "({r}, {c}): {q} vs {}", w[r * cols + c]);
            }
        }
    }

    #[test]
    fn other_formats_are_left_to_candle() {
        let t = Tensor::from_vec(pseudo_random(64 * 32, 1), (64, 32), &candle_core::Device::Cpu).unwrap();
        let q4 = QTensor::quantize(&t, GgmlDType::Q4_0).unwrap();
        assert!(Q8Matrix::from_qtensor(&q4).unwrap().is_none());
        let odd = Tensor::from_vec(pseudo_random(63 * 32, 1), (63, 32), &candle_core::Device::Cpu).unwrap();
        assert!(Q8Matrix::from_qtensor(&QTensor::quantize(&odd, GgmlDType::Q8_0).unwrap()).unwrap().is_none());
        let q8 = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let ours = Q8Matrix::from_qtensor(&q8).unwrap().unwrap();
        // candle's own product on the same quantized matrix rounds x to 8 bits, ours to 15: both
        // against the same weights times the unrounded x, ours the closer.
        let xs = pseudo_random(3 * 32, 2);
        let x = Tensor::from_vec(xs.clone(), (1, 3, 32), &candle_core::Device::Cpu).unwrap();
        let theirs = candle_core::quantized::QMatMul::from_qtensor(q8).unwrap();
        let a = candle_core::Module::forward(&theirs, &x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = ours.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (mut theirs_off, mut ours_off) = (0f64, 0f64);
        for p in 0..3 {
            for r in 0..64 {
                let exact: f64 = (0..32).map(|c| ours.weight(r, c) as f64 * xs[p * 32 + c] as f64).sum();
                theirs_off = theirs_off.max((a[p * 64 + r] as f64 - exact).abs());
                ours_off = ours_off.max((b[p * 64 + r] as f64 - exact).abs());
            }
        }
        assert!(ours_off < 1e-4 && ours_off * 20.0 < theirs_off, "ours {ours_off}, candle's {theirs_off}");
    }
}
