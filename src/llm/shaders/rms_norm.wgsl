// RMSNorm of each position: out = x / sqrt(mean(x²) + eps) * weight.
//
// The sum of squares is taken in exactly the CPU path's order (eight running sums over the
// vector, then added in turn: `vecmath::dot`, then `RmsNorm::forward_slice` in llm/llama.rs), by
// one thread per position. A tree sum over a workgroup would be faster on a large GPU, but
// activations are rounded to 14–15 bits right after this, where a last-bit difference can move a
// value across a rounding step and grow from there (tests/gpu.rs): every kernel that sums keeps
// the CPU's order, so that the two paths give the same bits.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= step.n) { return; }
    let row = i * shape.dim;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let whole = shape.dim / 8u * 8u;
    for (var d = 0u; d < whole; d += 8u) {
        for (var k = 0u; k < 8u; k++) {
            let v = x[row + d + k];
            acc[k] += v * v;
        }
    }
    var tail = 0.0;
    for (var d = whole; d < shape.dim; d++) {
        tail += x[row + d] * x[row + d];
    }
    var sum = 0.0;
    for (var k = 0u; k < 8u; k++) { sum += acc[k]; }
    let inv = 1.0 / sqrt((sum + tail) / f32(shape.dim) + shape.eps);
    for (var d = 0u; d < shape.dim; d++) {
        out[row + d] = x[row + d] * inv * weight[d];
    }
}
