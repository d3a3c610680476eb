// Token embeddings: row `token` of the Q8_0 embedding table, dequantized. One thread per value.
// quants: 4 signed bytes per word; scales: one per 32 values; x: n × dim.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let i = id.y;
    if (d >= shape.dim || i >= step.n) { return; }
    let at = tokens[i] * shape.dim + d;
    let q = extractBits(bitcast<i32>(quants[at / 4u]), 8u * (at % 4u), 8u);
    x[i * shape.dim + d] = f32(q) * scales[at / 32u];
}
