//! `x Wᵀ` for many positions at once with 8-bit weights: the embedder's products when it runs
//! in 8 bits (`embed::Precision::Int8`).
//!
//! W is rounded once, at load, to integers (`Form::weights`) with one scale per output row; each
//! position of x is rounded when the product is taken, with a scale of its own (dynamic
//! quantization, as onnxruntime does it for the int8 MiniLM that transformers.js ships). A result
//! is then one integer dot product, exact in i32, times the two scales. Two forms (`Form`), both
//! in every build, chosen per matrix:
//! - `Wide`: both operands stored in 16 bits, activations rounded to −2047..=2047.
//!   `i32x4.dot_i16x8_s` multiplies eight pairs of 16-bit lanes and adds them pairwise into four
//!   32-bit sums, twice the multiply-adds per instruction of an f32x4 multiply and add; storing
//!   widened saves an instruction per load.
//! - `Bytes`: both in bytes, activations in 0..=127 with a zero point, W in −63..=63. With
//!   relaxed SIMD, sixteen multiply-adds per instruction (or per two, added in pairs: `simd128`);
//!   elsewhere the same integers go through the portable loop, so tests check this form's
//!   numbers natively.
//!
//! The tile is `dense::matmul_t`'s: 2 positions × 4 weight rows, walked along k.

#[cfg(test)]
use super::blocks::round_half_away;
use round::{rows_rounded, Rounding};

/// Positions per tile.
const R: usize = 2;
/// Weight rows per tile.
const S: usize = 4;
/// Rows are padded to a multiple of this many numbers: two 128-bit vectors of bytes (the relaxed
/// kernel's step), four of 16-bit numbers.
const PAD: usize = 32;
/// `Form::Bytes` rounds a row of x in 16 bits where its range is past this many times its root
/// mean square. Measured natively over PubMedQA's 1,711 chunks (docs/PERFORMANCE.md): 3.0 % of
/// the rows, and the worst chunk's cosine to f32 0.986 → 0.994 (16: 5.6 %, 0.994).
const WIDE_PAST: f32 = 20.0;

/// How a matrix's products are taken: how both operands are stored and x is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// 16-bit lanes; x rounded to −2047..=2047, sixteen times finer than the weights at the same
    /// speed (one `i32x4.dot_i16x8_s` either way). No sum can overflow i32 below 8,000 columns
    /// (2047 · 127 · 8,000 < 2³¹).
    Wide,
    /// Bytes; x's range in a row, from its least to its greatest number (and 0), spread over
    /// 0..=127 with the zero point where 0 falls (relaxed SIMD multiplies signed bytes by bytes in
    /// 0..=127 only). For rows of mostly one sign (GELU's outputs) that keeps about twice the
    /// precision of −63..=63. A row whose range is past `WIDE_PAST` times its root mean square
    /// (a few large numbers among small ones) is rounded as in `Wide` instead, and its products
    /// taken with W's bytes widened: 127 steps leave such a row's typical numbers few.
    Bytes,
}

impl Form {
    /// The form this build takes fastest: `Bytes` where relaxed SIMD is compiled in (a build
    /// with `+relaxed-simd`), `Wide` elsewhere.
    pub const FASTEST: Form =
        if cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd")) { Form::Bytes } else { Form::Wide };

    /// x's rounding.
    fn activations(self) -> Rounding {
        match self {
            Form::Wide => Rounding { levels: 2047.0, asymmetric: false, clip: false },
            Form::Bytes => Rounding { levels: 127.0, asymmetric: true, clip: false },
        }
    }

    /// W's rounding: −127..=127 in `Wide`; −63..=63 in `Bytes`, so that two steps of the relaxed
    /// kernel's 16-bit pair sums fit in 16 bits (`simd128`), each row at the scale that leaves it
    /// nearest to itself (a few large numbers clipped), which gained back most of what the lost
    /// bit cost: natively over PubMedQA's 1,711 chunks the worst cosine to f32 was 0.9941 with
    /// 127 levels, 0.9915 with 63 at the largest number's scale, 0.9937 clipped.
    fn weights(self) -> Rounding {
        match self {
            Form::Wide => Rounding { levels: 127.0, asymmetric: false, clip: false },
            Form::Bytes => Rounding { levels: 63.0, asymmetric: false, clip: true },
        }
    }
}

/// A stored integer: i16 (`Form::Wide`) or i8 (`Form::Bytes`).
trait Lane: Copy + Default {
    fn new(v: i32) -> Self;
    fn get(self) -> i32;
}

impl Lane for i16 {
    fn new(v: i32) -> Self {
        v as i16
    }
    fn get(self) -> i32 {
        self as i32
    }
}

impl Lane for i8 {
    fn new(v: i32) -> Self {
        v as i8
    }
    fn get(self) -> i32 {
        self as i32
    }
}

enum Values {
    Wide(Vec<i16>),
    Bytes(Vec<i8>),
}

/// Rows of numbers rounded to integers, one scale and one zero point per row: row r, column c
/// stands for `scales[r] · (values[r · stride + c] − zeros[r])`. The rows are padded to a
/// multiple of PAD with each row's zero point, which stands for 0.
pub struct I8Rows {
    values: Values,
    scales: Vec<f32>,
    zeros: Vec<i32>,
    /// Each row's sum of values less its zero point's (what a product with the other operand's
    /// zero point adds).
    sums: Vec<i32>,
    cols: usize,
    /// `cols` rounded up to a multiple of PAD: the stride between rows.
    stride: usize,
    /// Where the columns were scaled before rounding (`quantize_scaled`): what the other
    /// operand's columns are multiplied by as they are rounded.
    input_scales: Option<Vec<f32>>,
    /// x in `Form::Bytes`: the rows rounded in 16 bits instead (`WIDE_PAST`), as (row, numbers);
    /// their rows of bytes are unused.
    wide: Vec<(usize, Vec<i16>)>,
}

impl I8Rows {
    /// Round `x` (rows × cols, row-major) row by row with zero at 0, as weights are for products
    /// taken in `form` (`Form::weights`).
    pub fn quantize(x: &[f32], cols: usize, form: Form) -> I8Rows {
        Self::round(x, cols, form, form.weights(), None, false)
    }

    /// W with its column c multiplied by `columns[c]` before rounding; `matmul_t` divides x's
    /// column c by it as x is rounded, which leaves x Wᵀ as it was. A caller that knows x has a
    /// few columns far larger than the rest moves part of their size into W this way, whose
    /// rounding is per output row (SmoothQuant's migration): x then keeps more steps for the rest.
    pub fn quantize_scaled(w: &[f32], cols: usize, columns: &[f32], form: Form) -> I8Rows {
        assert_eq!(columns.len(), cols, "int8::I8Rows::quantize_scaled: {} scales for {cols} columns", columns.len());
        let mut rows = Self::round(w, cols, form, form.weights(), Some(columns), false);
        rows.input_scales = Some(columns.iter().map(|s| 1.0 / s).collect());
        rows
    }

    /// The activations' rounding, as `matmul_t` takes it for weights in `form` (`Form`).
    /// `columns`: what each column is multiplied by first (the weights' `input_scales`).
    pub fn quantize_activations(x: &[f32], cols: usize, columns: Option<&[f32]>, form: Form) -> I8Rows {
        Self::round(x, cols, form, form.activations(), columns, form == Form::Bytes)
    }

    pub fn form(&self) -> Form {
        match self.values {
            Values::Wide(_) => Form::Wide,
            Values::Bytes(_) => Form::Bytes,
        }
    }

    /// `wide_rows`: round rows past `WIDE_PAST` in 16 bits (x in `Form::Bytes`).
    fn round(
        x: &[f32],
        cols: usize,
        form: Form,
        rounding: Rounding,
        columns: Option<&[f32]>,
        wide_rows: bool,
    ) -> I8Rows {
        assert!(cols > 0 && x.len() % cols == 0, "int8::I8Rows::quantize: {} numbers in rows of {cols}", x.len());
        let stride = cols.div_ceil(PAD) * PAD;
        let (values, (scales, zeros, sums, wide)) = match form {
            Form::Wide => {
                let (v, rest) = rows_rounded(x, cols, stride, rounding, columns, false);
                (Values::Wide(v), rest)
            }
            Form::Bytes => {
                let (v, rest) = rows_rounded(x, cols, stride, rounding, columns, wide_rows);
                (Values::Bytes(v), rest)
            }
        };
        I8Rows { values, scales, zeros, sums, cols, stride, input_scales: None, wide }
    }

    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The number row r, column c stands for.
    pub fn value(&self, row: usize, col: usize) -> f32 {
        if let Some((_, v)) = self.wide.iter().find(|(r, _)| *r == row) {
            return self.scales[row] * v[col] as f32;
        }
        let at = row * self.stride + col;
        let v = match &self.values {
            Values::Wide(v) => v[at] as i32,
            Values::Bytes(v) => v[at] as i32,
        };
        self.scales[row] * (v - self.zeros[row]) as f32
    }
}

/// How `Form::Bytes` products are added up here, for the benchmark's figures: with relaxed SIMD
/// "pairs" or "dots" (`simd128::pairs_are_faster`), elsewhere "portable".
pub fn bytes_kernel() -> &'static str {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    return if simd128::pairs_are_faster() { "pairs" } else { "dots" };
    #[allow(unreachable_code)]
    "portable"
}

/// `out = x Wᵀ` with x (positions × k) rounded here, in W's form, and W rounded at load: `out`
/// is positions × W's rows, row-major.
pub fn matmul_t(x: &[f32], w: &I8Rows, out: &mut [f32]) {
    let xq = I8Rows::quantize_activations(x, w.cols, w.input_scales.as_deref(), w.form());
    match (&xq.values, &w.values) {
        (Values::Wide(xv), Values::Wide(wv)) => products(&xq, xv, w, wv, out),
        (Values::Bytes(xv), Values::Bytes(wv)) => products(&xq, xv, w, wv, out),
        _ => unreachable!("x is rounded in W's form"),
    }
}

fn products<T: Lane>(xq: &I8Rows, xv: &[T], w: &I8Rows, wv: &[T], out: &mut [f32]) {
    #[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
    if std::mem::size_of::<T>() == 1 && simd128::pairs_are_faster() {
        return products_in::<true, T>(xq, xv, w, wv, out);
    }
    products_in::<false, T>(xq, xv, w, wv, out)
}

/// `products` with the relaxed kernel's way of adding up bytes (`simd128::tile`'s `PAIRS`).
fn products_in<const PAIRS: bool, T: Lane>(xq: &I8Rows, xv: &[T], w: &I8Rows, wv: &[T], out: &mut [f32]) {
    // Σ (x − zx)(w − zw) from the stored Σ x·w: the weights' zero point is 0, so it is
    // Σ x·w − zx · Σ w.
    debug_assert!(w.zeros.iter().all(|&z| z == 0), "int8::matmul_t: weights with a zero point");
    let extra = |r: usize, s: usize| xq.zeros[r] * w.sums[s];
    let (n, m, stride) = (xq.rows(), w.rows(), w.stride);
    assert_eq!(out.len(), n * m, "int8::matmul_t: output of {} for {n} × {m}", out.len());
    // Rows rounded in 16 bits are taken apart, one at a time; the rest in tiles of R.
    let rows: Vec<usize> = (0..n).filter(|r| !xq.wide.iter().any(|(w, _)| w == r)).collect();
    // Weight rows outside, positions inside, as in `dense::matmul_t`: S rows of W stay in the
    // nearest cache while every position meets them.
    for j in (0..m).step_by(S) {
        for i in rows.chunks(R) {
            if i.len() == R && j + S <= m {
                let xs = std::array::from_fn(|a| row(xv, i[a], stride));
                let sums = tile::<R, S, PAIRS, T>(xs, std::array::from_fn(|b| row(wv, j + b, stride)));
                for (&r, sums) in i.iter().zip(&sums) {
                    for (s, &sum) in sums.iter().enumerate() {
                        out[r * m + j + s] = (sum - extra(r, j + s)) as f32 * (xq.scales[r] * w.scales[j + s]);
                    }
                }
            } else {
                for &r in i {
                    for s in j..(j + S).min(m) {
                        let sum = tile::<1, 1, PAIRS, T>([row(xv, r, stride)], [row(wv, s, stride)])[0][0];
                        out[r * m + s] = (sum - extra(r, s)) as f32 * (xq.scales[r] * w.scales[s]);
                    }
                }
            }
        }
        for (r, numbers) in &xq.wide {
            for s in j..(j + S).min(m) {
                out[r * m + s] = widened(numbers, row(wv, s, stride)) as f32 * (xq.scales[*r] * w.scales[s]);
            }
        }
    }
}

/// Σ x·w for a row of x in 16 bits and a row of W in `T` (bytes: widened as they are loaded).
fn widened<T: Lane>(x: &[i16], w: &[T]) -> i32 {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if std::mem::size_of::<T>() == 1 {
        // SAFETY: T is i8 (`Lane` has two implementations), so the bytes are W's; rows of both
        // hold the same multiple of PAD numbers.
        return unsafe { simd128::widened(x, std::slice::from_raw_parts(w.as_ptr() as *const i8, w.len())) };
    }
    x.iter().zip(w).map(|(&a, b)| a as i32 * b.get()).sum()
}

fn row<T>(values: &[T], r: usize, stride: usize) -> &[T] {
    &values[r * stride..][..stride]
}

/// The A × B integer dot products of rows `xs` with rows `ws`: exact, so any order of additions
/// gives the same sums.
#[inline(always)]
fn tile<const A: usize, const B: usize, const PAIRS: bool, T: Lane>(xs: [&[T]; A], ws: [&[T]; B]) -> [[i32; B]; A] {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if simd128::vectored::<T>() {
        // SAFETY: simd128 is enabled for this build; every row holds the same number of numbers,
        // a multiple of PAD (`rows_rounded`, x and W have the same cols).
        return unsafe { simd128::tile::<A, B, PAIRS, T>(xs, ws) };
    }
    let mut acc = [[0i32; B]; A];
    for (a, xr) in xs.iter().enumerate() {
        for (b, wr) in ws.iter().enumerate() {
            // Written over fixed-size lanes so that the compiler keeps it in vector registers
            // (natively: SSE2's pmaddwd, the same pairwise multiply-add).
            let mut lanes = [0i32; 16];
            for (xc, wc) in xr.chunks_exact(16).zip(wr.chunks_exact(16)) {
                for (lane, (&xv, &wv)) in lanes.iter_mut().zip(xc.iter().zip(wc)) {
                    *lane += xv.get() * wv.get();
                }
            }
            acc[a][b] = lanes.iter().sum();
        }
    }
    acc
}

mod round;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::random::pseudo_random;

    #[test]
    fn products_are_the_rounded_operands_products_on_every_edge() {
        // Full tiles, an odd last position, a short last block of rows, k not a multiple of 8;
        // both forms.
        let shapes = [(4, 16, 8), (5, 24, 10), (1, 8, 3), (3, 13, 5), (7, 384, 9)];
        for ((n, k, m), form) in shapes.into_iter().flat_map(|s| [(s, Form::Wide), (s, Form::Bytes)]) {
            let mut x = pseudo_random(n * k, 1);
            // Rows 1 and 2 with two numbers far past the rest, of both signs: `Bytes` rounds
            // them in 16 bits where the row is long enough for its range to be past WIDE_PAST
            // times its RMS (√(2k) of it at most).
            for r in [1, 2].into_iter().filter(|&r| r < n) {
                x[r * k + k / 2] = 40.0 * k as f32;
                x[r * k] = -40.0 * k as f32;
            }
            let w = I8Rows::quantize(&pseudo_random(m * k, 2), k, form);
            let xq = I8Rows::quantize_activations(&x, k, None, form);
            if form == Form::Bytes && k >= 384 {
                assert_eq!(xq.wide.len(), 2, "{n}x{k}: rows rounded in 16 bits");
            }
            let mut out = vec![f32::NAN; n * m];
            matmul_t(&x, &w, &mut out);
            for i in 0..n {
                for j in 0..m {
                    let want: f64 = (0..k).map(|c| xq.value(i, c) as f64 * w.value(j, c) as f64).sum();
                    let got = out[i * m + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{form:?} {n}x{k}x{m} at ({i}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_keeps_each_number_within_half_a_step() {
        let x = pseudo_random(3 * 40, 7);
        let q = I8Rows::quantize(&x, 40, Form::Wide);
        for r in 0..3 {
            let row = &x[r * 40..][..40];
            let step = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (c, &v) in row.iter().enumerate() {
                assert!((q.value(r, c) - v).abs() <= step * 0.5 * (1.0 + 1e-5) + 1e-7, "row {r} col {c}");
            }
        }
        // A row of zeros stays zeros (no division by a zero scale).
        let z = I8Rows::quantize(&[0.0; 16], 16, Form::Bytes);
        assert!((0..16).all(|c| z.value(0, c) == 0.0));
    }

    #[test]
    fn clipped_weights_are_nearer_than_at_the_largest_numbers_scale() {
        // A long row of numbers in ±0.5 and one a little past them: rounding at the largest
        // number's scale would cost every number for that one; `Bytes` clips it instead. The
        // row's squared error can be no larger than at that scale (it is one of the candidates),
        // and here it is smaller.
        let mut x = pseudo_random(1536, 8);
        x[5] = 0.525;
        let q = I8Rows::quantize(&x, 1536, Form::Bytes);
        let top = 0.525 / 63.0;
        let err = |value: &dyn Fn(usize) -> f32| (0..1536).map(|c| (value(c) - x[c]).powi(2)).sum::<f32>();
        assert!(err(&|c| q.value(0, c)) < err(&|c| round_half_away(x[c] / top) * top));
        assert!(q.scales[0] < top, "the scale {} is the largest number's", q.scales[0]);
        assert!((0..1536).all(|c| q.value(0, c).abs() <= 63.0 * q.scales[0] * (1.0 + 1e-6)));
    }

    #[test]
    fn products_stay_close_to_the_f32_products() {
        // MiniLM's shapes: 384 inputs, 1536 inputs. The relative error of a dot product of
        // random vectors rounded to 8 bits is well under 2 % of the product's scale, with W's
        // columns scaled (the product must not change) or not; 4 % where x has 127 steps over
        // its whole range (`Form::Bytes`: about 6 bits for numbers of both signs).
        let cases = [(384, false), (1536, false), (384, true)];
        for ((k, scaled), form) in cases.into_iter().flat_map(|c| [(c, Form::Wide), (c, Form::Bytes)]) {
            let (n, m) = (6, 16);
            let x = pseudo_random(n * k, 3);
            let wf = pseudo_random(m * k, 4);
            let columns: Vec<f32> = pseudo_random(k, 5).iter().map(|v| 2f32.powf(*v)).collect();
            let w =
                if scaled { I8Rows::quantize_scaled(&wf, k, &columns, form) } else { I8Rows::quantize(&wf, k, form) };
            let mut out = vec![0f32; n * m];
            matmul_t(&x, &w, &mut out);
            let mut exact = vec![0f32; n * m];
            crate::kernels::dense::matmul_t(&x, &wf, k, &mut exact);
            let scale = (exact.iter().map(|v| v * v).sum::<f32>() / exact.len() as f32).sqrt();
            let bound = if form == Form::Wide { 0.02 } else { 0.04 };
            for (g, e) in out.iter().zip(&exact) {
                assert!((g - e).abs() < bound * scale, "{form:?} k {k}: {g} vs {e} (rms {scale})");
            }
        }
    }
}
