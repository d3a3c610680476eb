// Sentence vectors: the mean of each text's real (unmasked) token vectors. One thread per value.

struct Step { positions: u32, len: u32 }
struct Shape { dim: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<f32>;      // positions × dim
@group(0) @binding(3) var<storage, read> mask: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;  // texts × dim

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
