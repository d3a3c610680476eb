// Softmax over each row of scores (head h, query i): the pos + i + 1 positions it may see.
// One thread per row, in the CPU path's order (see rms_norm.wgsl for why).

struct Step { n: u32, pos: u32 }
struct Shape { heads: u32, context: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let h = id.x % shape.heads;
    let i = id.x / shape.heads;
    if (i >= step.n) { return; }
    let len = step.pos + i + 1u;
    let row = (h * step.n + i) * shape.context;
    var m = scores[row];
    for (var t = 1u; t < len; t++) { m = max(m, scores[row + t]); }
    var sum = 0.0;
    for (var t = 0u; t < len; t++) {
        let e = exp(scores[row + t] - m);
        scores[row + t] = e;
        sum += e;
    }
    for (var t = 0u; t < len; t++) { scores[row + t] /= sum; }
}
