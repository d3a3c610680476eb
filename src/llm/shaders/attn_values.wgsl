// Attention output: for query i and head h, the softmax-weighted sum of the cached values of
// positions 0..=pos + i. out: n × heads × head_dim.
// values: context × kv_heads × head_dim.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let h = id.y;
    let i = id.z;
    let hd = shape.head_dim;
    if (d >= hd || i >= step.n) { return; }
    let kv = h / (shape.heads / shape.kv_heads);
    let row = (h * step.n + i) * shape.context;
    var acc = 0.0;
    for (var t = 0u; t <= step.pos + i; t++) {
        acc += scores[row + t] * values[(t * shape.kv_heads + kv) * hd + d];
    }
    out[(i * shape.heads + h) * hd + d] = acc;
}
