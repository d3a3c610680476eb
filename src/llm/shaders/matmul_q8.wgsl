// out (n × rows) = x (n × cols) · Wᵀ, W in Q8_0 as stored (never widened to f32 in GPU memory):
// 4 signed bytes per u32 word, one f32 scale per 32 weights, row after row. x comes already
// rounded to Q8_0 (quantize.wgsl), so each block's products are exact integer sums.
// One thread per output value.

// Bytes 0 and 1 of each word times the other word's (the low half) and bytes 2 and 3 (the high).
fn halves(a: u32, b: u32) -> vec2<i32> {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return vec2<i32>(
        extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u) + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u),
        extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u) + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u),
    );
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let i = id.y;
    if (r >= shape.rows || i >= step.n) { return; }
    let blocks = shape.cols / 32u;
    // The CPU's order (`q8::dot4_portable`): each block's products in four partial sums, lane k
    // holding products 2k and 2k + 1 of every eight (so words 0, 2, 4, 6 feed lanes 0 and 1, the
    // odd words lanes 2 and 3), each lane scaled and summed over the blocks on its own, and the
    // four lanes added at the end as ((l0 + l1) + l2) + l3.
    var acc = vec4<f32>(0.0);
    for (var b = 0u; b < blocks; b++) {
        let w = (r * blocks + b) * 8u;
        let v = (i * blocks + b) * 8u;
        var lanes = vec4<i32>(0);
        for (var k = 0u; k < 8u; k += 2u) {
            lanes += vec4<i32>(halves(wq[w + k], xq[v + k]), halves(wq[w + k + 1u], xq[v + k + 1u]));
        }
        acc += vec4<f32>(lanes) * (ws[r * blocks + b] * xs[i * blocks + b]);
    }
    out[i * shape.rows + r] = ((acc.x + acc.y) + acc.z) + acc.w;
}
