//! Element-wise arithmetic for the CPU forward pass, written so the compiler turns each loop into
//! vector code, wasm's simd128 included. In wasm, `f32::exp` is a library call made one number at
//! a time: under Node it was a quarter of a decode step's attention and ~10% of reading a prompt
//! (softmax and SiLU), where the `exp` here runs four numbers per instruction.

/// Σ a·b with eight running sums: a single f32 sum is a chain the compiler must keep in order
/// (floating-point addition does not reassociate), eight independent ones vectorise.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ a·b in four lanes, lane i summing products i, i + 4, i + 8, ..., then (l0 + l2) + (l1 + l3)
/// and the products past the last four: the order of `attend`'s scores on four-lane vectors,
/// which the GPU's attn_scores.wgsl repeats.
pub fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ta) = a.as_chunks::<4>();
    let (cb, tb) = b.as_chunks::<4>();
    let lanes = ca.iter().zip(cb).fold([0f32; 4], |s, (x, y)| std::array::from_fn(|i| s[i] + x[i] * y[i]));
    let tail: f32 = ta.iter().zip(tb).map(|(x, y)| x * y).sum();
    (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]) + tail
}

/// Softmax of one row, in place.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = largest(x);
    x.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / sum(x);
    x.iter_mut().for_each(|v| *v *= inv);
}

/// The largest of x (−∞ if none; NaNs passed over), over four lanes: a single running maximum is
/// a chain of dependent comparisons (in the embedder's softmax, under Node, the lanes took
/// softmax from 7.9 to 6.8 % of embedding). The maximum is the same whichever order the
/// comparisons take.
fn largest(x: &[f32]) -> f32 {
    let top = |m: f32, v: f32| if v > m { v } else { m };
    let (wide, tail) = x.as_chunks::<4>();
    let lanes = wide.iter().fold([f32::NEG_INFINITY; 4], |m, v| std::array::from_fn(|i| top(m[i], v[i])));
    tail.iter().fold(lanes.into_iter().fold(f32::NEG_INFINITY, top), |m, &v| top(m, v))
}

/// Σ x, with four running sums so that the adds need not wait on each other.
pub fn sum(x: &[f32]) -> f32 {
    let (wide, tail) = x.as_chunks::<4>();
    let sums = wide.iter().fold([0f32; 4], |s, v| std::array::from_fn(|i| s[i] + v[i]));
    (sums[0] + sums[2]) + (sums[1] + sums[3]) + tail.iter().sum::<f32>()
}

/// x · sigmoid(x) · u for each pair: the gated MLP's activation, in place in `gate`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    gate.iter_mut().zip(up).for_each(|(g, u)| *g = *g / (1.0 + exp(-*g)) * u);
}

/// GELU, the exact form BERT was trained with, x · Φ(x) = x/2 · (1 + erf(x/√2)), in place.
pub fn gelu_in_place(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2)));
}

/// erf(x), from arithmetic the compiler vectorises (wasm has no erf but a library call made one
/// number at a time: 7% of embedding under Node): Abramowitz and Stegun's formula 7.1.26, as the
/// GPU's `linear.wgsl` has it, within 5e-7 of erf. Near 0 it is 1 minus a number close to 1, so
/// its relative error grows there; GELU, its one use, adds 1 to it, so there too GELU stays
/// within a few f32 steps. A Taylor series for |x| < 0.5, computed beside it for every number and
/// chosen between, kept erf within 3e-7 but cost 2.7% of the 8-bit embedder's time (Chromium,
/// 128-token chunks, builds with and without it alternated in one page: 22.7 against 22.1 chunks/s).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    if x < 0.0 {
        -y
    } else {
        y
    }
}

/// eˣ to about one f32 epsilon of relative error (the test measures at most 1.0 ε), from
/// arithmetic the compiler vectorises: no library call, and no branch but selects. eˣ = 2ⁿ · eʳ
/// with n = round(x / ln 2) and |r| ≤ ln 2 / 2; eʳ is its Taylor series to r⁷ (the next term is
/// about 5e-9), and 2ⁿ is written straight into the float's exponent bits.
///
/// Outside [-87.33, 88.37], where 2ⁿ has no such bits, it gives 0 and +∞: below, eˣ is about
/// f32's least normal number or less; above, within 30% of f32's largest. Neither matters to a
/// softmax weight or a sigmoid.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // ln 2 in two parts, so that n · LN2_HIGH is exact (LN2_HIGH has 16 significant bits).
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // Adding and then subtracting 1.5 · 2²³ rounds to the nearest integer (for |v| < 2²²).
    const ROUND: f32 = 12_582_912.0;
    // The clamp keeps n within -127..=128, so that n + 127 fits the 8 exponent bits.
    let n = (x.clamp(-88.0, 89.0) * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    let e = p * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.33 {
        0.0
    } else if x > 88.37 {
        f32::INFINITY
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_library() {
        let mut worst = 0f32;
        for i in 0..=400_000 {
            let x = -90.0 + 180.0 * i as f32 / 400_000.0;
            let (got, want) = (exp(x), x.exp());
            if x < -87.33 {
                assert_eq!(got, 0.0, "e^{x}");
            } else if x > 88.37 {
                assert_eq!(got, f32::INFINITY, "e^{x}");
            } else {
                worst = worst.max((got - want).abs() / want);
            }
        }
        assert!(worst < 1.5 * f32::EPSILON, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_matches_the_library() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -6.0 + 12.0 * i as f64 / 200_000.0;
            worst = worst.max((erf(x as f32) as f64 - libm::erf(x)).abs());
        }
        // The formula's own bound is 1.5e-7; its f32 arithmetic adds more near 0, where it takes
        // 1 minus a number near 1 (measured: 5.0e-7 in all).
        assert!(worst < 6e-7, "absolute error {worst}");
        eprintln!("erf: largest error {worst:e}");
        assert!(erf(0.0).abs() < 6e-7);
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
    }

    #[test]
    fn gelu_is_within_erfs_error_of_the_exact_one() {
        // x/2 · (1 + erf(x/√2)) takes erf's absolute error times |x|/2, and then an f32 rounding.
        let xs: Vec<f32> = (0..=120_000).map(|i| -6.0 + 12.0 * i as f32 / 120_000.0).collect();
        let mut got = xs.clone();
        gelu_in_place(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            let bound = 3e-7 * x.abs() as f64 + 1.2e-7 * want.abs();
            assert!((g as f64 - want).abs() <= bound, "gelu({x}) = {g}, not {want}");
        }
        let mut zero = [0.0f32];
        gelu_in_place(&mut zero);
        assert_eq!(zero[0], 0.0);
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut x = vec![1.0, 3.0, -2.0, f32::NEG_INFINITY, 3.0, 0.5];
        softmax_in_place(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
        assert_eq!(x[1], x[4]);
        assert!(x[1] > x[0] && x[0] > x[5] && x[5] > x[2]);
    }
}
