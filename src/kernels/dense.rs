//! `x Wᵀ` for many positions at once with W in f32: the products that read a prompt, in wasm.
//!
//! Both x (positions × k) and W (outputs × k) are stored along k, so every result is a dot
//! product of two contiguous rows, and no operand needs repacking. The kernel takes a tile of
//! 2 positions × 4 weight rows: 8 running sums of four lanes each stay in registers while k is
//! walked, and each loaded vector is used 2 or 4 times. In a scratch benchmark under Node (one
//! thread, 120 positions, the model's four matrix shapes) tiles of 2 × 4 ran at 22–30 GFLOP/s,
//! against 15–24 for 2 × 2 and 14–23 for 4 × 1; prompt reading through candle's gemm, which
//! packs operands into a layout made for a different register file, averaged ~16 in the engine.
//!
//! Natively candle's gemm (AVX2, fused multiply-add, every core) stays the faster choice, so only
//! the wasm build takes this path (`llama::dense_product`).

use super::f4::F4;
use super::vecmath::dot;

/// Positions per tile.
const R: usize = 2;
/// Weight rows per tile.
const S: usize = 4;

/// `out = x Wᵀ`: `x` is positions × k, `w` outputs × k, `out` positions × outputs, all row-major.
///
/// Every result is summed in the same order whether it falls in a full tile or on the ragged
/// edge, so where threads cut W's rows, or prompt slices cut the positions, changes no bit.
pub fn matmul_t(x: &[f32], w: &[f32], k: usize, out: &mut [f32]) {
    let outputs = w.len() / k;
    assert!(x.len() % k == 0 && w.len() % k == 0 && out.len() == x.len() / k * outputs, "matmul_t shapes");
    if k % 4 != 0 {
        for (xr, out) in x.chunks_exact(k).zip(out.chunks_exact_mut(outputs)) {
            for (o, wr) in out.iter_mut().zip(w.chunks_exact(k)) {
                *o = dot(xr, wr);
            }
        }
        return;
    }
    // Weight rows outside, positions inside: S rows of W (at most 24 KB) stay in the nearest cache
    // while every position meets them, and W is read from memory once.
    for (j, ws) in w.chunks(S * k).enumerate() {
        for (i, xs) in x.chunks(R * k).enumerate() {
            if xs.len() == R * k && ws.len() == S * k {
                for (r, sums) in tile::<R, S>(xs, ws, k).iter().enumerate() {
                    out[(i * R + r) * outputs + j * S..][..S].copy_from_slice(sums);
                }
            } else {
                // The ragged edge (a last odd position, a last short block of rows), one product
                // at a time in the tile's order.
                for (r, xr) in xs.chunks_exact(k).enumerate() {
                    for (s, wr) in ws.chunks_exact(k).enumerate() {
                        out[(i * R + r) * outputs + j * S + s] = tile::<1, 1>(xr, wr, k)[0][0];
                    }
                }
            }
        }
    }
}

/// The A × B dot products of A rows of x with B rows of W (each k long, k a multiple of 4).
#[inline(always)]
fn tile<const A: usize, const B: usize>(xs: &[f32], ws: &[f32], k: usize) -> [[f32; B]; A] {
    assert!(xs.len() >= A * k && ws.len() >= B * k && k % 4 == 0);
    let mut acc = [[F4::ZERO; B]; A];
    let (xp, wp) = (xs.as_ptr(), ws.as_ptr());
    let mut c = 0;
    while c < k {
        // SAFETY: c + 4 <= k, so every row a < A of x and b < B of W has four numbers at c
        // (both slices were checked to hold A and B rows of k above). Indexing the slices
        // instead left bounds checks in the loop that cost a third of the speed in wasm.
        unsafe {
            let xv: [F4; A] = std::array::from_fn(|a| F4::from(&*(xp.add(a * k + c) as *const [f32; 4])));
            for b in 0..B {
                let wv = F4::from(&*(wp.add(b * k + c) as *const [f32; 4]));
                for a in 0..A {
                    acc[a][b] = acc[a][b].add_product(xv[a], wv);
                }
            }
        }
        c += 4;
    }
    acc.map(|row| row.map(F4::sum))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_definition_on_every_edge() {
        // Full tiles, a last odd position, a short last block of weight rows, k not a multiple
        // of 4 (all plain dot products then).
        for (n, k, m) in [(4, 8, 8), (5, 12, 10), (1, 16, 3), (3, 6, 5), (7, 576, 9)] {
            let x = crate::kernels::random::pseudo_random(n * k, 1);
            let w = crate::kernels::random::pseudo_random(m * k, 2);
            let mut out = vec![f32::NAN; n * m];
            matmul_t(&x, &w, k, &mut out);
            for i in 0..n {
                for j in 0..m {
                    let want: f64 = (0..k).map(|c| x[i * k + c] as f64 * w[j * k + c] as f64).sum();
                    let got = out[i * m + j] as f64;
                    assert!((got - want).abs() < 1e-4, "{n}x{k}x{m} at ({i}, {j}): {got} vs {want}");
                }
            }
            // One position or one weight row at a time (as an odd position or a thread's cut
            // would take them), the same bits.
            for i in 0..n {
                for j in 0..m {
                    let mut one = [0f32];
                    matmul_t(&x[i * k..][..k], &w[j * k..][..k], k, &mut one);
                    assert_eq!(one[0].to_bits(), out[i * m + j].to_bits(), "{n}x{k}x{m} at ({i}, {j})");
                }
            }
        }
    }
}
