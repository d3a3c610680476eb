// Copy n positions of values into a block's value cache at positions pos..pos + n.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let d = id.x;
    let i = id.y;
    if (d >= shape.width || i >= step.n) { return; }
    cache[(step.pos + i) * shape.width + d] = src[i * shape.width + d];
}
