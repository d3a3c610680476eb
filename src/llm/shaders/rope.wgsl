// Rotary positions: each interleaved pair (v[2j], v[2j+1]) of every head turned by the angle of
// frequency j at the value's position. Reads `src` (n positions × heads × head_dim); writes `dst`,
// either the same layout (queries) or a block's key cache at positions pos..pos + n (keys).
// cos_table: positions × head_dim / 2.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let half = shape.head_dim / 2u;
    let pair = id.x;             // over heads × half
    let i = id.y;
    if (pair >= shape.heads * half || i >= step.n) { return; }
    let j = pair % half;
    let width = shape.heads * shape.head_dim;
    let at = i * width + 2u * pair;
    let t = step.pos + i;
    let c = cos_table[t * half + j];
    let s = sin_table[t * half + j];
    let a = src[at];
    let b = src[at + 1u];
    var out = at;
    if (shape.into_cache != 0u) { out = t * width + 2u * pair; }
    dst[out] = a * c - b * s;
    dst[out + 1u] = a * s + b * c;
}
