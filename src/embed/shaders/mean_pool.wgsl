// Sentence vectors: the mean of each text's real (unmasked) token vectors. One thread per value.
// x: positions × dim; out: texts × dim.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let s = id.y;
    if (d >= shape.dim || s * step.len >= step.positions) { return; }
    var sum = 0.0;
    var count = 0.0;
    for (var t = s * step.len; t < (s + 1u) * step.len; t++) {
        if (mask[t] != 0u) {
            sum += x[t * shape.dim + d];
            count += 1.0;
        }
    }
    out[s * shape.dim + d] = sum / max(count, 1.0);
}
