//! `super::tile`, `super::widened` and x's rounding (`super::round`) in wasm SIMD128 vectors,
//! and the choice between the two ways relaxed SIMD can add up bytes' products.
//!
//! `i32x4.relaxed_dot_i8x16_i7x16_add_s` is one instruction where the CPU has VNNI in the form
//! V8 uses (`vpdpbusd`), but two multiplies and an add elsewhere (`pmaddubsw`, then `pmaddwd` by
//! ones to widen the 16-bit pair sums): on an AMD EPYC (Zen 4) in Chromium 156 that took no more
//! products per second than `i32x4.dot_i16x8_s` (38.7 against 37.0 GMAC/s, a scratch loop of the
//! embedder's shape). With W in −63..=63 (`Form::Bytes`), two steps' 16-bit pair sums fit in one
//! 16-bit lane (2 · 2 · 127 · 63 = 32,004), so they can share one widening: three multiplies per
//! 32 products instead of four (54 GMAC/s there). Where VNNI does it in one, that is slower.
//! Both give the same exact sums; which is faster is measured once, on first use.

use crate::kernels::blocks::simd128::round_half_away;
use core::arch::wasm32::*;

/// Whether this build multiplies lanes of T in vectors: 16-bit ones always, bytes with relaxed
/// SIMD only.
pub const fn vectored<T>() -> bool {
    std::mem::size_of::<T>() == 2 || cfg!(target_feature = "relaxed-simd")
}

/// Each step loads A + B vectors of x and W and multiplies every pair; the sums stay in
/// registers until the end. `PAIRS`: bytes' products two steps at a time in 16 bits (above).
#[inline(always)]
pub unsafe fn tile<const A: usize, const B: usize, const PAIRS: bool, T>(
    xs: [&[T]; A],
    ws: [&[T]; B],
) -> [[i32; B]; A] {
    #[cfg(target_feature = "relaxed-simd")]
    if PAIRS && std::mem::size_of::<T>() == 1 {
        return pairs(xs, ws);
    }
    let lanes = 16 / std::mem::size_of::<T>();
    let mut acc = [[i32x4_splat(0); B]; A];
    let mut c = 0;
    while c < xs[0].len() {
        let xv: [v128; A] = std::array::from_fn(|a| load(xs[a], c));
        for b in 0..B {
            let wv = load(ws[b], c);
            for a in 0..A {
                acc[a][b] = step::<T>(acc[a][b], xv[a], wv);
            }
        }
        c += lanes;
    }
    acc.map(|row| row.map(lane_sum))
}

/// One vector of x's and one of W's numbers multiplied and added into four 32-bit lanes: eight
/// pairs of 16-bit numbers, or with relaxed SIMD sixteen byte products in one instruction (x's
/// bytes are the 0..=127 operand).
#[inline(always)]
unsafe fn step<T>(acc: v128, x: v128, w: v128) -> v128 {
    if std::mem::size_of::<T>() == 2 {
        return i32x4_add(acc, i32x4_dot_i16x8(x, w));
    }
    #[cfg(target_feature = "relaxed-simd")]
    return i32x4_relaxed_dot_i8x16_i7x16_add(w, x, acc);
    #[cfg(not(target_feature = "relaxed-simd"))]
    unreachable!("int8: bytes are multiplied in vectors only with relaxed SIMD")
}

/// `tile` for bytes, two vectors a step: their 16-bit pair sums added in 16 bits, then widened
/// once. Rows hold a multiple of 32 bytes (`super::PAD`).
#[cfg(target_feature = "relaxed-simd")]
#[inline(always)]
unsafe fn pairs<const A: usize, const B: usize, T>(xs: [&[T]; A], ws: [&[T]; B]) -> [[i32; B]; A] {
    let mut acc = [[i32x4_splat(0); B]; A];
    let mut c = 0;
    while c < xs[0].len() {
        let xv: [[v128; 2]; A] = std::array::from_fn(|a| [load(xs[a], c), load(xs[a], c + 16)]);
        for b in 0..B {
            let wv = [load(ws[b], c), load(ws[b], c + 16)];
            for a in 0..A {
                let sums = i16x8_add(
                    i16x8_relaxed_dot_i8x16_i7x16(wv[0], xv[a][0]),
                    i16x8_relaxed_dot_i8x16_i7x16(wv[1], xv[a][1]),
                );
                acc[a][b] = i32x4_add(acc[a][b], i32x4_extadd_pairwise_i16x8(sums));
            }
        }
        c += 32;
    }
    acc.map(|row| row.map(lane_sum))
}

/// The vector of `row` from number `c` on (wasm's loads need no alignment).
#[inline(always)]
unsafe fn load<T>(row: &[T], c: usize) -> v128 {
    v128_load(row.as_ptr().add(c) as *const v128)
}

/// Whether `tile`'s `PAIRS` way is the faster here: both timed on the embedder's product shape,
/// alternately, best of eight rounds of ~2 ms each (long enough for the 100 µs clock of a page
/// that is not cross-origin isolated; the first rounds run before V8 has optimised the code,
/// hence the best of several). Each wasm instance (each worker) decides once, on first use.
#[cfg(target_feature = "relaxed-simd")]
pub fn pairs_are_faster() -> bool {
    static FASTER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FASTER.get_or_init(|| {
        let (mut pairs, mut dots) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..8 {
            pairs = pairs.min(time_tiles::<true>());
            dots = dots.min(time_tiles::<false>());
        }
        pairs < dots
    })
}

/// Milliseconds for 12 · 24 · 96 tiles of 2 × 4 rows of 384 bytes (85 M products, about four
/// chunks' Q products).
#[cfg(target_feature = "relaxed-simd")]
#[inline(never)]
fn time_tiles<const PAIRS: bool>() -> f64 {
    let (x, w) = (vec![1i8; 2 * 384], vec![1i8; 4 * 384]);
    let xs = [&x[..384], &x[384..]];
    let ws = std::array::from_fn(|b| &w[b * 384..][..384]);
    let clock = crate::time::Stopwatch::start();
    let mut total = 0;
    for _ in 0..12 * 24 * 96 {
        // SAFETY: rows of 384 bytes, a multiple of 32.
        let sums = unsafe { tile::<2, 4, PAIRS, i8>(std::hint::black_box(xs), ws) };
        total += sums[1][3];
    }
    std::hint::black_box(total);
    clock.ms()
}

/// `super::widened` for W's bytes: each vector of sixteen widened to two of eight 16-bit lanes.
pub unsafe fn widened(x: &[i16], w: &[i8]) -> i32 {
    let mut acc = i32x4_splat(0);
    for (c, xs) in x.chunks_exact(16).enumerate() {
        let wv = v128_load(w.as_ptr().add(c * 16) as *const v128);
        let lo = i32x4_dot_i16x8(v128_load(xs.as_ptr() as *const v128), i16x8_extend_low_i8x16(wv));
        let hi = i32x4_dot_i16x8(v128_load(xs.as_ptr().add(8) as *const v128), i16x8_extend_high_i8x16(wv));
        acc = i32x4_add(acc, i32x4_add(lo, hi));
    }
    lane_sum(acc)
}

/// The four lanes added: lanes 2 and 3 onto 0 and 1, then those two.
#[inline(always)]
fn lane_sum(v: v128) -> i32 {
    let pairs = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    i32x4_extract_lane::<0>(pairs) + i32x4_extract_lane::<1>(pairs)
}

/// `round::range`'s lanes over the row's whole vectors: (least, greatest, sums of squares) by
/// lane, and how many numbers that took. `f32x4_pmin(lo, v)` is `v < lo ? v : lo` and
/// `f32x4_pmax(hi, v)` is `hi < v ? v : hi`: the scalar comparisons exactly.
pub fn range(row: &[f32], squares: bool) -> ([f32; 4], [f32; 4], [f32; 4], usize) {
    let (mut lo, mut hi, mut sq) = (f32x4_splat(0.0), f32x4_splat(0.0), f32x4_splat(0.0));
    let whole = row.len() / 4 * 4;
    for c in (0..whole).step_by(4) {
        // SAFETY: c + 4 <= row.len(); an unaligned load of four numbers.
        let v = unsafe { v128_load(row.as_ptr().add(c) as *const v128) };
        lo = f32x4_pmin(lo, v);
        hi = f32x4_pmax(hi, v);
        if squares {
            sq = f32x4_add(sq, f32x4_mul(v, v));
        }
    }
    let lanes = |v: v128| {
        [f32x4_extract_lane::<0>(v), f32x4_extract_lane::<1>(v), f32x4_extract_lane::<2>(v), f32x4_extract_lane::<3>(v)]
    };
    (lanes(lo), lanes(hi), lanes(sq), whole)
}

/// `round::round_row`'s loop over the row's whole runs of 16 numbers (bytes) or 8 (16-bit
/// numbers): each `(round_half_away(v · inv) as i32 + zero).clamp(bounds)`, stored as T; returns
/// how many numbers that took and the sum of the rounded numbers less the zero point. The
/// conversion saturates as `as` does, NaN to 0.
pub fn round<T>(row: &[f32], inv: f32, zero: i32, (least, greatest): (i32, i32), out: &mut [T]) -> (usize, i32) {
    let bytes = std::mem::size_of::<T>() == 1;
    let run = if bytes { 16 } else { 8 };
    let whole = row.len() / run * run;
    assert!(out.len() >= whole && std::mem::size_of::<T>() <= 2);
    let inv = f32x4_splat(inv);
    let (zero, least, greatest) = (i32x4_splat(zero), i32x4_splat(least), i32x4_splat(greatest));
    let mut sum = i32x4_splat(0);
    let mut rounded = |c: usize| {
        // SAFETY: the callers below pass c + 4 <= whole <= row.len().
        let r = f32x4_mul(unsafe { v128_load(row.as_ptr().add(c) as *const v128) }, inv);
        let q = i32x4_trunc_sat_f32x4(round_half_away(r));
        let q = i32x4_max(i32x4_min(i32x4_add(q, zero), greatest), least);
        sum = i32x4_add(sum, i32x4_sub(q, zero));
        q
    };
    for c in (0..whole).step_by(run) {
        let low = i16x8_narrow_i32x4(rounded(c), rounded(c + 4));
        // SAFETY: out holds at least `whole` numbers of T (asserted), T one or two bytes wide;
        // the numbers are within `bounds`, which fit T, so the narrowing does not saturate.
        unsafe {
            if bytes {
                let high = i16x8_narrow_i32x4(rounded(c + 8), rounded(c + 12));
                v128_store(out.as_mut_ptr().add(c) as *mut v128, i8x16_narrow_i16x8(low, high));
            } else {
                v128_store(out.as_mut_ptr().add(c) as *mut v128, low);
            }
        }
    }
    (whole, lane_sum(sum))
}
