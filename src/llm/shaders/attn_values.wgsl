// Attention output: for query i and head h, the softmax-weighted sum of the cached values of
// positions 0..=pos + i. out: n × heads × head_dim.

struct Step { n: u32, pos: u32 }
struct Shape { heads: u32, kv_heads: u32, head_dim: u32, context: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> scores: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;  // context × kv_heads × head_dim
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
