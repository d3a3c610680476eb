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
    let mut quants = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    for block in x.chunks_exact(BLOCK) {
        let amax = largest_magnitude(block);
        // amax = m · 2^(e - 127) with 1 <= m < 2 (e its biased exponent); the scale 2^(e - 140)
        // maps it into [2^13, 2^14). Blocks under 2^-113 (and subnormal ones) round to zeros.
        let e = (amax.to_bits() >> 23) & 0xff;
        let (d, inv) =
            if e < 14 { (0.0, 0.0) } else { (f32::from_bits((e - 13) << 23), f32::from_bits((267 - e) << 23)) };
        scales.push(d);
        quants.extend(block.iter().map(|v| round_half_away(v * inv) as i16));
    }
    QuantizedRows { quants, scales }
}

/// Comparisons rather than f32::max, and rounding from trunc rather than f32::round: in wasm
/// those two are library calls, these single instructions (profiled under Node, the calls cost a
/// third as much as the products they prepare).
#[inline(always)]
fn largest_magnitude(block: &[f32]) -> f32 {
    block.iter().fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
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
