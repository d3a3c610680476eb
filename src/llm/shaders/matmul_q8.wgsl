// out (n × rows) = x (n × cols) · Wᵀ, W in Q8_0 as stored (never widened to f32 in GPU memory):
// 4 signed bytes per u32 word, one f32 scale per 32 weights, row after row. x comes already
// rounded to 14–15 bits per block (quantize.wgsl), two values per word, so each block's products
// are exact integer sums. One thread per output value.

// Bytes 2h and 2h + 1 of weight word `w` times the two 16-bit values of input word `x`.
fn pair(w: u32, h: u32, x: u32) -> i32 {
    let a = bitcast<i32>(w);
    let b = bitcast<i32>(x);
    return extractBits(a, 16u * h, 8u) * extractBits(b, 0u, 16u) + extractBits(a, 16u * h + 8u, 8u) * extractBits(b, 16u, 16u);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let i = id.y;
    if (r >= shape.rows || i >= step.n) { return; }
    let blocks = shape.cols / 32u;
    // The CPU's order (`q8::dot4_portable`): each block's products in four partial sums, lane k
    // holding products 2k and 2k + 1 of every eight (of each eight weights' two words, the first
    // feeds lanes 0 and 1, the second lanes 2 and 3), each lane scaled and summed over the
    // blocks on its own, and the four lanes added at the end as ((l0 + l1) + l2) + l3.
    var acc = vec4<f32>(0.0);
    for (var b = 0u; b < blocks; b++) {
        let w = (r * blocks + b) * 8u;
        let v = (i * blocks + b) * 16u;
        var lanes = vec4<i32>(0);
        // Eight values at a time: two weight words, four input words.
        for (var c = 0u; c < 4u; c++) {
            let w0 = wq[w + 2u * c];
            let w1 = wq[w + 2u * c + 1u];
            let x = v + 4u * c;
            lanes += vec4<i32>(pair(w0, 0u, xq[x]), pair(w0, 1u, xq[x + 1u]), pair(w1, 0u, xq[x + 2u]), pair(w1, 1u, xq[x + 3u]));
        }
        acc += vec4<f32>(lanes) * (ws[r * blocks + b] * xs[i * blocks + b]);
    }
    out[i * shape.rows + r] = ((acc.x + acc.y) + acc.z) + acc.w;
}
