// Attention scores: for query position i (at pos + i) and head h, q·k / sqrt(head_dim) against
// every cached position t ≤ pos + i (the causal mask: later positions are never computed). Heads
// share key heads in groups (grouped-query attention). scores: heads × n × context.
// The dot product keeps eight running sums, in the CPU path's order (see rms_norm.wgsl for why).

struct Step { n: u32, pos: u32 }
struct Shape { heads: u32, kv_heads: u32, head_dim: u32, context: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<f32>;       // n × heads × head_dim
@group(0) @binding(3) var<storage, read> keys: array<f32>;    // context × kv_heads × head_dim
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    let h = id.y;
    let i = id.z;
    if (i >= step.n || t > step.pos + i) { return; }
    let hd = shape.head_dim;
    let kv = h / (shape.heads / shape.kv_heads);
    let qa = (i * shape.heads + h) * hd;
    let ka = (t * shape.kv_heads + kv) * hd;
    var acc = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let whole = hd / 8u * 8u;
    for (var d = 0u; d < whole; d += 8u) {
        for (var k = 0u; k < 8u; k++) {
            acc[k] += q[qa + d + k] * keys[ka + d + k];
        }
    }
    var tail = 0.0;
    for (var d = whole; d < hd; d++) { tail += q[qa + d] * keys[ka + d]; }
    var sum = 0.0;
    for (var k = 0u; k < 8u; k++) { sum += acc[k]; }
    scores[(h * step.n + i) * shape.context + t] = (sum + tail) * (1.0 / sqrt(f32(hd)));
}
