// Copy n positions of values into a block's value cache at positions pos..pos + n.

struct Step { n: u32, pos: u32 }
struct Shape { width: u32, _a: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> cache: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let i = id.y;
    if (d >= shape.width || i >= step.n) { return; }
    cache[(step.pos + i) * shape.width + d] = src[i * shape.width + d];
}
