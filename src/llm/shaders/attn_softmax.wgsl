// Softmax over each row of scores (head h, query i): the pos + i + 1 positions it may see.
// One thread per row, computing what the CPU path's `vecmath::softmax_in_place` does in the same
// order: its `exp` (exp.wgsl, prepended to this file), its sum kept in four running sums, and a
// multiplication by the sum's inverse (see rms_norm.wgsl for why the order matters).

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let h = id.x % shape.heads;
    let i = id.x / shape.heads;
    if (i >= step.n) { return; }
    let len = step.pos + i + 1u;
    let row = (h * step.n + i) * shape.context;
    var m = scores[row];
    for (var t = 1u; t < len; t++) { m = max(m, scores[row + t]); }
    var lanes = vec4<f32>(0.0);
    let whole = len / 4u * 4u;
    for (var t = 0u; t < whole; t += 4u) {
        let e = vec4<f32>(
            exp_cpu(scores[row + t] - m),
            exp_cpu(scores[row + t + 1u] - m),
            exp_cpu(scores[row + t + 2u] - m),
            exp_cpu(scores[row + t + 3u] - m),
        );
        scores[row + t] = e.x;
        scores[row + t + 1u] = e.y;
        scores[row + t + 2u] = e.z;
        scores[row + t + 3u] = e.w;
        lanes += e;
    }
    var tail = 0.0;
    for (var t = whole; t < len; t++) {
        let e = exp_cpu(scores[row + t] - m);
        scores[row + t] = e;
        tail += e;
    }
    let inv = 1.0 / (((lanes.x + lanes.z) + (lanes.y + lanes.w)) + tail);
    for (var t = 0u; t < len; t++) { scores[row + t] *= inv; }
}
