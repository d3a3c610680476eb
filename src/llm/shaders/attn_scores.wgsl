// Attention scores: for query position i (at pos + i) and head h, q·k / sqrt(head_dim) against
// every cached position t ≤ pos + i (the causal mask: later positions are never computed). Heads
// share key heads in groups (grouped-query attention). scores: heads × n × context.
// The dot product is taken in the CPU path's order (`llm::attend`: four lanes, each summing every
// fourth product, then (l0 + l2) + (l1 + l3); see rms_norm.wgsl for why the order matters).
// head_dim is a multiple of 4, as `GpuLlama::new` checks.
// q: n × heads × head_dim; keys: context × kv_heads × head_dim.

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
    var acc = vec4<f32>(0.0);
    for (var d = 0u; d < hd; d += 4u) {
        let qv = vec4<f32>(q[qa + d], q[qa + d + 1u], q[qa + d + 2u], q[qa + d + 3u]);
        let kv4 = vec4<f32>(keys[ka + d], keys[ka + d + 1u], keys[ka + d + 2u], keys[ka + d + 3u]);
        acc += qv * kv4;
    }
    scores[(h * step.n + i) * shape.context + t] = ((acc.x + acc.z) + (acc.y + acc.w)) * (1.0 / sqrt(f32(hd)));
}
