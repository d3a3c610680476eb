// out (n × rows) = x (n × cols) · Wᵀ, W in Q8_0 as stored (never widened to f32 in GPU memory):
// 4 signed bytes per u32 word, one f32 scale per 32 weights, row after row. x comes already
// rounded to Q8_0 (quantize.wgsl), so each block is an integer dot product scaled once.
// One thread per output value.

struct Step { n: u32, pos: u32 }
struct Shape { rows: u32, cols: u32, _b: u32, _c: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read> xs: array<f32>;
@group(0) @binding(4) var<storage, read> wq: array<u32>;
@group(0) @binding(5) var<storage, read> ws: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

fn dot_bytes(a: u32, b: u32) -> i32 {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u)
         + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u)
         + extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u)
         + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let i = id.y;
    if (r >= shape.rows || i >= step.n) { return; }
    let blocks = shape.cols / 32u;
    var acc = 0.0;
    for (var b = 0u; b < blocks; b++) {
        let w = (r * blocks + b) * 8u;
        let v = (i * blocks + b) * 8u;
        var sum = 0;
        for (var k = 0u; k < 8u; k++) {
            sum += dot_bytes(wq[w + k], xq[v + k]);
        }
        acc += f32(sum) * (ws[r * blocks + b] * xs[i * blocks + b]);
    }
    out[i * shape.rows + r] = acc;
}
