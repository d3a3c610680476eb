//! A Q8_0 matrix against many positions at once: the products that read a prompt with the 8-bit
//! weights alone (no f32 copy of the model).
//!
//! `q8.rs` computes one position against a group of four rows (`dot4`), widening the weights'
//! bytes to 16 bits for every product. Reading a prompt, each group meets hundreds of positions,
//! so here the group's weights are widened once into a small buffer (four rows of 16-bit values,
//! at most 12 KB, which stays in the nearest cache), and each position meets the group in a tile
//! of 4 rows. Tiles of 2 positions × 4 rows, sharing each loaded vector of weights, measured the
//! same under Node (0.99–1.01× the f32 kernel either way), so prompts use tiles of one position;
//! `tile` stays generic over the count, and the tests hold a pair to the same bits.
//!
//! The numbers are `dot4`'s to the bit: each block's integer sum is exact whatever order its
//! lanes are added in, and the f32 work (each lane scaled and summed over the blocks, then
//! ((l0 + l1) + l2) + l3) is done in `dot4`'s order. A prompt read this way gives the same tokens
//! as one read position by position, natively or on the GPU (`tests/wasm` holds wasm to the CLI).

use super::q8::{in_passes, Q8Matrix, BLOCK, GROUP, PASS_WIDTH};

/// `out` (positions × rows) = the positions `x16` (`blocks::quantize_rows`; one scale per block in
/// `xs`) times `m`ᵀ.
pub(super) fn positions_against(m: &Q8Matrix, x16: &[i16], xs: &[f32], out: &mut [f32]) {
    let (rows, cols) = m.shape();
    let (blocks, n) = (cols / BLOCK, x16.len() / cols);
    assert!(x16.len() == n * cols && xs.len() == n * blocks && out.len() == n * rows);
    let mut w16 = vec![0i16; GROUP * cols];
    in_passes(rows, out, |g, t| {
        let (wq, ws) = m.group(g);
        w16.iter_mut().zip(wq).for_each(|(d, &s)| *d = s as i16);
        for p in 0..n {
            let [sums] = tile::<1>(&w16, ws, &x16[p * cols..][..cols], &xs[p * blocks..][..blocks]);
            t[p * PASS_WIDTH..][..GROUP].copy_from_slice(&sums);
        }
    });
}

/// A positions (x16, xs) against one group of four rows (w16 widened, ws its scales), in
/// `dot4`'s order of f32 additions.
#[inline(always)]
fn tile<const A: usize>(w16: &[i16], ws: &[f32], x16: &[i16], xs: &[f32]) -> [[f32; GROUP]; A] {
    let blocks = xs.len() / A;
    // The unsafe kernel reads by pointer: these bounds make that sound.
    assert!(w16.len() == GROUP * BLOCK * blocks && ws.len() == GROUP * blocks && x16.len() == A * BLOCK * blocks);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        // SAFETY: simd128 is enabled for this build; the lengths are asserted above.
        unsafe { simd128::tile::<A>(w16, ws, x16, xs, blocks) }
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    portable::<A>(w16, ws, x16, xs, blocks)
}

/// The tile in plain Rust: the definition the SIMD form follows (and natively, where `dot4`'s
/// AVX2 form is used instead, what the tests hold that form to).
#[cfg_attr(all(target_arch = "wasm32", target_feature = "simd128"), allow(dead_code))]
fn portable<const A: usize>(w16: &[i16], ws: &[f32], x16: &[i16], xs: &[f32], blocks: usize) -> [[f32; GROUP]; A] {
    let mut lanes = [[[0f32; 4]; GROUP]; A];
    let cols = blocks * BLOCK;
    for b in 0..blocks {
        for j in 0..GROUP {
            let w = &w16[(b * GROUP + j) * BLOCK..][..BLOCK];
            for (a, lanes) in lanes.iter_mut().enumerate() {
                let x = &x16[a * cols + b * BLOCK..][..BLOCK];
                let mut sums = [0i32; 4];
                for i in 0..BLOCK {
                    sums[(i / 2) % 4] += w[i] as i32 * x[i] as i32;
                }
                let scale = ws[b * GROUP + j] * xs[a * blocks + b];
                for (l, s) in lanes[j].iter_mut().zip(sums) {
                    *l += s as f32 * scale;
                }
            }
        }
    }
    lanes.map(|rows| rows.map(|[l0, l1, l2, l3]| ((l0 + l1) + l2) + l3))
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use super::{BLOCK, GROUP};
    use core::arch::wasm32::*;

    /// Each block: the positions' four vectors of eight 16-bit values are loaded once for the
    /// four rows; per row and position, four 8-lane multiply-adds, their sum scaled into that
    /// pair's running vector of four lanes.
    ///
    /// Each running vector is also stored (`write_volatile`, to a slot nothing reads) as soon as
    /// it is updated. V8 keeps the order of a function's loads and stores but places arithmetic
    /// as late as it can, so without the store every load of a block came first and the
    /// arithmetic after, far more values than x86 has registers, and most of them went to the
    /// stack and back (seen in `node --print-wasm-code`). The store pins each row's arithmetic
    /// before the next row's loads.
    #[inline(always)]
    pub unsafe fn tile<const A: usize>(
        w16: &[i16],
        ws: &[f32],
        x16: &[i16],
        xs: &[f32],
        blocks: usize,
    ) -> [[f32; GROUP]; A] {
        let load = |p: *const i16| std::ptr::read_unaligned(p as *const v128);
        let cols = blocks * BLOCK;
        let mut acc = [[f32x4_splat(0.0); GROUP]; A];
        let mut slot = f32x4_splat(0.0);
        let (wp, xp) = (w16.as_ptr(), x16.as_ptr());
        for b in 0..blocks {
            let x: [[v128; 4]; A] = std::array::from_fn(|a| {
                let p = xp.add(a * cols + b * BLOCK);
                [load(p), load(p.add(8)), load(p.add(16)), load(p.add(24))]
            });
            for j in 0..GROUP {
                let p = wp.add((b * GROUP + j) * BLOCK);
                let wsj = *ws.get_unchecked(b * GROUP + j);
                for a in 0..A {
                    let s = i32x4_add(
                        i32x4_add(i32x4_dot_i16x8(load(p), x[a][0]), i32x4_dot_i16x8(load(p.add(8)), x[a][1])),
                        i32x4_add(i32x4_dot_i16x8(load(p.add(16)), x[a][2]), i32x4_dot_i16x8(load(p.add(24)), x[a][3])),
                    );
                    let scale = f32x4_splat(wsj * *xs.get_unchecked(a * blocks + b));
                    acc[a][j] = f32x4_add(acc[a][j], f32x4_mul(f32x4_convert_i32x4(s), scale));
                    std::ptr::write_volatile(&mut slot, acc[a][j]);
                }
            }
        }
        acc.map(|rows| rows.map(super::super::q8::simd128::lanes_total))
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocks::quantize_rows;
    use super::super::q8::{dot4, dot4_portable};
    use super::*;
    use crate::kernels::random::pseudo_random;

    /// One order of additions, to the bit, whatever the build: each row's block products in four
    /// lanes by position (products 2k and 2k + 1 of every eight in lane k), each lane scaled and
    /// summed over the blocks, then ((l0 + l1) + l2) + l3 — `portable` above. This build's
    /// one-position kernel (AVX2 where the CPU has it), its portable form and the tiles must all
    /// give these bits. wasm's (`tests/wasm`, against the CLI) and the GPU's (`tests/gpu.rs`) are
    /// held to the same order end to end.
    #[test]
    fn every_kernel_adds_in_one_order() {
        let (rows, cols, n) = (8, 576, 5);
        let m = Q8Matrix::quantize(&pseudo_random(rows * cols, 7), rows, cols);
        // Inputs that use the whole 15-bit range, the sums' largest case included.
        let x = quantize_rows(&pseudo_random(n * cols, 8));
        let blocks = cols / BLOCK;
        let widen = |q: &[i8]| q.iter().map(|&v| v as i16).collect::<Vec<_>>();
        let mut tiled = vec![0f32; n * rows];
        positions_against(&m, &x.quants, &x.scales, &mut tiled);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for g in 0..rows / GROUP {
            let (wq, ws) = m.group(g);
            let w16 = widen(wq);
            for p in 0..n {
                let (xq, xs) = (&x.quants[p * cols..][..cols], &x.scales[p * blocks..][..blocks]);
                let want = portable::<1>(&w16, ws, xq, xs, blocks)[0];
                assert_eq!(bits(&dot4((wq, ws), xq, xs)), bits(&want), "group {g}, position {p}");
                assert_eq!(bits(&dot4_portable((wq, ws), xq, xs)), bits(&want), "group {g}, position {p}, portable");
                let got = &tiled[p * rows + g * GROUP..][..GROUP];
                assert_eq!(bits(got), bits(&want), "group {g}, position {p}, tiled");
            }
        }
        // Two positions in one tile, the same bits as each alone.
        let (w16, ws) = (widen(m.group(0).0), m.group(0).1);
        let pair = portable::<2>(&w16, ws, &x.quants[..2 * cols], &x.scales[..2 * blocks], blocks);
        for (p, sums) in pair.iter().enumerate() {
            let (xq, xs) = (&x.quants[p * cols..][..cols], &x.scales[p * blocks..][..blocks]);
            assert_eq!(bits(sums), bits(&portable::<1>(&w16, ws, xq, xs, blocks)[0]), "position {p} of a pair");
        }
    }
}
