// Two element-wise steps of a block, one thread per value:
// `silu_mul`: a = silu(a) * b (the gated MLP), as `vecmath::silu_mul` computes it (exp.wgsl is
// prepended to this file); `add`: a += b (the residual stream).
// a: n × width.

@compute @workgroup_size(64)
fn silu_mul(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = id.x;
    if (k >= step.n * shape.width) { return; }
    let g = a[k];
    a[k] = g / (1.0 + exp_cpu(-g)) * b[k];
}

@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) id: vec3<u32>) {
    let k = id.x;
    if (k >= step.n * shape.width) { return; }
    a[k] += b[k];
}
