// BERT's input: word embedding + position embedding + token type 0 embedding, for each position
// of each text (texts padded to one length). One thread per value.
// words: vocabulary × dim; positions: max positions × dim; types: 2 × dim (type 0 used);
// x: positions × dim.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let i = id.y;
    if (d >= shape.dim || i >= step.positions) { return; }
    let dim = shape.dim;
    x[i * dim + d] = words[ids[i] * dim + d] + positions[(i % step.len) * dim + d] + types[d];
}
