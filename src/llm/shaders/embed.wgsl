// Token embeddings: row `token` of the Q8_0 embedding table, dequantized. One thread per value.

struct Step { n: u32, pos: u32 }
struct Shape { dim: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> quants: array<u32>;   // 4 signed bytes per word
@group(0) @binding(4) var<storage, read> scales: array<f32>;   // one per 32 values
@group(0) @binding(5) var<storage, read_write> x: array<f32>;  // n × dim

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let i = id.y;
    if (d >= shape.dim || i >= step.n) { return; }
    let at = tokens[i] * shape.dim + d;
    let q = extractBits(bitcast<i32>(quants[at / 4u]), 8u * (at % 4u), 8u);
    x[i * shape.dim + d] = f32(q) * scales[at / 32u];
}
