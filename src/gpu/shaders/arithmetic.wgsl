// A check of the adapter's f32 arithmetic (`Gpu::arithmetic_is_exact`): each operation the
// forward passes rely on, for inputs the CPU computes too. exp.wgsl is prepended to this file.

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // 4 × n

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    let n = arrayLength(&a);
    if (i >= n) { return; }
    let x = a[i];
    let y = b[i];
    let z = c[i];
    // Rounded twice, unless the compiler fuses the two into one multiply-add.
    out[i] = x * y + z;
    out[n + i] = x / y;
    out[2u * n + i] = 1.0 / sqrt(abs(x));
    // Over [-96, 96): both cut-offs of exp.wgsl, and the overflow that makes its +∞, included.
    out[3u * n + i] = exp_cpu(48.0 * x);
}
