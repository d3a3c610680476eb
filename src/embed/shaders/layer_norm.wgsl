// x = layer_norm(x + residual) · weight + bias, in place, one thread per position (BERT's
// vectors are short). With `residual` off, x = layer_norm(x) (the embeddings).

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= step.positions) { return; }
    let dim = shape.dim;
    let row = i * dim;
    if (shape.residual != 0u) {
        for (var d = 0u; d < dim; d++) { x[row + d] += residual[row + d]; }
    }
    var mean = 0.0;
    for (var d = 0u; d < dim; d++) { mean += x[row + d]; }
    mean /= f32(dim);
    var variance = 0.0;
    for (var d = 0u; d < dim; d++) {
        let c = x[row + d] - mean;
        variance += c * c;
    }
    let inv = 1.0 / sqrt(variance / f32(dim) + shape.eps);
    for (var d = 0u; d < dim; d++) {
        x[row + d] = (x[row + d] - mean) * inv * weight[d] + bias[d];
    }
}
