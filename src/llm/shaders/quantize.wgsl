// Round activations before a product with Q8_0 weights, exactly as the CPU kernel does
// (`kernels::blocks::quantize_rows`): each block of 32 values gets a power-of-two scale that puts
// its largest magnitude in 8192..=16384, built from the exponent's bits, so that no division is
// needed (WGSL's need not be IEEE's) and x times the inverse is exact; values round half away
// from zero, two to a word (low half first). The products are then exact integer sums, as on the
// CPU. One thread per block.
// x: n × cols.

fn round_half_away(r: f32) -> f32 {
    let t = trunc(r);
    if (abs(r - t) >= 0.5) { return t + sign(r); }
    return t;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = id.x;
    if (b >= step.n * shape.cols / 32u) { return; }
    var amax = 0.0;
    for (var k = 0u; k < 32u; k++) {
        let v = abs(x[b * 32u + k]);
        if (v > amax) { amax = v; }
    }
    // amax = m · 2^(e - 127), 1 <= m < 2; blocks under 2^-113 round to zeros.
    let e = (bitcast<u32>(amax) >> 23u) & 0xffu;
    var d = 0.0;
    var inv = 0.0;
    if (e >= 14u) {
        d = bitcast<f32>((e - 13u) << 23u);
        inv = bitcast<f32>((267u - e) << 23u);
    }
    scales[b] = d;
    for (var w = 0u; w < 16u; w++) {
        let lo = i32(round_half_away(x[b * 32u + w * 2u] * inv));
        let hi = i32(round_half_away(x[b * 32u + w * 2u + 1u] * inv));
        quants[b * 16u + w] = (bitcast<u32>(lo) & 0xffffu) | (bitcast<u32>(hi) << 16u);
    }
}
