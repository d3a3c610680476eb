//! How `I8Rows` rounds numbers to integers, row by row: the operands of `int8::matmul_t`.
//!
//! x is rounded before every product, so this is on the embedder's path as much as the products
//! themselves are. Each row takes two passes: its range (and, where it decides the form, its sum
//! of squares), then the rounding. Both are written over four lanes: a running minimum, maximum
//! or sum in one value at a time waits on the previous step (four cycles an addition), and in
//! wasm the rounding is a handful of instructions a number that vectors do four at a time
//! (`simd128`). The lanes fix the order of the sum of squares, the same in every build.

use super::super::blocks::round_half_away;
use super::{Form, Lane, WIDE_PAST};

/// How a row is rounded: to `levels` steps either side of 0 or (`asymmetric`) 0..=levels with a
/// zero point; `clip`: at the scale of least squared error rather than the largest number's.
#[derive(Clone, Copy)]
pub(super) struct Rounding {
    pub(super) levels: f32,
    pub(super) asymmetric: bool,
    pub(super) clip: bool,
}

/// Each row's scale, zero point and sum, and the rows rounded in 16 bits apart.
pub(super) type RowFigures = (Vec<f32>, Vec<i32>, Vec<i32>, Vec<(usize, Vec<i16>)>);

/// `x` rounded row by row: the numbers, and each row's scale, zero point and sum; with
/// `wide_rows`, the rows past `WIDE_PAST` rounded to −2047..=2047 in 16 bits instead, apart.
pub(super) fn rows_rounded<T: Lane>(
    x: &[f32],
    cols: usize,
    stride: usize,
    rounding: Rounding,
    columns: Option<&[f32]>,
    wide_rows: bool,
) -> (Vec<T>, RowFigures) {
    let (mut scales, mut zeros, mut sums, mut wide) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let rows = x.len() / cols;
    let mut values = vec![T::default(); rows * stride];
    let mut scaled = vec![0f32; if columns.is_some() { cols } else { 0 }];
    for (r, (row, out)) in x.chunks_exact(cols).zip(values.chunks_exact_mut(stride)).enumerate() {
        let row = match columns {
            Some(c) => {
                scaled.iter_mut().zip(row.iter().zip(c)).for_each(|(o, (v, s))| *o = v * s);
                &scaled[..]
            }
            None => row,
        };
        // The sum of squares only where it decides something (not on every `Wide` product).
        let (lo, hi, squares) = range(row, wide_rows);
        let past = wide_rows && (hi - lo) * (hi - lo) > WIDE_PAST * WIDE_PAST * squares / cols as f32;
        let figures = if past {
            let mut numbers = vec![0i16; stride];
            let figures = round_row(row, (lo, hi), Form::Wide.activations(), &mut numbers);
            wide.push((r, numbers));
            figures
        } else {
            round_row(row, (lo, hi), rounding, out)
        };
        scales.push(figures.0);
        zeros.push(figures.1);
        sums.push(figures.2);
    }
    (values, (scales, zeros, sums, wide))
}

/// A row's least and greatest numbers (0 among them) and, with `squares`, its sum of squares:
/// over four lanes, number i in lane i % 4, the lanes' sums added as (l0 + l1) + (l2 + l3).
/// Comparisons rather than `f32::min`, which is a library call in wasm; NaNs are passed over.
fn range(row: &[f32], squares: bool) -> (f32, f32, f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let (mut lo, mut hi, mut sq, done) = super::simd128::range(row, squares);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let (mut lo, mut hi, mut sq, done) = ([0f32; 4], [0f32; 4], [0f32; 4], 0);
    for (i, &v) in row.iter().enumerate().skip(done) {
        let l = i % 4;
        lo[l] = if v < lo[l] { v } else { lo[l] };
        hi[l] = if v > hi[l] { v } else { hi[l] };
        if squares {
            sq[l] += v * v;
        }
    }
    let least = lo.iter().fold(0f32, |m, &v| if v < m { v } else { m });
    let greatest = hi.iter().fold(0f32, |m, &v| if v > m { v } else { m });
    (least, greatest, (sq[0] + sq[1]) + (sq[2] + sq[3]))
}

/// One row rounded into `out` (padded past the row with its zero point): its scale, zero point
/// and sum of numbers less the zero point.
pub(super) fn round_row<T: Lane>(
    row: &[f32],
    (lo, hi): (f32, f32),
    rounding: Rounding,
    out: &mut [T],
) -> (f32, i32, i32) {
    let Rounding { levels, asymmetric, clip } = rounding;
    let bounds = if asymmetric { (0, levels as i32) } else { (-levels as i32, levels as i32) };
    let mut scale = if asymmetric { (hi - lo) / levels } else { hi.max(-lo) / levels };
    if clip && scale > 0.0 {
        scale = least_error_scale(row, levels, scale);
    }
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    // round(lo · inv) is −zero exactly (rounding half away is symmetric), so no number rounds
    // below 0; the greatest may round one step past the top, hence the clamp.
    let zero = if asymmetric { round_half_away(-lo * inv) as i32 } else { 0 };
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    let (done, mut sum) = super::simd128::round(row, inv, zero, bounds, out);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    let (done, mut sum) = (0, 0);
    for (o, &v) in out.iter_mut().zip(row).skip(done) {
        let q = (round_half_away(v * inv) as i32 + zero).clamp(bounds.0, bounds.1);
        sum += q - zero;
        *o = T::new(q);
    }
    out[row.len()..].fill(T::new(zero));
    (scale, zero, sum)
}

/// Of `top` (the largest number's scale) and twelve scales down to 70 % of it, the one whose
/// rounding to ±`levels` (past them clamped) is nearest to `row` in squared error. Each error
/// is summed in four lanes, as `range` sums squares: one running sum made rounding the
/// embedder's weights at load take 1.4 s in wasm (Node, the relaxed build).
pub(super) fn least_error_scale(row: &[f32], levels: f32, top: f32) -> f32 {
    let error = |scale: f32| -> f32 {
        let squared = |v: f32| (v - round_half_away(v / scale).clamp(-levels, levels) * scale).powi(2);
        let (wide, tail) = row.as_chunks::<4>();
        let lanes = wide.iter().fold([0f32; 4], |s, v| std::array::from_fn(|i| s[i] + squared(v[i])));
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail.iter().map(|&v| squared(v)).sum::<f32>()
    };
    let candidates = (0..=12).map(|i| top * (1.0 - 0.025 * i as f32));
    candidates.map(|s| (error(s), s)).fold((f32::INFINITY, top), |best, e| if e.0 < best.0 { e } else { best }).1
}
