// BERT's input: word embedding + position embedding + token type 0 embedding, for each position
// of each text (texts padded to one length). One thread per value.

struct Step { positions: u32, len: u32 }
struct Shape { dim: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> words: array<f32>;       // vocabulary × dim
@group(0) @binding(4) var<storage, read> positions: array<f32>;   // max positions × dim
@group(0) @binding(5) var<storage, read> types: array<f32>;       // 2 × dim (type 0 used)
@group(0) @binding(6) var<storage, read_write> x: array<f32>;     // positions × dim

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let i = id.y;
    if (d >= shape.dim || i >= step.positions) { return; }
    let dim = shape.dim;
    x[i * dim + d] = words[ids[i] * dim + d] + positions[(i % step.len) * dim + d] + types[d];
}
