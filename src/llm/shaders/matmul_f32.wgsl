// out (n × rows) = scale · x (n × cols) · Wᵀ for an f32 W (rows × cols), either written or added
// to what `out` holds. Small products only: a low-rank adapter's two halves.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let i = id.y;
    if (r >= shape.rows || i >= step.n) { return; }
    var acc = 0.0;
    for (var c = 0u; c < shape.cols; c++) {
        acc += x[i * shape.cols + c] * w[r * shape.cols + c];
    }
    let at = i * shape.rows + r;
    if (shape.accumulate != 0u) {
        out[at] += shape.scale * acc;
    } else {
        out[at] = shape.scale * acc;
    }
}
