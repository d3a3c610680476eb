// Round activations to Q8_0 before a product with Q8_0 weights, exactly as the CPU kernel (and
// ggml) do: each block of 32 values maps its largest magnitude to 127, the scale is kept at f16
// precision, values round half away from zero. The products are then exact integer sums, as on
// the CPU. One thread per block.
// x: n × cols.

// x (≥ 0) rounded to the nearest f16 value, ties to even, as the CPU's `half::f16::from_f32`
// does. WGSL's pack2x16float leaves the rounding to the implementation, so it is done on the bits:
// f16 keeps 10 of f32's 23 mantissa bits; below f16's smallest normal number its values are
// multiples of 2^-24 (scaling by powers of two is exact, and `round` is ties-to-even).
fn round_to_f16(x: f32) -> f32 {
    if (x < 6.103515625e-05) { return round(x * 16777216.0) * 5.9604644775390625e-08; }
    let b = bitcast<u32>(x);
    return bitcast<f32>((b + 0x0fffu + ((b >> 13u) & 1u)) & 0xffffe000u);
}

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
    let d = amax / 127.0;
    var inv = 0.0;
    if (d != 0.0) { inv = 1.0 / d; }
    scales[b] = round_to_f16(d);
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let q = i32(round_half_away(x[b * 32u + w * 4u + k] * inv));
            word |= (bitcast<u32>(q) & 0xffu) << (8u * k);
        }
        quants[b * 8u + w] = word;
    }
}
