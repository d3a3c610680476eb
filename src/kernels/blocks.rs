//! Numbers rounded to small integers in blocks of 32, one scale per block: the Q8_0 weights
//! (ggml's scheme, as the GGUF writer rounds them) and the inputs of our Q8_0 products, to 14–15
//! bits on a power-of-two scale (`q8.rs` says why).

use super::q8::BLOCK;
use half::f16;

/// Input rows rounded per block of 32 (`quantize_rows`), ready for the integer products (row
/// after row).
pub(crate) struct QuantizedRows {
    pub(crate) quants: Vec<i16>,
    pub(crate) scales: Vec<f32>,
}

/// Round input rows (their length a multiple of 32) block by block, each block to a power-of-two
/// scale that puts its largest magnitude in 8192..=16384: 14 to 15 bits. A lane of `lane_sums`
/// (`q8.rs`) adds eight products, at most 8 · 128 · 16384 = 2²⁴ in magnitude, so converting it
/// to f32 is exact. A power of two makes the rounding itself exact arithmetic (x times 2^k, no
/// division), so every backend rounds every value alike: the GPU's division need not be IEEE's,
/// and SwiftShader's is not (with a scale of amax / 16383 the page's GPU self-test found logits
/// 0.01 apart), and each scale's product with a weight scale is exact too.
pub(crate) fn quantize_rows(x: &[f32]) -> QuantizedRows {
    let mut quants = vec![0i16; x.len() / BLOCK * BLOCK];
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    for (block, q) in x.chunks_exact(BLOCK).zip(quants.chunks_exact_mut(BLOCK)) {
        let amax = largest_magnitude(block);
        // amax = m · 2^(e - 127) with 1 <= m < 2 (e its biased exponent); the scale 2^(e - 140)
        // maps it into [2^13, 2^14). Blocks under 2^-113 (and subnormal ones) round to zeros.
        let e = (amax.to_bits() >> 23) & 0xff;
        let (d, inv) =
            if e < 14 { (0.0, 0.0) } else { (f32::from_bits((e - 13) << 23), f32::from_bits((267 - e) << 23)) };
        scales.push(d);
        round_block(block, inv, q);
    }
    QuantizedRows { quants, scales }
}

/// One block times `inv`, rounded half away from zero.
#[inline(always)]
fn round_block(block: &[f32], inv: f32, out: &mut [i16]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    simd128::round_block(block, inv, out);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    for (q, v) in out.iter_mut().zip(block) {
        *q = round_half_away(v * inv) as i16;
    }
}

/// Comparisons rather than f32::max, and rounding from trunc rather than f32::round: in wasm
/// those two are library calls, these single instructions (profiled under Node, the calls cost a
/// third as much as the products they prepare). NaNs are passed over.
#[inline(always)]
fn largest_magnitude(block: &[f32]) -> f32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if block.len() == BLOCK {
        return simd128::largest_magnitude(block);
    }
    block.iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// The same two steps four lanes at a time, with the same results: a prompt's inputs are
/// rounded before every product, and one value at a time that was a tenth of reading a prompt
/// (Node profile). `tests/wasm` holds the page's answers to the CLI's, token for token.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod simd128 {
    use super::BLOCK;
    use core::arch::wasm32::*;

    fn lanes(block: &[f32]) -> [v128; BLOCK / 4] {
        assert!(block.len() == BLOCK);
        // SAFETY: the block holds BLOCK values (asserted); each load reads four of them, unaligned.
        std::array::from_fn(|i| unsafe { v128_load(block.as_ptr().add(4 * i) as *const v128) })
    }

    /// `f32x4_pmax(m, v)` is `m < v ? v : m`: a NaN in v keeps m, as the scalar fold does.
    pub(super) fn largest_magnitude(block: &[f32]) -> f32 {
        let m = lanes(block).iter().fold(f32x4_splat(0.0), |m, &v| f32x4_pmax(m, f32x4_abs(v)));
        let pair = f32x4_pmax(m, i32x4_shuffle::<2, 3, 0, 1>(m, m));
        let one = f32x4_pmax(pair, i32x4_shuffle::<1, 0, 3, 2>(pair, pair));
        f32x4_extract_lane::<0>(one)
    }

    /// `round_half_away` on four numbers: trunc, then one step away from zero where the part
    /// cut off is at least a half (a NaN stays a NaN).
    #[inline(always)]
    pub(crate) fn round_half_away(r: v128) -> v128 {
        let t = f32x4_trunc(r);
        let away = f32x4_ge(f32x4_abs(f32x4_sub(r, t)), f32x4_splat(0.5));
        f32x4_add(t, v128_and(away, v128_or(f32x4_splat(1.0), v128_and(r, f32x4_splat(-0.0)))))
    }

    /// `round_half_away(v * inv) as i16` per value. The conversions saturate as `as` does, NaN
    /// to 0.
    pub(super) fn round_block(block: &[f32], inv: f32, out: &mut [i16]) {
        assert!(out.len() == BLOCK);
        let inv = f32x4_splat(inv);
        let rounded = lanes(block).map(|v| i32x4_trunc_sat_f32x4(round_half_away(f32x4_mul(v, inv))));
        for (i, pair) in rounded.chunks_exact(2).enumerate() {
            // SAFETY: out holds BLOCK values (asserted); eight are written at 8 · i.
            unsafe { v128_store(out.as_mut_ptr().add(8 * i) as *mut v128, i16x8_narrow_i32x4(pair[0], pair[1])) };
        }
    }
}

/// Round weight rows to Q8_0 as the GGUF writer does (ggml's scheme: the largest magnitude maps
/// to 127, the scale is rounded to f16): for tests and benchmarks.
pub(crate) fn round_weights(w: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut quants = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / BLOCK);
    for block in w.chunks_exact(BLOCK) {
        let d = largest_magnitude(block) / 127.0;
        let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
        scales.push(f16::from_f32(d).to_f32());
        quants.extend(block.iter().map(|v| round_half_away(v * inv) as i8));
    }
    (quants, scales)
}

/// `f32::round` (halves away from zero), from instructions wasm has: `r - trunc(r)` is exact.
#[inline(always)]
pub(crate) fn round_half_away(r: f32) -> f32 {
    let t = r.trunc();
    if (r - t).abs() >= 0.5 {
        t + 1f32.copysign(r)
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_as_ggml_does_and_inputs_to_a_power_of_two_scale() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let (q, s) = round_weights(&x);
        // amax 21 → scale 21/127 rounded to f16; -10 → round(-10 · 127/21) = -60.
        assert_eq!(s[0], f16::from_f32(21.0 / 127.0).to_f32());
        assert_eq!(q[0], -60);
        assert_eq!(q[31], 127);
        // Inputs: amax 21 lies in [16, 32), so the scale is 2^-9: -10 → -5120, 21 → 10752.
        let q = quantize_rows(&x);
        assert_eq!(q.scales[0], 1.0 / 512.0);
        assert_eq!((q.quants[0], q.quants[31]), (-5120, 10752));
        // The largest magnitudes land in 8192..=16384, the top one only by rounding up.
        let top = quantize_rows(&[f32::from_bits(0x3fff_ffff); 32]);
        assert_eq!((top.quants[0], top.scales[0]), (16384, 1.0 / 8192.0));
        let low = quantize_rows(&[1.0; 32]);
        assert_eq!(low.quants[0], 8192);
        for r in [0.0, 0.49999997, 0.5, -0.5, 1.5, -2.5, 126.5, -126.49999, 3.7, -3.2] {
            assert_eq!(round_half_away(r), r.round(), "{r}");
        }
        let zeros = quantize_rows(&[0.0; 32]);
        assert!(zeros.quants.iter().all(|&v| v == 0) && zeros.scales[0] == 0.0);
    }
}
