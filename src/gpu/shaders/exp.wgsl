// eˣ exactly as the CPU path computes it (`vecmath::exp` in src/kernels/vecmath.rs): the same
// constants, the same operations in the same order, so that on an adapter whose f32 arithmetic
// is IEEE's without fused multiply-adds (lavapipe; `Gpu::arithmetic_is_exact` checks) it gives
// the same bits. WGSL's own `exp` need only be within a few units in the last place, and one such
// difference, once activations are rounded for the integer products, grows through the layers.
// The constants are written as their bits: WGSL lets a decimal literal round either way.

fn exp_cpu(x: f32) -> f32 {
    let log2_e = bitcast<f32>(0x3fb8aa3bu);
    let ln2_high = bitcast<f32>(0x3f317200u);
    let ln2_low = bitcast<f32>(0x35bfbe8eu);
    // `round` is ties-to-even, as the CPU's adding and subtracting of 1.5 · 2²³ is.
    let n = round(clamp(x, -88.0, 89.0) * log2_e);
    let r = (x - n * ln2_high) - n * ln2_low;
    var p = bitcast<f32>(0x39500d01u);            // 1/5040
    p = p * r + bitcast<f32>(0x3ab60b61u);        // 1/720
    p = p * r + bitcast<f32>(0x3c088889u);        // 1/120
    p = p * r + bitcast<f32>(0x3d2aaaabu);        // 1/24
    p = p * r + bitcast<f32>(0x3e2aaaabu);        // 1/6
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let e = p * bitcast<f32>(u32(i32(n) + 127) << 23u);
    if (x < bitcast<f32>(0xc2aea8f6u)) { return 0.0; }            // -87.33
    // Above 88.37, +∞: made at run time (x times f32's largest number overflows), as WGSL does
    // not allow an infinite constant.
    if (x > bitcast<f32>(0x42b0bd71u)) { return x * bitcast<f32>(0x7f7fffffu); }
    return e;
}
